"""Vectorized (pandas) Flink UDF that scores window features with an ONNX anomaly model.

The model and its card are loaded once per Python worker in ``open()``; each call scores a
whole Arrow batch of windows with one onnxruntime run: features normalised per device, the
graph's score, the card's threshold and severity calibration (udfs/calibration.py), and for
flagged windows an explanation (which metrics made the score, actual against typical).

Hot reload: unless the job pins a model folder, the UDF follows the models folder's CURRENT
pointer. It re-reads the pointer at most every ``reload_seconds`` (on the next batch) and
switches to a new version between two batches: no window is skipped or scored twice, and
every row names the version that scored it. A version that fails to load or fails its card's
checks (file checksum, self-check scores) is refused: the old model keeps scoring, the error
is logged and counted (metric ``model_load_failures``), and it is retried only when the
pointer or the version's files change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

from udfs.calibration import (
    CalibrationError,
    ContextCheck,
    DeviceNormaliser,
    PartialWindows,
    Severity,
)

if TYPE_CHECKING:
    # The workers import pandas where they score; the job's client (which plans the job and
    # imports this module for the UDF's declaration) never needs it: 0.2 s of its start-up.
    import pandas as pd

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
CARD_FILE = "card.json"

# What score_window returns per window: (name, Flink SQL type).
SCORE_RESULT_COLUMNS = (
    ("anomaly_score", "DOUBLE"),
    ("severity", "DOUBLE"),
    ("is_anomaly", "BOOLEAN"),
    ("model_version", "STRING"),
    # False for a device the model has no statistics of its own for (scored with the
    # fleet's): new devices are scored from their first window, and marked.
    ("known_device", "BOOLEAN"),
    # Flagged windows only (NULL otherwise): the metric that contributes most, and a JSON
    # array of the top metrics (see OnnxModel.explain).
    ("top_metric", "STRING"),
    ("explanation", "STRING"),
)
SCORE_RESULT_FIELDS = tuple(name for name, _ in SCORE_RESULT_COLUMNS)
_DATA_TYPES = {"DOUBLE": DataTypes.DOUBLE, "BOOLEAN": DataTypes.BOOLEAN, "STRING": DataTypes.STRING}
SCORE_RESULT_TYPE = DataTypes.ROW(
    [DataTypes.FIELD(name, _DATA_TYPES[sql]()) for name, sql in SCORE_RESULT_COLUMNS]
)
# The same row type in Flink SQL (a job with scoring off writes CAST(NULL AS <this>)).
SCORE_RESULT_SQL_TYPE = "ROW<" + ", ".join(f"`{n}` {t}" for n, t in SCORE_RESULT_COLUMNS) + ">"

# Metrics named in an explanation, at most.
EXPLAIN_TOP = 3
# Relative score difference the card's self-check tolerates (the training parity tolerance).
SELF_CHECK_TOLERANCE = 1e-5


class ModelCardError(ValueError):
    """The model directory does not hold a model this job can use."""


@dataclass(frozen=True)
class Scores:
    score: np.ndarray  # raw model score, higher = more anomalous; NaN where not scored
    severity: np.ndarray  # 0-100; NaN where not scored
    flag: np.ndarray  # object array of True / False / None (not scored)
    known_device: np.ndarray  # bool: the device had its own normalisation in training
    top_metric: np.ndarray  # object array: str for flagged rows, else None
    explanation: np.ndarray  # object array: JSON text for flagged rows, else None


def feature_metric(feature: str) -> str:
    """The metric a feature describes: features (window aggregates and context statistics)
    are named ``<metric>_<aggregate>`` (common/features.py), the aggregate part holding no
    underscore."""
    return feature.rsplit("_", 1)[0]


def columns_by_metric(feature_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The column indices of each metric's features, in order."""
    metrics: dict[str, list[int]] = {}
    for j, name in enumerate(feature_names):
        metrics.setdefault(feature_metric(name), []).append(j)
    return {m: np.array(cols) for m, cols in metrics.items()}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def context_columns_read(
    check: ContextCheck | None, partial: PartialWindows | None
) -> tuple[int, ...] | None:
    """The context columns a model's scores depend on: None for all of them (a context-checked
    model), the sample count's alone for a model of windows of few samples, () for none."""
    if check is not None:
        return None
    return () if partial is None else (partial.column,)


@dataclass
class OnnxModel:
    """An exported anomaly model: ONNX graph + card (version, feature order, per-device
    normalisation, threshold and severity calibration)."""

    version: str
    model_kind: str
    feature_names: tuple[str, ...]
    window_seconds: int
    normaliser: DeviceNormaliser
    severity: Severity
    session: object  # onnxruntime.InferenceSession
    input_dtype: type
    # A context-checked model's second reading (its graph has the input XC beside X).
    check: ContextCheck | None = None
    # Windows of few samples judged on their level (where many metrics share the model).
    partial: PartialWindows | None = None

    @property
    def reads_context(self) -> bool:
        """Whether scores depend on the job's context columns (else they need not be passed)."""
        return self.context_read != ()

    @property
    def context_read(self) -> tuple[int, ...] | None:
        """The context columns the scores depend on (see context_columns_read)."""
        return context_columns_read(self.check, self.partial)

    @property
    def threshold(self) -> float:
        return self.severity.threshold

    @classmethod
    def load(
        cls,
        model_dir: Path | str,
        expected_features: Sequence[str],
        window_seconds: int | None = None,
        context_names: Sequence[str] | None = None,
    ) -> OnnxModel:
        """Load a model version and run its card's checks: the features and window it was
        trained on (and, for a context-checked model, the context columns: those the job
        passes, ``context_names``), the checksum of model.onnx, and the self-check rows,
        whose scores the loaded graph must reproduce. Raises ModelCardError saying what is
        wrong."""
        import onnxruntime as ort

        model_dir = Path(model_dir)
        card_path = model_dir / CARD_FILE
        try:
            card = json.loads(card_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelCardError(f"cannot read model card {card_path}: {exc}") from exc
        if not isinstance(card, dict):
            raise ModelCardError(f"model card {card_path} is not a JSON object")
        features = tuple(card.get("feature_names", ()))
        if features != tuple(expected_features):
            raise ModelCardError(
                f"model {model_dir} was trained on features {list(features)}, but the job "
                f"computes {list(expected_features)}: retrain with `make train`"
            )
        if window_seconds is not None and card.get("window_seconds") != window_seconds:
            raise ModelCardError(
                f"model {model_dir} was trained on {card.get('window_seconds')} s windows, "
                f"the job uses {window_seconds} s: retrain with `make train`"
            )
        for key in ("version", "normalisation", "calibration", "model_sha256", "self_check"):
            if key not in card:
                raise ModelCardError(
                    f"model card {card_path} has no {key!r} (written by an older training): "
                    "retrain with `make train`"
                )
        try:
            normaliser = DeviceNormaliser.from_card(card["normalisation"], len(features))
            severity = Severity.from_card(card["calibration"])
            check = None
            if card.get("context_check") is not None:
                check = ContextCheck.from_card(card["context_check"], features)
            partial = None
            if card.get("partial_windows") is not None:
                partial = PartialWindows.from_card(card["partial_windows"], features, normaliser)
        except CalibrationError as exc:
            raise ModelCardError(f"model card {card_path}: {exc}") from exc
        if check is not None and context_names is not None:
            if tuple(check.columns) != tuple(context_names):
                raise ModelCardError(
                    f"model {model_dir} checks windows against the context "
                    f"{list(check.columns)}, but the job computes {list(context_names)} "
                    "(other horizons or metrics, or a job of a later version): retrain with "
                    "`make train`"
                )
        if partial is not None and context_names:  # the job's columns (none: no context)
            names = tuple(context_names)
            if partial.column >= len(names) or names[partial.column] != partial.name:
                raise ModelCardError(
                    f"model {model_dir} reads the window's sample count as context column "
                    f"{partial.column} ({partial.name}), but the job computes {list(names)} "
                    "(a job of another version): retrain with `make train`"
                )
        model_path = model_dir / MODEL_FILE
        try:
            digest = file_sha256(model_path)
        except OSError as exc:
            raise ModelCardError(f"cannot read {model_path}: {exc}") from exc
        if digest != card["model_sha256"]:
            raise ModelCardError(
                f"{model_path} is not the file its card describes (sha256 {digest[:12]}…, "
                f"card {str(card['model_sha256'])[:12]}…): a copy was cut short or changed; "
                "copy the version folder again or retrain"
            )
        options = ort.SessionOptions()
        # One intra-op thread: Flink already runs one Python worker per slot, and extra
        # threads only contend for the same cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                str(model_path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelCardError(f"cannot load {model_path}: {exc}") from exc
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if "X" not in inputs or "score" not in outputs or (check is not None) != ("XC" in inputs):
            raise ModelCardError(
                f"{model_path} lacks the input 'X' or the output 'score' that every exported "
                "model has, or its context input 'XC' does not match its card: retrain with "
                "`make train`"
            )
        input_dtype = np.float64 if inputs["X"].type == "tensor(double)" else np.float32
        model = cls(
            str(card["version"]),
            str(card.get("model", "?")),
            features,
            int(card["window_seconds"]),
            normaliser,
            severity,
            session,
            input_dtype,
            check,
            partial,
        )
        model.self_check(card["self_check"], card_path)
        return model

    def self_check(self, check: dict, card_path: Path) -> None:
        """Score the card's self-check windows; the scores must equal those training computed
        with the reference implementation."""
        try:
            ids = np.asarray(check["device_ids"], dtype=object)
            x = np.asarray(check["features"], dtype=np.float64).reshape(len(ids), -1)
            expected = np.asarray(check["scores"], dtype=np.float64)
            context = None
            if check.get("context") is not None:
                context = np.array(check["context"], dtype=np.float64).reshape(len(ids), -1)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelCardError(f"model card {card_path}: self_check is malformed: {exc}") from exc
        if len(ids) == 0 or x.shape[1] != len(self.feature_names) or len(expected) != len(ids):
            raise ModelCardError(f"model card {card_path}: self_check does not fit the model")
        # Scored as the stream scores (with a context check's spread reading too).
        got = self.score(ids, x, context).score
        diff = np.abs(got - expected) / np.maximum(1.0, np.abs(expected))
        if not np.all(diff <= SELF_CHECK_TOLERANCE):
            raise ModelCardError(
                f"model {self.version} fails its card's self-check: scores differ by up to "
                f"{np.nanmax(diff):.3g} (tolerance {SELF_CHECK_TOLERANCE:g}); retrain"
            )

    def readings(self, rows: np.ndarray, x: np.ndarray, context: np.ndarray | None):
        """The graph's inputs for complete rows ``x`` of device ``rows``: the normalised
        features, and for a context-checked model their normalised context reading (else
        None)."""
        z = self.normaliser.transform_rows(rows, x)
        if self.check is None:
            return z, None
        return z, self.check.transform_rows(self.normaliser, rows, x, context)

    def raw_scores(self, z: np.ndarray, zc: np.ndarray | None = None) -> np.ndarray:
        """The graph's score of normalised, complete rows (and their context reading)."""
        feed = {"X": np.ascontiguousarray(z, self.input_dtype)}
        if zc is not None:
            feed["XC"] = np.ascontiguousarray(zc, self.input_dtype)
        (out,) = self.session.run(["score"], feed)
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def score(
        self, device_ids: Sequence[str], features: np.ndarray, context: np.ndarray | None = None
    ) -> Scores:
        """Score, severity, flag and explanation of each row (one device's window per row).

        Rows are normalised by their device's training statistics, then scored by the ONNX
        graph; the card's threshold flags them and its calibration gives the severity. A row
        with a missing (NaN) feature is not scored: score and severity NaN, flag None (NULL in
        SQL), rather than a guess either way. Flagged rows are explained (``explain``).
        ``context``: the job's context columns (SCORER_CONTEXT_NAMES) of each row, read by a
        context-checked model (missing: the device's training level instead).
        """
        return self._score(device_ids, features, context)

    def score_and_parts(
        self, device_ids: Sequence[str], features: np.ndarray, context: np.ndarray | None = None
    ) -> tuple[Scores, dict[str, np.ndarray]]:
        """``score``, and what each row's score is made of, every figure over its own bar
        (above 1: flagged): the model's own score over the threshold ("model") and each
        reading of the context check by name (ContextCheck.readings; none without a check);
        NaN where a row is not scored. The score is the largest of them times the threshold
        (ContextCheck.fold)."""
        parts: dict[str, np.ndarray] = {"model": np.full(len(features), np.nan)}
        return self._score(device_ids, features, context, parts), parts

    # Windows of extreme values overflow the normalised features (they score +inf): no numpy
    # warning per batch in the TaskManager's log.
    @np.errstate(over="ignore", invalid="ignore", divide="ignore")
    def _score(
        self, device_ids: Sequence[str], features: np.ndarray, context, parts=None
    ) -> Scores:
        """``score``; ``parts``, a dict: filled as ``score_and_parts`` says."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected a 2-D array with {len(self.feature_names)} columns, got {x.shape}"
            )
        if len(device_ids) != len(x):
            raise ValueError(f"{len(device_ids)} device ids for {len(x)} rows")
        scores = np.full(len(x), np.nan)
        flags = np.full(len(x), None, dtype=object)
        top = np.full(len(x), None, dtype=object)
        explanation = np.full(len(x), None, dtype=object)
        rows = self.normaliser.indices(device_ids)
        if self.partial is not None:
            x = self.partial.fill(self.normaliser, rows, x, context)
        complete = np.isfinite(x).all(axis=1)
        if complete.any():
            c = None if context is None else np.asarray(context, dtype=np.float64)[complete]
            z, zc = self.readings(rows[complete], x[complete], c)
            # A window so far out that its normalised features overflow is as anomalous as a
            # window gets (the graph itself would give inf or NaN).
            finite = np.isfinite(z).all(axis=1)
            if zc is not None:
                finite &= np.isfinite(zc).all(axis=1)
            model = np.where(finite, self.raw_scores(z, zc), np.inf)
            readings = {}  # the context check's readings beside the model's, by name
            if self.check is not None:
                readings = self.check.readings(self.normaliser, rows[complete], x[complete], c)
            if parts is not None:
                for name, values in {"model": model / self.threshold, **readings}.items():
                    parts[name] = np.full(len(x), np.nan)
                    parts[name][complete] = values
            s = ContextCheck.fold(model, self.threshold, readings)
            scores[complete] = s
            flagged = s > self.threshold
            flags[complete] = flagged
            if flagged.any():
                where = np.flatnonzero(complete)[flagged]
                by = ContextCheck.flagged_by(
                    model[flagged],
                    self.threshold,
                    {name: r[flagged] for name, r in readings.items()},
                )
                top[where], explanation[where] = self.explain(
                    rows[where],
                    x[where],
                    z[flagged],
                    s[flagged],
                    None if zc is None else zc[flagged],
                    by,
                )
        return Scores(scores, self.severity(scores), flags, rows >= 0, top, explanation)

    @cached_property
    def metric_columns(self) -> dict[str, np.ndarray]:
        """Model input columns of each metric, in feature order."""
        return columns_by_metric(self.feature_names)

    @cached_property
    def context_metric_columns(self) -> dict[str, np.ndarray]:
        """Context reading columns of each metric (a context-checked model)."""
        uses = self.check.uses if self.check else ()
        return columns_by_metric([self.feature_names[j] for j, *_ in uses])

    def explain(
        self,
        rows: np.ndarray,
        x: np.ndarray,
        z: np.ndarray,
        scores: np.ndarray,
        zc: np.ndarray | None = None,
        flagged_by: Sequence[str | None] | None = None,
    ) -> tuple[list[str | None], list[str]]:
        """Which metrics made these windows' scores: for each metric, the window is scored
        again with that metric's features set to the device's typical values (normalised 0);
        the score it loses is the metric's contribution. The EXPLAIN_TOP metrics with the
        largest positive contribution are named, each with its most deviating feature, the
        direction, the window's actual value and the device's typical (training mean) value.
        ``flagged_by``: per row, the context check's reading that flagged it on its own (a
        one-metric model: its one metric's item says so, "reading"), or None. One onnxruntime
        run for all rows and metrics. Returns (top metric, JSON) per row."""
        columns = self.metric_columns
        names = list(columns)
        occluded = np.repeat(z[None, :, :], len(names), axis=0)  # [metric, row, feature]
        for i, m in enumerate(names):
            occluded[i][:, columns[m]] = 0.0
        occluded_context = None
        if zc is not None:  # the metric's context reading is set to typical too
            occluded_context = np.repeat(zc[None, :, :], len(names), axis=0)
            for i, m in enumerate(names):
                if m in self.context_metric_columns:
                    occluded_context[i][:, self.context_metric_columns[m]] = 0.0
            occluded_context = occluded_context.reshape(-1, zc.shape[1])
        without = self.raw_scores(occluded.reshape(-1, z.shape[1]), occluded_context).reshape(
            len(names), len(z)
        )
        contribution = scores[None, :] - without  # [metric, row]
        # Each metric's most deviating feature in each row.
        best = np.empty(contribution.shape, dtype=np.int64)
        for i, m in enumerate(names):
            best[i] = columns[m][np.argmax(np.abs(z[:, columns[m]]), axis=1)]
        order = np.argsort(-contribution, axis=0, kind="stable")[:EXPLAIN_TOP]  # [top, row]
        center, _ = self.normaliser.typical_rows(rows)
        tops: list[str | None] = []
        texts: list[str] = []
        for r in range(len(z)):
            items = []
            for i in order[:, r]:
                if items and not contribution[i, r] > 0:
                    break
                j = best[i, r]
                # Metric and feature names are plain identifiers: no JSON escaping needed.
                items.append(
                    _EXPLANATION_ITEM
                    % (
                        names[i],
                        self.feature_names[j],
                        "up" if z[r, j] > 0 else "down",
                        _json_number(x[r, j]),
                        _json_number(center[r, j]),
                        _json_number(contribution[i, r]),
                    )
                )
            if flagged_by is not None and flagged_by[r] is not None:
                # Reading names are plain words: no JSON escaping needed.
                items[0] = items[0][:-1] + f',"reading":"{flagged_by[r]}"}}'
            tops.append(names[order[0, r]])
            texts.append("[" + ",".join(items) + "]")
        return tops, texts


_EXPLANATION_ITEM = (
    '{"metric":"%s","feature":"%s","direction":"%s","actual":%s,"typical":%s,"contribution":%s}'
)


def _json_number(value: float) -> str:
    """Six significant digits (enough to read, short in the table); null where the value is
    not finite (a window of extreme values can overflow the normalised score), which JSON
    cannot hold otherwise."""
    return "%.6g" % value if math.isfinite(value) else "null"  # noqa: UP031


# The model folder of a job submitted before its first model: it follows CURRENT, and its
# windows are stored unscored until CURRENT names a version (jobs/score_telemetry.py).
NO_MODEL_YET = ""


class ModelSource:
    """The model that scores: a pinned version folder, or the version the models folder's
    CURRENT pointer names, re-read at most every ``reload_seconds``.

    ``refresh()`` switches to a new current version if it loads and passes its card's
    checks; otherwise it keeps the model it has, logs the error and counts it in
    ``load_failures``. A refused version is tried again only when the pointer or the
    version's files change."""

    def __init__(
        self,
        model_dir: Path | str,
        feature_names: Sequence[str],
        window_seconds: int | None,
        *,
        context_names: Sequence[str] = (),
        pointer: Path | str | None = None,
        reload_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.no_model_yet = str(model_dir) == NO_MODEL_YET
        self.model_dir = Path(model_dir)
        self.feature_names = tuple(feature_names)
        self.context_names = tuple(context_names)
        self.window_seconds = window_seconds
        self.pointer = Path(pointer) if pointer else None
        self.reload_seconds = reload_seconds
        self.clock = clock
        self.model: OnnxModel | None = None
        self.loads = 0
        self.load_failures = 0
        self.last_error: str | None = None
        self.loaded_at = 0.0  # wall-clock seconds of the last successful load
        self._next_check = 0.0
        self._refused: tuple | None = None

    def open(self) -> OnnxModel | None:
        """Load the current version (pinned: the folder given). If CURRENT names a version
        that cannot be used, start with the folder given at submission, which passed its
        checks then. A job submitted before the first model (folder NO_MODEL_YET) has none
        until CURRENT names one."""
        if self.pointer is not None:
            self.refresh(force=True)
        if self.model is None and not self.no_model_yet:
            self._install(self._load(self.model_dir))
        return self.model

    def _load(self, folder: Path) -> OnnxModel:
        return OnnxModel.load(folder, self.feature_names, self.window_seconds, self.context_names)

    def _install(self, model: OnnxModel) -> None:
        previous = self.model.version if self.model else None
        self.model = model
        self.loads += 1
        self.loaded_at = time.time()
        log.info("anomaly model %s now scores (was %s)", model.version, previous)

    def _signature(self, version: str) -> tuple:
        folder = self.pointer.parent / version
        stamps = []
        for name in (MODEL_FILE, CARD_FILE):
            try:
                stamps.append((folder / name).stat().st_mtime_ns)
            except OSError:
                stamps.append(None)
        return (version, *stamps)

    def refresh(self, *, force: bool = False) -> bool:
        """Follow CURRENT; True when another version now scores."""
        if self.pointer is None or (not force and self.clock() < self._next_check):
            return False
        self._next_check = self.clock() + self.reload_seconds
        try:
            version = self.pointer.read_text().strip()
        except OSError as exc:
            return self._refuse(("pointer", str(exc)), f"cannot read {self.pointer}: {exc}")
        if not version or "/" in version or version in (".", ".."):
            return self._refuse(("pointer", version), f"{self.pointer} names no version folder")
        if self.model is not None and version == self.model.version:
            return False
        signature = self._signature(version)
        if signature == self._refused:
            return False
        try:
            model = self._load(self.pointer.parent / version)
        except Exception as exc:  # anything a broken file can raise: keep scoring
            return self._refuse(signature, str(exc))
        self._install(model)
        self._refused = None
        self.last_error = None
        return True

    def _refuse(self, signature: tuple, error: str) -> bool:
        if signature != self._refused:
            self._refused = signature
            self.load_failures += 1
            self.last_error = error
            kept = self.model.version if self.model else "none yet"
            log.error("anomaly model refused, %s keeps scoring: %s", kept, error)
        return False


class ScoreWindow(ScalarFunction):
    """``score_window(device_id, f1, ..., fn, c1, ..., cm)`` -> ``ROW<anomaly_score, severity,
    is_anomaly, model_version, known_device, top_metric, explanation>``: the model features,
    then the context columns (SCORER_CONTEXT_NAMES, read by context-checked models).

    Metrics (Flink web UI / REST, on the operator that runs the UDF): windows_scored,
    anomalies, model_loads, model_load_failures, batch_latency_ms (last batch),
    batch_rows (last batch), model_loaded_at_ms (epoch milliseconds) and
    model_version.<version>.active (1 for the version scoring now)."""

    def __init__(
        self,
        model_dir: str,
        feature_names: Sequence[str],
        window_seconds: int,
        pointer: str | None = None,
        reload_seconds: float = 5.0,
        context_names: Sequence[str] = (),
    ):
        self.model_dir = str(model_dir)
        self.feature_names = tuple(feature_names)
        self.context_names = tuple(context_names)
        self.window_seconds = window_seconds
        self.pointer = pointer
        self.reload_seconds = reload_seconds
        self.source: ModelSource | None = None
        self.metrics: dict = {}

    @property
    def model(self) -> OnnxModel | None:
        return self.source.model if self.source else None

    def open(self, function_context: FunctionContext | None) -> None:
        self.source = ModelSource(
            self.model_dir,
            self.feature_names,
            self.window_seconds,
            context_names=self.context_names,
            pointer=self.pointer,
            reload_seconds=self.reload_seconds,
        )
        self.source.open()
        self.last_batch = (0.0, 0)
        group = function_context.get_metric_group() if function_context else None
        if group is not None:
            self.metrics = {
                "windows_scored": group.counter("windows_scored"),
                "anomalies": group.counter("anomalies"),
            }
            group.gauge("model_loads", lambda: self.source.loads)
            group.gauge("model_load_failures", lambda: self.source.load_failures)
            group.gauge("model_loaded_at_ms", lambda: int(self.source.loaded_at * 1000))
            group.gauge("batch_latency_ms", lambda: round(self.last_batch[0]))
            group.gauge("batch_rows", lambda: self.last_batch[1])
            self.metric_group = group
            self._register_version()

    def _register_version(self) -> None:
        group = getattr(self, "metric_group", None)
        if group is not None and self.model is not None:
            version = self.model.version
            group.add_group("model_version", version).gauge(
                "active", lambda: int(self.model.version == version)
            )

    def eval(self, device_id: pd.Series, *columns: pd.Series) -> pd.DataFrame:
        import pandas as pd

        assert self.source is not None, "open() loads the model before eval()"
        began = time.perf_counter()
        if self.source.refresh():
            self._register_version()
        model = self.model
        n = len(self.feature_names)
        if model is None:  # no model yet: the windows are stored unscored
            self.last_batch = ((time.perf_counter() - began) * 1000.0, len(device_id))
            nothing = [None] * len(device_id)
            return pd.DataFrame(
                {name: pd.Series(nothing, dtype=object) for name in SCORE_RESULT_FIELDS}
            )
        # The context columns only for a model that reads them, and only those it reads.
        x = _matrix(columns[:n])
        context = _context_matrix(columns[n:], model.context_read)
        s = model.score(device_id.to_numpy(dtype=object), x, context)
        out = pd.DataFrame(
            {
                "anomaly_score": s.score,
                "severity": s.severity,
                "is_anomaly": s.flag,
                "model_version": model.version,
                "known_device": s.known_device,
                "top_metric": s.top_metric,
                "explanation": s.explanation,
            }
        )
        self.last_batch = ((time.perf_counter() - began) * 1000.0, len(x))
        if self.metrics:
            self.metrics["windows_scored"].inc(int(np.isfinite(s.score).sum()))
            # Flagged exactly where the score is above the threshold (NaN: not scored).
            self.metrics["anomalies"].inc(int(np.count_nonzero(s.score > model.threshold)))
        return out


def _matrix(columns: Sequence[pd.Series]) -> np.ndarray:
    """Arrow batch columns as one float matrix (NULL: NaN)."""
    return np.column_stack([c.to_numpy(dtype=np.float64, na_value=np.nan) for c in columns])


def _context_matrix(
    columns: Sequence[pd.Series], read: tuple[int, ...] | None
) -> np.ndarray | None:
    """The context columns as a float matrix: all of them (``read`` None), only those ``read``
    converted and the others NaN, or None where none is read."""
    if read is None:
        return _matrix(columns)
    if not read:
        return None
    out = np.full((len(columns[0]), len(columns)), np.nan)
    for j in read:
        out[:, j] = columns[j].to_numpy(dtype=np.float64, na_value=np.nan)
    return out


class ScoreWindowPerRow(ScoreWindow):
    """The same scoring one window per call (a general, non-pandas UDF): what the pipeline
    costs without vectorized scoring (ANOMALY_SCORING_UDF=row, for the benchmark)."""

    def eval(self, device_id, *values):  # type: ignore[override]
        import pandas as pd
        from pyflink.common import Row

        frame = super().eval(pd.Series([device_id]), *(pd.Series([v]) for v in values))
        return Row(*(frame[name].iloc[0] for name, _ in SCORE_RESULT_COLUMNS))


def score_window_udf(
    model_dir: Path | str,
    feature_names: Sequence[str],
    window_seconds: int,
    *,
    pointer: Path | str | None = None,
    reload_seconds: float = 5.0,
    vectorized: bool = True,
    context_names: Sequence[str] = (),
):
    """The Flink UDF object to register as ``score_window``. With ``pointer`` (the models
    folder's CURRENT file) the UDF follows it; without, ``model_dir`` is pinned.
    ``vectorized=False``: one window per call, for comparison. The call passes the model
    features, then ``context_names``."""
    function = ScoreWindow if vectorized else ScoreWindowPerRow
    return udf(
        function(
            str(model_dir),
            feature_names,
            window_seconds,
            str(pointer) if pointer else None,
            reload_seconds,
            context_names,
        ),
        result_type=SCORE_RESULT_TYPE,
        func_type="pandas" if vectorized else "general",
    )
