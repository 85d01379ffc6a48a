"""Scoring on request (POST /predict): a feature vector, or raw events turned into the job's
window features, scored by the current model exactly as the streaming UDF scores a window.

Window features of raw events are computed here with pandas, by the aggregates of
common.features (mean, population std, min, max, count per metric and tumbling window); a
test holds them to the Flink SQL of sql/flink/window_features.sql. Context features need the
device's history, which a request does not carry: a model that reads them cannot score raw
events here (the request is refused and says why).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.features import AGGREGATES, FEATURES, METRICS, MODEL_FEATURE_NAMES, WINDOW_FEATURES
from udfs.onnx_scorer import OnnxModel

# The pandas aggregation computing each aggregate of common.features. An aggregate missing
# here is an error at import, not a silently absent feature.
_PANDAS = {
    "mean": "mean",
    "std": lambda v: v.std(ddof=0),
    "min": "min",
    "max": "max",
    "count": "count",
}
_UNKNOWN = [a.suffix for a in AGGREGATES if a.suffix not in _PANDAS]
if _UNKNOWN:
    raise ImportError(f"query.predict cannot compute the aggregates {_UNKNOWN}")


class PredictError(ValueError):
    """The request cannot be scored; the message says why and what to send instead."""


@dataclass(frozen=True)
class Window:
    device_id: str
    window_start: pd.Timestamp | None
    window_end: pd.Timestamp | None
    features: dict[str, float]


def event_problem(event: dict, index: int) -> str | None:
    """The first problem of a raw event, as the job's checks name them (checked_events.sql):
    a metric missing, not finite, or outside the catalogue's range."""
    for m in METRICS:
        value = event.get(m.name)
        if value is None:
            return f"events[{index}].{m.name}: missing or null"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"events[{index}].{m.name}: not a number"
        if not math.isfinite(value):
            return f"events[{index}].{m.name}: not a finite number"
        if m.min is not None and value < m.min:
            return f"events[{index}].{m.name}: below its minimum {m.min:g}"
        if m.max is not None and value > m.max:
            return f"events[{index}].{m.name}: above its maximum {m.max:g}"
    return None


def windows_of_events(events: Sequence[dict], window_seconds: int) -> list[Window]:
    """Per device and tumbling window of ``window_seconds``: the window features."""
    problems = [p for i, e in enumerate(events) if (p := event_problem(e, i))]
    if problems:
        raise PredictError("; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else ""))
    context = [name for name in MODEL_FEATURE_NAMES if name not in WINDOW_NAMES]
    if context:
        raise PredictError(
            f"the current model reads context features ({', '.join(context[:3])}, ...) that "
            "need the device's history: send a feature vector instead of events"
        )
    frame = pd.DataFrame(events)
    window_ms = window_seconds * 1000
    with np.errstate(over="ignore", invalid="ignore"):  # extreme values overflow to inf
        return _aggregate(frame, window_ms)


def _aggregate(frame: pd.DataFrame, window_ms: int) -> list[Window]:
    frame["window_start_ms"] = frame["ts_ms"] // window_ms * window_ms
    grouped = frame.groupby(["device_id", "window_start_ms"], sort=True)
    out = []
    for (device, start), rows in grouped:
        features = {}
        for f in WINDOW_FEATURES:
            aggregate = _PANDAS[f.aggregate.suffix]
            values = rows[f.metric].astype(np.float64)
            features[f.name] = float(
                values.agg(aggregate) if isinstance(aggregate, str) else aggregate(values)
            )
        out.append(
            Window(
                str(device),
                pd.Timestamp(int(start), unit="ms", tz="UTC"),
                pd.Timestamp(int(start) + window_ms, unit="ms", tz="UTC"),
                features,
            )
        )
    return out


WINDOW_NAMES = frozenset(f.name for f in WINDOW_FEATURES)
KNOWN_NAMES = frozenset(f.name for f in FEATURES)


def window_of_vector(device_id: str, features: dict[str, float]) -> Window:
    unknown = sorted(set(features) - KNOWN_NAMES)
    if unknown:
        raise PredictError(
            f"unknown features {unknown[:5]}: the features are {sorted(MODEL_FEATURE_NAMES)}"
        )
    missing = [n for n in MODEL_FEATURE_NAMES if n not in features]
    if missing:
        raise PredictError(
            f"the model needs the features {missing[:5]}{' ...' if len(missing) > 5 else ''}"
        )
    return Window(device_id, None, None, features)


def score_windows(model: OnnxModel, windows: list[Window]) -> list[dict]:
    """Score, severity, flag and explanation of each window, as the streaming job gives them."""
    x = np.array([[w.features[n] for n in model.feature_names] for w in windows], dtype=np.float64)
    scores = model.score([w.device_id for w in windows], x)
    out = []
    for i, w in enumerate(windows):
        score = float(scores.score[i])
        out.append(
            {
                "device_id": w.device_id,
                "window_start": w.window_start,
                "window_end": w.window_end,
                "anomaly_score": score if math.isfinite(score) else None,
                "severity": float(scores.severity[i])
                if math.isfinite(scores.severity[i])
                else None,
                "is_anomaly": scores.flag[i],
                "known_device": bool(scores.known_device[i]),
                "top_metric": scores.top_metric[i],
                "explanation": scores.explanation[i],
            }
        )
    return out
