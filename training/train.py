"""Train the anomaly model from history and export it to ONNX, with its model card.

  python -m training.train --events dump.jsonl                   # a simulator dump
  python -m training.train --csv data/ --label-column anomaly    # CSV dataset(s)
  python -m training.train --postgres --since 2026-11-20T00:00Z  # windows the job stored
  python -m training.train --events dump.jsonl --model pca-t2q   # the other model

Window features are computed by the very Flink SQL the streaming job runs (batch mode over the
events), or read back from the PostgreSQL rows that job wrote, so training sees exactly the
features the stream scores. Windows whose events the source labels anomalous are left out of
the fit. Features are normalised per device; one model serves the whole fleet. The exported
ONNX model must reproduce the scikit-learn/numpy reference within 1e-5 on the training windows
and on held-out perturbed windows, or nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from common.datasets import add_csv_arguments, fraction, options_from_args, parse_time
from common.features import (
    FEATURE_NAMES,
    MODEL_FEATURE_NAMES,
    SCORER_CONTEXT_NAMES,
    context_horizon_of,
)
from common.models import register_quietly, set_current
from common.settings import Settings, duration_seconds
from common.sql import render, strip_comments, window_feature_statements
from training.detectors import (
    CONTEXT_CHECKS,
    ONNX_OPSETS,
    ContextCheckedDetector,
    DetectorParams,
    make_detector,
)
from udfs.calibration import (
    CHANGE_MARGIN,
    CHANGE_Z,
    SPIKE_MARGIN,
    SPIKE_Z,
    STEP_MARGIN,
    STEP_Z,
    USUAL_MIN_WINDOWS,
    ContextCheck,
    DeviceNormaliser,
    PartialWindows,
    Severity,
    spike_bars,
    steady_devices,
)
from udfs.onnx_scorer import CARD_FILE, MODEL_FILE, OnnxModel, context_columns_read

PARITY_TOLERANCE = 1e-5
# Below this many usable windows per model feature, training refuses to fit.
MIN_WINDOWS_PER_FEATURE = 2
MIN_WINDOWS = 20


def windows_needed(features: int) -> int:
    """The fewest complete windows training fits a model of ``features`` features on."""
    return max(MIN_WINDOWS, MIN_WINDOWS_PER_FEATURE * features)


# Windows of training and of held-out data whose scores the card keeps for load-time checks.
SELF_CHECK_ROWS = 4


class TrainingDataError(ValueError):
    """The training input cannot give a trustworthy model; the message says why."""


@dataclass(frozen=True)
class TrainingData:
    features: pd.DataFrame  # device_id, window_start, window_end, FEATURE_NAMES[, labelled_events]
    source: str


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    version: str
    detector: object  # training.detectors.*Detector, fitted
    normaliser: DeviceNormaliser
    severity: Severity
    check: ContextCheck | None = None
    partial: PartialWindows | None = None

    def reference_scores(
        self, device_ids, x: np.ndarray, context: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(score, flag) by scikit-learn/numpy, without ONNX: what the stream must reproduce."""
        score = reference_score(
            self.detector, self.normaliser, self.check, device_ids, x, context, self.partial
        )
        return score, score > self.severity.threshold


def _read_on(bars: dict[str, float | None]) -> str:
    """How many devices a reading with these per-device bars reads (None: not read)."""
    read = sum(b is not None for b in bars.values())
    return f"read on {read:,} of {len(bars):,} devices"


def reference_score(
    detector, normaliser, check, device_ids, x, context=None, partial=None
) -> np.ndarray:
    rows = normaliser.indices(device_ids)
    if partial is not None:
        x = partial.fill(normaliser, rows, x, context)
    z = normaliser.transform_rows(rows, x)
    if check is None:
        return detector.score(z)
    zc = check.transform_rows(normaliser, rows, x, context)
    return check.combine(detector.score(z, zc), detector.threshold, normaliser, rows, x, context)


# --- inputs -----------------------------------------------------------------------------------


def window_features_from_files(settings: Settings, path: Path) -> pd.DataFrame:
    """Window features of a JSONL event file (or folder), by the job's own Flink SQL, with the
    number of events per window that the source labels anomalous."""
    from common.flink_env import create_table_env, to_pandas

    if not path.exists():
        raise FileNotFoundError(f"no events at {path}: make a dump with `python -m simulator`")
    t_env = create_table_env(settings, streaming=False)
    t_env.execute_sql(
        strip_comments(render("flink/events_file.sql", settings, path=path.resolve().as_posix()))
    )
    for statement in window_feature_statements(settings, labelled=True, batch=True):
        t_env.execute_sql(statement)
    return to_pandas(
        t_env.sql_query("SELECT * FROM window_features ORDER BY device_id, window_start")
    )


def window_features_from_csv(settings: Settings, paths: list[Path], options) -> pd.DataFrame:
    """CSV datasets (common/datasets.py rules; the catalogue's metric columns) -> events ->
    the same Flink window features as a simulator dump."""
    from common.datasets import read_datasets
    from common.features import CATALOGUE

    datasets = read_datasets(paths, options, CATALOGUE.source_columns)
    for d in datasets:
        for name, values in d.metrics.items():
            finite = values[np.isfinite(values)]
            if len(finite) == 0:
                raise TrainingDataError(f"{d.device_id}: column for metric {name!r} has no numbers")
    pooled = {
        name: np.concatenate([d.metrics[name] for d in datasets]) for name in datasets[0].metrics
    }
    constant = [n for n, v in pooled.items() if np.nanmin(v) == np.nanmax(v)]
    if constant:
        raise TrainingDataError(
            f"metric(s) {constant} are constant over every row of the dataset: a model cannot "
            f"learn their normal range; use a catalogue without them or more varied data"
        )
    return window_features_of_datasets(settings, datasets)


def window_features_of_datasets(settings: Settings, datasets) -> pd.DataFrame:
    """Window features (with labelled event counts) of datasets (read from CSVs or a topic):
    their rows as the job's JSON events, through the job's Flink SQL in batch."""
    from simulator.replay import events

    with tempfile.TemporaryDirectory(prefix="csv-windows-") as tmp:
        dump = Path(tmp) / "events.jsonl"
        with dump.open("wb") as out:
            for d in datasets:
                for _, _, value in events(d):
                    out.write(value + b"\n")
        return window_features_from_files(settings, dump)


def window_features_from_postgres(
    settings: Settings, since: datetime, until: datetime
) -> pd.DataFrame:
    """Windows the streaming job stored in the scores table, window_start in [since, until).
    Windows the model flagged count as labelled (labelled_events 1): they are left out of
    the fit, so that a retrained model does not learn the anomalies of its history."""
    from psycopg2 import sql

    from common.db import connect

    query = sql.SQL(
        "SELECT device_id, window_start, window_end, {},"
        " CASE WHEN is_anomaly THEN 1 ELSE 0 END AS labelled_events FROM {}"
        " WHERE window_start >= %s AND window_start < %s ORDER BY device_id, window_start"
    ).format(
        sql.SQL(", ").join(sql.Identifier(f) for f in FEATURE_NAMES),
        sql.Identifier(settings.scores_table),
    )
    conn = connect(settings, role="reader")  # a SELECT: the read-only role is enough
    try:
        with conn.cursor() as cur:
            cur.execute(query, (since, until))
            rows = cur.fetchall()
            names = [c.name for c in cur.description]
    finally:
        conn.close()
    frame = pd.DataFrame(rows, columns=names)
    for name in FEATURE_NAMES:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype(np.float64)
    return frame


# --- fitting ----------------------------------------------------------------------------------


def usable_windows(features: pd.DataFrame, source: str, log=print) -> pd.DataFrame:
    """The windows to fit on: complete (every model feature present) and not labelled
    anomalous by the source. Raises TrainingDataError naming what is wrong."""
    missing = [c for c in MODEL_FEATURE_NAMES if c not in features.columns]
    if missing:
        raise TrainingDataError(f"feature columns missing from the training data: {missing}")
    if len(features) == 0:
        raise TrainingDataError(f"{source} holds no windows")
    x = features[list(MODEL_FEATURE_NAMES)].to_numpy(dtype=np.float64)
    complete = np.isfinite(x).all(axis=1)
    never = [
        n
        for n, seen in zip(MODEL_FEATURE_NAMES, np.isfinite(x).any(axis=0), strict=True)
        if not seen
    ]
    if never:
        raise TrainingDataError(
            f"feature(s) {never} are missing (NaN/inf) in every window of {source}: "
            "does the data carry those metrics?"
        )
    labelled = np.zeros(len(features), dtype=bool)
    if "labelled_events" in features.columns:
        labelled = features["labelled_events"].fillna(0).to_numpy() > 0
    keep = complete & ~labelled
    if (~complete).any() or labelled.any():
        log(
            f"training: left out {int((~complete).sum()):,} windows with a missing feature and "
            f"{int((complete & labelled).sum()):,} windows with events labelled anomalous"
        )
    needed = windows_needed(len(MODEL_FEATURE_NAMES))
    if keep.sum() < needed:
        raise TrainingDataError(
            f"only {int(keep.sum())} complete windows in {source}: training needs at least "
            f"{needed} (generate or select a longer history)"
        )
    return features[keep]


def check_parity(
    onnx_model: OnnxModel, device_ids: np.ndarray, x: np.ndarray, reference, context=None
) -> tuple[float, int]:
    """Score ``x`` with the exported model (loaded as the stream loads it) and with the
    reference; returns (largest relative difference, rows compared). Raises when they
    disagree."""
    got = onnx_model.score(device_ids, x, context)
    expected, expected_flag = reference(device_ids, x, context)
    diff = np.abs(got.score - expected) / np.maximum(1.0, np.abs(expected))
    worst = float(np.max(diff)) if len(x) else 0.0
    # Flags must agree wherever the reference score is not within the tolerance of the
    # threshold (there, float rounding may decide).
    clear = np.abs(expected - onnx_model.threshold) > PARITY_TOLERANCE
    flags_agree = np.array_equal(got.flag[clear].astype(bool), expected_flag[clear])
    if worst > PARITY_TOLERANCE or not flags_agree:
        raise RuntimeError(
            f"exported ONNX model disagrees with the reference (largest relative score "
            f"difference {worst:.3g}, flags agree: {flags_agree}); the model was not installed"
        )
    return worst, len(x)


def held_out_rows(
    device_ids: np.ndarray, x: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Windows the model never saw: training windows with every feature jittered by up to 3
    of its fleet standard deviations, half of them from a device it does not know."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(x), size=min(len(x), 2000), replace=False)
    sd = x.std(axis=0)
    rows = x[pick] + rng.uniform(-3, 3, size=(len(pick), x.shape[1])) * sd
    ids = device_ids[pick].astype(object)
    ids[: len(ids) // 2] = "__held-out-unknown-device__"
    return ids, rows


def calibration_of(params, device_ids: np.ndarray, features: int) -> str:
    """The calibration ``params`` asks for, with "auto" decided by the windows per device per
    feature (training.detectors.AUTO_WINDOWS_PER_FEATURE)."""
    from training.detectors import AUTO_WINDOWS_PER_FEATURE

    if params.calibration != "auto":
        return params.calibration
    _, counts = np.unique(np.asarray(device_ids).astype(str), return_counts=True)
    few = np.median(counts) < AUTO_WINDOWS_PER_FEATURE * features
    return "out-of-fold" if few else "in-sample"


def context_check_of(params, feature_names, context_names) -> ContextCheck | None:
    """The context check ``params`` asks for (training.detectors.CONTEXT_CHECKS), planned on
    these features, or None. "auto": on for pca-t2q over a single metric."""
    planned = ContextCheck.plan(feature_names, context_names)
    if params.context_check == "off":
        return None
    if planned is None:
        if params.context_check == "on":
            raise TrainingDataError(
                "a context check needs each metric's context (avg and sd over the longest "
                "horizon) beside its window mean: set ANOMALY_CONTEXT_HORIZONS (or 'auto')"
            )
        return None
    if params.context_check == "on":
        return planned
    return planned if params.model == "pca-t2q" and one_metric(feature_names) else None


def one_metric(feature_names) -> bool:
    """Whether the model features are of one metric (``<metric>_<aggregate>``)."""
    return len({name.rpartition("_")[0] for name in feature_names}) == 1


def out_of_fold_scores(
    device_ids: np.ndarray, x: np.ndarray, params, zero_inflated: bool = False
) -> np.ndarray | None:
    """Scores of windows under models that did not see them: each device's windows in
    CALIBRATION_FOLDS random blocks (seeded); block k of every device is scored by a model
    (normaliser, fitted as the model's is, and detector) fitted on the rest. None when no
    device has enough windows to hold any out."""
    from training.detectors import CALIBRATION_FOLDS

    ids = np.asarray(device_ids).astype(str)
    rng = np.random.default_rng(params.random_state)
    fold = np.full(len(ids), -1)
    for device in np.unique(ids):
        rows = np.flatnonzero(ids == device)
        if len(rows) >= 2 * CALIBRATION_FOLDS:
            fold[rows] = rng.permutation(np.arange(len(rows)) * CALIBRATION_FOLDS // len(rows))
    if (fold < 0).all():
        return None
    scores = []
    for k in range(CALIBRATION_FOLDS):
        held, rest = fold == k, fold != k
        normaliser = DeviceNormaliser.fit(ids[rest], x[rest], zero_inflated=zero_inflated)
        detector = make_detector(params).fit(normaliser.transform(ids[rest], x[rest]))
        scores.append(detector.score(normaliser.transform(ids[held], x[held])))
    return np.concatenate(scores)


def fitted_detector(device_ids, x, z, params, calibration: str, zero_inflated: bool = False):
    """The detector fitted on normalised ``z`` (of raw ``x``, normalised with
    ``zero_inflated``), its threshold raised to the out-of-fold one where ``calibration`` says
    so; returns (detector, out-of-fold threshold or None)."""
    detector = make_detector(params).fit(z)
    held_out_threshold = None
    if calibration == "out-of-fold":
        held_out = out_of_fold_scores(device_ids, x, params, zero_inflated)
        if held_out is not None:
            held_out_threshold = float(np.quantile(held_out, 1.0 - params.contamination))
            detector.threshold = max(detector.threshold, held_out_threshold)
    return detector, held_out_threshold


def version_of(onnx_bytes: bytes, scoring_card: dict) -> str:
    """Content hash of everything that decides a score: the graph and the card's scoring
    part. Same data, same parameters, same seed -> same version."""
    h = hashlib.sha256(onnx_bytes)
    h.update(json.dumps(scoring_card, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()[:12]


def train(
    settings: Settings,
    data: TrainingData | Path,
    params: DetectorParams | None = None,
    *,
    make_current: bool = True,
    log=print,
) -> TrainResult:
    """Fit the model on window features (computed from a dump, or given) and install it."""
    began = time.monotonic()
    params = params or DetectorParams()
    if isinstance(data, Path):
        log(f"training: computing {settings.window_seconds} s window features of {data} with Flink")
        data = TrainingData(window_features_from_files(settings, data), str(data))
    fit_windows = usable_windows(data.features, data.source, log)
    has_context = set(SCORER_CONTEXT_NAMES) <= set(fit_windows.columns)
    result = fit_model(
        fit_windows["device_id"].astype(str).to_numpy(dtype=object),
        fit_windows[list(MODEL_FEATURE_NAMES)].to_numpy(dtype=np.float64),
        feature_names=MODEL_FEATURE_NAMES,
        context=fit_windows[list(SCORER_CONTEXT_NAMES)].to_numpy(dtype=np.float64)
        if has_context
        else None,
        context_names=SCORER_CONTEXT_NAMES,
        window_seconds=settings.window_seconds,
        params=params,
        models_dir=settings.models_dir,
        training={
            "source": data.source,
            "windows_read": len(data.features),
            "first_window_start": str(fit_windows["window_start"].min()),
            "last_window_start": str(fit_windows["window_start"].max()),
        },
        extra_card={"all_window_features": list(FEATURE_NAMES)},
        log=log,
    )
    if make_current:
        set_current(settings, result.version)
    log(
        f"training: model {result.version} "
        f"{'is now CURRENT' if make_current else 'not made current'}; "
        f"{time.monotonic() - began:.1f} s in all"
    )
    return result


def fit_model(
    device_ids: np.ndarray,
    x: np.ndarray,
    *,
    feature_names: tuple[str, ...],
    window_seconds: int,
    params: DetectorParams,
    models_dir: Path,
    training: dict,
    extra_card: dict | None = None,
    context: np.ndarray | None = None,
    context_names: tuple[str, ...] = (),
    log=print,
) -> TrainResult:
    """Normalise per device, fit, calibrate, export to ONNX, check parity and write
    ``models_dir/<version>/{model.onnx,card.json}``. The core of every training input (and of
    the SKAB evaluation, with its own features)."""
    import onnx
    import onnxruntime
    import sklearn

    constant = [n for n, lo, hi in zip(feature_names, x.min(0), x.max(0), strict=True) if lo == hi]
    no_context = sorted({h for h in map(context_horizon_of, constant) if h})
    if no_context:
        raise TrainingDataError(
            f"context horizon(s) {no_context}: their features never vary in the training "
            "windows (each device's history is a single window, or its metrics never move); "
            "a model fitted so would alarm on any context later. Train on a longer history, "
            "or keep the horizon out of the model with ANOMALY_CONTEXT_MODELLED (the job must "
            "then run with the same value)"
        )
    zero_inflated = one_metric(feature_names)
    normaliser = DeviceNormaliser.fit(device_ids, x, zero_inflated=zero_inflated)
    # Where many metrics share the model, windows of few samples are judged on their level
    # (fitted and scored so too); one-metric catalogues read the count in their context check.
    device_rows = normaliser.indices(device_ids)
    partial = None
    if not one_metric(feature_names):
        partial = PartialWindows.fit(
            feature_names, context_names, len(normaliser.devices), device_rows, context
        )
    raw_x = x  # the self-check and parity rows, which the scoring fills as it does
    if partial is not None:
        x = partial.fill(normaliser, device_rows, x, context)
    z = normaliser.transform_rows(device_rows, x)
    if constant:
        log(
            "training: features constant over all training windows (any change scores as "
            f"unseen behaviour): {constant}"
        )
    log(
        f"training: {len(x):,} windows x {x.shape[1]} features from "
        f"{len(normaliser.devices):,} devices; fitting {params.model} {params.card()}"
    )
    calibration = calibration_of(params, device_ids, x.shape[1])
    detector, held_out_threshold = fitted_detector(
        device_ids, x, z, params, calibration, zero_inflated
    )
    check = context_check_of(params, feature_names, context_names)
    if check is not None:
        # The spread reading waits for a quarter of its horizon's windows in the context.
        horizon = duration_seconds(context_horizon_of(context_names[0]))
        spread_min_windows = max(1, horizon // window_seconds // 4)
        # The stuck reading waits for half its (the shortest) horizon's windows, on the devices
        # whose training values do not repeat.
        stuck_min_windows, stuck_devices = 0, None
        for jm, _, _, n, _, _ in check.stuck:
            recent = duration_seconds(context_horizon_of(check.columns[n]))
            stuck_min_windows = max(2, recent // window_seconds // 2)
            steady = set(steady_devices(device_ids, x[:, jm]))
            stuck_devices = steady if stuck_devices is None else stuck_devices & steady

        # The spike, step and change readings' bars per device, from its training windows'
        # readings (None: a reading the check does not read).
        def bars_of(columns, statistics, least: float, margin: float):
            if not columns or context is None:
                return None
            readings = np.fmax.reduce(statistics())
            return spike_bars(device_ids, readings, least, margin)

        # The readings as scoring reads them, in training too: the step and change readings
        # wait for USUAL_MIN_WINDOWS windows in their horizon (a training part's first windows
        # read against a window or two); a spike reading of few samples is scaled to one of
        # SPIKE_FULL_SAMPLES, its floor the device's typical std where no recent one is known.
        check = dataclasses.replace(
            check,
            usual_min_windows=USUAL_MIN_WINDOWS,
            spike_count_scaled=True,
            spike_typical_floor=True,
        )
        bars = bars_of(
            check.spike,
            lambda: check.spike_statistics(normaliser, device_rows, x, context),
            SPIKE_Z,
            SPIKE_MARGIN,
        )
        step_bars = bars_of(check.step, lambda: check.step_statistics(context), STEP_Z, STEP_MARGIN)
        change_bars = bars_of(
            check.change, lambda: check.change_statistics(context), CHANGE_Z, CHANGE_MARGIN
        )
        xc = check.read(normaliser, device_rows, x, context)
        check = check.fitted(
            DeviceNormaliser.fit(device_ids, xc, zero_inflated=zero_inflated),
            spread_min_windows,
            stuck_min_windows,
            stuck_devices or (),
            bars,
            step_bars,
            change_bars,
        )
        zc = check.normaliser.transform(device_ids, xc)
        context_detector, _ = fitted_detector(
            device_ids, xc, zc, params, calibration, zero_inflated
        )
        detector = ContextCheckedDetector(detector, context_detector)
        spread = (
            f"; or where a window's std is {check.spread_z:g} of its recent spreads out, or "
            f"it is flat where they sit {check.flat_z:g} of their spread above 0 (once "
            f"{spread_min_windows} windows are in its context)"
            if check.spread
            else ""
        )
        if check.season:
            spread += (
                f"; or where its mean's residual against the same time of the week or day is "
                f"{check.season_z:g} of its recent spread out"
                + (
                    f" (windows of at most {check.season_max_samples:g} samples)"
                    if any(n >= 0 for _, _, n in check.season)
                    else ""
                )
            )
        if check.level:
            many = any(c >= 0 for *_, c in check.level)
            spread += (
                f"; or where its mean is {check.level_z:g} of its recent windows' spread from "
                f"their level ("
                + (
                    f"{check.level_many_z:g} in windows of more than "
                    f"{check.season_max_samples:g} samples; "
                    if many
                    else ""
                )
                + f"once {spread_min_windows} windows are in its context)"
            )
        if check.stuck:
            spread += (
                f"; or where its value has not moved over more than {stuck_min_windows} recent "
                f"windows (on the {len(check.stuck_devices):,} of "
                f"{len(normaliser.devices):,} devices whose training values do not repeat)"
            )
        if check.spike_bars:
            spread += (
                f"; or where one sample is far from the rest of its window (at least "
                f"{SPIKE_Z:g} of their spread, higher for devices whose training windows held such "
                f"samples; {_read_on(check.spike_bars)})"
            )
        if check.step_bars:
            spread += (
                f"; or where a step between consecutive samples is at least {STEP_Z:g} of the "
                f"recent windows' usual step (higher for devices whose training windows held "
                f"such steps; once {USUAL_MIN_WINDOWS} windows are in its context; "
                f"{_read_on(check.step_bars)})"
            )
        if check.spike_bars and check.step_bars:
            spread += (
                f"; or where both of the last two are at {check.spike_step_share:g} of their "
                f"bars or more"
            )
        if check.change_bars:
            spread += (
                f"; or where a window of one sample moved from the window before by at least "
                f"{CHANGE_Z:g} of the recent windows' usual change (higher for devices whose "
                f"training windows held such changes; once {USUAL_MIN_WINDOWS} windows are in "
                f"its context; {_read_on(check.change_bars)})"
            )
        log(
            f"training: context check on ({check.columns}): flagged where both readings pass "
            f"{detector.threshold:g} of their thresholds{spread}"
        )
        train_scores = check.combine(
            detector.score(z, zc), detector.threshold, normaliser, device_rows, x, context
        )
    else:
        train_scores = detector.score(z)
    severity = Severity.fit(train_scores, detector.threshold)
    onnx_bytes = detector.to_onnx().SerializeToString()
    scoring = {
        "model": params.model,
        "feature_names": list(feature_names),
        "window_seconds": window_seconds,
        "normalisation": normaliser.to_card(),
        "calibration": {
            **severity.to_card(),
            "threshold_quantile": 1.0 - params.contamination,
        },
    }
    if check is not None:
        scoring["context_check"] = check.to_card(feature_names)
    if partial is not None:
        scoring["partial_windows"] = partial.to_card(normaliser)
    version = version_of(onnx_bytes, scoring)
    card = {
        "version": version,
        **scoring,
        "params": params.card(),
        "detector": detector.card(),
        **(extra_card or {}),
        "score": "higher is more anomalous; flagged above calibration.threshold (severity 50)",
        "training": {
            **training,
            "windows": len(x),
            "devices": len(normaliser.devices),
            "constant_features": constant,
            "flagged_share": float(np.mean(train_scores > detector.threshold)),
            "calibration": calibration,
            "out_of_fold_threshold": held_out_threshold,
            "context_check": check is not None,
            "score_quantiles": {
                q: float(np.quantile(train_scores, float(q)))
                for q in ("0.5", "0.9", "0.99", "0.999", "1.0")
            },
        },
        "onnx_opsets": ONNX_OPSETS,
        "libraries": {
            "scikit-learn": sklearn.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    held_ids, held_x = held_out_rows(device_ids, raw_x, params.random_state)
    # What every load of this version checks (udfs/onnx_scorer.py): the graph file is this
    # one, and it reproduces the reference scores of a few training and held-out windows.
    card["model_sha256"] = hashlib.sha256(onnx_bytes).hexdigest()
    check_ids = np.concatenate([device_ids[:SELF_CHECK_ROWS], held_ids[:SELF_CHECK_ROWS]])
    check_x = np.vstack([raw_x[:SELF_CHECK_ROWS], held_x[:SELF_CHECK_ROWS]])
    check_context = None
    reads_context = context_columns_read(check, partial) != ()
    if reads_context and context is not None:
        # Training rows with their context, held-out rows without (the fallback).
        rows = min(SELF_CHECK_ROWS, len(held_x))
        check_context = np.vstack(
            [context[:SELF_CHECK_ROWS], np.full((rows, context.shape[1]), np.nan)]
        )
    card["self_check"] = {
        "device_ids": [str(d) for d in check_ids],
        "features": check_x.tolist(),
        "scores": reference_score(
            detector, normaliser, check, check_ids, check_x, check_context, partial
        ).tolist(),
    }
    if check_context is not None:
        # JSON has no NaN: a missing context value is null.
        card["self_check"]["context"] = [
            [v if np.isfinite(v) else None for v in row] for row in check_context.tolist()
        ]
    model_dir = models_dir / version
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / MODEL_FILE).write_bytes(onnx_bytes)
    (model_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")

    result = TrainResult(model_dir, version, detector, normaliser, severity, check, partial)
    try:
        exported = OnnxModel.load(model_dir, feature_names)
        train_diff, _ = check_parity(
            exported, device_ids, raw_x, result.reference_scores, context if reads_context else None
        )
        held_diff, held_n = check_parity(exported, held_ids, held_x, result.reference_scores)
    except Exception:
        for f in (MODEL_FILE, CARD_FILE):
            (model_dir / f).unlink(missing_ok=True)
        model_dir.rmdir()
        raise
    card["parity"] = {
        "tolerance": PARITY_TOLERANCE,
        "max_relative_diff_training": train_diff,
        "max_relative_diff_held_out": held_diff,
        "held_out_rows": held_n,
    }
    (model_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    log(
        f"training: model {version} ({params.model}) written to {model_dir}: threshold "
        f"{severity.threshold:.4g}, {card['training']['flagged_share']:.3%} of training windows "
        f"flagged, parity {max(train_diff, held_diff):.2g}"
    )
    return result


# --- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import psycopg2

    defaults = DetectorParams()
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--events", type=Path, help="JSONL event dump (file or folder)")
    source.add_argument(
        "--csv", type=Path, nargs="+", help="CSV files or folders (one device each)"
    )
    source.add_argument(
        "--postgres", action="store_true", help="windows stored by the job in PostgreSQL"
    )
    add_csv_arguments(
        p, ranges=False, description="--csv input; windows with labelled rows are not fitted"
    )
    span = p.add_argument_group("time range of the training data")
    span.add_argument(
        "--since", type=parse_time, help="--csv: first row; --postgres: first window_start"
    )
    span.add_argument(
        "--until",
        type=parse_time,
        help="--csv: rows before this; --postgres: window_start before this (default now)",
    )
    span.add_argument(
        "--fraction",
        type=fraction,
        help="--csv: the first share (0-1) of each device's rows (after --since/--until), "
        "e.g. 0.15",
    )
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=("isolation-forest", "pca-t2q"), default=defaults.model)
    m.add_argument(
        "--contamination",
        type=float,
        default=defaults.contamination,
        help="share of training windows above the threshold (default: %(default)s)",
    )
    m.add_argument(
        "--n-estimators",
        type=int,
        default=defaults.n_estimators,
        help="isolation-forest trees (default: %(default)s)",
    )
    m.add_argument(
        "--pca-variance",
        type=float,
        default=defaults.pca_variance,
        help="pca-t2q: variance share the kept components explain (default: %(default)s)",
    )
    m.add_argument(
        "--calibration",
        choices=("auto", "out-of-fold", "in-sample"),
        default=defaults.calibration,
        help="threshold from held-out training windows too, or only from the fitted ones; "
        "auto: held-out ones too when devices have fewer than 10 windows per feature "
        "(default: %(default)s)",
    )
    m.add_argument(
        "--context-check",
        choices=CONTEXT_CHECKS,
        default=defaults.context_check,
        help="flag a window only when it is also out of the ordinary against its device's "
        "recent context (the longest context horizon): a benign level shift then stops "
        "alarming; auto: on for pca-t2q over a one-metric catalogue (default: %(default)s)",
    )
    m.add_argument("--seed", type=int, default=defaults.random_state, help="(default: %(default)s)")
    p.add_argument(
        "--no-current", action="store_true", help="write the version but do not make it CURRENT"
    )
    a = p.parse_args(argv)
    if a.postgres and a.since is None:
        p.error("--postgres needs --since")
    if a.fraction is not None and not a.csv:
        p.error("--fraction applies to --csv input")
    if a.events and (a.since or a.until):
        p.error("--since/--until apply to --csv and --postgres input")
    settings = Settings.from_env()
    try:
        params = DetectorParams(
            model=a.model,
            contamination=a.contamination,
            random_state=a.seed,
            n_estimators=a.n_estimators,
            pca_variance=a.pca_variance,
            calibration=a.calibration,
            context_check=a.context_check,
        )
        if a.events:
            data: TrainingData | Path = a.events
        elif a.csv:
            print(f"training: reading CSV {[str(c) for c in a.csv]}", flush=True)
            options = options_from_args(a)
            features = window_features_from_csv(settings, a.csv, options)
            data = TrainingData(
                features, f"{' '.join(str(c) for c in a.csv)} ({options.describe_range()})"
            )
        else:
            until = a.until or datetime.now(UTC)
            features = window_features_from_postgres(settings, a.since, until)
            data = TrainingData(
                features,
                f"PostgreSQL {settings.scores_table} window_start in [{a.since.isoformat()}, "
                f"{until.isoformat()})",
            )
        result = train(settings, data, params, make_current=not a.no_current)
        register_quietly(settings, result.version, current=not a.no_current)
    except (FileNotFoundError, ValueError, RuntimeError, psycopg2.Error) as exc:
        print(f"training: failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
