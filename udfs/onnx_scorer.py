"""Vectorized (pandas) Flink UDF that scores window features with an ONNX anomaly model.

The model and its card are loaded once per Python worker in ``open()``; each call scores a
whole Arrow batch of windows with one onnxruntime run.
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

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
CARD_FILE = "card.json"

SCORE_RESULT_TYPE = DataTypes.ROW(
    [
        DataTypes.FIELD("anomaly_score", DataTypes.DOUBLE()),
        DataTypes.FIELD("is_anomaly", DataTypes.BOOLEAN()),
        DataTypes.FIELD("model_version", DataTypes.STRING()),
    ]
)


class ModelCardError(ValueError):
    """The model directory does not hold a model this job can use."""


@dataclass
class OnnxModel:
    """An exported anomaly model: ONNX graph + card (version, feature order)."""

    version: str
    feature_names: tuple[str, ...]
    window_seconds: int
    session: object  # onnxruntime.InferenceSession

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
        options = ort.SessionOptions()
        # One intra-op thread: Flink already runs one Python worker per slot, and extra
        # threads only contend for the same cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        return cls(str(card["version"]), features, int(card["window_seconds"]), session)

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly score (higher = more anomalous, > 0 flagged) and flag for each row.

        A row with a missing (NaN) feature is not scored: its score is NaN and its flag None
        (NULL in SQL), rather than a guess either way.
        """
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise ValueError(
                f"expected a 2-D array with {len(self.feature_names)} columns, got {x.shape}"
            )
        scores = np.full(len(x), np.nan)
        flags = np.full(len(x), None, dtype=object)
        complete = np.isfinite(x).all(axis=1)
        if complete.any():
            label, raw = self.session.run(["label", "scores"], {"X": x[complete]})
            # The exported graph returns scikit-learn's decision_function (negative =
            # anomalous); negate it so that larger means more anomalous.
            scores[complete] = -np.asarray(raw, dtype=np.float64).reshape(-1)
            flags[complete] = np.asarray(label).reshape(-1) == -1
        return scores, flags


class ScoreWindow(ScalarFunction):
    """``score_window(f1, ..., fn) -> ROW<anomaly_score, is_anomaly, model_version>``."""

    def __init__(self, model_dir: str, feature_names: Sequence[str], window_seconds: int):
        self.model_dir = str(model_dir)
        self.feature_names = tuple(feature_names)
        self.window_seconds = window_seconds
        self.model: OnnxModel | None = None

    def open(self, function_context: FunctionContext | None) -> None:
        self.model = OnnxModel.load(self.model_dir, self.feature_names, self.window_seconds)
        log.info("loaded anomaly model %s from %s", self.model.version, self.model_dir)

    def eval(self, *columns: pd.Series) -> pd.DataFrame:
        assert self.model is not None, "open() loads the model before eval()"
        x = np.column_stack([c.to_numpy(dtype=np.float64, na_value=np.nan) for c in columns])
        scores, flags = self.model.score(x)
        return pd.DataFrame(
            {
                "anomaly_score": scores,
                "is_anomaly": flags,
                "model_version": self.model.version,
            }
        )


def score_window_udf(model_dir: Path | str, feature_names: Sequence[str], window_seconds: int):
    """The Flink UDF object to register as ``score_window``."""
    return udf(
        ScoreWindow(str(model_dir), feature_names, window_seconds),
        result_type=SCORE_RESULT_TYPE,
        func_type="pandas",
    )
