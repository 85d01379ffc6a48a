"""Accuracy on your own labelled data: the product's model beside two simple baselines.

  python -m training.evaluate csv data/ --label-column label --train-fraction 0.15
  python -m training.evaluate csv data/ --label-column label --train-until 2026-11-01
  python -m training.evaluate topic shop-events --train-fraction 0.15   # labels: is_anomaly

A topic's events (the job's JSON, from the earliest offset to the end; labels from their
`is_anomaly` field, as replay writes it) are read as the job reads them. The CSVs are read by
the rules every command shares (python -m common.datasets) with the active
catalogue's metrics (ANOMALY_CATALOGUE) and cut, per device, into a training part (the first
--train-fraction of its rows, or its rows before --train-until) and the scored rest.

The product's model runs as the stream runs it: the job's window features (its Flink SQL, over
the job's tumbling windows of ANOMALY_WINDOW_SECONDS, in batch over every row), fitted by
training.train on the training windows without labelled rows, exported to ONNX and scored by
the UDF's scorer. The baselines flag raw rows, per device and metric; a window is flagged when
one of its rows is:

  3-sigma            |row - mean| > 3 sd of the device's training rows
  windowed Gaussian  causal: |row - mean| > 4 sd of the device's previous --gaussian-rows rows
                     (288 by default: a day of 5-minute samples)

Metrics, over the scored windows (a window is anomalous when one of its rows is labelled so):

  window-wise  F1, FAR (flagged normal windows / normal windows, %), MAR (missed anomalous /
               anomalous windows, %)
  event-wise   anomaly events (runs of anomalous windows of a device) detected by at least one
               flag inside them; false-alarm episodes (runs of flagged windows without an
               anomalous one) per device-day; the share of each device's normal windows that
               are flagged (median and worst device, and devices above 5 %); devices with
               labelled anomalies that never alarm.

--windows-out FILE writes our models' scored windows as CSV, one row per window and model:
its device, start, label and flag, its score over the threshold (flagged above 1) and what the
score is made of, each over its own bar: the model's own score (reading_model) and each
reading of the context check (reading_level, reading_spike, ...; the score is the largest of
them). Which labelled windows were missed, and how near their bars they came.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.datasets import (
    Dataset,
    DatasetError,
    add_csv_arguments,
    fraction,
    is_replay_end,
    options_from_args,
    parse_time,
    read_datasets,
)
from common.settings import Settings, duration_name, duration_seconds
from training.detectors import CONTEXT_CHECKS
from training.train import TrainingDataError

# A device alarmed on more than this share of its normal windows is "noisy".
NOISY_SHARE = 0.05
GAUSSIAN_ROWS = 288
GAUSSIAN_Z = 4.0
SIGMA_Z = 3.0
DAY_MS = 86_400_000


class EvaluationError(ValueError):
    pass


# --- splitting --------------------------------------------------------------------------------


def split_times(datasets: list[Dataset], until_ms: int | None, share: float | None) -> dict:
    """Per device, the first event time of its scored part."""
    out = {}
    for d in datasets:
        if until_ms is not None:
            out[d.device_id] = until_ms
        else:
            i = round(share * len(d.ts_ms))
            out[d.device_id] = int(d.ts_ms[i]) if i < len(d.ts_ms) else int(d.ts_ms[-1]) + 1
    return out


# --- baselines on raw rows --------------------------------------------------------------------


def three_sigma_flags(d: Dataset, split_ms: int) -> np.ndarray:
    """Rows outside mean +/- 3 sd of the device's training rows, on any metric."""
    x = np.column_stack(list(d.metrics.values()))
    train = x[d.ts_ms < split_ms]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean, sd = np.nanmean(train, axis=0), np.nanstd(train, axis=0)
        z = np.abs(x - mean) / np.where(sd > 0, sd, np.nan)
        # A metric constant in training: any other value is out of band.
        z = np.where(sd > 0, z, np.where(np.isclose(x, mean), 0.0, np.inf))
    return np.nan_to_num(z, nan=0.0).max(axis=1) > SIGMA_Z


def gaussian_flags(d: Dataset, rows: int = GAUSSIAN_ROWS, z_limit: float = GAUSSIAN_Z):
    """Causal windowed Gaussian: each row against the mean and sd of the previous ``rows``
    rows of its metric (at least rows // 4 of them seen)."""
    frame = pd.DataFrame(d.metrics)
    past = frame.shift(1).rolling(rows, min_periods=max(2, rows // 4))
    mean, sd = past.mean(), past.std(ddof=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = ((frame - mean).abs() / sd.where(sd > 0)).to_numpy()
        flat = (sd == 0).to_numpy() & ~np.isclose(frame.to_numpy(), mean.to_numpy())
    return (np.nan_to_num(z, nan=0.0) > z_limit).any(axis=1) | flat.any(axis=1)


def windows_of_rows(d: Dataset, flags: np.ndarray, window_ms: int) -> set[tuple[str, int]]:
    """(device, window start ms) of the windows holding a flagged row."""
    starts = (d.ts_ms[flags] // window_ms) * window_ms
    return {(d.device_id, int(s)) for s in np.unique(starts)}


# --- metrics ----------------------------------------------------------------------------------


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end exclusive) of each run of True."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


@dataclass
class DeviceScore:
    device_id: str
    windows: int
    normal_windows: int
    flagged_normal: int
    anomaly_windows: int
    flagged_anomaly: int
    events: int
    events_detected: int
    false_alarm_episodes: int
    days: float
    flagged: int

    @property
    def normal_share_alarmed(self) -> float:
        return self.flagged_normal / self.normal_windows if self.normal_windows else 0.0


def device_score(device_id: str, starts_ms, labels, flags, window_ms: int) -> DeviceScore:
    """Scores of one device's scored windows (in time order). A gap between windows (no
    events) breaks runs."""
    starts_ms, labels, flags = (np.asarray(a) for a in (starts_ms, labels, flags))
    labels, flags = labels.astype(bool), flags.astype(bool)
    # Consecutive windows only: insert a break wherever a window is missing.
    gap = np.concatenate([[False], np.diff(starts_ms) > window_ms])
    seg = np.cumsum(gap)
    events = detected = false_episodes = 0
    for s in np.unique(seg):
        part = seg == s
        y, f = labels[part], flags[part]
        for a, b in runs(y):
            events += 1
            detected += bool(f[a:b].any())
        for a, b in runs(f):
            false_episodes += not y[a:b].any()
    span = (starts_ms[-1] - starts_ms[0] + window_ms) if len(starts_ms) else 0
    return DeviceScore(
        device_id=device_id,
        windows=len(labels),
        normal_windows=int((~labels).sum()),
        flagged_normal=int((flags & ~labels).sum()),
        anomaly_windows=int(labels.sum()),
        flagged_anomaly=int((flags & labels).sum()),
        events=events,
        events_detected=detected,
        false_alarm_episodes=false_episodes,
        days=span / DAY_MS,
        flagged=int(flags.sum()),
    )


def summary(method: str, devices: list[DeviceScore], seconds: float) -> dict:
    tp = sum(d.flagged_anomaly for d in devices)
    fp = sum(d.flagged_normal for d in devices)
    anomalous = sum(d.anomaly_windows for d in devices)
    normal = sum(d.normal_windows for d in devices)
    fn = anomalous - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / anomalous if anomalous else 0.0
    shares = np.array([d.normal_share_alarmed for d in devices])
    days = sum(d.days for d in devices)
    labelled = [d for d in devices if d.events]
    return {
        "method": method,
        "f1": round(2 * precision * recall / (precision + recall), 3) if tp else 0.0,
        "far_pct": round(100 * fp / normal, 2) if normal else 0.0,
        "mar_pct": round(100 * fn / anomalous, 2) if anomalous else 0.0,
        "events": sum(d.events for d in devices),
        "events_detected": sum(d.events_detected for d in devices),
        "false_alarm_episodes": sum(d.false_alarm_episodes for d in devices),
        "days": round(days, 1),
        "false_alarms_per_day": round(sum(d.false_alarm_episodes for d in devices) / days, 3)
        if days
        else 0.0,
        "normal_alarmed_median_pct": round(100 * float(np.median(shares)), 2) if len(shares) else 0,
        "normal_alarmed_worst_pct": round(100 * float(shares.max()), 2) if len(shares) else 0,
        "devices": len(devices),
        "devices_noisy": int((shares > NOISY_SHARE).sum()),
        "devices_labelled": len(labelled),
        "devices_never_alarm": sum(1 for d in labelled if d.flagged == 0),
        "seconds": round(seconds, 1),
        "per_device": [
            {
                "device_id": d.device_id,
                "events": d.events,
                "events_detected": d.events_detected,
                "false_alarm_episodes": d.false_alarm_episodes,
                "normal_alarmed_pct": round(100 * d.normal_share_alarmed, 2),
                "flagged_windows": d.flagged,
            }
            for d in devices
        ],
    }


def score_method(name: str, scored: pd.DataFrame, flags: np.ndarray, window_ms, began) -> dict:
    """``scored``: the scored windows (device_id, start_ms, label), sorted by device, time."""
    devices = []
    for device, rows in scored.assign(flag=flags).groupby("device_id", sort=True):
        devices.append(
            device_score(
                str(device),
                rows["start_ms"].to_numpy(),
                rows["label"].to_numpy(),
                rows["flag"].to_numpy(),
                window_ms,
            )
        )
    return summary(name, devices, time.perf_counter() - began)


# --- the run ----------------------------------------------------------------------------------


def windows_frame(method: str, scored: pd.DataFrame, flags, score, parts: dict) -> pd.DataFrame:
    """One row per scored window of one of our models (``--windows-out``): its device and
    start, whether it is labelled and flagged (empty: not scored, a missing feature), its
    score over the threshold (flagged above 1), and what the score is made of, each over its
    own bar (``OnnxModel.score_and_parts``: the model's own score, ``reading_model``, and each
    reading of the context check, ``reading_<name>``). Which labelled windows were missed,
    and how near their bars they came."""
    out = pd.DataFrame(
        {
            "method": method,
            "device_id": scored["device_id"].astype(str).to_numpy(),
            "window_start": pd.to_datetime(scored["start_ms"], unit="ms", utc=True)
            .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_numpy(),
            "labelled": scored["label"].astype(int).to_numpy(),
            "flagged": pd.array([None if f is None else int(f) for f in flags], dtype="Int64"),
            "score_over_threshold": np.asarray(score, dtype=np.float64),
        }
    )
    for name, values in parts.items():
        out["reading_" + name.replace(" ", "_")] = values
    return out


def retrained_scores(settings, windows, first_scored, every, since, models_dir, log, first=None):
    """Every window of ``windows`` (window_table; ``first_scored``: each window's device's
    first scored time, ms) scored as a deployment that retrains on a schedule (POST /retrain
    every ``every`` seconds, ``since`` seconds each) scores it: the first model fits the
    training part, as the other methods' do; at each device's first scored time plus k times
    every a candidate fits the windows of the ``since`` before it (the newest HOLDOUT_SHARE held
    out),
    leaving out those its predecessors flagged (and, in the training part, the labelled ones,
    as the first model does), and takes over if it passes the checks a retraining in the
    product passes (``query.retrain.judge``, with the held-out windows those models flagged
    as the ones the job flagged); otherwise the model in force stays. The schedule
    is in each device's own time, as the training split is. ``first``: the default model
    already fitted on the training part, if there is one (else it is fitted here). Returns
    each window's flag (None: not scored), its score over its model's threshold and the
    readings (``OnnxModel.score_and_parts``)."""
    from common.features import MODEL_FEATURE_NAMES, SCORER_CONTEXT_NAMES
    from query.retrain import HOLDOUT_SHARE, complete, judge
    from training.detectors import DetectorParams
    from training.train import TrainingData, train
    from udfs.onnx_scorer import OnnxModel

    window_ms, every_ms, since_ms = settings.window_seconds * 1000, every * 1000, since * 1000
    since_scored = windows["start_ms"].to_numpy() - first_scored  # each device's own time
    left_out = windows["label"].to_numpy() & (since_scored < 0)
    flag = np.full(len(windows), None, dtype=object)
    score = np.full(len(windows), np.nan)
    parts: dict[str, np.ndarray] = {}
    params = DetectorParams()
    outcomes: dict[str, int] = {}

    def fitted(rows: np.ndarray, what: str):
        frame = windows[rows].assign(labelled_events=left_out[rows].astype(int))
        trained = train(
            settings.replace(models_dir=models_dir),
            TrainingData(frame.reset_index(drop=True), what),
            params,
            make_current=False,
            log=lambda m: None,
        )
        return trained.model_dir

    def load(model_dir):
        return OnnxModel.load(
            model_dir, MODEL_FEATURE_NAMES, settings.window_seconds, SCORER_CONTEXT_NAMES
        )

    model = first or load(fitted(since_scored + window_ms <= 0, "training part"))
    k = 0
    while k * every_ms <= since_scored.max():
        at = k * every_ms
        if k:
            span = (since_scored >= at - since_ms) & (since_scored + window_ms <= at)
            held_from = at - since_ms * HOLDOUT_SHARE
            held_rows = span & (since_scored >= held_from)
            held = complete(windows[held_rows].assign(labelled_events=left_out[held_rows]))
            outcome = "refused"
            if len(held) >= settings.drift_min_windows:
                try:
                    model_dir = fitted(span & (since_scored < held_from), f"retraining {k}")
                except TrainingDataError:
                    outcome = "failed"
                else:
                    problems = judge(settings, model_dir, held, params)[1]
                    if not problems:
                        model, outcome = load(model_dir), "promoted"
                    else:
                        log(f"retraining {k}: refused: {'; '.join(problems)}")
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        rows = np.flatnonzero((since_scored >= at) & (since_scored < at + every_ms))
        if len(rows):
            part = windows.iloc[rows]
            s, readings = model.score_and_parts(
                part["device_id"].astype(str).to_numpy(dtype=object),
                part[list(MODEL_FEATURE_NAMES)].to_numpy(dtype=np.float64),
                part[list(SCORER_CONTEXT_NAMES)].to_numpy(dtype=np.float64),
            )
            flag[rows] = s.flag
            score[rows] = s.score / model.threshold
            left_out[rows] |= np.array([bool(f) for f in s.flag])
            for name, values in readings.items():
                parts.setdefault(name, np.full(len(windows), np.nan))[rows] = values
        k += 1
    log(
        f"retrained every {duration_name(every)} on {duration_name(since)}: "
        + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
    )
    return flag, score, parts


def window_table(features: pd.DataFrame) -> pd.DataFrame:
    out = features.copy()
    out["start_ms"] = (
        pd.to_datetime(out["window_start"], utc=False).astype("datetime64[ms]").astype("int64")
    )
    out["label"] = out["labelled_events"].fillna(0).to_numpy() > 0
    return out.sort_values(["device_id", "start_ms"]).reset_index(drop=True)


def datasets_from_topic(bootstrap: str, topic: str, metrics: tuple[str, ...], log=print):
    """The events a topic holds now (from the earliest offset to the end), as datasets: one
    per device, its metrics and its `is_anomaly` labels. Messages the job would refuse (not
    a JSON object, no device_id, no integer ts_ms) are counted and left out."""
    from confluent_kafka import Consumer

    from common.kafka_admin import read_to_end

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "anomaly-evaluate",
            "enable.auto.commit": False,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise EvaluationError(f"no topic {topic!r} at {bootstrap}")
        rows: dict[str, list] = {}
        skipped = 0
        for msg in read_to_end(consumer, topic, meta.partitions):
            if msg.error() is not None:
                raise EvaluationError(f"reading {topic}: {msg.error()}")
            try:
                event = json.loads(msg.value())
                device, ts = str(event["device_id"]), event["ts_ms"]
                if not isinstance(ts, int):
                    raise TypeError(ts)
                if is_replay_end(event):
                    continue
            except (ValueError, TypeError, KeyError):
                skipped += 1
                continue
            values = [event.get(m) for m in metrics]
            rows.setdefault(device, []).append(
                (ts, [v if isinstance(v, int | float) else np.nan for v in values],
                 bool(event.get("is_anomaly")))
            )  # fmt: skip
    finally:
        consumer.close()
    if skipped:
        log(f"{skipped:,} messages of {topic} left out (not events the job accepts)")
    datasets = []
    for device, items in sorted(rows.items()):
        items.sort(key=lambda r: r[0])
        x = np.array([r[1] for r in items], dtype=float)
        datasets.append(
            Dataset(
                device,
                np.array([r[0] for r in items], dtype=np.int64),
                {m: x[:, j] for j, m in enumerate(metrics)},
                np.array([r[2] for r in items], dtype=bool),
            )
        )
    if not datasets:
        raise EvaluationError(f"topic {topic!r} holds no events")
    return datasets


def evaluate_csv(
    settings: Settings,
    datasets: list[Dataset],
    source: list[str],
    *,
    train_until: int | None,
    train_share: float | None,
    models: tuple[str, ...] = ("pca-t2q",),
    calibrations: tuple[str, ...] = ("auto",),
    context_checks: tuple[str, ...] = ("auto",),
    gaussian_rows: int = GAUSSIAN_ROWS,
    windows_out: Path | None = None,
    retrain: tuple[int, int] | None = None,
    log=print,
) -> dict:
    """The report of our models and the baselines on ``datasets``; with ``windows_out``, our
    models' scored windows are written there too (``windows_frame``); with ``retrain`` (every,
    since; milliseconds), also the default model retrained on that schedule
    (``retrained_scores``)."""
    from common.features import CATALOGUE, MODEL_FEATURE_NAMES, SCORER_CONTEXT_NAMES
    from training.detectors import DetectorParams
    from training.train import TrainingData, train, window_features_of_datasets
    from udfs.onnx_scorer import OnnxModel

    if all(d.labels is None or not d.labels.any() for d in datasets):
        raise EvaluationError("no row is labelled anomalous (--label-column, or is_anomaly)")
    split = split_times(datasets, train_until, train_share)
    window_ms = settings.window_seconds * 1000
    rows = sum(len(d.ts_ms) for d in datasets)
    log(
        f"{len(datasets)} devices, {rows:,} rows, catalogue {CATALOGUE.name} "
        f"({', '.join(CATALOGUE.metric_names)}), {settings.window_seconds} s windows; "
        f"computing window features with the job's Flink SQL"
    )
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="eval-csv-") as tmp:
        windows = window_table(window_features_of_datasets(settings, datasets))
        log(f"{len(windows):,} windows in {time.perf_counter() - began:.0f} s")
        first_scored = windows["device_id"].map(split).to_numpy()
        is_train = windows["start_ms"].to_numpy() + window_ms <= first_scored
        is_scored = windows["start_ms"].to_numpy() >= first_scored
        scored = windows[is_scored].reset_index(drop=True)
        if not len(scored) or not scored["label"].any():
            raise EvaluationError("no labelled anomaly in the scored part: train on less")
        # The scorer's inputs: each scored window's device, model features and context.
        inputs = (
            scored["device_id"].astype(str).to_numpy(dtype=object),
            scored[list(MODEL_FEATURE_NAMES)].to_numpy(dtype=np.float64),
            scored[list(SCORER_CONTEXT_NAMES)].to_numpy(dtype=np.float64),
        )
        results, frames = [], []
        default = None  # the default model, which a scheduled retraining starts from
        for model, calibration, check in itertools.product(models, calibrations, context_checks):
            if model != "pca-t2q" and check == "on":
                continue
            began = time.perf_counter()
            params = DetectorParams(model=model, calibration=calibration, context_check=check)
            trained = train(
                settings.replace(models_dir=Path(tmp) / "models"),
                TrainingData(windows[is_train], "training part"),
                params,
                make_current=False,
                log=lambda m: None,
            )
            onnx = OnnxModel.load(
                trained.model_dir,
                MODEL_FEATURE_NAMES,
                settings.window_seconds,
                SCORER_CONTEXT_NAMES,
            )
            if params == DetectorParams():
                default = onnx
            s, parts = onnx.score_and_parts(*inputs)
            flags = np.array([bool(f) for f in s.flag])  # None (incomplete window): no flag
            label = model
            if len(calibrations) > 1:
                label += f" {calibration}"
            if len(context_checks) > 1 or check != "auto":
                label += f" context check {check}"
            elif trained.check is not None:
                label += " (context check)"
            method = f"{label} (ours)"
            results.append(score_method(method, scored, flags, window_ms, began))
            if windows_out is not None:
                score = s.score / onnx.threshold
                frames.append(windows_frame(method, scored, s.flag, score, parts))
            log(f"{label}: done")
        if retrain is not None:
            began = time.perf_counter()
            every, since = retrain
            flag, score, parts = retrained_scores(
                settings, windows, first_scored, every, since, Path(tmp) / "retrained", log, default
            )
            flag, score = flag[is_scored], score[is_scored]
            flags = np.array([bool(f) for f in flag])
            method = (
                f"pca-t2q, retrained every {duration_name(every)} on the last "
                f"{duration_name(since)} (ours)"
            )
            results.append(score_method(method, scored, flags, window_ms, began))
            if windows_out is not None:
                parts = {k: v[is_scored] for k, v in parts.items()}
                frames.append(windows_frame(method, scored, flag, score, parts))
    if windows_out is not None:
        windows_out.parent.mkdir(parents=True, exist_ok=True)
        pd.concat(frames, ignore_index=True).to_csv(windows_out, index=False)
        log(f"{len(scored):,} scored windows of each of our models written to {windows_out}")
    keys = list(zip(scored["device_id"].astype(str), scored["start_ms"].astype(int), strict=True))
    for name, flag_rows in (
        (f"3-sigma per device (baseline, |z| > {SIGMA_Z:g})", three_sigma_flags),
        (
            f"windowed Gaussian (baseline, {gaussian_rows} rows, |z| > {GAUSSIAN_Z:g})",
            lambda d, _: gaussian_flags(d, gaussian_rows),
        ),
    ):
        began = time.perf_counter()
        hit: set[tuple[str, int]] = set()
        for d in datasets:
            hit |= windows_of_rows(d, flag_rows(d, split[d.device_id]), window_ms)
        flags = np.array([k in hit for k in keys])
        results.append(score_method(name, scored, flags, window_ms, began))
    return {
        "data": source,
        "catalogue": CATALOGUE.name,
        "window_seconds": settings.window_seconds,
        "devices": len(datasets),
        "rows": rows,
        "training": (
            f"rows before {pd.Timestamp(train_until, unit='ms', tz='UTC').isoformat()}"
            if train_until is not None
            else f"first {train_share:.0%} of each device's rows"
        ),
        "windows_scored": len(scored),
        "results": results,
    }


def print_table(report: dict) -> None:
    print(
        f"\n{report['devices']} devices, {report['windows_scored']:,} scored windows of "
        f"{report['window_seconds']} s; training: {report['training']}\n"
    )
    head = (
        f"{'method':<48} {'F1':>5} {'FAR %':>6} {'MAR %':>6} {'events found':>13} "
        f"{'FA/day':>7} {'normal alarmed % med/worst':>27} {'noisy':>6} {'silent':>7}"
    )
    print(head)
    for r in report["results"]:
        found = f"{r['events_detected']}/{r['events']}"
        shares = f"{r['normal_alarmed_median_pct']:.1f} / {r['normal_alarmed_worst_pct']:.1f}"
        print(
            f"{r['method']:<48} {r['f1']:>5.2f} {r['far_pct']:>6.2f} {r['mar_pct']:>6.2f} "
            f"{found:>13} {r['false_alarms_per_day']:>7.2f} {shares:>27} "
            f"{r['devices_noisy']:>3}/{r['devices']:<2} "
            f"{r['devices_never_alarm']:>3}/{r['devices_labelled']:<3}"
        )
    print(
        "\nevents found: labelled anomaly events with a flag inside; FA/day: false-alarm "
        "episodes per device-day;\nnoisy: devices alarmed on more than 5 % of their normal "
        "windows; silent: devices with labelled anomalies that never alarm"
    )


def main(argv: list[str] | None = None, source: str = "csv") -> int:
    """``source``: csv (labelled CSV files) or topic (a Kafka topic of the job's events,
    labelled by their is_anomaly field)."""
    from query.retrain import add_since_argument

    settings = Settings.from_env()
    p = argparse.ArgumentParser(
        prog=f"python -m training.evaluate {source}",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if source == "csv":
        p.add_argument("paths", nargs="+", type=Path, help="labelled CSV files or folders")
        add_csv_arguments(p, ranges=False)
    else:
        p.add_argument("topic", help="a topic of the job's JSON events (labels: is_anomaly)")
        p.add_argument("--bootstrap", default=settings.kafka_bootstrap, help="(%(default)s)")
    split = p.add_mutually_exclusive_group(required=True)
    split.add_argument(
        "--train-fraction", type=fraction, help="train on the first share of each device's rows"
    )
    split.add_argument("--train-until", type=parse_time, help="train on rows before this time")
    p.add_argument(
        "--model",
        action="append",
        choices=("pca-t2q", "isolation-forest"),
        help="our model(s) to evaluate (default: pca-t2q, the product's default)",
    )
    p.add_argument(
        "--calibration",
        action="append",
        choices=("auto", "out-of-fold", "in-sample"),
        help="where our models' threshold comes from (default: auto, as training does; give "
        "several to compare)",
    )
    p.add_argument(
        "--context-check",
        action="append",
        choices=CONTEXT_CHECKS,
        help="whether our model also checks each window against its recent context (default: "
        "auto, as training does: on for one-metric fleets; give several to compare)",
    )
    p.add_argument("--gaussian-rows", type=int, default=GAUSSIAN_ROWS, help="(default: 288)")
    p.add_argument("--json-out", type=Path, help=f"(default: .state/eval/{source}.json)")
    p.add_argument(
        "--windows-out",
        type=Path,
        help="also write our models' scored windows to this CSV: each window's label, flag, "
        "score over the threshold and each reading over its bar (which labelled windows were "
        "missed, and how near they came)",
    )
    p.add_argument(
        "--retrain-every",
        type=duration_seconds,
        metavar="DURATION",
        help="also evaluate the default model retrained on a schedule, as POST /retrain every "
        "DURATION (e.g. 7d) would (each candidate on --retrain-since, checked as a retraining "
        "is; flagged windows left out)",
    )
    add_since_argument(p, "--retrain-since", "the span each scheduled retraining fits")
    a = p.parse_args(argv)
    if source == "csv" and a.label_column is None:
        p.error("--label-column is needed: evaluation compares flags with labels")
    json_out = a.json_out or settings.state_dir / "eval" / f"{source}.json"

    def log(message: str) -> None:
        print(f"evaluate: {message}", file=sys.stderr, flush=True)

    try:
        from common.features import CATALOGUE

        if source == "csv":
            datasets = read_datasets(a.paths, options_from_args(a), CATALOGUE.source_columns)
            where = [str(path) for path in a.paths]
        else:
            datasets = datasets_from_topic(a.bootstrap, a.topic, CATALOGUE.metric_names, log)
            where = [f"kafka {a.bootstrap} topic {a.topic}"]
        report = evaluate_csv(
            settings,
            datasets,
            where,
            train_until=None if a.train_until is None else int(a.train_until.timestamp() * 1000),
            train_share=a.train_fraction,
            models=tuple(a.model or ("pca-t2q",)),
            calibrations=tuple(a.calibration or ("auto",)),
            context_checks=tuple(a.context_check or ("auto",)),
            gaussian_rows=a.gaussian_rows,
            windows_out=a.windows_out,
            retrain=None if a.retrain_every is None else (a.retrain_every, a.retrain_since),
            log=log,
        )
    except (EvaluationError, DatasetError, TrainingDataError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    print_table(report)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nevaluate: results in {json_out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
