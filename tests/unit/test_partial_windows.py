"""Windows of few samples where many metrics share one model (udfs.calibration.PartialWindows):
the window a device starts sending in holds the samples sent before it closed, its spreads near
0. Trained and scored through the exported ONNX graph as the UDF scores a batch, on bounded
synthetic fleets: such a window at its device's level is not flagged, one far off still is,
and whole windows score as they did without the rule."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.detectors import DetectorParams
from training.train import fit_model
from udfs.calibration import PARTIAL_SHARE
from udfs.onnx_scorer import CARD_FILE, ModelCardError, OnnxModel

METRICS = ("a", "b")
FEATURES = tuple(f"{m}_{s}" for m in METRICS for s in ("mean", "std", "min", "max"))
CONTEXT = ("a_avg1h", "a_sd1h", "b_avg1h", "b_sd1h", "a_count")
SAMPLES = 12
DEVICES = 8


def windows(rng, level: np.ndarray, n: int, samples: int = SAMPLES, shift: float = 0.0):
    """n windows a device of ``samples`` samples of each metric about the device's level
    (spread a tenth of it; ``shift``: levels moved by that many spreads), and their context:
    the level and spread, and the count."""
    ids = np.repeat([f"dev-{d}" for d in range(DEVICES)], n).astype(object)
    lv = np.repeat(level, n)
    columns, context = [], []
    for k in range(len(METRICS)):
        centre = lv * (k + 1) * (1 + shift / 10)
        values = centre[:, None] + lv[:, None] * (k + 1) / 10 * rng.normal(size=(len(ids), samples))
        columns += [values.mean(1), values.std(1), values.min(1), values.max(1)]
        context += [lv * (k + 1), lv * (k + 1) / 10 / np.sqrt(samples)]
    context.append(np.full(len(ids), float(samples)))
    return ids, np.column_stack(columns), np.column_stack(context)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    rng = np.random.default_rng(3)
    level = np.logspace(0, 3, DEVICES)
    ids, x, context = windows(rng, level, 200)
    result = fit_model(
        ids,
        x,
        feature_names=FEATURES,
        window_seconds=10,
        params=DetectorParams(),
        models_dir=tmp_path_factory.mktemp("models"),
        training={"source": "test"},
        context=context,
        context_names=CONTEXT,
        log=lambda m: None,
    )
    model = OnnxModel.load(result.model_dir, FEATURES, 10, CONTEXT)
    return rng, level, result, model


def test_a_window_of_few_samples_is_judged_on_its_level(trained):
    rng, level, result, model = trained
    card = json.loads((result.model_dir / CARD_FILE).read_text())["partial_windows"]
    assert card["count_column"] == "a_count" and card["share"] == PARTIAL_SHARE
    assert set(card["usual_count"].values()) == {SAMPLES}
    # One sample a device, at its level: every spread 0, the min and max at the mean.
    ids, x, context = windows(rng, level, 1, samples=1)
    assert (x[:, 1] == 0).all()
    bare = model.score(ids, x)  # without the count, as a whole window
    assert (bare.flag == True).all()  # noqa: E712 (object array)
    got = model.score(ids, x, context)
    assert (got.flag == False).all(), got.score  # noqa: E712
    # The same score as training's reference implementation (the stream's parity).
    reference, _ = result.reference_scores(ids, x, context)
    np.testing.assert_allclose(got.score, reference, rtol=1e-5)
    # Far off its level, a window of few samples is still flagged, and by its level.
    ids, x, context = windows(rng, level, 1, samples=2, shift=15)
    far = model.score(ids, x, context)
    assert (far.flag == True).all(), far.score  # noqa: E712
    assert set(far.top_metric) <= set(METRICS)


def test_whole_windows_score_as_without_the_rule(trained):
    rng, level, _, model = trained
    # At least PARTIAL_SHARE of the usual count: the window is judged as it is.
    for samples in (SAMPLES, int(np.ceil(PARTIAL_SHARE * SAMPLES))):
        ids, x, context = windows(rng, level, 5, samples=samples)
        np.testing.assert_array_equal(model.score(ids, x, context).score, model.score(ids, x).score)
    # A missing count (a row without context) too.
    ids, x, context = windows(rng, level, 2, samples=1)
    context[:, -1] = np.nan
    np.testing.assert_array_equal(model.score(ids, x, context).score, model.score(ids, x).score)


def test_a_job_whose_count_column_moved_refuses_the_model(trained):
    _, _, result, _ = trained
    with pytest.raises(ModelCardError, match="sample count"):
        OnnxModel.load(result.model_dir, FEATURES, 10, ("a_count", *CONTEXT[:-1]))


def test_one_metric_models_have_no_rule(tmp_path):
    """One-metric catalogues read the count in their context check instead."""
    rng = np.random.default_rng(4)
    ids, x, context = windows(rng, np.logspace(0, 3, DEVICES), 100)
    result = fit_model(
        ids,
        x[:, :4],
        feature_names=FEATURES[:4],
        window_seconds=10,
        params=DetectorParams(context_check="off"),
        models_dir=tmp_path,
        training={"source": "test"},
        context=context[:, [0, 1, 4]],
        context_names=(CONTEXT[0], CONTEXT[1], CONTEXT[4]),
        log=lambda m: None,
    )
    assert "partial_windows" not in json.loads((result.model_dir / CARD_FILE).read_text())


def test_the_udf_converts_only_the_count_of_the_context(trained):
    """The UDF scores a batch as the model does from the count column alone: the other context
    columns (levels and spreads, which this model does not read) are not converted, so that
    values there, NULL or not, leave the scores as they are; a NULL count reads as a whole
    window."""
    import pandas as pd

    from udfs.onnx_scorer import ScoreWindow

    rng, level, result, model = trained
    assert model.context_read == (len(CONTEXT) - 1,)
    fn = ScoreWindow(str(result.model_dir), FEATURES, 10, context_names=CONTEXT)
    fn.open(None)
    ids, x, context = windows(rng, level, 3, samples=1)
    context[1::3, -1] = np.nan  # some windows without a count

    def udf(ctx):
        columns = [pd.Series(v) for v in (*x.T, *ctx.T)]
        return fn.eval(pd.Series(ids), *columns)["anomaly_score"].to_numpy(dtype=np.float64)

    got = udf(context)
    np.testing.assert_allclose(got, model.score(ids, x, context).score, rtol=1e-9)
    other = context.copy()
    other[:, :-1] = np.where(rng.random(other[:, :-1].shape) < 0.5, np.nan, 1e9)
    np.testing.assert_array_equal(udf(other), got)
    np.testing.assert_array_equal(got[1::3], model.score(ids[1::3], x[1::3]).score)
