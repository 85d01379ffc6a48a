"""Independent reference computations for tests (numpy/pandas, no Flink, no project SQL)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.features import METRIC_NAMES


def window_features(events: list[dict], window_seconds: int) -> pd.DataFrame:
    """Per device and tumbling window: mean, population std, min, max, count of each metric."""
    window_ms = window_seconds * 1000
    rows: dict[tuple[str, int], dict[str, list[float]]] = {}
    for e in events:
        start = (e["ts_ms"] // window_ms) * window_ms
        bucket = rows.setdefault((e["device_id"], start), {m: [] for m in METRIC_NAMES})
        for m in METRIC_NAMES:
            if e.get(m) is not None:
                bucket[m].append(float(e[m]))
    out = []
    for (device, start), values in rows.items():
        row: dict = {
            "device_id": device,
            "window_start": pd.Timestamp(start, unit="ms", tz="UTC"),
            "window_end": pd.Timestamp(start + window_ms, unit="ms", tz="UTC"),
        }
        for m in METRIC_NAMES:
            v = np.array(values[m], dtype=np.float64)
            row[f"{m}_mean"] = v.mean() if len(v) else np.nan
            row[f"{m}_std"] = v.std(ddof=0) if len(v) else np.nan
            row[f"{m}_min"] = v.min() if len(v) else np.nan
            row[f"{m}_max"] = v.max() if len(v) else np.nan
            row[f"{m}_count"] = len(v)
        out.append(row)
    return pd.DataFrame(out).sort_values(["device_id", "window_start"]).reset_index(drop=True)


def anomalous_windows(events: list[dict], window_seconds: int) -> tuple[set, set]:
    """(windows whose every event is labelled anomalous, windows with no anomalous event)."""
    window_ms = window_seconds * 1000
    labels: dict[tuple[str, int], list[bool]] = {}
    for e in events:
        key = (e["device_id"], (e["ts_ms"] // window_ms) * window_ms)
        labels.setdefault(key, []).append(bool(e["is_anomaly"]))
    all_anomalous = {k for k, v in labels.items() if all(v)}
    clean = {k for k, v in labels.items() if not any(v)}
    return all_anomalous, clean
