"""Scoring on request (POST /predict): a feature vector, or raw events turned into the job's
window features, scored by the current model exactly as the streaming UDF scores a window.

Window features of raw events are computed here with pandas, by the aggregates of
common.features (mean, population std, min, max, count per metric and tumbling window); a
test holds them to the Flink SQL of sql/flink/window_features.sql. Events and vectors come
validated by the API's request models (query/api.py: every metric present, finite and in its
catalogue range; exactly the model's features). Context features need the device's history,
which a request does not carry: a model that reads them cannot score raw events here (the
request is refused and says why).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from common.features import (
    AGGREGATES,
    METRIC_NAMES,
    MODEL_FEATURE_NAMES,
    STEP_AGGREGATES,
    WINDOW_FEATURES,
)
from udfs.onnx_scorer import OnnxModel

# The pandas aggregation computing each aggregate of common.features over a group-by. An
# aggregate missing here is an error at import, not a silently absent feature.
_PANDAS = {
    "mean": lambda g: g.mean(),
    "std": lambda g: g.std(ddof=0),
    "min": lambda g: g.min(),
    "max": lambda g: g.max(),
    "count": lambda g: g.count(),
    # The steps between consecutive samples (the frame is sorted by time, then value).
    "step": lambda g: g.agg(lambda v: _steps(v).max() if len(v.dropna()) > 1 else np.nan),
    "steprms": lambda g: g.agg(
        lambda v: np.sqrt(np.mean(_steps(v) ** 2)) if len(v.dropna()) > 1 else np.nan
    ),
}


def _steps(values: pd.Series) -> np.ndarray:
    return np.abs(np.diff(values.dropna().to_numpy(dtype=np.float64)))


_UNKNOWN = [a.suffix for a in (*AGGREGATES, *STEP_AGGREGATES) if a.suffix not in _PANDAS]
if _UNKNOWN:
    raise ImportError(f"query.predict cannot compute the aggregates {_UNKNOWN}")
WINDOW_NAMES = frozenset(f.name for f in WINDOW_FEATURES)


class PredictError(ValueError):
    """The request cannot be scored; the message says why and what to send instead."""


@dataclass(frozen=True)
class Window:
    device_id: str
    window_start: pd.Timestamp | None
    window_end: pd.Timestamp | None
    features: dict[str, float]


def windows_of_events(events: Sequence[dict], window_seconds: int) -> list[Window]:
    """Per device and tumbling window of ``window_seconds``: the window features."""
    context = [name for name in MODEL_FEATURE_NAMES if name not in WINDOW_NAMES]
    if context:
        raise PredictError(
            f"the current model reads context features ({', '.join(context[:3])}, ...) that "
            "need the device's history: send a feature vector instead of events"
        )
    window_ms = window_seconds * 1000
    frame = pd.DataFrame(events)
    frame["window_start_ms"] = frame["ts_ms"] // window_ms * window_ms
    kinds = dict.fromkeys(f.aggregate.suffix for f in WINDOW_FEATURES)
    if "step" in kinds:  # consecutive samples in time order, then value (as jvm/ Steps)
        metric = METRIC_NAMES[0]  # steps are computed for one-metric catalogues only
        frame = frame.sort_values(["ts_ms", metric], kind="stable")
    grouped = frame.groupby(["device_id", "window_start_ms"], sort=True)[list(METRIC_NAMES)]
    with np.errstate(over="ignore", invalid="ignore"):  # extreme values overflow to inf
        parts = {k: _PANDAS[k](grouped) for k in kinds}
    out = []
    for i, (device, start) in enumerate(parts[AGGREGATES[0].suffix].index):
        features = {
            f.name: float(parts[f.aggregate.suffix][f.metric].iloc[i]) for f in WINDOW_FEATURES
        }
        out.append(
            Window(
                str(device),
                pd.Timestamp(int(start), unit="ms", tz="UTC"),
                pd.Timestamp(int(start) + window_ms, unit="ms", tz="UTC"),
                features,
            )
        )
    return out


def window_of_vector(device_id: str, features: dict[str, float]) -> Window:
    return Window(device_id, None, None, features)


def score_windows(model: OnnxModel, windows: list[Window]) -> list[dict]:
    """Score, severity, flag and explanation of each window, as the streaming job gives them."""
    x = np.array([[w.features[n] for n in model.feature_names] for w in windows], dtype=np.float64)
    context = None
    if model.partial is not None:  # windows of raw events carry their sample count
        counts = [w.features.get(model.partial.name, math.nan) for w in windows]
        context = np.full((len(windows), model.partial.column + 1), np.nan)
        context[:, model.partial.column] = counts
    scores = model.score([w.device_id for w in windows], x, context)
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
