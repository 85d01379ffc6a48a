"""Per-device normalisation and severity calibration (udfs/calibration.py) on bounded inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from udfs.calibration import CalibrationError, DeviceNormaliser, Severity


def test_normaliser_uses_each_devices_own_mean_and_sd():
    ids = np.array(["a", "a", "a", "b", "b", "b"], dtype=object)
    x = np.array([[1.0, 10], [2, 20], [3, 30], [100, 5], [102, 5], [104, 5]])
    n = DeviceNormaliser.fit(ids, x)
    assert n.devices == ("a", "b")
    np.testing.assert_allclose(n.center, [[2, 20], [102, 5]])
    sd_a = np.std([1.0, 2, 3])
    assert n.scale[0, 0] == pytest.approx(sd_a) and n.scale[1, 0] == pytest.approx(2 * sd_a)
    # b's second feature is flat: its scale is floored at 0.1 x the fleet median sd.
    median_sd = np.median([np.std([10.0, 20, 30]), 0.0])
    assert n.scale[1, 1] == pytest.approx(0.1 * median_sd)
    z = n.transform(np.array(["a", "b"], dtype=object), np.array([[3.0, 20], [100, 5]]))
    np.testing.assert_allclose(z, [[1 / sd_a, 0], [-1 / sd_a, 0]])


def test_scale_floor_follows_each_devices_own_level_in_a_fleet_of_mixed_units():
    # One metric in three units: bytes (~1e6), requests (~1e3) and a load average (~0.1).
    rng = np.random.default_rng(2)
    levels, spreads = (1e6, 1e3, 0.1), (1e5, 1e2, 0.01)
    ids = np.repeat(["bytes", "requests", "load"], 200).astype(object)
    pairs = zip(levels, spreads, strict=True)
    x = np.concatenate([rng.normal(m, s, 200) for m, s in pairs])[:, None]
    n = DeviceNormaliser.fit(ids, x)
    # Each device keeps its own spread: none is floored by the others' units.
    for device, spread in zip(("bytes", "requests", "load"), spreads, strict=True):
        assert n.scale[n.devices.index(device), 0] == pytest.approx(spread, rel=0.15)
    # So the quiet device can alarm: a load of 0.2 (10 of its sd out) is far out.
    z = n.transform(np.array(["load"], dtype=object), np.array([[0.2]]))
    assert z[0, 0] > 8
    # In one unit (levels within two orders of magnitude): 0.1 x the fleet's median sd (1).
    same = DeviceNormaliser.fit(
        ids,
        np.concatenate([rng.normal(m, s, 200) for m, s in ((10, 1), (20, 2), (1, 0.01))])[:, None],
    )
    assert same.scale[same.devices.index("load"), 0] == pytest.approx(0.1, rel=0.15)


def test_a_feature_mostly_zero_is_scaled_by_its_non_zero_values():
    # An error counter at rest: 0 in 96 of 100 windows, then 1, 2, 1, 3 errors.
    counter = np.zeros(100)
    counter[[10, 40, 70, 90]] = [1.0, 2, 1, 3]
    # A busy device's errors (none at 0) and a device never erring (all 0).
    busy = np.arange(100, dtype=np.float64) % 7 + 1
    ids = np.repeat(["counter", "busy", "quiet"], 100).astype(object)
    x = np.concatenate([counter, busy, np.zeros(100)])[:, None]
    n = DeviceNormaliser.fit(ids, x, zero_inflated=True)
    scale = dict(zip(n.devices, n.scale[:, 0], strict=True))
    # Over all its windows the counter's sd is 0.38; its errors' typical size (root mean
    # square) is 1.94.
    assert np.std(counter) == pytest.approx(0.38, abs=0.01)
    assert scale["counter"] == pytest.approx(np.sqrt(np.mean(np.square([1.0, 2, 1, 3]))))
    # A window with one error is 0.5 of that scale out, not 2.4 (over the sd of all windows).
    assert n.transform(np.array(["counter"], dtype=object), np.array([[1.0]]))[0, 0] < 0.6
    # Devices mostly not at 0, or never off it, keep their sd and floor (the fleet's median
    # sd is of the scales above).
    assert scale["busy"] == pytest.approx(np.std(busy))
    assert scale["quiet"] == pytest.approx(0.1 * np.median([scale["counter"], np.std(busy), 0]))
    # Errors that recur alike (all 1: no spread about their own mean) are scaled by their
    # size, so one more such window is 1 scale out, not 5 sd.
    alike = np.zeros(100)
    alike[[5, 50]] = 1.0
    same = DeviceNormaliser.fit(
        np.repeat(["alike"], 100).astype(object), alike[:, None], zero_inflated=True
    )
    assert np.std(alike) == pytest.approx(0.14, abs=0.01)
    assert same.scale[0, 0] == pytest.approx(1.0)
    # Two non-zero windows in 300 (under 1 %) are not a recurring behaviour: the sd stays.
    rare = np.zeros(300)
    rare[[50, 250]] = [2.0, 3.0]
    alone = DeviceNormaliser.fit(
        np.repeat(["rare"], 300).astype(object), rare[:, None], zero_inflated=True
    )
    assert alone.scale[0, 0] == pytest.approx(np.std(rare))
    # Off unless asked (training asks for one-metric catalogues): the sd over all windows.
    plain = DeviceNormaliser.fit(ids, x)
    assert plain.scale[plain.devices.index("counter"), 0] == pytest.approx(np.std(counter))


def test_the_mostly_zero_scale_is_for_one_metric_models():
    from training.train import one_metric

    assert one_metric(["errors_mean", "errors_std", "errors_min", "errors_max"])
    assert not one_metric(["cpu_utilization_mean", "latency_ms_mean", "latency_ms_max"])


def test_unknown_device_gets_the_fleet_normalisation():
    rng = np.random.default_rng(0)
    ids = np.repeat(["a", "b"], 50).astype(object)
    x = rng.normal(size=(100, 3)) + np.repeat([[0.0], [10.0]], 50, axis=0)
    n = DeviceNormaliser.fit(ids, x)
    probe = np.array([[5.0, 5.0, 5.0]])
    z = n.transform(np.array(["zzz"], dtype=object), probe)
    np.testing.assert_allclose(z, (probe - x.mean(0)) / x.std(0))
    assert list(n.known(np.array(["a", "zzz"], dtype=object))) == [True, False]


def test_feature_flat_over_the_whole_fleet_scores_any_change_as_far_out():
    ids = np.repeat(["a", "b"], 5).astype(object)
    x = np.column_stack([np.arange(10.0), np.ones(10)])  # second feature: always 1 (link up)
    n = DeviceNormaliser.fit(ids, x)
    z = n.transform(np.array(["a"], dtype=object), np.array([[2.0, 0.0]]))
    assert abs(z[0, 1]) >= 1e5


def test_normaliser_survives_the_card_round_trip_exactly():
    rng = np.random.default_rng(1)
    ids = rng.choice(["x", "y", "z"], size=300).astype(object)
    x = rng.normal(size=(300, 4)) * [1, 1e-3, 1e3, 7]
    n = DeviceNormaliser.fit(ids, x)
    back = DeviceNormaliser.from_card(json.loads(json.dumps(n.to_card())), 4)
    probe_ids = np.array(["x", "y", "z", "new"], dtype=object)
    probe = rng.normal(size=(4, 4))
    assert np.array_equal(n.transform(probe_ids, probe), back.transform(probe_ids, probe))


def test_normaliser_card_that_does_not_fit_the_model_is_refused():
    n = DeviceNormaliser.fit(np.array(["a", "a"], dtype=object), np.array([[1.0, 2], [2, 3]]))
    with pytest.raises(CalibrationError, match="has 2 features, the model 3"):
        DeviceNormaliser.from_card(n.to_card(), 3)


@pytest.mark.parametrize(
    "train_scores",
    [
        np.random.default_rng(2).exponential(size=5000),
        np.random.default_rng(3).normal(size=5000),
        np.r_[np.zeros(4000), np.random.default_rng(4).exponential(size=1000)],  # many ties
        np.full(100, 3.0),  # all equal
    ],
    ids=["exponential", "normal", "ties", "constant"],
)
def test_severity_is_monotone_bounded_and_50_at_the_threshold(train_scores):
    threshold = float(np.quantile(train_scores, 0.999))
    sev = Severity.fit(train_scores, threshold)
    grid = np.sort(
        np.r_[
            train_scores,
            np.linspace(train_scores.min() - 10, train_scores.max() + 100, 20_000),
            threshold,
            np.nextafter(threshold, np.inf),
        ]
    )
    s = sev(grid)
    assert np.all(np.diff(s) >= 0), "severity must never fall as the score rises"
    assert s.min() >= 0 and s.max() <= 100
    assert sev(np.array([threshold]))[0] == 50
    assert ((s > 50) == (grid > threshold)).all(), "flagged exactly when severity is above 50"
    assert sev(np.array([threshold + 1e6]))[0] == pytest.approx(100)
    assert np.isnan(sev(np.array([np.nan]))[0])


def test_severity_hits_its_knots_and_survives_the_card_round_trip():
    train = np.random.default_rng(5).exponential(size=10_000)
    threshold = float(np.quantile(train, 0.999))
    sev = Severity.fit(train, threshold)
    np.testing.assert_allclose(sev(np.quantile(train, [0.5, 0.9, 0.99])), [0, 10, 25], atol=1e-9)
    back = Severity.from_card(json.loads(json.dumps(sev.to_card())))
    probe = np.linspace(-1, 30, 1000)
    assert np.array_equal(sev(probe), back(probe))


def test_severity_card_with_knots_out_of_order_is_refused():
    card = Severity.fit(np.arange(100.0), 99.0).to_card()
    card["knots"][0], card["knots"][1] = card["knots"][1], card["knots"][0]
    with pytest.raises(CalibrationError, match="rise strictly"):
        Severity.from_card(card)
