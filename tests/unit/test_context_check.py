"""The context check (udfs.calibration.ContextCheck, training.detectors.ContextCheckedDetector):
a one-metric fleet, a model trained with and without it, scored through the exported ONNX
graph as the UDF scores a batch. Synthetic window features with their context, on bounded
inputs: a benign level shift the context has seen stops alarming, a spike still alarms."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from training.detectors import CONTEXT_CHECK_SHARE, DetectorParams
from training.train import TrainingDataError, context_check_of, fit_model
from udfs.calibration import ContextCheck, DeviceNormaliser
from udfs.onnx_scorer import CARD_FILE, ModelCardError, OnnxModel, ScoreWindow

FEATURES = ("value_mean", "value_std", "value_min", "value_max")
CONTEXT = ("value_avg1d", "value_sd1d")
DEVICES = 12


def windows(rng, n: int, level: np.ndarray, spread: np.ndarray):
    """n windows per device: window aggregates of 12 samples around each device's level, and
    the context (avg and sd of the device's recent window means) at that level."""
    ids = np.repeat([f"dev-{d:02d}" for d in range(DEVICES)], n).astype(object)
    lv, sp = np.repeat(level, n), np.repeat(spread, n)
    samples = lv[:, None] + sp[:, None] * rng.normal(size=(len(ids), 12))
    x = np.column_stack([samples.mean(1), samples.std(1), samples.min(1), samples.max(1)])
    context = np.column_stack([lv + sp * rng.normal(0, 0.1, len(ids)), sp / np.sqrt(12) * 1.2])
    return ids, x, context


@pytest.fixture(scope="module")
def fleet():
    rng = np.random.default_rng(5)
    # Mixed units: levels from 0.1 to 1e6, spreads a tenth of the level.
    level = np.logspace(-1, 6, DEVICES)
    return rng, level, level / 10


def fit(tmp_path, ids, x, context, check: str):
    return fit_model(
        ids,
        x,
        feature_names=FEATURES,
        window_seconds=3600,
        params=DetectorParams(context_check=check),
        models_dir=tmp_path,
        training={"source": "test"},
        context=context,
        context_names=CONTEXT,
        log=lambda m: None,
    )


def test_plan_reads_levels_and_spreads_of_metrics_with_context():
    names = ("a_mean", "a_std", "a_min", "a_max", "b_c_mean", "b_c_max", "d_mean")
    check = ContextCheck.plan(names, ("a_avg1h", "a_sd1h", "b_c_avg1h", "b_c_sd1h"))
    # d has no context; every used feature names its metric's mean and context columns.
    assert [(names[j], names[jm], a, s, level) for j, jm, a, s, level in check.uses] == [
        ("a_mean", "a_mean", 0, 1, True),
        ("a_std", "a_mean", 0, 1, False),
        ("a_min", "a_mean", 0, 1, True),
        ("a_max", "a_mean", 0, 1, True),
        ("b_c_mean", "b_c_mean", 2, 3, True),
        ("b_c_max", "b_c_mean", 2, 3, True),
    ]
    assert ContextCheck.plan(names, ()) is None


def test_reading_against_the_context_and_its_fallback():
    ids = np.array(["a", "a", "b", "b"], dtype=object)
    x = np.array([[10.0, 1, 8, 12], [12, 1, 10, 14], [100, 5, 90, 110], [104, 5, 94, 114]])
    fixed = DeviceNormaliser.fit(ids, x)
    check = ContextCheck.plan(FEATURES, CONTEXT)
    rows = fixed.indices(ids)
    context = np.array([[20.0, 4.0], [20, np.nan], [np.nan, np.nan], [np.nan, 0.1]])
    got = check.read(fixed, rows, x, context)
    center, scale = fixed.typical_rows(rows)
    # Row 0: against the context's level 20 over its sd 4 (above a's training scale 1).
    assert scale[0, 0] == pytest.approx(1.0)
    np.testing.assert_allclose(got[0], [(10 - 20) / 4, 1 / 4, (8 - 20) / 4, (12 - 20) / 4])
    # Row 1: no sd: the device's training scale of its mean.
    np.testing.assert_allclose(got[1], [(12 - 20) / 1, 1 / 1, (10 - 20) / 1, (14 - 20) / 1])
    # Rows 2-3: no level: the training center; an sd below the training scale is raised to it.
    for r in (2, 3):
        np.testing.assert_allclose(
            got[r], (x[r] - [center[r, 0], 0, center[r, 0], center[r, 0]]) / scale[r, 0]
        )


def test_auto_turns_the_check_on_for_one_metric_and_pca_only():
    one, two = FEATURES, (*FEATURES, "other_mean")
    auto = DetectorParams()
    assert context_check_of(auto, one, CONTEXT) is not None
    assert context_check_of(auto, two, (*CONTEXT, "other_avg1d", "other_sd1d")) is None
    assert context_check_of(DetectorParams(model="isolation-forest"), one, CONTEXT) is None
    assert context_check_of(DetectorParams(context_check="off"), one, CONTEXT) is None
    assert context_check_of(DetectorParams(context_check="on"), two, CONTEXT) is not None
    with pytest.raises(TrainingDataError, match="ANOMALY_CONTEXT_HORIZONS"):
        context_check_of(DetectorParams(context_check="on"), one, ())
    with pytest.raises(ValueError, match="pca-t2q"):
        DetectorParams(model="isolation-forest", context_check="on")


def test_benign_shift_stops_alarming_once_the_context_has_it_and_a_spike_still_alarms(
    tmp_path, fleet
):
    rng, level, spread = fleet
    ids, x, context = windows(rng, 150, level, spread)
    checked = fit(tmp_path / "on", ids, x, context, "on")
    plain = fit(tmp_path / "off", ids, x, context, "off")
    assert checked.check is not None and plain.check is None
    card = json.loads((checked.model_dir / CARD_FILE).read_text())
    assert card["training"]["context_check"] is True
    assert card["calibration"]["threshold"] == CONTEXT_CHECK_SHARE
    # After training every device's level doubled (a migration), and the context has it.
    after_ids, after_x, after_context = windows(rng, 30, 2 * level, spread)
    # One window per device is a spike of 12 spreads on top of the new level.
    spikes = np.arange(DEVICES) * 30
    after_x[spikes] += np.array([12, 0, 12, 12])[None, :] * spread[:, None]
    for result, shifted_alarm in ((checked, False), (plain, True)):
        model = OnnxModel.load(result.model_dir, FEATURES, 3600, CONTEXT)
        flags = model.score(after_ids, after_x, after_context).flag.astype(bool)
        normal = np.ones(len(flags), dtype=bool)
        normal[spikes] = False
        assert flags[spikes].all(), result.model_dir
        assert flags[normal].mean() > 0.9 if shifted_alarm else flags[normal].mean() < 0.02


def test_the_udf_splits_features_from_context_and_scores_as_the_model(tmp_path, fleet):
    rng, level, spread = fleet
    ids, x, context = windows(rng, 120, level, spread)
    result = fit(tmp_path, ids, x, context, "on")
    fn = ScoreWindow(str(result.model_dir), FEATURES, 3600, context_names=CONTEXT)
    fn.open(None)
    probe_ids, probe_x, probe_context = windows(rng, 5, level * 1.5, spread)
    probe_context[::7] = np.nan  # some windows without context (NULL in SQL)
    columns = [pd.Series(v) for v in (*probe_x.T, *probe_context.T)]
    out = fn.eval(pd.Series(probe_ids), *columns)
    expected = OnnxModel.load(result.model_dir, FEATURES, 3600, CONTEXT).score(
        probe_ids, probe_x, probe_context
    )
    np.testing.assert_allclose(out["anomaly_score"], expected.score, rtol=1e-9)
    reference, _ = result.reference_scores(probe_ids, probe_x, probe_context)
    np.testing.assert_allclose(out["anomaly_score"], reference, rtol=1e-5)
    # Flagged windows are explained by the one metric.
    flagged = out["is_anomaly"].astype(bool)
    assert flagged.any() and set(out["top_metric"][flagged]) == {"value"}


def test_a_job_with_other_context_columns_refuses_the_model(tmp_path, fleet):
    rng, level, spread = fleet
    ids, x, context = windows(rng, 120, level, spread)
    result = fit(tmp_path, ids, x, context, "on")
    with pytest.raises(ModelCardError, match="checks windows against the context"):
        OnnxModel.load(result.model_dir, FEATURES, 3600, ("value_avg6h", "value_sd6h"))


def test_a_card_whose_context_check_does_not_fit_its_features_is_refused(tmp_path, fleet):
    rng, level, spread = fleet
    ids, x, context = windows(rng, 120, level, spread)
    result = fit(tmp_path, ids, x, context, "on")
    card_path = result.model_dir / CARD_FILE
    card = json.loads(card_path.read_text())
    for uses in ([], card["context_check"]["uses"][:2]):
        card["context_check"]["uses"] = uses
        card_path.write_text(json.dumps(card))
        with pytest.raises(ModelCardError, match="does not fit the model's features"):
            OnnxModel.load(result.model_dir, FEATURES, 3600, CONTEXT)
