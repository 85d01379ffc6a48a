"""The pandas scoring UDF against the training-side reference (scikit-learn / numpy), without
Flink: its eval() gets pandas Series exactly as Flink's Arrow batches deliver them. Both models,
per-device normalisation, severity, and the refusals of a model that does not fit."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from common.features import MODEL_FEATURE_NAMES
from training.detectors import DetectorParams
from training.train import check_parity, fit_model
from udfs.onnx_scorer import (
    CARD_FILE,
    MODEL_FILE,
    SCORE_RESULT_FIELDS,
    ModelCardError,
    ModelSource,
    OnnxModel,
    ScoreWindow,
    feature_metric,
)

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
    assert tuple(out.columns) == SCORE_RESULT_FIELDS
    expected, expected_flag = trained.reference_scores(ids, x)
    np.testing.assert_allclose(out["anomaly_score"].to_numpy(float), expected, rtol=1e-5, atol=1e-5)
    assert (out["is_anomaly"].to_numpy(bool) == expected_flag).all()
    assert (out["is_anomaly"].to_numpy(bool) == (out["severity"].to_numpy() > 50)).all()
    assert out["is_anomaly"][40:90].all(), "planted outliers must be flagged"
    assert out["is_anomaly"][90:].mean() < 0.05
    assert set(out["model_version"]) == {trained.version}
    assert not out["known_device"][:40].any() and out["known_device"][40:].all()


def test_per_row_udf_gives_the_vectorized_rows(trained):
    """ANOMALY_SCORING_UDF=row (the benchmark's per-row variant): the same row per window."""
    from udfs.onnx_scorer import ScoreWindowPerRow

    rng = np.random.default_rng(2)
    ids, x = fleet_windows(rng, 2)
    x[:5] += 40.0  # flagged, explained windows too
    vectorized = opened(trained).eval(*batch(ids, x))
    per_row = ScoreWindowPerRow(str(trained.model_dir), MODEL_FEATURE_NAMES, 10)
    per_row.open(None)
    for i in range(len(ids)):
        row = per_row.eval(ids[i], *x[i])
        expected = vectorized.iloc[i]
        # Scores and severities agree to rounding (batched arithmetic), the rest exactly.
        assert tuple(row)[:2] == pytest.approx(tuple(expected)[:2], rel=1e-9)
        assert tuple(row)[2:] == tuple(expected)[2:], i


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
    with pytest.raises(ModelCardError, match="not the file its card describes"):
        OnnxModel.load(path, MODEL_FEATURE_NAMES)
    # Even with a card that vouches for the broken file, onnxruntime refuses it.
    path = copy_model(trained, tmp_path, model_sha256=hashlib.sha256(b"x").hexdigest())
    (path / MODEL_FILE).write_bytes(b"x")
    with pytest.raises(ModelCardError, match="cannot load"):
        OnnxModel.load(path, MODEL_FEATURE_NAMES)


def test_model_that_fails_its_self_check_is_refused(trained, tmp_path):
    card = json.loads((trained.model_dir / CARD_FILE).read_text())
    check = card["self_check"]
    check["scores"] = [s + 0.5 for s in check["scores"]]
    path = copy_model(trained, tmp_path, self_check=check)
    with pytest.raises(ModelCardError, match="fails its card's self-check"):
        OnnxModel.load(path, MODEL_FEATURE_NAMES)


def perturbed_rows(strong: str, weak: str, n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Windows of known devices at their own level, with every feature of one metric 60 of
    the device's spreads up and of another 30 spreads up."""
    ids = np.array([f"dev-{d:02d}" for d in range(n)], dtype=object)
    x = np.arange(n)[:, None] * 100.0 + np.zeros((n, N_FEATURES))
    spread = (1.0 + np.arange(n) % 5)[:, None]
    for metric, k in ((strong, 60.0), (weak, 30.0)):
        cols = [j for j, f in enumerate(MODEL_FEATURE_NAMES) if feature_metric(f) == metric]
        x[:, cols] += k * spread
    return ids, x


def test_explanation_names_the_perturbed_metrics_with_actual_and_typical(trained):
    fn = opened(trained)
    metrics = list(dict.fromkeys(feature_metric(f) for f in MODEL_FEATURE_NAMES))
    for strong, weak in ((metrics[0], metrics[3]), (metrics[4], metrics[1])):
        ids, x = perturbed_rows(strong, weak)
        out = fn.eval(*batch(ids, x))
        assert out["is_anomaly"].all()
        # An isolation forest isolates any value beyond the training range equally fast: it
        # names both perturbed metrics but cannot rank two metrics that are both far out.
        ranked = fn.model.model_kind != "isolation-forest"
        if ranked:
            assert (out["top_metric"] == strong).all(), list(out["top_metric"])
        center, _ = fn.model.normaliser.typical_rows(fn.model.normaliser.indices(ids))
        for r, text in enumerate(out["explanation"]):
            items = json.loads(text)
            assert 2 <= len(items) <= 3
            named = [i["metric"] for i in items[:2]]
            assert named == [strong, weak] if ranked else sorted(named) == sorted([strong, weak])
            for item in items[:2]:
                j = MODEL_FEATURE_NAMES.index(item["feature"])
                assert feature_metric(item["feature"]) == item["metric"]
                assert item["direction"] == "up" and item["contribution"] > 0
                assert item["actual"] == pytest.approx(x[r, j], rel=1e-5)
                assert item["typical"] == pytest.approx(center[r, j], rel=1e-5, abs=1e-3)
            contributions = [i["contribution"] for i in items]
            assert contributions == sorted(contributions, reverse=True)
    # Windows that are not flagged carry no explanation.
    quiet = fn.eval(*batch(np.array(["dev-05"], dtype=object), np.full((1, N_FEATURES), 500.0)))
    assert quiet["top_metric"][0] is None and quiet["explanation"][0] is None


def test_explanations_of_extreme_windows_stay_json(trained):
    """Values so large that the normalised score overflows: the explanation is still JSON,
    with null where a number is not finite."""
    fn = opened(trained)
    x = np.full((2, N_FEATURES), 1e300)
    x[1, :] = 50.0
    x[1, 0] = 1.7e308
    out = fn.eval(*batch(np.array(["dev-01", "dev-02"], dtype=object), x))
    # As anomalous as a window gets: flagged at severity 100, not a NaN left unflagged.
    assert list(out["is_anomaly"]) == [True, True] and list(out["severity"]) == [100.0, 100.0]
    for text in out["explanation"]:
        if text is not None:
            for item in json.loads(text):
                assert set(item) >= {"actual", "typical", "contribution"}
                for key in ("actual", "typical", "contribution"):
                    assert item[key] is None or np.isfinite(item[key])


def following(folder, version: str, reload_seconds: float, clock) -> ModelSource:
    """A model source that starts on ``version`` and follows the folder's CURRENT."""
    return ModelSource(
        folder / version,
        MODEL_FEATURE_NAMES,
        10,
        pointer=folder / "CURRENT",
        reload_seconds=reload_seconds,
        clock=clock,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def models_folder(tmp_path, *results) -> list[str]:
    """A models folder holding copies of these versions; CURRENT names the first."""
    versions = []
    for result in results:
        target = tmp_path / result.version
        target.mkdir(exist_ok=True)
        for name in (MODEL_FILE, CARD_FILE):
            (target / name).write_bytes((result.model_dir / name).read_bytes())
        versions.append(result.version)
    (tmp_path / "CURRENT").write_text(versions[0] + "\n")
    return versions


@pytest.fixture(scope="module")
def second(trained, tmp_path_factory):
    """Another version of the same kind (other contamination, so another threshold)."""
    rng = np.random.default_rng(0)
    ids, x = fleet_windows(rng, 120)
    return fit_model(
        ids,
        x,
        feature_names=MODEL_FEATURE_NAMES,
        window_seconds=10,
        params=DetectorParams(n_estimators=50, contamination=0.03),
        models_dir=tmp_path_factory.mktemp("models2"),
        training={"source": "test"},
        log=lambda m: None,
    )


def test_parity_check_refuses_a_different_model(trained):
    rng = np.random.default_rng(3)
    ids, x = fleet_windows(rng, 10)

    def other(device_ids, rows, context=None):
        score, flag = trained.reference_scores(device_ids, rows, context)
        return score * 1.01 + 0.01, flag

    exported = OnnxModel.load(trained.model_dir, MODEL_FEATURE_NAMES)
    assert check_parity(exported, ids, x, trained.reference_scores)
    with pytest.raises(RuntimeError, match="disagrees"):
        check_parity(exported, ids, x, other)


def test_source_follows_current_within_its_reload_interval(trained, second, tmp_path):
    first_version, second_version = models_folder(tmp_path, trained, second)
    clock = Clock()
    source = following(tmp_path, first_version, 5, clock)
    assert source.open().version == first_version
    (tmp_path / "CURRENT").write_text(second_version + "\n")
    clock.now = 4.9
    assert not source.refresh() and source.model.version == first_version
    clock.now = 5.0
    assert source.refresh() and source.model.version == second_version
    assert (source.loads, source.load_failures) == (2, 0)


def test_source_refuses_a_broken_version_keeps_scoring_and_counts_it_once(
    trained, second, tmp_path
):
    first_version, second_version = models_folder(tmp_path, trained, second)
    (tmp_path / second_version / MODEL_FILE).write_bytes(b"truncated")
    clock = Clock()
    source = following(tmp_path, first_version, 1, clock)
    source.open()
    (tmp_path / "CURRENT").write_text(second_version + "\n")
    for step in range(1, 4):
        clock.now = step
        assert not source.refresh()
    assert source.model.version == first_version
    assert source.load_failures == 1 and "not the file its card describes" in source.last_error
    # A pointer to nothing is refused the same way.
    (tmp_path / "CURRENT").write_text("no-such-version\n")
    clock.now = 10
    assert not source.refresh() and source.load_failures == 2
    assert source.model.version == first_version
    # Once the version's files are mended, it is taken.
    (tmp_path / "CURRENT").write_text(second_version + "\n")
    (tmp_path / second_version / MODEL_FILE).write_bytes(
        (second.model_dir / MODEL_FILE).read_bytes()
    )
    clock.now = 20
    assert source.refresh() and source.model.version == second_version
    assert source.last_error is None


def test_source_starts_with_the_submitted_model_when_current_is_unusable(trained, tmp_path):
    (version,) = models_folder(tmp_path, trained)
    (tmp_path / "CURRENT").write_text("gone\n")
    source = ModelSource(tmp_path / version, MODEL_FEATURE_NAMES, 10, pointer=tmp_path / "CURRENT")
    assert source.open().version == version and source.load_failures == 1


def test_udf_switches_versions_between_batches(trained, second, tmp_path):
    first_version, second_version = models_folder(tmp_path, trained, second)
    fn = ScoreWindow(
        str(tmp_path / first_version),
        MODEL_FEATURE_NAMES,
        10,
        str(tmp_path / "CURRENT"),
        reload_seconds=0,
    )
    fn.open(None)
    rng = np.random.default_rng(5)
    ids, x = fleet_windows(rng, 2)
    before = fn.eval(*batch(ids, x))
    (tmp_path / "CURRENT").write_text(second_version + "\n")
    after = fn.eval(*batch(ids, x))
    assert set(before["model_version"]) == {first_version}
    assert set(after["model_version"]) == {second_version}
    expected, _ = second.reference_scores(ids, x)
    np.testing.assert_allclose(
        after["anomaly_score"].to_numpy(float), expected, rtol=1e-5, atol=1e-5
    )
