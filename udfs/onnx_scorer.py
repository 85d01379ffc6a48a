"""Vectorized (pandas) Flink UDF that scores window features with an ONNX anomaly model.

The model and its card are loaded once per Python worker in ``open()``; each call scores a
whole Arrow batch of windows with one onnxruntime run: features normalised per device, the
graph's score, the card's threshold and severity calibration (udfs/calibration.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyflink.table import DataTypes
from pyflink.table.udf import FunctionContext, ScalarFunction, udf

from udfs.calibration import CalibrationError, DeviceNormaliser, Severity

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
CARD_FILE = "card.json"

SCORE_RESULT_TYPE = DataTypes.ROW(
    [
        DataTypes.FIELD("anomaly_score", DataTypes.DOUBLE()),
        DataTypes.FIELD("severity", DataTypes.DOUBLE()),
        DataTypes.FIELD("is_anomaly", DataTypes.BOOLEAN()),
        DataTypes.FIELD("model_version", DataTypes.STRING()),
        # False for a device the model has no statistics of its own for (scored with the
        # fleet's): new devices are scored from their first window, and marked.
        DataTypes.FIELD("known_device", DataTypes.BOOLEAN()),
    ]
)


class ModelCardError(ValueError):
    """The model directory does not hold a model this job can use."""


@dataclass(frozen=True)
class Scores:
    score: np.ndarray  # raw model score, higher = more anomalous; NaN where not scored
    severity: np.ndarray  # 0-100; NaN where not scored
    flag: np.ndarray  # object array of True / False / None (not scored)
    known_device: np.ndarray  # bool: the device had its own normalisation in training


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

    @property
    def threshold(self) -> float:
        return self.severity.threshold

    @classmethod
    def load(
        cls,
        model_dir: Path | str,
        expected_features: Sequence[str],
        window_seconds: int | None = None,
    ) -> OnnxModel:
        import onnxruntime as ort

        model_dir = Path(model_dir)
        card_path = model_dir / CARD_FILE
        try:
            card = json.loads(card_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelCardError(f"cannot read model card {card_path}: {exc}") from exc
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
        for key in ("version", "normalisation", "calibration"):
            if key not in card:
                raise ModelCardError(
                    f"model card {card_path} has no {key!r} (written by an older training): "
                    "retrain with `make train`"
                )
        try:
            normaliser = DeviceNormaliser.from_card(card["normalisation"], len(features))
            severity = Severity.from_card(card["calibration"])
        except CalibrationError as exc:
            raise ModelCardError(f"model card {card_path}: {exc}") from exc
        options = ort.SessionOptions()
        # One intra-op thread: Flink already runs one Python worker per slot, and extra
        # threads only contend for the same cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(
                str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelCardError(f"cannot load {model_dir / MODEL_FILE}: {exc}") from exc
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if "X" not in inputs or "score" not in outputs:
            raise ModelCardError(
                f"{model_dir / MODEL_FILE} lacks the input 'X' or the output 'score' that "
                "every exported model has: retrain with `make train`"
            )
        input_dtype = np.float64 if inputs["X"].type == "tensor(double)" else np.float32
        return cls(
            str(card["version"]),
            str(card.get("model", "?")),
            features,
            int(card["window_seconds"]),
            normaliser,
            severity,
            session,
            input_dtype,
        )

    def raw_scores(self, z: np.ndarray) -> np.ndarray:
        """The graph's score of normalised, complete rows."""
        (out,) = self.session.run(["score"], {"X": np.ascontiguousarray(z, self.input_dtype)})
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def score(self, device_ids: Sequence[str], features: np.ndarray) -> Scores:
        """Score, severity and flag of each row (one device's window per row).

        Rows are normalised by their device's training statistics, then scored by the ONNX
        graph; the card's threshold flags them and its calibration gives the severity. A row
        with a missing (NaN) feature is not scored: score and severity NaN, flag None (NULL in
        SQL), rather than a guess either way.
        """
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected a 2-D array with {len(self.feature_names)} columns, got {x.shape}"
            )
        if len(device_ids) != len(x):
            raise ValueError(f"{len(device_ids)} device ids for {len(x)} rows")
        scores = np.full(len(x), np.nan)
        flags = np.full(len(x), None, dtype=object)
        rows = self.normaliser.indices(device_ids)
        complete = np.isfinite(x).all(axis=1)
        if complete.any():
            z = self.normaliser.transform_rows(rows[complete], x[complete])
            scores[complete] = self.raw_scores(z)
            flags[complete] = scores[complete] > self.threshold
        return Scores(scores, self.severity(scores), flags, rows >= 0)


class ScoreWindow(ScalarFunction):
    """``score_window(device_id, f1, ..., fn)`` ->
    ``ROW<anomaly_score, severity, is_anomaly, model_version, known_device>``."""

    def __init__(self, model_dir: str, feature_names: Sequence[str], window_seconds: int):
        self.model_dir = str(model_dir)
        self.feature_names = tuple(feature_names)
        self.window_seconds = window_seconds
        self.model: OnnxModel | None = None

    def open(self, function_context: FunctionContext | None) -> None:
        self.model = OnnxModel.load(self.model_dir, self.feature_names, self.window_seconds)
        log.info("loaded anomaly model %s from %s", self.model.version, self.model_dir)

    def eval(self, device_id: pd.Series, *columns: pd.Series) -> pd.DataFrame:
        assert self.model is not None, "open() loads the model before eval()"
        x = np.column_stack([c.to_numpy(dtype=np.float64, na_value=np.nan) for c in columns])
        s = self.model.score(device_id.to_numpy(dtype=object), x)
        return pd.DataFrame(
            {
                "anomaly_score": s.score,
                "severity": s.severity,
                "is_anomaly": s.flag,
                "model_version": self.model.version,
                "known_device": s.known_device,
            }
        )


def score_window_udf(model_dir: Path | str, feature_names: Sequence[str], window_seconds: int):
    """The Flink UDF object to register as ``score_window``."""
    return udf(
        ScoreWindow(str(model_dir), feature_names, window_seconds),
        result_type=SCORE_RESULT_TYPE,
        func_type="pandas",
    )
