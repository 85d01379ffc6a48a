"""The pandas scoring UDF against scikit-learn, without Flink: its eval() gets pandas Series
exactly as Flink's Arrow batches deliver them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import IsolationForest

from common.features import MODEL_FEATURE_NAMES
from training.train import check_parity, export_onnx
from udfs.onnx_scorer import CARD_FILE, MODEL_FILE, ModelCardError, OnnxModel, ScoreWindow

N_FEATURES = len(MODEL_FEATURE_NAMES)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.normal(50, 10, size=(2000, N_FEATURES)).astype(np.float32)
    model = IsolationForest(n_estimators=50, contamination=0.01, random_state=42).fit(x)
    path = tmp_path_factory.mktemp("model")
    (path / MODEL_FILE).write_bytes(export_onnx(model))
    card = {"version": "test-v1", "feature_names": list(MODEL_FEATURE_NAMES), "window_seconds": 10}
    (path / CARD_FILE).write_text(json.dumps(card))
    return path, model


def batch(rows: np.ndarray) -> list[pd.Series]:
    return [pd.Series(rows[:, j]) for j in range(rows.shape[1])]


def test_batch_scores_equal_sklearn_decision_function(model_dir):
    path, model = model_dir
    rng = np.random.default_rng(1)
    x = rng.normal(50, 10, size=(5000, N_FEATURES))
    x[:50] += 60  # far outliers
    fn = ScoreWindow(str(path), MODEL_FEATURE_NAMES, 10)
    fn.open(None)
    out = fn.eval(*batch(x))
    assert list(out.columns) == ["anomaly_score", "is_anomaly", "model_version"]
    assert len(out) == len(x)
    expected = -model.decision_function(x.astype(np.float32))
    np.testing.assert_allclose(out["anomaly_score"].to_numpy(float), expected, rtol=0, atol=1e-5)
    assert (out["is_anomaly"].to_numpy(bool) == (model.predict(x.astype(np.float32)) == -1)).all()
    assert out["is_anomaly"][:50].all(), "planted outliers must be flagged"
    assert set(out["model_version"]) == {"test-v1"}


def test_missing_feature_is_not_scored(model_dir):
    path, _ = model_dir
    fn = ScoreWindow(str(path), MODEL_FEATURE_NAMES, 10)
    fn.open(None)
    x = np.full((3, N_FEATURES), 50.0)
    x[1, 2] = np.nan
    out = fn.eval(*batch(x))
    assert np.isnan(out["anomaly_score"][1]) and out["is_anomaly"][1] is None
    assert np.isfinite(out["anomaly_score"][[0, 2]]).all()


def test_card_with_other_features_is_refused(model_dir, tmp_path):
    path, _ = model_dir
    (tmp_path / MODEL_FILE).write_bytes((path / MODEL_FILE).read_bytes())
    card = {"version": "x", "feature_names": ["a", "b"], "window_seconds": 10}
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="trained on features"):
        OnnxModel.load(tmp_path, MODEL_FEATURE_NAMES)


def test_card_with_other_window_is_refused(model_dir):
    path, _ = model_dir
    with pytest.raises(ModelCardError, match="60 s"):
        OnnxModel.load(path, MODEL_FEATURE_NAMES, window_seconds=60)


def test_parity_check_passes_for_a_faithful_export(model_dir):
    path, model = model_dir
    x = np.random.default_rng(2).normal(50, 10, size=(500, N_FEATURES)).astype(np.float32)
    assert check_parity(model, path, x) <= 1e-5


def test_parity_check_refuses_a_different_model(model_dir):
    path, _ = model_dir
    x = np.random.default_rng(3).normal(50, 10, size=(500, N_FEATURES)).astype(np.float32)
    other = IsolationForest(n_estimators=50, random_state=7).fit(x)
    with pytest.raises(RuntimeError, match="disagrees"):
        check_parity(other, path, x)
