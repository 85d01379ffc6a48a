"""The pandas scoring UDF against the training-side reference (scikit-learn / numpy), without
Flink: its eval() gets pandas Series exactly as Flink's Arrow batches deliver them. Both models,
per-device normalisation, severity, and the refusals of a model that does not fit."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from common.features import MODEL_FEATURE_NAMES
from training.detectors import DetectorParams
from training.train import check_parity, fit_model
from udfs.onnx_scorer import CARD_FILE, MODEL_FILE, ModelCardError, OnnxModel, ScoreWindow

N_FEATURES = len(MODEL_FEATURE_NAMES)
DEVICES = 30


def fleet_windows(rng, windows_per_device: int) -> tuple[np.ndarray, np.ndarray]:
    """Devices with very different baselines (levels 0..2900) and spreads."""
    ids = np.repeat([f"dev-{d:02d}" for d in range(DEVICES)], windows_per_device).astype(object)
    level = np.repeat(np.arange(DEVICES) * 100.0, windows_per_device)[:, None]
    spread = np.repeat(1.0 + np.arange(DEVICES) % 5, windows_per_device)[:, None]
    x = level + spread * rng.normal(size=(len(ids), N_FEATURES))
    return ids, x


@pytest.fixture(scope="module", params=["isolation-forest", "pca-t2q"])
def trained(request, tmp_path_factory):
    rng = np.random.default_rng(0)
    ids, x = fleet_windows(rng, 120)
    result = fit_model(
        ids,
        x,
        feature_names=MODEL_FEATURE_NAMES,
        window_seconds=10,
        params=DetectorParams(model=request.param, n_estimators=50, contamination=0.01),
        models_dir=tmp_path_factory.mktemp("models"),
        training={"source": "test"},
        log=lambda m: None,
    )
    return result


def batch(ids, rows: np.ndarray) -> list[pd.Series]:
    return [pd.Series(ids), *(pd.Series(rows[:, j]) for j in range(rows.shape[1]))]


def opened(result) -> ScoreWindow:
    fn = ScoreWindow(str(result.model_dir), MODEL_FEATURE_NAMES, 10)
    fn.open(None)
    return fn


def test_batch_scores_equal_the_reference_on_held_out_windows(trained):
    rng = np.random.default_rng(1)
    ids, x = fleet_windows(rng, 40)
    ids[:40] = "never-seen-device"
    x[40:90] += 25.0 * (1.0 + np.arange(50) % 5)[:, None]  # far outliers for their devices
    out = opened(trained).eval(*batch(ids, x))
    assert list(out.columns) == [
        "anomaly_score",
        "severity",
        "is_anomaly",
        "model_version",
        "known_device",
    ]
    expected, expected_flag = trained.reference_scores(ids, x)
    np.testing.assert_allclose(out["anomaly_score"].to_numpy(float), expected, rtol=1e-5, atol=1e-5)
    assert (out["is_anomaly"].to_numpy(bool) == expected_flag).all()
    assert (out["is_anomaly"].to_numpy(bool) == (out["severity"].to_numpy() > 50)).all()
    assert out["is_anomaly"][40:90].all(), "planted outliers must be flagged"
    assert out["is_anomaly"][90:].mean() < 0.05
    assert set(out["model_version"]) == {trained.version}
    assert not out["known_device"][:40].any() and out["known_device"][40:].all()


def test_one_model_judges_each_device_by_its_own_baseline(trained):
    """The same values are normal for the device that lives there and far out for another."""
    fn = opened(trained)
    row = np.full((2, N_FEATURES), 500.0)  # dev-05's level
    out = fn.eval(*batch(np.array(["dev-05", "dev-20"], dtype=object), row))
    assert list(out["is_anomaly"]) == [False, True]
    assert out["severity"][1] > 90 > 50 > out["severity"][0]


def test_missing_feature_is_not_scored(trained):
    x = np.full((3, N_FEATURES), 500.0)
    x[1, 2] = np.nan
    out = opened(trained).eval(*batch(np.array(["dev-05"] * 3, dtype=object), x))
    assert np.isnan(out["anomaly_score"][1]) and np.isnan(out["severity"][1])
    assert out["is_anomaly"][1] is None
    assert np.isfinite(out["anomaly_score"][[0, 2]]).all()


def copy_model(result, tmp_path, **card_changes):
    (tmp_path / MODEL_FILE).write_bytes((result.model_dir / MODEL_FILE).read_bytes())
    card = json.loads((result.model_dir / CARD_FILE).read_text())
    card.update(card_changes)
    for key, value in list(card.items()):
        if value is None:
            del card[key]
    (tmp_path / CARD_FILE).write_text(json.dumps(card))
    return tmp_path


def test_card_with_other_features_is_refused(trained, tmp_path):
    path = copy_model(trained, tmp_path, feature_names=["a", "b"])
    with pytest.raises(ModelCardError, match="trained on features"):
        OnnxModel.load(path, MODEL_FEATURE_NAMES)


def test_card_with_other_window_is_refused(trained):
    with pytest.raises(ModelCardError, match="60 s"):
        OnnxModel.load(trained.model_dir, MODEL_FEATURE_NAMES, window_seconds=60)


def test_card_without_calibration_is_refused(trained, tmp_path):
    path = copy_model(trained, tmp_path, calibration=None)
    with pytest.raises(ModelCardError, match=r"'calibration'.*retrain"):
        OnnxModel.load(path, MODEL_FEATURE_NAMES)


def test_card_with_broken_normalisation_is_refused(trained, tmp_path):
    card = json.loads((trained.model_dir / CARD_FILE).read_text())
    card["normalisation"]["fleet"]["scale"] = [0.0] * N_FEATURES
    path = copy_model(trained, tmp_path, normalisation=card["normalisation"])
    with pytest.raises(ModelCardError, match="scales must be positive"):
        OnnxModel.load(path, MODEL_FEATURE_NAMES)


def test_corrupt_model_file_is_refused(trained, tmp_path):
    path = copy_model(trained, tmp_path)
    (path / MODEL_FILE).write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelCardError, match="cannot load"):
        OnnxModel.load(path, MODEL_FEATURE_NAMES)


def test_parity_check_refuses_a_different_model(trained):
    rng = np.random.default_rng(3)
    ids, x = fleet_windows(rng, 10)

    def other(device_ids, rows):
        score, flag = trained.reference_scores(device_ids, rows)
        return score * 1.01 + 0.01, flag

    exported = OnnxModel.load(trained.model_dir, MODEL_FEATURE_NAMES)
    assert check_parity(exported, ids, x, trained.reference_scores)
    with pytest.raises(RuntimeError, match="disagrees"):
        check_parity(exported, ids, x, other)
