"""Independent reference computations for tests (numpy/pandas, no Flink, no project SQL)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from common.features import (
    CATALOGUE,
    CHANGE_FEATURES,
    CONTEXT_FEATURES,
    HORIZONS,
    METRIC_NAMES,
    WINDOW_FEATURES,
)

_SPREADS = {f.name for f in CONTEXT_FEATURES if f.stat in ("sd", "stdsd")}
_NAMES = {f.name for f in CONTEXT_FEATURES}
_WINDOW_NAMES = {f.name for f in WINDOW_FEATURES}
_CHANGE_NAMES = {f.name for f in CHANGE_FEATURES}


def steps(times_ms, values, interval_ms: int = CATALOGUE.interval_ms) -> np.ndarray:
    """The sizes of the differences between consecutive samples sorted by time, then value; a
    difference between samples more than ``interval_ms`` apart over the square root of their
    distance in intervals."""
    times_ms = np.asarray(times_ms, dtype=np.int64)
    order = np.lexsort((np.asarray(values, dtype=float), times_ms))
    size = np.abs(np.diff(np.asarray(values, dtype=float)[order]))
    spans = np.diff(times_ms[order]) / interval_ms
    return size / np.sqrt(np.fmax(spans, 1.0))


def atol(feature: str) -> float:
    """Absolute tolerance of a feature computed by Flink against this module. The context
    spreads come from sums of squares of window means, the window's own left out: where the
    spread is 0 they come out up to ~1e-6 above it."""
    return 1e-5 if feature in _SPREADS else 1e-9


def one_pass_std_atol(count, peak, std) -> np.ndarray:
    """Absolute error bound of a window's population std that Flink computes in one pass
    (STDDEV_POP from the sums of x and x^2), per window of ``count`` values whose largest
    magnitude is ``peak`` and whose exact std is ``std``. Summing n squares in doubles errs
    by up to n * eps * peak^2 in E[x^2], twice that in E[x]^2; on large values with a small
    spread (memory in bytes) the variance loses that much, and the std
    min(err / 2 std, sqrt(err))."""
    count, peak, std = (np.asarray(a, dtype=float) for a in (count, peak, std))
    err = 4 * np.maximum(count, 1) * np.finfo(float).eps * peak**2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.fmin(err / (2 * std), np.sqrt(err))


def window_features(
    events: list[dict], window_seconds: int, horizons: tuple = HORIZONS
) -> pd.DataFrame:
    """Per device and tumbling window: mean, population std, min, max, count of each metric
    (and its largest step and the steps' root mean square where the features have them),
    and its context over each horizon (window_context)."""
    window_ms = window_seconds * 1000
    rows: dict[tuple[str, int], dict[str, list[float]]] = {}
    for e in events:
        start = (e["ts_ms"] // window_ms) * window_ms
        bucket = rows.setdefault((e["device_id"], start), {m: [] for m in METRIC_NAMES})
        for m in METRIC_NAMES:
            if e.get(m) is not None:
                bucket[m].append((e["ts_ms"], float(e[m])))
    out = []
    for (device, start), values in rows.items():
        row: dict = {
            "device_id": device,
            "window_start": pd.Timestamp(start, unit="ms", tz="UTC"),
            "window_end": pd.Timestamp(start + window_ms, unit="ms", tz="UTC"),
        }
        for m in METRIC_NAMES:
            t = np.array([ts for ts, _ in values[m]], dtype=np.int64)
            v = np.array([x for _, x in values[m]], dtype=np.float64)
            if f"{m}_step" in _WINDOW_NAMES:
                d = steps(t, v)
                row[f"{m}_step"] = d.max() if len(d) else np.nan
                row[f"{m}_steprms"] = np.sqrt(np.mean(d * d)) if len(d) else np.nan
            row[f"{m}_mean"] = v.mean() if len(v) else np.nan
            row[f"{m}_std"] = v.std(ddof=0) if len(v) else np.nan
            row[f"{m}_min"] = v.min() if len(v) else np.nan
            row[f"{m}_max"] = v.max() if len(v) else np.nan
            row[f"{m}_count"] = len(v)
        out.append(row)
    frame = pd.DataFrame(out).sort_values(["device_id", "window_start"]).reset_index(drop=True)
    for m in METRIC_NAMES:
        if f"{m}_change" in _CHANGE_NAMES:
            frame[f"{m}_change"] = changes(frame, f"{m}_mean", window_ms)
    return window_context(frame, window_seconds, horizons)


def changes(frame: pd.DataFrame, column: str, window_ms: int) -> np.ndarray:
    """Per window (rows of device_id, window_start): the size of the difference between its
    ``column`` and the device's window starting ``window_ms`` before; NaN where there is none."""
    starts = frame["window_start"].map(lambda t: t.value // 1_000_000).to_numpy()
    values = frame[column].to_numpy(dtype=np.float64)
    at = {(d, t): v for d, t, v in zip(frame["device_id"], starts, values, strict=True)}
    return np.array(
        [
            abs(v - at[(d, t - window_ms)]) if (d, t - window_ms) in at else np.nan
            for d, t, v in zip(frame["device_id"], starts, values, strict=True)
        ]
    )


def window_context(frame: pd.DataFrame, window_seconds: int, horizons) -> pd.DataFrame:
    """Each window's context over each horizon (name, seconds), as
    sql/flink/window_context.sql defines it: the mean and population std of the device's window
    means over the windows starting in [start - horizon, start) (none there: NULL, deviation
    0); where the features have them (one metric: the longest horizon, and how many windows
    the shortest has), the same of the windows' std and how many windows there are."""
    frame = frame.copy()
    starts = frame["window_start"].map(lambda t: t.value // 1_000_000).to_numpy()
    devices = frame["device_id"].to_numpy()

    def preceding(column: str | np.ndarray, horizon_ms: int):
        values = frame[column].to_numpy(dtype=np.float64) if isinstance(column, str) else column
        avg, sd = np.full(len(frame), np.nan), np.full(len(frame), np.nan)
        windows = np.zeros(len(frame), dtype=np.int64)
        for i in range(len(frame)):
            inside = (
                (devices == devices[i]) & (starts >= starts[i] - horizon_ms) & (starts < starts[i])
            )
            seen = values[inside]
            seen = seen[~np.isnan(seen)]
            windows[i] = len(seen)
            if len(seen):
                avg[i] = seen.mean()
                sd[i] = 0.0 if seen.min() == seen.max() else seen.std(ddof=0)
        return values, avg, sd, windows

    for h in horizons:
        for m in METRIC_NAMES:
            means, avg, sd, windows = preceding(f"{m}_mean", h.seconds * 1000)
            frame[f"{m}_avg{h.name}"] = avg
            frame[f"{m}_sd{h.name}"] = sd
            frame[f"{m}_dev{h.name}"] = means - np.where(np.isnan(avg), means, avg)
            if f"{m}_windows{h.name}" in _NAMES:
                frame[f"{m}_windows{h.name}"] = windows
            if f"{m}_stdavg{h.name}" in _NAMES:
                _, avg, sd, _ = preceding(f"{m}_std", h.seconds * 1000)
                frame[f"{m}_stdavg{h.name}"] = avg
                frame[f"{m}_stdsd{h.name}"] = sd
            if f"{m}_stepavg{h.name}" in _NAMES:
                _, avg, _, _ = preceding(f"{m}_steprms", h.seconds * 1000)
                frame[f"{m}_stepavg{h.name}"] = avg
            if f"{m}_changerms{h.name}" in _NAMES:
                # The root mean square: the root of the preceding squares' mean.
                squares = frame[f"{m}_change"].to_numpy(dtype=np.float64) ** 2
                _, mean_square, _, _ = preceding(squares, h.seconds * 1000)
                frame[f"{m}_changerms{h.name}"] = np.sqrt(mean_square)
    return frame


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


def season_stats(frame: pd.DataFrame, window_ms: int) -> pd.DataFrame:
    """common.features.SEASON_STATS of a one-metric catalogue ("value") by their definition,
    by time, per device: ``frame`` holds device_id, start_ms (each window's start) and
    value_mean; returns it with value_seasres28d and value_seassd28d (the time of the week on
    the 4 weeks before, all present) and value_seasres7d and value_seassd7d (the time of the
    day on the 7 days before, at least 3 present)."""
    day = 86_400_000
    week = 7 * day
    per_day = max(1, day // window_ms)
    out = []
    for _, rows in frame.groupby("device_id", sort=False):
        t = rows["start_ms"].to_numpy()
        mean = dict(zip(t, rows["value_mean"].to_numpy(dtype=float), strict=True))
        columns = {}
        for name, period, periods, least in (("28d", week, 4, 4), ("7d", day, 7, 3)):
            r = {}
            for ts in t:
                back = [mean[u] for k in range(1, periods + 1) if (u := ts - k * period) in mean]
                if len(back) >= least:
                    r[ts] = mean[ts] - np.mean(back)
            rr = {}
            for ts in r:
                prev = [r[u] for u in t if ts - day <= u < ts and u in r]
                if len(prev) >= max(2, per_day // 2):
                    rr[ts] = r[ts] - np.mean(prev)
            sd = {}
            for ts in t:
                prev = [rr[u] for u in t if ts - week <= u < ts and u in rr]
                if len(prev) >= per_day:
                    sd[ts] = np.std(prev)
            columns[f"value_seasres{name}"] = [rr.get(ts, np.nan) for ts in t]
            columns[f"value_seassd{name}"] = [sd.get(ts, np.nan) for ts in t]
        out.append(rows.assign(**columns))
    return pd.concat(out)
