"""The context check (udfs.calibration.ContextCheck, training.detectors.ContextCheckedDetector):
a one-metric fleet, a model trained with and without it, scored through the exported ONNX
graph as the UDF scores a batch. Synthetic window features with their context, on bounded
inputs: a benign level shift the context has seen stops alarming, a spike still alarms."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from training.detectors import CONTEXT_CHECK_SHARE, DetectorParams
from training.train import TrainingDataError, context_check_of, fit_model
from udfs.calibration import (
    CHANGE_MARGIN,
    CHANGE_MAX_SAMPLES,
    CHANGE_Z,
    LEVEL_MANY_Z,
    LEVEL_Z,
    SEASON_MAX_SAMPLES,
    SPIKE_FLOOR,
    SPIKE_FULL_SAMPLES,
    SPIKE_MARGIN,
    SPIKE_MIN_SAMPLES,
    SPIKE_STEP_SHARE,
    SPIKE_Z,
    STEP_MARGIN,
    STEP_MIN_SAMPLES,
    STEP_Z,
    STUCK_SHARE,
    USUAL_MIN_WINDOWS,
    CalibrationError,
    ContextCheck,
    DeviceNormaliser,
    change_z,
    spike_bars,
    spike_scale,
    spike_scale_quantiles,
    spike_z,
    steady_devices,
    step_scale,
    step_z,
)
from udfs.onnx_scorer import CARD_FILE, ModelCardError, OnnxModel, ScoreWindow

FEATURES = ("value_mean", "value_std", "value_min", "value_max")
CONTEXT = ("value_avg1d", "value_sd1d")
DEVICES = 12


def fleet_rows(level: np.ndarray, spread: np.ndarray, n: int):
    """n windows a device: each row's device id, and its device's level and spread."""
    ids = np.repeat([f"dev-{d:02d}" for d in range(DEVICES)], n).astype(object)
    return ids, np.repeat(level, n), np.repeat(spread, n)


def windows(rng, n: int, level: np.ndarray, spread: np.ndarray):
    """n windows per device: window aggregates of 12 samples around each device's level, and
    the context (avg and sd of the device's recent window means) at that level."""
    ids, lv, sp = fleet_rows(level, spread, n)
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


def test_a_retraining_judges_a_context_checked_candidate_as_the_job_scores(
    tmp_path, fleet, base_settings
):
    """POST /retrain's checks (query.retrain.judge) score the held-out windows with their
    context, as the job does and as the candidate's training scores (which the PSI compares
    them with) were. On devices whose level keeps growing (the context following it) the
    next windows pass; without their context they would not; a fleet whose spread grew
    does not pass, unless the job flagged as many of its windows."""
    from query.drift import psi
    from query.retrain import judge

    rng, level, spread = fleet

    def growing(n: int, spread, start: float, end: float):
        """n windows a device whose level grows from start to end times its own."""
        parts = [windows(rng, 1, level * f, spread) for f in np.linspace(start, end, n)]
        ids, x, context = (np.concatenate(p) for p in zip(*parts, strict=True))
        return ids, x, with_spread_context(x, context, 100)

    def held(ids, x, context, flagged_by_the_job: float = 0.0):
        columns = {"device_id": ids, **dict(zip(FEATURES, x.T, strict=True))}
        frame = pd.DataFrame({**columns, **dict(zip(SPREAD_CONTEXT, context.T, strict=True))})
        return frame.assign(labelled_events=(np.arange(len(ids)) < flagged_by_the_job * len(ids)))

    result = fit_checked(tmp_path, *growing(120, spread, 1.0, 1.2), SPREAD_CONTEXT)
    settings = base_settings.replace(window_seconds=3600)
    same = growing(60, spread, 1.2, 1.3)
    checks, problems = judge(
        settings, result.model_dir, held(*same), DetectorParams(), FEATURES, SPREAD_CONTEXT
    )
    assert problems == [], checks
    # Without their context the same windows score as no job scores them: against the
    # training levels, which they left (what the checks read before).
    card = json.loads((result.model_dir / CARD_FILE).read_text())
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, SPREAD_CONTEXT)
    bare = model.score(same[0], same[1]).score
    assert psi(bare, card["training"]["score_quantiles"]) > settings.drift_psi_retrain
    wide_ids, wide_x, _ = growing(60, spread * 3, 1.2, 1.3)
    checks, problems = judge(
        settings,
        result.model_dir,
        held(wide_ids, wide_x, same[2]),  # the spreads the devices had
        DetectorParams(),
        FEATURES,
        SPREAD_CONTEXT,
    )
    assert any("flags" in p for p in problems), checks
    # Unless the model in force flagged as many of them: then it is no noisier than that one
    # (the spread alone leaves the training scores' distribution: PSI).
    share = checks["held_out_flagged_share"]
    checks, problems = judge(
        settings,
        result.model_dir,
        held(wide_ids, wide_x, same[2], flagged_by_the_job=share),
        DetectorParams(),
        FEATURES,
        SPREAD_CONTEXT,
    )
    assert checks["held_out_flagged_in_force"] >= share
    assert not any("flags" in p for p in problems), checks


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


SPREAD_CONTEXT = (*CONTEXT, "value_stdavg1d", "value_stdsd1d", "value_windows1d")


def with_spread_context(x, context, windows_seen: float):
    """The context with the spread statistics of a device whose window std is steady at the
    window's own (mean) and varies by a tenth of it (sd)."""
    std = x[:, 1]
    return np.column_stack([context, std, std / 10, np.full(len(x), windows_seen)])


def spike_training(x, lv, sp, count: int, usual_std: float) -> np.ndarray:
    """SPIKE_CONTEXT of windows of ``count`` samples of devices at level ``lv`` and spread
    ``sp``: the spread context, the recent windows' std ``usual_std`` x sp (the population std
    of ``count`` normal samples is about 0.87 sd for 6, 0.93 for 12) and the count."""
    context = np.column_stack([lv, sp / np.sqrt(count) * 1.2])
    training = np.column_stack([with_spread_context(x, context, 24), np.full(len(x), count)])
    training[:, 2] = usual_std * sp
    return training


def test_plan_reads_the_spread_statistics_of_a_metric_with_them():
    check = ContextCheck.plan(FEATURES, SPREAD_CONTEXT)
    # std, stdavg, stdsd, windows; and the min and max that tell a flat window
    assert check.spread == ((1, 2, 3, 4, 2, 3),)
    assert ContextCheck.plan(FEATURES, CONTEXT).spread == ()


def check_card(result) -> dict:
    """The context check's part of a fitted model's card."""
    return json.loads((result.model_dir / CARD_FILE).read_text())["context_check"]


def fit_checked(models_dir, ids, x, context, context_names):
    """A context-checked model of 1 h windows fitted on these windows and context."""
    return fit_model(
        ids,
        x,
        feature_names=FEATURES,
        window_seconds=3600,
        params=DetectorParams(context_check="on"),
        models_dir=models_dir,
        training={"source": "test"},
        context=context,
        context_names=context_names,
        log=lambda m: None,
    )


def test_a_window_whose_spread_leaves_its_recent_spreads_is_flagged_once_enough_are_seen(
    tmp_path, fleet
):
    rng, level, spread = fleet
    ids, x, context = windows(rng, 150, level, spread)
    train_context = with_spread_context(x, context, 24)
    # The card's self-check rows (the first training windows) read their spread too.
    train_context[:4, 2] = x[:4, 1] * (1 - 11 / 10)
    # 1 h windows: a 1-day horizon holds 24 windows, read from 6 on.
    result = fit_checked(tmp_path, ids, x, train_context, SPREAD_CONTEXT)
    card = json.loads((result.model_dir / CARD_FILE).read_text())
    spread_card = card["context_check"]
    assert spread_card["spread_min_windows"] == 6 and spread_card["spread_z"] == 10.0
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, SPREAD_CONTEXT)
    after_ids, after_x, after_context = windows(rng, 30, level, spread)
    plain = model.score(after_ids, after_x, with_spread_context(after_x, after_context, 24))
    assert plain.flag.astype(bool).mean() < 0.02
    # The same windows, their recent spreads 11 of their own spread below (z = 11).
    ctx = with_spread_context(after_x, after_context, 24)
    ctx[:, 2] = after_x[:, 1] * (1 - 11 / 10)
    assert model.score(after_ids, after_x, ctx).flag.astype(bool).all()
    ctx[:, 2] = after_x[:, 1] * (1 - 9 / 10)  # z = 9: not flagged by the spread reading
    assert model.score(after_ids, after_x, ctx).flag.astype(bool).mean() < 0.02
    ctx[:, 2] = after_x[:, 1] * (1 - 11 / 10)
    ctx[:, 4] = 5  # too few windows in the context yet
    assert model.score(after_ids, after_x, ctx).flag.astype(bool).mean() < 0.02
    # A card from before the spread reading (none in it, nor in its self-check's scores)
    # loads and reads none (nor the level reading, which came after it).
    del spread_card["spread"], spread_card["level"]
    sc = card["self_check"]
    sc_ids = np.asarray(sc["device_ids"], dtype=object)
    sc_context = np.array(sc["context"], dtype=np.float64)
    sc["scores"] = model.raw_scores(
        *model.readings(model.normaliser.indices(sc_ids), np.asarray(sc["features"]), sc_context)
    ).tolist()
    assert sc["scores"][0] < 0.7  # the spread reading had raised it
    (result.model_dir / CARD_FILE).write_text(json.dumps(card))
    ctx[:, 4] = 24
    old = OnnxModel.load(result.model_dir, FEATURES, 3600, SPREAD_CONTEXT)
    assert old.check.spread == ()
    assert old.score(after_ids, after_x, ctx).flag.astype(bool).mean() < 0.02


def test_a_flat_window_is_flagged_where_the_devices_windows_reliably_vary(tmp_path, fleet):
    """A stuck gauge: min = max (std 0). Read with the lower bar FLAT_Z (2) of the recent
    spreads where those sit well above 0; where a device's windows are often near flat anyway
    (their std's mean within 2 of its spread), or in a card from before the reading, it adds
    nothing to the model's own score."""
    rng, level, spread = fleet
    ids, x, context = windows(rng, 150, level, spread)
    result = fit_checked(tmp_path, ids, x, with_spread_context(x, context, 24), SPREAD_CONTEXT)
    card = json.loads((result.model_dir / CARD_FILE).read_text())
    assert card["context_check"]["flat_z"] == 2.0
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, SPREAD_CONTEXT)
    del card["context_check"]["flat_z"]  # a card from before the flat reading
    (result.model_dir / CARD_FILE).write_text(json.dumps(card))
    old = OnnxModel.load(result.model_dir, FEATURES, 3600, SPREAD_CONTEXT)
    assert old.check.flat_z == float("inf")

    after_ids, after_x, after_context = windows(rng, 30, level, spread)
    ctx = with_spread_context(after_x, after_context, 24)  # stdavg 10 of its spread above 0
    stuck = after_x.copy()
    stuck[:, 1] = 0.0  # std
    stuck[:, 2] = stuck[:, 3] = stuck[:, 0]  # min = max = mean: the level itself is normal
    assert model.score(after_ids, after_x, ctx).flag.astype(bool).mean() < 0.02
    # Flat: z = 10 over the bar 2, a reading of 5 thresholds, whatever the model's own score.
    assert model.check.spread_reading(stuck, ctx) == pytest.approx(5.0)
    flat = model.score(after_ids, stuck, ctx)
    assert flat.flag.astype(bool).all()
    assert flat.score == pytest.approx(5.0 * model.threshold)
    assert (old.score(after_ids, stuck, ctx).score < 2.5 * model.threshold).all()
    # Nearly flat (min < max): the spread reading's own bar of 10 holds.
    nearly = stuck.copy()
    nearly[:, 3] = np.nextafter(nearly[:, 2], np.inf)
    assert model.check.spread_reading(nearly, ctx) == pytest.approx(1.0)
    # A device whose windows' std is within 1.5 of its spread from 0 (flat is not news), or
    # too few windows in the context yet: the model's own score.
    loose = ctx.copy()
    loose[:, 3] = after_x[:, 1] / 1.5
    young = ctx.copy()
    young[:, 4] = 5
    for c in (loose, young):
        assert model.score(after_ids, stuck, c).score == pytest.approx(
            old.score(after_ids, stuck, c).score
        )


SEASON_CONTEXT = (*SPREAD_CONTEXT, "value_seasres28d", "value_seassd28d")


def test_a_window_far_from_its_time_of_the_week_is_flagged_once_the_history_is_there(
    tmp_path, fleet
):
    """The seasonal reading: |seasres| / seassd (common.features.SEASON_STATS) over SEASON_Z
    (5) is folded in as the spread reading is; NULL parts (no history yet) or a spread of 0
    read nothing; a card from before the reading reads none."""
    rng, level, spread = fleet
    ids, x, context = windows(rng, 150, level, spread)

    def with_season(x, context, res, sd):
        spread_context = with_spread_context(x, context, 24)
        return np.column_stack([spread_context, np.full(len(x), res), np.full(len(x), sd)])

    # No seasonal history in training.
    training = with_season(x, context, np.nan, np.nan)
    result = fit_checked(tmp_path, ids, x, training, SEASON_CONTEXT)
    card = json.loads((result.model_dir / CARD_FILE).read_text())
    assert card["context_check"]["season"] == [{"res": "value_seasres28d", "sd": "value_seassd28d"}]
    assert card["context_check"]["season_z"] == 5.0
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, SEASON_CONTEXT)
    assert model.check.season == ((5, 6, -1),)  # no count column: every window is read
    # A card from before the seasonal reading reads none: the model's own score.
    del card["context_check"]["season"]
    (result.model_dir / CARD_FILE).write_text(json.dumps(card))
    old = OnnxModel.load(result.model_dir, FEATURES, 3600, SEASON_CONTEXT)
    assert old.check.season == ()

    after_ids, after_x, after_context = windows(rng, 30, level, spread)
    for res, sd, reading in (
        (6.0, 1.0, 1.2),  # 6 of its spread out, either way: flagged whatever the model says
        (-6.0, 1.0, 1.2),
        (4.0, 1.0, 0.8),  # raises the score, not past the threshold
        (np.nan, 1.0, 0.0),  # no history yet
        (6.0, np.nan, 0.0),
        (6.0, 0.0, 0.0),  # no spread to read against
    ):
        ctx = with_season(after_x, after_context, res, sd)
        base = old.score(after_ids, after_x, ctx)
        assert base.flag.astype(bool).mean() < 0.02
        got = model.score(after_ids, after_x, ctx)
        np.testing.assert_allclose(got.score, np.fmax(base.score, reading * model.threshold))
        if reading > 1:
            assert got.flag.astype(bool).all()
        else:
            assert list(got.flag) == list(base.flag)


SEASON_COUNT_CONTEXT = (*SEASON_CONTEXT, "value_count")


def test_the_seasonal_reading_reads_windows_of_few_samples_where_the_count_is_given(
    tmp_path, fleet
):
    """With the window's count among the scorer's inputs the seasonal reading flags windows of
    at most SEASON_MAX_SAMPLES (3) samples, those the spike reading cannot read; a window
    whose count is not known is read; a card from before the count reads every window."""
    assert SEASON_MAX_SAMPLES == SPIKE_MIN_SAMPLES - 1
    check = ContextCheck.plan(FEATURES, SEASON_COUNT_CONTEXT)
    assert check.season == ((5, 6, 7),)  # seasres, seassd, count
    assert check.season_max_samples == 3
    context = np.zeros((6, len(SEASON_COUNT_CONTEXT)))
    context[:, 5], context[:, 6] = 6.0, 1.0  # 6 of its spread out: 1.2 of the bar of 5
    context[:, 7] = [1, 2, 3, 4, 12, np.nan]
    np.testing.assert_allclose(check.season_reading(context, 6), [1.2, 1.2, 1.2, 0, 0, 1.2])

    rng, level, spread = fleet
    ids, x, ctx = windows(rng, 150, level, spread)
    training = np.column_stack(
        [with_spread_context(x, ctx, 24), np.full((len(x), 2), np.nan), np.full(len(x), 12.0)]
    )
    result = fit_checked(tmp_path, ids, x, training, SEASON_COUNT_CONTEXT)
    card = check_card(result)
    assert card["season"] == [
        {"res": "value_seasres28d", "sd": "value_seassd28d", "count": "value_count"}
    ]
    assert card["season_max_samples"] == 3
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, SEASON_COUNT_CONTEXT)
    assert model.check.season == ((5, 6, 7),)
    after_ids, after_x, after_ctx = windows(rng, 30, level, spread)
    scored = np.column_stack(
        [with_spread_context(after_x, after_ctx, 24), np.full((len(after_x), 2), [6.0, 1.0])]
    )
    without = dataclasses.replace(model, check=dataclasses.replace(model.check, season=()))
    for count in (1.0, 3.0, 4.0, 12.0):
        c = np.column_stack([scored, np.full(len(scored), count)])
        got, base = model.score(after_ids, after_x, c), without.score(after_ids, after_x, c)
        assert base.flag.astype(bool).mean() < 0.05
        if count <= 3:  # 1.2 of the bar: flagged whatever the model says
            np.testing.assert_allclose(got.score, np.fmax(base.score, 1.2 * model.threshold))
            assert got.flag.astype(bool).all()
        else:  # not read: the model's own score
            np.testing.assert_allclose(got.score, base.score)
    # A card from before the count (season entries without it) reads every window.
    for u in card["season"]:
        del u["count"]
    del card["season_max_samples"]
    old = ContextCheck.from_card(card, FEATURES)
    assert old.season == ((5, 6, -1),)
    twelve = np.column_stack([scored, np.full(len(scored), 12.0)])
    assert old.season_reading(twelve, len(twelve)) == pytest.approx(1.2)
    # A card whose count column does not fit its context is refused.
    card["season"][0]["count"] = "value_windows1d"
    with pytest.raises(CalibrationError, match="seasonal reading"):
        ContextCheck.from_card(card, FEATURES)


def test_the_window_shape_reads_min_max_against_the_window_and_std_against_recent_spreads():
    check = ContextCheck.plan(FEATURES, SPREAD_CONTEXT)
    assert check.shape == ((0, 1, 2),)  # mean, std feature; stdavg column
    assert ContextCheck.plan(FEATURES, CONTEXT).shape == ()
    ids = np.array(["a", "a", "a", "b"], dtype=object)
    x = np.array([[10.0, 2, 7, 14], [12, 0, 12, 12], [11, 1, 10, 13], [100, 5, 90, 110]])
    fixed = DeviceNormaliser.fit(ids, x)
    rows = fixed.indices(ids)
    center, scale = fixed.typical_rows(rows)
    # context: avg, sd, stdavg, stdsd, windows; row 2 without a stdavg, row 3 without any.
    context = np.array(
        [[20.0, 4, 4, 1, 24], [20, 4, 4, 1, 24], [20, 4, np.nan, 1, 24], [np.nan] * 5]
    )
    got = check.read(fixed, rows, x, context)
    assert scale[0, 1] < 4
    # The mean against the context; min and max against the window's own mean and std; the
    # std against the recent window spreads.
    np.testing.assert_allclose(got[0], [(10 - 20) / 4, 2 / 4, 3 / 2, 4 / 2])
    # A flat window: its min and max are its mean (0), its std 0.
    np.testing.assert_allclose(got[1], [(12 - 20) / 4, 0, 0, 0])
    # No recent spreads: the device's training std (its center), at least its scale.
    typical = max(center[2, 1], scale[2, 1])
    np.testing.assert_allclose(got[2], [(11 - 20) / 4, 1 / typical, 1, 2])
    np.testing.assert_allclose(got[3][2:], [2, 2])
    # A plan without the shape (a card from before it) reads all four against the context.
    old = dataclasses.replace(check, shape=())
    np.testing.assert_allclose(
        old.read(fixed, rows, x, context)[0], [(10 - 20) / 4, 2 / 4, (7 - 20) / 4, (14 - 20) / 4]
    )


def test_a_shift_the_context_holds_only_in_part_stops_alarming_with_the_window_shape(
    tmp_path, fleet
):
    """A benign level shift (every level doubled) a month into a long horizon: the context's
    level is between the two and its sd holds both. Read over that sd, the windows' min, max
    and std shrink to their mean, unlike any training window, and alarmed while the horizon
    still held the old level; their shape is as in training. A spike still alarms."""
    rng, level, spread = fleet
    ids, x, context = windows(rng, 150, level, spread)
    result = fit_checked(tmp_path, ids, x, with_spread_context(x, context, 24), SPREAD_CONTEXT)
    card = json.loads((result.model_dir / CARD_FILE).read_text())
    assert card["context_check"]["shape"] is True
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, SPREAD_CONTEXT)
    after_ids, after_x, after_context = windows(rng, 30, 2 * level, spread)
    lv = np.repeat(level, 30)
    after_context[:, 0] = 1.5 * lv + np.repeat(spread, 30) * rng.normal(0, 0.1, len(lv))
    after_context[:, 1] = 0.5 * lv  # the sd of a horizon holding both levels
    ctx = with_spread_context(after_x, after_context, 24)
    spikes = np.arange(DEVICES) * 30
    after_x[spikes] += np.array([12, 0, 12, 12])[None, :] * spread[:, None]
    normal = np.ones(len(after_x), dtype=bool)
    normal[spikes] = False
    flags = model.score(after_ids, after_x, ctx).flag.astype(bool)
    assert flags[spikes].all()
    assert flags[normal].mean() < 0.05
    # The same model from a card before the window's shape: the shifted windows alarm.
    card["context_check"]["shape"] = False
    before = dataclasses.replace(model.check, shape=())
    sc = card["self_check"]
    sc_ids = np.asarray(sc["device_ids"], dtype=object)
    sc_x = np.asarray(sc["features"], dtype=np.float64)
    sc_context = np.array(sc["context"], dtype=np.float64)
    sc_rows = model.normaliser.indices(sc_ids)
    raw = model.raw_scores(
        model.normaliser.transform_rows(sc_rows, sc_x),
        before.transform_rows(model.normaliser, sc_rows, sc_x, sc_context),
    )
    sc["scores"] = before.combine(
        raw, model.threshold, model.normaliser, sc_rows, sc_x, sc_context
    ).tolist()
    (result.model_dir / CARD_FILE).write_text(json.dumps(card))
    old = OnnxModel.load(result.model_dir, FEATURES, 3600, SPREAD_CONTEXT)
    assert old.check.shape == ()
    assert old.score(after_ids, after_x, ctx).flag.astype(bool)[normal].mean() > 0.5


def test_the_mean_is_read_against_the_nearer_of_its_context_level_and_its_time_of_the_week():
    """Where the seasonal reading is computed the mean's context reading is the smaller, in
    magnitude, of (mean - avg) / den and seasres / seassd: a window is out of context only if
    it is far from both its recent level and its time of the week (whose residual follows a
    level shift within a day). No seasonal history, or no spread of it: the level alone."""
    check = ContextCheck.plan(FEATURES, SEASON_CONTEXT)
    assert check.seasonal_mean == ((0, 5, 6),)
    assert ContextCheck.plan(FEATURES, SPREAD_CONTEXT).seasonal_mean == ()
    ids = np.array(["a"] * 5, dtype=object)
    x = np.array([[10.0, 2, 7, 14], [11, 1, 10, 13], [12, 2, 9, 15], [9, 2, 6, 12], [10, 2, 7, 13]])
    fixed = DeviceNormaliser.fit(ids, x)
    rows = fixed.indices(ids)
    # avg, sd, stdavg, stdsd, windows, seasres, seassd
    context = np.array(
        [
            [20.0, 4, 2, 1, 24, 0.5, 1],  # level -2.5, season 0.5: the season
            [20, 4, 2, 1, 24, -6, 1],  # level -2.25, season -6: the level
            [20, 4, 2, 1, 24, np.nan, 1],  # no seasonal history
            [20, 4, 2, 1, 24, 1, 0],  # no spread of it
            [20, 4, 2, 1, 24, 3, 2],  # level -2.5, season 1.5
        ]
    )
    got = check.read(fixed, rows, x, context)[:, 0]
    np.testing.assert_allclose(got, [0.5, (11 - 20) / 4, (12 - 20) / 4, (9 - 20) / 4, 1.5])
    # A plan without it (a card from before it) reads the level alone, the rest alike.
    old = dataclasses.replace(check, seasonal_mean=())
    np.testing.assert_allclose(old.read(fixed, rows, x, context)[:, 0], (x[:, 0] - 20) / 4)
    np.testing.assert_allclose(
        old.read(fixed, rows, x, context)[:, 1:], check.read(fixed, rows, x, context)[:, 1:]
    )


def test_the_card_says_which_readings_of_the_window_it_takes(tmp_path, fleet):
    rng, level, spread = fleet
    ids, x, context = windows(rng, 150, level, spread)
    nan = np.full((len(x), 2), np.nan)  # no seasonal history in training
    training = np.column_stack([with_spread_context(x, context, 24), nan])
    result = fit_checked(tmp_path, ids, x, training, SEASON_CONTEXT)
    card = json.loads((result.model_dir / CARD_FILE).read_text())
    assert card["context_check"]["shape"] is True
    assert card["context_check"]["seasonal_mean"] is True
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, SEASON_CONTEXT)
    assert model.check.shape == ((0, 1, 2),) and model.check.seasonal_mean == ((0, 5, 6),)
    # A card from before them (the self-check's rows hold no seasonal history, and their
    # scores are those of the shape: kept) reads neither.
    del card["context_check"]["seasonal_mean"]
    (result.model_dir / CARD_FILE).write_text(json.dumps(card))
    older = OnnxModel.load(result.model_dir, FEATURES, 3600, SEASON_CONTEXT)
    assert older.check.seasonal_mean == () and older.check.shape == ((0, 1, 2),)


def test_a_window_whose_mean_leaves_its_recent_level_is_flagged_once_enough_are_seen(
    tmp_path, fleet
):
    """The level reading: |mean - avg| / max(sd, the device's training scale of its mean)
    over LEVEL_Z (4) is folded in as the spread reading is, once the context holds enough of
    the device's windows; a card from before it reads none."""
    rng, level, spread = fleet
    ids, x, context = windows(rng, 150, level, spread)
    result = fit_checked(tmp_path, ids, x, with_spread_context(x, context, 24), SPREAD_CONTEXT)
    card = json.loads((result.model_dir / CARD_FILE).read_text())
    assert card["context_check"]["level"] == [
        {
            "feature": "value_mean",
            "avg": "value_avg1d",
            "sd": "value_sd1d",
            "windows": "value_windows1d",
        }
    ]
    assert card["context_check"]["level_z"] == 4.0
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, SPREAD_CONTEXT)
    assert model.check.level == ((0, 0, 1, 4, -1),)
    without = dataclasses.replace(model, check=dataclasses.replace(model.check, level=()))

    after_ids, after_x, after_context = windows(rng, 30, level, spread)
    rows = model.normaliser.indices(after_ids)
    scale = model.normaliser.typical_rows(rows)[1][:, 0]
    for sd_share, z, seen, reading in (
        (2.0, 4.4, 24, 1.1),  # the context's spread above the training scale: read over it
        (2.0, -4.4, 24, 1.1),
        (0.5, 4.4, 24, 1.1),  # below: read over the training scale
        (2.0, 3.6, 24, 0.9),  # raises the score, not past the threshold
        (2.0, 4.4, 5, 0.0),  # too few windows in the context yet
    ):
        ctx = with_spread_context(after_x, after_context, seen)
        ctx[:, 1] = sd_share * scale
        ctx[:, 0] = after_x[:, 0] - z * np.fmax(ctx[:, 1], scale)
        np.testing.assert_allclose(
            model.check.level_reading(model.normaliser, rows, after_x, ctx), reading
        )
        base = without.score(after_ids, after_x, ctx)
        got = model.score(after_ids, after_x, ctx)
        np.testing.assert_allclose(got.score, np.fmax(base.score, reading * model.threshold))
        if reading > 1:
            assert got.flag.astype(bool).all()
    # No context (the API, a device's first window) or no level in it: nothing read.
    assert not model.check.level_reading(model.normaliser, rows, after_x, None).any()
    ctx[:, 0] = np.nan
    assert not model.check.level_reading(model.normaliser, rows, after_x, ctx).any()
    # Planned only where the context counts the device's windows; a card from before the
    # reading reads none.
    assert ContextCheck.plan(FEATURES, CONTEXT).level == ()
    del card["context_check"]["level"]
    older = ContextCheck.from_card(card["context_check"], FEATURES)
    assert older.level == () and older.spread


STUCK_CONTEXT = (*SPREAD_CONTEXT, "value_avg6h", "value_sd6h", "value_windows6h")


def with_recent_context(x, context, windows_seen: float, moved: float = 1.0):
    """The spread context, then the shortest horizon's: its level at the window's mean, its
    spread ``moved`` times the longest's, and how many windows it holds."""
    ctx = with_spread_context(x, context, 24)
    recent = [x[:, 0], moved * ctx[:, 1], np.full(len(x), windows_seen)]
    return np.column_stack([ctx, *recent])


def test_plan_reads_the_shortest_horizon_beside_the_longest():
    check = ContextCheck.plan(FEATURES, STUCK_CONTEXT)
    # the mean; the 6 h avg, sd, windows; the 1 d sd and windows
    assert check.stuck == ((0, 5, 6, 7, 1, 4),)
    # The model's readings stay on the longest horizon.
    assert check.uses == ContextCheck.plan(FEATURES, SPREAD_CONTEXT).uses
    assert check.level == ((0, 0, 1, 4, -1),) and check.spread == ((1, 2, 3, 4, 2, 3),)
    assert ContextCheck.plan(FEATURES, SPREAD_CONTEXT).stuck == ()


def test_steady_devices_are_those_whose_values_do_not_repeat():
    ids = np.array(["a"] * 200 + ["b"] * 200 + ["c"] * 100, dtype=object)
    values = np.arange(500, dtype=float)
    values[201] = values[200]  # b: 1 repeat of 200 (0.5 %)
    values[401:403] = values[400]  # c: 2 of 100 (2 %)
    values[200] = values[199]  # across devices: not a repeat
    assert steady_devices(ids, values) == ("a", "b")


def test_a_value_that_has_not_moved_over_the_recent_windows_is_flagged(tmp_path, fleet):
    """The stuck reading: a window whose mean equals the shortest horizon's level with that
    horizon's spread and its own std near 0 (within STUCK_SHARE of the longest's) reads its
    recent windows over half that horizon's windows (3 of 6 at 1 h windows), flagged above 1;
    only for the devices whose training values do not repeat, once the longest horizon holds
    enough windows."""
    rng, level, spread = fleet
    ids, x, context = windows(rng, 150, level, spread)
    repeating = np.flatnonzero(ids == "dev-03")[1::10]
    x[repeating, 0] = x[repeating - 1, 0]  # dev-03 repeats in 10 % of its windows
    result = fit_checked(tmp_path, ids, x, with_recent_context(x, context, 6), STUCK_CONTEXT)
    card = check_card(result)
    assert card["stuck"] == [
        {
            "feature": "value_mean",
            "avg": "value_avg6h",
            "sd": "value_sd6h",
            "windows": "value_windows6h",
            "longest_sd": "value_sd1d",
            "longest_windows": "value_windows1d",
        }
    ]
    assert card["stuck_min_windows"] == 3 and card["stuck_share"] == STUCK_SHARE
    assert card["stuck_devices"] == [f"dev-{d:02d}" for d in range(DEVICES) if d != 3]
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, STUCK_CONTEXT)
    without = dataclasses.replace(model, check=dataclasses.replace(model.check, stuck=()))

    after_ids, after_x, after_context = windows(rng, 30, level, spread)
    rows = model.normaliser.indices(after_ids)
    steady = after_ids != "dev-03"
    for moved, off, std, seen, long_seen, reading in (
        (0.0, 0.0, 0.0, 6, 24, 2.0),  # 6 windows still, of a bar of 3
        (0.5e-3, 0.5e-3, 0.5e-3, 5, 24, 5 / 3),  # within STUCK_SHARE of the longest spread
        (0.0, 0.0, 0.0, 3, 24, 1.0),  # at the bar: raises the score, not past the threshold
        (2e-3, 0.0, 0.0, 6, 24, 0.0),  # the recent windows moved
        (0.0, 2e-3, 0.0, 6, 24, 0.0),  # the window left their level
        (0.0, 0.0, 2e-3, 6, 24, 0.0),  # the window's own samples moved (a quiet device)
        (0.0, 0.0, 0.0, 6, 5, 0.0),  # too few windows in the longest horizon yet
    ):
        ctx = with_recent_context(after_x, after_context, seen, moved)
        ctx[:, 4] = long_seen
        ctx[:, 5] = after_x[:, 0] + off * ctx[:, 1]
        case_x = after_x.copy()
        case_x[:, 1] = std * ctx[:, 1]
        want = np.where(steady, reading, 0.0)
        got_reading = model.check.stuck_reading(model.normaliser, rows, case_x, ctx)
        np.testing.assert_allclose(got_reading, want)
        base = without.score(after_ids, case_x, ctx)
        got = model.score(after_ids, case_x, ctx)
        np.testing.assert_allclose(got.score, np.fmax(base.score, want * model.threshold))
        if reading > 1:
            assert got.flag.astype(bool)[steady].all()
    ctx = with_recent_context(after_x, after_context, 6, 0.0)
    # A longest spread of 0 (the value never moved), an unknown device, no context: none.
    flat = ctx.copy()
    flat[:, 1] = 0.0
    assert not model.check.stuck_reading(model.normaliser, rows, after_x, flat).any()
    unknown = np.full(len(rows), -1)
    assert not model.check.stuck_reading(model.normaliser, unknown, after_x, ctx).any()
    assert not model.check.stuck_reading(model.normaliser, rows, after_x, None).any()
    # A card from before the reading reads none.
    del card["stuck"]
    assert ContextCheck.from_card(card, FEATURES).stuck == ()


SPIKE_CONTEXT = (*SPREAD_CONTEXT, "value_count")


def test_plan_reads_the_window_count_for_the_spike_reading():
    # mean, std, min and max features; the count and the recent spreads' mean (stdavg)
    assert ContextCheck.plan(FEATURES, SPIKE_CONTEXT).spike == ((0, 1, 2, 3, 5, 2),)
    assert ContextCheck.plan(FEATURES, SPREAD_CONTEXT).spike == ()
    assert ContextCheck.plan(FEATURES[:2], (*SPREAD_CONTEXT, "value_count")).spike == ()


def aggregates(samples: np.ndarray) -> np.ndarray:
    """Window features (mean, population std, min, max) of rows of samples."""
    return np.column_stack([samples.mean(1), samples.std(1), samples.min(1), samples.max(1)])


def test_spike_statistic_is_the_extreme_against_the_windows_other_samples():
    """From a window's count, mean, std, min and max alone: |e - m'| / max(s', floor), m' and s'
    the mean and population std of the samples other than e, at whichever extreme reads
    further; NaN under SPIKE_MIN_SAMPLES samples or where nothing bounds it."""
    rng = np.random.default_rng(3)
    samples = 100 + rng.normal(size=(50, 12))
    samples[::5, 7] += rng.choice([-1, 1], 10) * rng.uniform(3, 30, 10)  # one odd sample
    x = aggregates(samples)
    stdavg = np.full(len(x), 0.01)  # a floor of 0.005 that no spread here falls to
    context = np.column_stack([stdavg, np.full(len(x), 12.0)])
    spike = (0, 1, 2, 3, 1, 0)
    want = []
    for row in samples:
        reads = []
        for k in (row.argmin(), row.argmax()):
            others = np.delete(row, k)
            reads.append(abs(row[k] - others.mean()) / others.std())
        want.append(max(reads))
    np.testing.assert_allclose(spike_z(x, context, spike), want, rtol=1e-9)
    # Otherwise equal samples: the floor, SPIKE_FLOOR x the recent spreads, bounds it.
    flat = np.full((1, 12), 5.0)
    flat[0, 3] = 8.0
    ctx = np.array([[2.0, 12.0]])
    np.testing.assert_allclose(spike_z(aggregates(flat), ctx, spike), [3.0 / (SPIKE_FLOOR * 2)])
    ctx[0, 0] = np.nan  # no recent spreads yet, nothing else to bound it: not read
    assert np.isnan(spike_z(aggregates(flat), ctx, spike)).all()
    ctx[0, 0] = 0.0
    assert np.isnan(spike_z(aggregates(flat), ctx, spike)).all()
    # A flat window reads 0 at both extremes.
    assert spike_z(aggregates(np.full((1, 12), 5.0)), ctx, spike).tolist() == [0.0]
    few = aggregates(samples[:, :3])
    three = np.column_stack([stdavg, np.full(len(x), 3.0)])
    assert np.isnan(spike_z(few, three, spike)).all()


def test_spike_bars_are_each_devices_own_above_a_floor():
    ids = np.array(["a", "a", "b", "b", "c", "d"])
    readings = np.array([2.0, 3.0, 5.0, np.nan, np.nan, np.nan])
    assert spike_bars(ids, readings) == {
        "a": SPIKE_Z,  # 1.5 x 3 under the floor
        "b": SPIKE_MARGIN * 5.0,
        "c": None,  # nothing read in training: not read
        "d": None,
    }


def test_the_spike_reading_of_a_window_of_fewer_samples_is_scaled_to_one_of_twelve(tmp_path, fleet):
    """Of fewer samples, a window's spike reading reads further out by chance (its other
    samples' spread comes from fewer of them), and the bars are a device's training windows'.
    A window of under SPIKE_FULL_SAMPLES samples is read at the share of itself that a normal
    window of 12 reads as far out as (the table is the documented simulation's); in training
    too, so a device that sends half as often after its training (windows of 6 samples) is
    read as it was, not against bars of windows of 12. The card records it; a card from before
    reads every count as it is."""
    assert SPIKE_FULL_SAMPLES == 12
    scale = spike_scale(np.array([np.nan, 3, 4, 6, 11, 12, 60]))
    assert np.isnan(scale[:2]).all() and (scale[-2:] == 1).all()
    assert 0.6 < scale[2] < scale[3] < scale[4] < 1
    simulated = spike_scale_quantiles(windows=200_000, seed=7)
    assert list(simulated) == list(range(SPIKE_MIN_SAMPLES, SPIKE_FULL_SAMPLES))
    np.testing.assert_allclose(
        [simulated[n] for n in simulated], spike_scale(np.array(list(simulated))), atol=0.02
    )

    # Normal windows of 6 samples against the bar that windows of 12 pass one in a thousand.
    rng = np.random.default_rng(11)

    def readings(n: int, windows: int, scaled: bool) -> np.ndarray:
        v = rng.normal(size=(windows, n))
        usual = np.full(windows, v.std(1).mean())
        context = np.column_stack([usual, np.full(windows, float(n))])
        return spike_z(aggregates(v), context, (0, 1, 2, 3, 1, 0), scaled)

    bar = np.quantile(readings(12, 100_000, True), 0.999)
    assert (readings(6, 100_000, False) > bar).mean() > 0.004  # unscaled: several times as often
    assert (readings(6, 100_000, True) > bar).mean() < 0.002

    # Trained on windows of 6 samples, a device's bar comes from its scaled readings.
    _, level, spread = fleet
    ids, lv, sp = fleet_rows(level, spread, 150)
    samples = lv[:, None] + sp[:, None] * rng.normal(size=(len(ids), 6))
    x = aggregates(samples)
    training = spike_training(x, lv, sp, 6, 0.87)
    result = fit_checked(tmp_path, ids, x, training, SPIKE_CONTEXT)
    card = check_card(result)
    assert card["spike_full_samples"] == SPIKE_FULL_SAMPLES
    spike = ContextCheck.plan(FEATURES, SPIKE_CONTEXT).spike[0]
    scaled = spike_bars(ids, spike_z(x, training, spike, scaled=True))
    unscaled = spike_bars(ids, spike_z(x, training, spike))
    assert card["spike_bars"] == pytest.approx(scaled)
    assert card["spike_bars"] != pytest.approx(unscaled)
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, SPIKE_CONTEXT)
    assert model.check.spike_count_scaled
    rows = model.normaliser.indices(ids)
    bars = np.array([card["spike_bars"][d] for d in ids])
    np.testing.assert_allclose(
        model.check.spike_reading(model.normaliser, rows, x, training),
        np.nan_to_num(spike_z(x, training, spike, scaled=True) / bars),
    )
    old = dict(card)
    del old["spike_full_samples"]
    before = ContextCheck.from_card(old, FEATURES)
    assert not before.spike_count_scaled
    np.testing.assert_allclose(
        before.spike_reading(model.normaliser, rows, x, training),
        np.nan_to_num(spike_z(x, training, spike) / bars),
    )
    assert before.to_card(FEATURES)["spike_full_samples"] == 0
    assert model.check.to_card(FEATURES)["spike_full_samples"] == SPIKE_FULL_SAMPLES
    # A count this version has no scale for is refused, not read as if it were 12.
    with pytest.raises(CalibrationError, match="spike_full_samples in the model card is 8"):
        ContextCheck.from_card({**card, "spike_full_samples": 8}, FEATURES)


def test_a_window_without_recent_spreads_is_read_against_its_devices_typical_std(tmp_path, fleet):
    """A fresh stream's first window has no recent window spreads in its context, so the spike
    reading had no floor: of a few samples, three that sat nearly still and one a little off
    read as far out as a real spike. Where no recent spread is known, the floor is half the
    device's typical window std (its training windows'), in training too (a device's first
    training window no longer raises its bar). The card records it; a card from before it has
    no floor there."""
    _, level, spread = fleet
    rng = np.random.default_rng(13)  # its own: the module's draws stay the other tests'
    ids, lv, sp = fleet_rows(level, spread, 150)
    samples = lv[:, None] + sp[:, None] * rng.normal(size=(len(ids), 12))
    first = np.flatnonzero(ids == "dev-02")[0]
    samples[first] = lv[first] + sp[first] * np.r_[np.full(11, 0.0), 0.8]  # still, one a bit off
    samples[first, :11] += sp[first] * 1e-3 * np.arange(11)
    x = aggregates(samples)
    training = spike_training(x, lv, sp, 12, 0.93)
    training[first, 2] = np.nan  # dev-02's first training window: no recent spreads yet
    result = fit_checked(tmp_path, ids, x, training, SPIKE_CONTEXT)
    card = check_card(result)
    assert card["spike_typical_floor"] is True
    assert card["spike_bars"]["dev-02"] < 10  # read against the floor, not its own stillness
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, SPIKE_CONTEXT)
    assert model.check.spike_typical_floor

    # A fresh stream's first window of 4 samples: three nearly equal, one 0.8 sd off them.
    devices = np.array(["dev-00", "dev-05"])
    rows = model.normaliser.indices(devices)
    at = np.flatnonzero(np.isin(ids, devices))[:2]
    window = lv[at, None] + sp[at, None] * np.array([[0.0, 0.001, 0.002, 0.8]])
    fresh = np.full((2, len(SPIKE_CONTEXT)), np.nan)  # no context yet but the count
    fresh[:, SPIKE_CONTEXT.index("value_count")] = 4.0
    assert (model.check.spike_reading(model.normaliser, rows, aggregates(window), fresh) < 1).all()
    old = dict(card)
    del old["spike_typical_floor"]
    before = ContextCheck.from_card(old, FEATURES)
    assert not before.spike_typical_floor
    assert (before.spike_reading(model.normaliser, rows, aggregates(window), fresh) > 1).all()


def test_one_sample_far_from_the_rest_of_its_window_is_flagged(tmp_path, fleet):
    """The spike reading: a single sample 20 sd away from the other 11 of its window (which
    reads at most sqrt(11) against the window's own std) passes its device's bar and raises the
    window's score to the threshold times its reading; one at 3 sd does not. Each device's bar
    is its own: the device whose training windows held such samples is read against them."""
    rng, level, spread = fleet
    n = 150
    ids, lv, sp = fleet_rows(level, spread, n)
    samples = lv[:, None] + sp[:, None] * rng.normal(size=(len(ids), 12))
    odd = np.flatnonzero(ids == "dev-05")[::10]
    samples[odd, 4] += 15 * sp[odd]  # dev-05's training windows hold odd samples
    x = aggregates(samples)
    training = spike_training(x, lv, sp, 12, 0.93)
    result = fit_checked(tmp_path, ids, x, training, SPIKE_CONTEXT)
    card = check_card(result)
    assert card["spike"] == [
        {"feature": "value_mean", "count": "value_count", "stdavg": "value_stdavg1d"}
    ]
    assert card["spike_bars"]["dev-05"] > 1.5 * 14
    assert card["spike_bars"]["dev-00"] < 10
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, SPIKE_CONTEXT)
    without = dataclasses.replace(model, check=dataclasses.replace(model.check, spike=()))

    m = 30
    after, alv, asp = fleet_rows(level, spread, m)
    base = alv[:, None] + asp[:, None] * rng.normal(size=(len(after), 12))
    actx = np.column_stack([alv, asp / np.sqrt(12) * 1.2])

    def scored(size):
        s = base.copy()
        s[:, 6] = alv - size * asp  # one sample `size` sd below the level
        ax = aggregates(s)
        ctx = np.column_stack([with_spread_context(ax, actx, 24), np.full(len(ax), 12.0)])
        ctx[:, 2] = 0.93 * asp
        return ax, ctx

    rows = model.normaliser.indices(after)
    ax, ctx = scored(20.0)
    reading = model.check.spike_reading(model.normaliser, rows, ax, ctx)
    assert_read_at_own_bars(model, without, (after, ax, ctx), reading, "spike", required=False)
    ax, ctx = scored(3.0)
    assert (model.check.spike_reading(model.normaliser, rows, ax, ctx) < 1).all()
    # A device the model has not seen is read at the devices' median bar; no context: none.
    ax, ctx = scored(20.0)
    unknown = np.full(len(ax), -1)
    bar = float(np.median([b for b in card["spike_bars"].values() if b is not None]))
    np.testing.assert_allclose(
        model.check.spike_reading(model.normaliser, unknown, ax, ctx),
        spike_z(ax, ctx, model.check.spike[0], model.check.spike_count_scaled) / bar,
    )
    assert not model.check.spike_reading(model.normaliser, rows, ax, None).any()
    # A card from before the reading reads none.
    del card["spike"]
    assert ContextCheck.from_card(card, FEATURES).spike == ()


def assert_read_at_own_bars(model, without, windows, reading, name: str, required: bool):
    """A reading read at each device's own bar: on windows of the same odd kind, ``reading``
    passes its bar on every device but dev-05, whose training windows held such windows; the
    score is the model's (``without``: the model without this reading) or the threshold times
    the reading, whichever is higher; every other device's window is flagged; and each
    flagged window's explanation names ``name`` where the reading sets its score (the model's
    own score, no reading of the context check's, is at most the threshold times the
    reading), and no reading where the model's own score is higher (``required``: some window
    is flagged by the reading alone)."""
    after = windows[0]
    assert (reading[after != "dev-05"] > 1).all()
    assert (reading[after == "dev-05"] < 1).all()
    got = model.score(*windows)
    np.testing.assert_allclose(
        got.score, np.fmax(without.score(*windows).score, reading * model.threshold)
    )
    flagged = got.flag.astype(bool)
    assert flagged[after != "dev-05"].all()
    unread = model.check.without_readings()
    own_score = dataclasses.replace(model, check=unread).score(*windows).score
    own = own_score > model.threshold
    named = [json.loads(e)[0].get("reading") for e in got.explanation[flagged]]
    sets = own_score[flagged] <= model.threshold * reading[flagged]
    assert named == [name if s else None for s in sets]
    assert not required or (flagged & ~own).any()


STEP_CONTEXT = (*SPIKE_CONTEXT, "value_step", "value_stepavg1d")


def test_step_statistic_is_the_largest_step_over_the_usual_one():
    """step / stepavg of the window's largest step between consecutive samples and the device's
    recent windows' root mean square step, scaled by the window's count (1 at 12 samples);
    NaN under STEP_MIN_SAMPLES (2) samples, where the usual step is 0 or not known yet, or the
    window has no step. A window of two samples, too few for the spike reading, is read: its
    one step."""
    check = ContextCheck.plan(FEATURES, STEP_CONTEXT)
    assert check.step == ((6, 7, 5, 4),)  # step, stepavg, count, the horizon's windows
    assert ContextCheck.plan(FEATURES, SPIKE_CONTEXT).step == ()
    context = np.zeros((6, len(STEP_CONTEXT)))
    context[:, 5:8] = [12, 8.0, 2.0]
    context[1, 5] = STEP_MIN_SAMPLES - 1
    context[2, 7] = 0.0
    context[3, 7] = np.nan
    context[4, 6] = np.nan
    context[5, 5:8] = [STEP_MIN_SAMPLES, 1.0, 4.0]
    assert STEP_MIN_SAMPLES == 2 < SPIKE_MIN_SAMPLES
    np.testing.assert_allclose(
        step_z(context, check.step[0]),
        [4.0, np.nan, np.nan, np.nan, np.nan, 0.25 * step_scale(STEP_MIN_SAMPLES)],
    )


def test_the_step_reading_of_a_window_of_few_samples_is_scaled_to_one_of_twelve():
    """The largest of k normal steps passes q(k) (the normal quantile 1 - 0.001 / 2k) once in
    a thousand windows: a window of n samples reads q(11) / q(n - 1) times its step ratio, so
    that one step of 6.8 usual steps (a window of 2 samples) reads above STEP_Z (8), where a
    window of 12 reads its ratio; more samples, also 1."""
    from scipy.stats import norm

    def q(k):
        return norm.isf(0.001 / (2 * k))

    counts = np.arange(2, 13)
    np.testing.assert_allclose(step_scale(counts), q(11) / q(counts - 1), rtol=1e-9)
    np.testing.assert_allclose(step_scale([12, 13, 60]), 1.0)
    assert np.isnan(step_scale([1, 0, np.nan])).all()
    assert (np.diff(step_scale(counts)) < 0).all()
    assert step_scale(2) == pytest.approx(1.189, abs=1e-3)
    check = ContextCheck.plan(FEATURES, STEP_CONTEXT)
    context = np.zeros((2, len(STEP_CONTEXT)))
    context[:, 5:8] = [[2, 6.8, 1.0], [12, 6.8, 1.0]]
    got = step_z(context, check.step[0])
    assert got[0] > STEP_Z > got[1] == pytest.approx(6.8)


def test_a_step_far_above_the_usual_steps_is_flagged_at_each_devices_own_bar(tmp_path, fleet):
    """The step reading: a window whose largest step is STEP_Z (8) of the device's usual step
    is flagged whatever the model says, at each device's own bar (the larger of 8 and 1.5x its
    training windows' highest reading): a device whose training windows held such steps is read
    against them. A small step is not flagged; a card from before the reading reads none."""
    rng, level, spread = fleet
    n, size = 150, 12

    def windows_of(ids, samples, usual):
        x = aggregates(samples)
        d = np.abs(np.diff(samples, axis=1))
        context = np.column_stack([np.repeat(level, len(ids) // DEVICES), usual])
        spike = np.column_stack([with_spread_context(x, context, 24), np.full(len(x), size)])
        return x, np.column_stack([spike, d.max(1), usual])

    ids, lv, sp = fleet_rows(level, spread, n)
    # A slow drift with small steps of about sp / 10 between samples.
    drift = np.cumsum(rng.normal(0, 0.1, size=(len(ids), size)), axis=1)
    samples = lv[:, None] + sp[:, None] * drift
    jumpy = np.flatnonzero(ids == "dev-05")[::10]
    samples[jumpy, 6:] += 20 * 0.1 * sp[jumpy, None]  # dev-05's training windows hold steps
    usual = 0.1 * sp
    x, training = windows_of(ids, samples, usual)
    result = fit_checked(tmp_path, ids, x, training, STEP_CONTEXT)
    card = check_card(result)
    assert card["step"] == [
        {
            "step": "value_step",
            "stepavg": "value_stepavg1d",
            "count": "value_count",
            "windows": "value_windows1d",
        }
    ]
    assert card["step_z"] == STEP_Z and card["step_margin"] == STEP_MARGIN
    assert card["step_bars"]["dev-05"] > 1.5 * 18
    assert card["step_bars"]["dev-00"] < 1.5 * 8
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, STEP_CONTEXT)
    assert model.check.step == ((6, 7, 5, 4),)
    without = dataclasses.replace(model, check=dataclasses.replace(model.check, step=()))

    m = 30
    after, alv, asp = fleet_rows(level, spread, m)
    base = alv[:, None] + asp[:, None] * np.cumsum(rng.normal(0, 0.1, (len(after), size)), 1)
    rows = model.normaliser.indices(after)

    def scored(step):
        s = base.copy()
        s[:, 4:7] -= step * 0.1 * asp[:, None]  # three samples down by `step` usual steps
        return windows_of(after, s, 0.1 * asp)

    ax, ctx = scored(20.0)
    reading = model.check.step_reading(rows, ctx)
    assert_read_at_own_bars(model, without, (after, ax, ctx), reading, "step", required=True)
    ax, ctx = scored(2.0)
    assert (model.check.step_reading(rows, ctx) < 1).all()
    assert not model.check.step_reading(rows, None).any()
    # A device the model has not seen is read at the devices' median bar.
    ax, ctx = scored(20.0)
    bar = float(np.median([b for b in card["step_bars"].values() if b is not None]))
    np.testing.assert_allclose(
        model.check.step_reading(np.full(len(ax), -1), ctx), step_z(ctx, model.check.step[0]) / bar
    )
    # A card from before the reading reads none; one whose columns do not fit is refused.
    old = dict(card)
    del old["step"]
    assert ContextCheck.from_card(old, FEATURES).step == ()
    card["step"][0]["stepavg"] = "value_stdavg1d"
    with pytest.raises(CalibrationError, match="step reading"):
        ContextCheck.from_card(card, FEATURES)


def test_the_step_and_change_readings_wait_for_enough_windows_in_their_horizon(tmp_path, fleet):
    """A usual step (or change) of a window or two is no usual step: the readings are read once
    the longest horizon holds USUAL_MIN_WINDOWS (6) of the device's windows, in scoring and in
    the training windows that set each device's bar (a training part's first windows no longer
    raise it). The card records the wait; a card from before it reads from the first window."""
    check = ContextCheck.plan(FEATURES, CHANGE_CONTEXT)
    context = np.zeros((4, len(CHANGE_CONTEXT)))
    context[:, 4] = [np.nan, 1, USUAL_MIN_WINDOWS - 1, USUAL_MIN_WINDOWS]  # windows seen
    context[:, 5:8] = [2, 8.0, 1.0]  # two samples: one step of 8 usual steps
    assert USUAL_MIN_WINDOWS == 6
    np.testing.assert_allclose(step_z(context, check.step[0]), 8.0 * step_scale(2))
    np.testing.assert_allclose(
        step_z(context, check.step[0], USUAL_MIN_WINDOWS), [np.nan] * 3 + [8.0 * step_scale(2)]
    )
    context[:, 5], context[:, 8:10] = 1, [6.0, 2.0]  # one sample, 3 usual changes away
    np.testing.assert_allclose(
        change_z(context, check.change[0], USUAL_MIN_WINDOWS), [np.nan] * 3 + [3.0]
    )
    # A context without a horizon's windows column is read from the first window.
    no_windows = ContextCheck.plan(FEATURES, CHANGE_CONTEXT[:4] + CHANGE_CONTEXT[5:])
    assert no_windows.step[0][3] == -1
    without = np.delete(context, 4, axis=1)
    without[:, 4] = 2  # two samples again (the count's column moved down by one)
    np.testing.assert_allclose(
        step_z(without, no_windows.step[0], USUAL_MIN_WINDOWS), np.full(4, 8.0 * step_scale(2))
    )

    rng, level, spread = fleet
    n, size = 150, 12
    ids, lv, sp = fleet_rows(level, spread, n)
    samples = lv[:, None] + sp[:, None] * np.cumsum(rng.normal(0, 0.1, (len(ids), size)), 1)
    x = aggregates(samples)
    steps = np.abs(np.diff(samples, axis=1)).max(1)
    usual = 0.1 * sp

    def context_of(x, steps, usual, seen):
        spread_ctx = with_spread_context(x, np.column_stack([lv[: len(x)], sp[: len(x)]]), seen)
        return np.column_stack([spread_ctx, np.full(len(x), size), steps, usual])

    seen = np.full(len(ids), 24.0)
    first = np.flatnonzero(ids == "dev-03")[:2]
    seen[first] = [0, 1]  # dev-03's first training windows: their usual step is one window's
    steps[first] = 40 * usual[first]
    result = fit_checked(tmp_path, ids, x, context_of(x, steps, usual, seen), STEP_CONTEXT)
    card = check_card(result)
    assert card["usual_min_windows"] == USUAL_MIN_WINDOWS
    assert card["step_bars"]["dev-03"] < 1.5 * 8  # its first windows did not raise its bar
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, STEP_CONTEXT)
    assert model.check.usual_min_windows == USUAL_MIN_WINDOWS
    rows = model.normaliser.indices(ids[:2])
    jump = context_of(x[:2], 20 * usual[:2], usual[:2], np.array([1.0, 24.0]))
    reading = model.check.step_reading(rows, jump)
    assert reading[0] == 0 and reading[1] > 1  # one window seen: not read; 24: flagged
    old = dict(card)
    del old["usual_min_windows"]
    old["step"] = [{k: v for k, v in u.items() if k != "windows"} for u in card["step"]]
    before = ContextCheck.from_card(old, FEATURES)
    assert before.usual_min_windows == 0
    assert (before.step_reading(rows, jump) > 1).all()


CHANGE_CONTEXT = (*STEP_CONTEXT, "value_change", "value_changerms1d")


def test_change_statistic_is_a_one_sample_windows_change_over_the_usual_one():
    """change / changerms of a window of one sample (CHANGE_MAX_SAMPLES): its change from the
    window before over the device's recent windows' root mean square change; NaN for a window
    of more samples or of an unknown count, where the usual change is 0 or not known yet, or
    the window has no change (no window just before it)."""
    check = ContextCheck.plan(FEATURES, CHANGE_CONTEXT)
    assert check.change == ((8, 9, 5, 4),)  # change, changerms, count, the horizon's windows
    assert ContextCheck.plan(FEATURES, STEP_CONTEXT).change == ()
    context = np.zeros((6, len(CHANGE_CONTEXT)))
    context[:, [5, 8, 9]] = [1, 6.0, 2.0]
    context[1, 5] = 2  # two samples: the step reading reads its step
    context[2, 5] = np.nan
    context[3, 9] = 0.0
    context[4, 9] = np.nan
    context[5, 8] = np.nan
    assert CHANGE_MAX_SAMPLES == 1
    np.testing.assert_allclose(
        change_z(context, check.change[0]), [3.0, np.nan, np.nan, np.nan, np.nan, np.nan]
    )


def test_a_change_far_above_the_usual_changes_is_flagged_at_each_devices_own_bar(tmp_path, fleet):
    """The change reading: a window of one sample whose change from the window before is
    CHANGE_Z (4) of the device's recent windows' root mean square change is flagged whatever
    the model says, at each device's own bar (the larger of 4 and its training windows'
    highest reading, CHANGE_MARGIN 1): a device whose training windows held such changes is
    read against them. A small change is not flagged; a card from before the reading reads
    none, one whose columns do not fit is refused."""
    rng, level, spread = fleet

    def windows_of(values, previous, sd, usual):
        x = aggregates(values[:, None])  # one sample a window: std 0, min = max = mean
        spread_ctx = with_spread_context(x, np.column_stack([previous, sd]), 24)
        n = len(values)
        steps = np.full((n, 2), np.nan)  # one sample: no step of its own
        change = np.abs(values - previous)
        return x, np.column_stack([spread_ctx, np.ones(n), steps, change, usual])

    n = 150
    ids, lv, sp = fleet_rows(level, spread, n)
    # A series that moves by about sp / 20 from one window to the next.
    usual = 0.05
    moves = usual * sp * rng.normal(size=len(ids))
    jumpy = np.flatnonzero(ids == "dev-05")[::10]
    moves[jumpy] = 30 * usual * sp[jumpy]  # dev-05's training windows hold jumps
    previous = lv + sp * rng.normal(size=len(ids))  # the recent level, within its spread
    x, training = windows_of(previous + moves, previous, sp, usual * sp)
    result = fit_checked(tmp_path, ids, x, training, CHANGE_CONTEXT)
    card = check_card(result)
    assert card["change"] == [
        {
            "change": "value_change",
            "changerms": "value_changerms1d",
            "count": "value_count",
            "windows": "value_windows1d",
        }
    ]
    assert card["change_z"] == CHANGE_Z == 4.0 and card["change_margin"] == CHANGE_MARGIN == 1.0
    assert card["change_bars"]["dev-05"] > 29
    assert card["change_bars"]["dev-00"] == CHANGE_Z
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, CHANGE_CONTEXT)
    assert model.check.change == ((8, 9, 5, 4),)
    without = dataclasses.replace(model, check=dataclasses.replace(model.check, change=()))

    m = 30
    after, alv, asp = fleet_rows(level, spread, m)
    before = alv + asp * rng.normal(size=len(after))
    rows = model.normaliser.indices(after)

    def scored(change):
        return windows_of(before - change * usual * asp, before, asp, usual * asp)

    ax, ctx = scored(20.0)  # 20 usual changes down: 1 sd of the recent level, ordinary
    reading = model.check.change_reading(rows, ctx)
    assert_read_at_own_bars(model, without, (after, ax, ctx), reading, "change", required=True)
    ax, ctx = scored(2.0)
    assert (model.check.change_reading(rows, ctx) < 1).all()
    assert not model.check.change_reading(rows, None).any()
    # Windows of two samples are the step reading's: not read.
    ax, ctx = scored(20.0)
    ctx[:, 5] = 2
    assert not model.check.change_reading(rows, ctx).any()
    # A card from before the reading reads none; one whose columns do not fit is refused.
    old = dict(card)
    del old["change"]
    assert ContextCheck.from_card(old, FEATURES).change == ()
    card["change"][0]["changerms"] = "value_stepavg1d"
    with pytest.raises(CalibrationError, match="change reading"):
        ContextCheck.from_card(card, FEATURES)


def test_the_level_reading_reads_windows_of_many_samples_at_a_higher_bar(tmp_path, fleet):
    """Where the count is given, the level reading reads a window of more than
    SEASON_MAX_SAMPLES samples at LEVEL_MANY_Z (5), one of fewer (or of an unknown count) at
    LEVEL_Z (4). A card from before that bar reads every window at LEVEL_Z; one whose count
    column does not fit is refused."""
    rng, level, spread = fleet
    ids, x, context = windows(rng, 150, level, spread)
    training = np.column_stack([with_spread_context(x, context, 24), np.full(len(x), 12.0)])
    result = fit_checked(tmp_path, ids, x, training, SPIKE_CONTEXT)
    card = check_card(result)
    assert card["level"] == [
        {
            "feature": "value_mean",
            "avg": "value_avg1d",
            "sd": "value_sd1d",
            "windows": "value_windows1d",
            "count": "value_count",
        }
    ]
    assert (card["level_z"], card["level_many_z"]) == (LEVEL_Z, LEVEL_MANY_Z) == (4.0, 5.0)
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, SPIKE_CONTEXT)
    assert model.check.level == ((0, 0, 1, 4, 5),)

    after_ids, after_x, after_context = windows(rng, 30, level, spread)
    rows = model.normaliser.indices(after_ids)
    scale = model.normaliser.typical_rows(rows)[1][:, 0]
    ctx = np.column_stack(
        [with_spread_context(after_x, after_context, 24), np.full(len(after_x), 12.0)]
    )
    ctx[:, 1] = 2.0 * scale
    ctx[:, 0] = after_x[:, 0] - 4.4 * ctx[:, 1]  # the mean 4.4 of the recent spread off
    older = ContextCheck.from_card({k: v for k, v in card.items() if k != "level_many_z"}, FEATURES)
    for count, reading, old_reading in (
        (12, 4.4 / 5, 1.1),
        (SEASON_MAX_SAMPLES + 1, 4.4 / 5, 1.1),
        (SEASON_MAX_SAMPLES, 1.1, 1.1),
        (1, 1.1, 1.1),
        (np.nan, 1.1, 1.1),
    ):
        ctx[:, 5] = count
        np.testing.assert_allclose(
            model.check.level_reading(model.normaliser, rows, after_x, ctx), reading
        )
        np.testing.assert_allclose(
            older.level_reading(model.normaliser, rows, after_x, ctx), old_reading
        )
    card["level"][0]["count"] = "value_windows1d"
    with pytest.raises(CalibrationError, match="level reading"):
        ContextCheck.from_card(card, FEATURES)


def test_the_spike_and_the_step_reading_short_of_their_bars_together_flag(
    tmp_path, fleet, monkeypatch
):
    """A window that both the spike and the step reading read at SPIKE_STEP_SHARE of their
    bars or more is flagged; one of them alone short of its bar, or both under the share,
    is not. A card from before that reading reads none."""
    rng, level, spread = fleet
    context_names = (*SPIKE_CONTEXT, "value_step", "value_stepavg1d")
    ids, x, context = windows(rng, 150, level, spread)
    spike = np.column_stack([with_spread_context(x, context, 24), np.full(len(x), 12.0)])
    usual = spread[0] * np.ones(len(x))
    training = np.column_stack([spike, usual, usual])
    result = fit_checked(tmp_path, ids, x, training, context_names)
    card = check_card(result)
    share = SPIKE_STEP_SHARE
    assert card["spike_step_share"] == share == 0.72
    model = OnnxModel.load(result.model_dir, FEATURES, 3600, context_names)
    assert model.check.spike and model.check.step

    n = 6
    after_ids = np.array(["dev-00"] * n, dtype=object)
    after_x = np.tile(x[0], (n, 1))
    after_ctx = np.tile(training[0], (n, 1))
    unread = dataclasses.replace(model.check, spike=(), step=(), spike_step_share=np.inf)
    base = dataclasses.replace(model, check=unread).score(after_ids, after_x, after_ctx)
    assert not base.flag.astype(bool).any()  # the model alone passes none of these windows
    # Of their bars: both past the share; the spike under it; the spike alone past its bar; the
    # step alone short of its bar; the spike alone short of its bar; both at the share.
    spikes = np.array([share + 0.05, share - 0.05, 1.2, 0.0, 0.9, share])
    steps = np.array([share + 0.1, 0.95, 0.0, 0.85, 0.0, share])
    # Each window's readings, found by its count (which the model does not read).
    after_ctx[:, 5] = 12 + np.arange(n)

    def window(c):
        return (c[:, 5] - 12).astype(int)

    monkeypatch.setattr(ContextCheck, "spike_reading", lambda self, f, r, x, c: spikes[window(c)])
    monkeypatch.setattr(ContextCheck, "step_reading", lambda self, r, c: steps[window(c)])
    got = model.score(after_ids, after_x, after_ctx)
    # The spike-and-step reading is the smaller of the two over the share.
    readings = [(share + 0.05) / share, 0.95, 1.2, 0.85, 0.9, 1.0]
    expected = np.fmax(base.score, np.multiply(readings, model.threshold))
    np.testing.assert_allclose(got.score, expected)
    assert list(got.flag) == [True, False, True, False, False, False]  # 1.0: at the bar, not above
    # The explanation names the reading that flagged each window.
    assert [json.loads(e)[0].get("reading") for e in got.explanation[[0, 2]]] == [
        "spike and step",
        "spike",
    ]
    older = ContextCheck.from_card(
        {k: v for k, v in card.items() if k != "spike_step_share"}, FEATURES
    )
    assert older.spike_step_share == np.inf
