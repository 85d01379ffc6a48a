"""The window-feature SQL (sql/flink/window_features.sql) on bounded in-memory events, in
Flink batch mode, against an independent numpy computation."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from common.features import CATALOGUE, FEATURE_NAMES, HORIZONS, METRIC_NAMES
from common.settings import REPO_ROOT, Settings
from common.sql import window_feature_statements
from simulator.generator import SimulatorConfig, TelemetryGenerator
from tests import reference

T0 = 1_700_000_000_000  # a multiple of 10 s


def edge_case_events() -> list[dict]:
    """Hand-made windows: a single sample, constant values, a missing metric, a boundary."""
    base: dict = {m: 10.0 * (i + 1) for i, m in enumerate(METRIC_NAMES)}
    base.update(is_anomaly=False, scenario=None)
    first, second = METRIC_NAMES[0], METRIC_NAMES[1]
    return [
        # dev-a, window [T0, T0+10s): one sample -> std 0, min = max = mean
        {**base, "device_id": "dev-a", "ts_ms": T0 + 1},
        # dev-b: three constant samples, one of them missing the second metric
        {**base, "device_id": "dev-b", "ts_ms": T0},
        {**base, "device_id": "dev-b", "ts_ms": T0 + 4000},
        {**base, "device_id": "dev-b", "ts_ms": T0 + 9999, second: None},
        # dev-b, next window: exactly on the boundary belongs to the later window
        {**base, "device_id": "dev-b", "ts_ms": T0 + 10_000, first: 30.0},
        {**base, "device_id": "dev-b", "ts_ms": T0 + 15_000, first: 50.0},
    ]


def flink_window_features(t_env, settings: Settings, events: list[dict]) -> pd.DataFrame:
    from pyflink.table import DataTypes

    from common.flink_env import to_pandas

    frame = pd.DataFrame(events)
    schema = DataTypes.ROW(
        [
            DataTypes.FIELD("device_id", DataTypes.STRING()),
            DataTypes.FIELD("ts_ms", DataTypes.BIGINT()),
        ]
        + [DataTypes.FIELD(m, DataTypes.DOUBLE()) for m in METRIC_NAMES]
    )
    raw = t_env.from_pandas(frame[["device_id", "ts_ms", *METRIC_NAMES]], schema)
    t_env.create_temporary_view("raw_events", raw)
    t_env.execute_sql(
        "CREATE TEMPORARY VIEW telemetry_events AS "
        "SELECT *, TO_TIMESTAMP_LTZ(ts_ms, 3) AS event_time FROM raw_events"
    )
    for statement in window_feature_statements(settings, batch=True):
        t_env.execute_sql(statement)
    out = to_pandas(t_env.sql_query("SELECT * FROM window_features"))
    for name in t_env.list_temporary_views():
        t_env.drop_temporary_view(name)
    out["window_start"] = pd.to_datetime(out["window_start"]).dt.tz_localize("UTC")
    out["window_end"] = pd.to_datetime(out["window_end"]).dt.tz_localize("UTC")
    return out.sort_values(["device_id", "window_start"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def batch_env(base_settings: Settings):
    from common.flink_env import create_table_env

    return create_table_env(base_settings, streaming=False)


def assert_features_equal(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(actual["device_id"]) == list(expected["device_id"])
    assert list(actual["window_start"]) == list(expected["window_start"])
    assert list(actual["window_end"]) == list(expected["window_end"])
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(
            actual[name].to_numpy(dtype=float),
            expected[name].to_numpy(dtype=float),
            rtol=1e-9,
            atol=reference.atol(name),
            err_msg=name,
        )


def test_edge_cases_match_numpy(batch_env, base_settings):
    events = edge_case_events()
    actual = flink_window_features(batch_env, base_settings, events)
    expected = reference.window_features(events, base_settings.window_seconds)
    assert len(actual) == 3
    assert_features_equal(actual, expected)
    b0 = actual.iloc[1]
    assert b0[f"{METRIC_NAMES[1]}_count"] == 2 and b0[f"{METRIC_NAMES[0]}_count"] == 3
    assert b0[f"{METRIC_NAMES[0]}_std"] == 0.0  # constant input: exactly zero, never NaN


def test_flat_windows_have_exactly_zero_spread(batch_env, base_settings):
    """Constant values whose sums of squares do not cancel exactly in floating point."""
    events = [
        {**dict.fromkeys(METRIC_NAMES, 97.13), "device_id": "d", "ts_ms": T0 + k * 1000}
        for k in range(10)
    ]
    actual = flink_window_features(batch_env, base_settings, events)
    for m in METRIC_NAMES:
        assert actual[f"{m}_std"].iloc[0] == 0.0, m


def test_large_values_std_within_the_one_pass_bound(batch_env, base_settings):
    """Byte counters (~5e9) with a small spread: Flink's std (from sums of squares) loses
    digits, never more than reference.one_pass_std_atol allows, and that bound stays far
    below the spread itself (so agent tests that use it still catch a wrong std)."""
    rng = np.random.default_rng(7)
    events = [
        {
            **{m: 5.3e9 + d * 1e8 + rng.normal(0, 1.6e5) for m in METRIC_NAMES},
            "device_id": f"d{d}",
            "ts_ms": T0 + w * 10_000 + k * 1000,
        }
        for d in range(4)
        for w in range(20)
        for k in range(10)
    ]
    actual = flink_window_features(batch_env, base_settings, events)
    expected = reference.window_features(events, base_settings.window_seconds)
    assert len(actual) == len(expected) == 80
    for m in METRIC_NAMES:
        want = expected[f"{m}_std"].to_numpy(float)
        bound = reference.one_pass_std_atol(
            expected[f"{m}_count"], expected[f"{m}_max"].abs(), want
        )
        assert (np.abs(actual[f"{m}_std"].to_numpy(float) - want) <= bound).all(), m
        assert (bound < 1e-4 * want).all(), m


def test_simulated_fleet_matches_numpy(batch_env, base_settings):
    gen = TelemetryGenerator(SimulatorConfig(devices=25, seed=3, anomaly_rate=0.01))
    events = [e for tick in gen.events(T0 + 3_500, 95) for e in tick]  # unaligned start
    actual = flink_window_features(batch_env, base_settings, events)
    expected = reference.window_features(events, base_settings.window_seconds)
    # ticks at +3.5 s .. +97.5 s fall in 10 windows (fewer where a device's data went missing)
    assert 25 * 9 < len(actual) <= 25 * 10
    assert_features_equal(actual, expected)


def test_context_horizons_match_numpy(batch_env, base_settings):
    """Two and a half hours of windows: a steady device, one silent for longer than the
    longest horizon, one silent for less and one with windows missing a metric, against the
    reference definition; every horizon's mean is the rolling mean of exactly the preceding
    windows."""
    rng = np.random.default_rng(7)
    window_ms = base_settings.window_seconds * 1000
    horizon = max(HORIZONS, key=lambda h: h.seconds)
    longest = horizon.seconds * 1000
    silence = longest + 60_000
    span = 2 * longest + 30 * 60_000
    gaps = {"steady": None, "long-gap": (30 * 60_000, 30 * 60_000 + silence)}
    gaps["short-gap"] = (40 * 60_000, 55 * 60_000)
    gaps["holes"] = None  # the first metric missing from every 7th window: NULL mean
    events = []
    for device, gap in gaps.items():
        for offset in range(0, span, window_ms):
            if gap and gap[0] <= offset < gap[1]:
                continue
            # Two samples a window, so that windows have a spread (and its context).
            for sample in (1, window_ms // 2):
                values = {m: float(rng.normal(50.0, 5.0)) for m in METRIC_NAMES}
                if device == "holes" and offset // window_ms % 7 == 3:
                    values[METRIC_NAMES[0]] = None
                events.append({**values, "device_id": device, "ts_ms": T0 + offset + sample})
    actual = flink_window_features(batch_env, base_settings, events)
    expected = reference.window_features(events, base_settings.window_seconds)
    assert_features_equal(actual, expected)

    first = METRIC_NAMES[0]
    steady = actual[actual["device_id"] == "steady"].reset_index(drop=True)
    for h in HORIZONS:
        preceding = h.seconds // base_settings.window_seconds
        rolling = steady[f"{first}_mean"].rolling(preceding).mean().shift(1)
        np.testing.assert_allclose(
            steady[f"{first}_avg{h.name}"][preceding:], rolling[preceding:], rtol=1e-10
        )
        # The first window of a device has nothing to deviate from.
        assert np.isnan(steady[f"{first}_avg{h.name}"][0])
        assert steady[f"{first}_dev{h.name}"][0] == 0.0
    # Back after more than the longest horizon of silence: no context.
    back = actual[actual["device_id"] == "long-gap"]
    back = back[back["window_start"] == pd.Timestamp(T0 + gaps["long-gap"][1], unit="ms", tz="UTC")]
    for h in HORIZONS:
        assert np.isnan(back[f"{first}_avg{h.name}"].iloc[0]), h.name
        assert back[f"{first}_dev{h.name}"].iloc[0] == 0.0, h.name
    # Every horizon has context somewhere in the data.
    for h in HORIZONS:
        assert actual[f"{first}_avg{h.name}"].notna().sum() > len(actual) / 2, h.name


def test_predict_window_features_are_the_jobs(batch_env, base_settings):
    """POST /predict turns raw events into window features with pandas: the same as the
    job's Flink SQL, on the simulated fleet (no missing metrics: predict refuses those)."""
    from common.features import WINDOW_FEATURES
    from query.predict import windows_of_events

    gen = TelemetryGenerator(
        SimulatorConfig(catalogue=CATALOGUE.name, devices=6, seed=4, anomaly_rate=0.02)
    )
    events = [e for tick in gen.events(T0 + 1_500, 40) for e in tick]
    events = [e for e in events if all(e.get(m) is not None for m in METRIC_NAMES)]
    actual = flink_window_features(batch_env, base_settings, events)
    windows = windows_of_events(events, base_settings.window_seconds)
    assert [(w.device_id, w.window_start) for w in windows] == list(
        zip(actual["device_id"], actual["window_start"], strict=True)
    )
    for f in WINDOW_FEATURES:
        np.testing.assert_allclose(
            [w.features[f.name] for w in windows],
            actual[f.name].to_numpy(float),
            rtol=1e-9,
            atol=1e-9,
            err_msg=f.name,
        )


def test_predict_window_features_of_one_metric_are_the_jobs():
    """The same with a one-metric catalogue (ops, 1 h windows of twelve samples), whose
    windows' steps (common.features.STEP_AGGREGATES) predict computes with pandas."""
    check = "from common.features import FEATURE_NAMES as f; assert 'value_step' in f, f"
    run_in_deployment("test_predict_window_features_are_the_jobs", "ops", 3600, check)


def test_one_metric_spread_context_matches_numpy():
    """A one-metric catalogue adds its window spreads' and steps' context over the longest
    horizon (common.features.SPREAD_STATS, STEP_STATS), its windows' steps (STEP_AGGREGATES, by
    the project's Java functions), how many windows the shortest holds (RECENT_STATS), and each
    window's change from the window before with their root mean square over the longest
    (CHANGE_STATS, CHANGE_CONTEXT_STATS; NULL after a gap or a window without a mean): the
    horizon test again, in a process of its own (the features are fixed at import) with the ops
    catalogue, compares them with the reference."""
    check = (
        "from common.features import FEATURE_NAMES as f; "
        "assert {'value_stdavg1h', 'value_stdsd1h', 'value_windows1h', 'value_windows1m', "
        "'value_step', 'value_steprms', 'value_stepavg1h', 'value_change', "
        "'value_changerms1h'} <= set(f), f"
    )
    run_in_deployment("test_context_horizons_match_numpy", "ops", 10, check)


# Tests of this file that run in a process of their own with another catalogue and window (the
# features are fixed at import): each deployment's tests in one process.
IN_DEPLOYMENT = {
    ("ops", 10): ("test_context_horizons_match_numpy",),
    ("ops", 3600): (
        "test_predict_window_features_are_the_jobs",
        "test_season_stats_match_a_time_based_reference",
        "test_steps_of_long_windows_in_any_order_match_numpy",
    ),
}


def run_in_deployment(test: str, catalogue: str, window_seconds: int, check: str = "") -> None:
    """Asserts that ``test`` passed in the process of this catalogue and window, where
    ``check`` (Python) holds first."""
    if check:
        env = deployment_env(catalogue, window_seconds)
        subprocess.run([sys.executable, "-c", check], env=env, cwd=REPO_ROOT, check=True)
    outcomes, output = deployment_run(catalogue, window_seconds)
    assert outcomes.get(test) == "passed", (outcomes, output)


def deployment_env(catalogue: str, window_seconds: int) -> dict[str, str]:
    env = {
        **os.environ,
        "ANOMALY_CATALOGUE": catalogue,
        "ANOMALY_WINDOW_SECONDS": str(window_seconds),
    }
    env.pop("ANOMALY_CONTEXT_HORIZONS", None)
    return env


@functools.cache
def deployment_run(catalogue: str, window_seconds: int) -> tuple[dict[str, str], str]:
    """Runs the tests of IN_DEPLOYMENT for this catalogue and window in one pytest process;
    each test's outcome, and the end of the output."""
    tests = IN_DEPLOYMENT[(catalogue, window_seconds)]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        args += [f"--junitxml={report}", *(f"{__file__}::{test}" for test in tests)]
        done = subprocess.run(
            args,
            env=deployment_env(catalogue, window_seconds),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        outcomes = {}
        if report.exists():
            for case in ET.parse(report).iter("testcase"):
                failed = [c.tag for c in case if c.tag in ("failure", "error", "skipped")]
                outcomes[case.get("name")] = failed[0] if failed else "passed"
    return outcomes, done.stdout[-3000:] + done.stderr[-3000:]


def test_season_stats_match_a_time_based_reference(batch_env, base_settings):
    """The seasonal views (common.sql) against their definition, with a one-metric catalogue
    and 1 h windows, on hourly samples over 37 days with a daily swing, a spike and a gap."""
    if "value_seasres28d" not in FEATURE_NAMES:
        # This process has other features (they are fixed at import): run in a deployment
        # that has them, one metric (the ops catalogue) and 1 h windows.
        run_in_deployment("test_season_stats_match_a_time_based_reference", "ops", 3600)
        return
    rng = np.random.default_rng(5)
    events = []
    start = 1_767_225_600_000  # 2026-01-01T00:00:00Z, a whole hour
    for device, level in (("dev-a", 30.0), ("dev-b", 2e6)):
        for h in range(37 * 24):
            if device == "dev-b" and 700 <= h < 706:
                continue  # six silent hours
            value = level * (1 + 0.4 * np.sin(2 * np.pi * h / 24)) + rng.normal(0, level / 50)
            if h == 800:
                value += level / 5
            ts = start + h * 3_600_000 + int(rng.integers(0, 3_600_000))
            events.append({"device_id": device, "ts_ms": ts, "value": value})
    got = flink_window_features(batch_env, base_settings, events)
    got["start_ms"] = (got["window_start"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta("1ms")
    expected = reference.season_stats(got, base_settings.window_seconds * 1000)
    for name, seen in (
        ("value_seasres28d", 300),  # the week's history is there from day 30 on
        ("value_seassd28d", 300),
        ("value_seasres7d", 700),  # the day's from day 4 on
        ("value_seassd7d", 700),
    ):
        a, b = got[name].to_numpy(float), expected[name].to_numpy(float)
        assert (np.isnan(a) == np.isnan(b)).all(), name
        assert np.isfinite(a).sum() > seen, name
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9 * np.nanmax(np.abs(b)))


def test_steps_of_long_windows_in_any_order_match_numpy(batch_env, base_settings):
    """A one-metric catalogue's window steps in batch (training over history, whose rows need
    not come in time order): windows of 2,000 samples, shuffled, match the reference. The
    stream's functions keep at most a buffer of samples and would leave some of these out
    (jvm/ Steps; tests/unit/test_steps.py); the batch ones keep every sample."""
    if "value_step" not in FEATURE_NAMES:
        run_in_deployment("test_steps_of_long_windows_in_any_order_match_numpy", "ops", 3600)
        return
    rng = np.random.default_rng(11)
    n = 4000
    times = T0 - T0 % 3_600_000 + np.sort(rng.integers(0, 2 * 3_600_000, n))  # two windows
    values = np.cumsum(rng.normal(0, 1, n))
    values[rng.choice(n, 5, replace=False)] += 40.0  # spikes: the largest steps
    order = rng.permutation(n)
    events = [
        {"device_id": "dev-a", "ts_ms": int(times[i]), "value": float(values[i])} for i in order
    ]
    got = flink_window_features(batch_env, base_settings, events)
    expected = reference.window_features(events, base_settings.window_seconds)
    assert len(got) == 2 and (got["value_count"] > 1000).all()
    for name in ("value_step", "value_steprms"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-9, err_msg=name)
