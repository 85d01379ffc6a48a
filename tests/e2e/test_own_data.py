"""README "Your own data", run as it is written: the block's commands, in order, in one shell,
on a user's CSVs (only the data folder and the dataset's name are this test's), then the rows
that land in the dataset's own database, by value."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
import zlib

import numpy as np
import pandas as pd
import psycopg2
import pytest

from common.catalogue import load as load_catalogue
from common.settings import REPO_ROOT, Settings, read_env_file
from deploy.grafana.dashboards import STEP_COUNTERS
from tests import reference
from tests.conftest import drop_database
from tests.pipeline import wait_until
from tests.prometheus import empty_queries, prometheus, scrape_ok, unanswered
from training.onboard import job_name

pytestmark = [pytest.mark.stack, pytest.mark.slow]

T0 = pd.Timestamp("2026-03-02T00:00:00Z")
STEP = pd.Timedelta("5min")
ROWS = 5 * 288  # five days of 5-minute samples
CPU_MISSED = [605, 700, 701]  # within hours 50 and 58 (rows 600 and 696 begin them)
# Labelled faults: (device file, metric column, first row, rows, what happens)
FAULTS = (
    ("web1", "Latency[ms]", 900, 6, lambda v: v * 6),
    ("web2", "CPU (%)", 1000, 12, lambda v: np.full_like(v, 99.0)),
    ("db1", "requests", 1100, 12, lambda v: v * 0 + 3),
)


def walkthrough_block() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    marker = "<!-- tests/e2e/test_own_data.py runs this block"
    assert marker in readme, "README: the 'Your own data' block lost its marker"
    after = readme.split(marker, 1)[1]
    return after.split("```bash\n", 1)[1].split("```", 1)[0]


def write_shop(folder) -> dict[str, pd.DataFrame]:
    """A user's export: epoch-second times in a "Timestamp" column, units in headers, a label."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True)
    frames = {}
    for i, name in enumerate(("web1", "web2", "db1")):
        frame = pd.DataFrame(
            {
                "Timestamp": T0.value // 10**9 + 300 * np.arange(ROWS),
                "CPU (%)": np.clip(rng.normal(30 + 10 * i, 3, ROWS), 0, 100).round(2),
                "Latency[ms]": rng.normal(20 * (i + 1), 1.5, ROWS).round(3),
                "requests": rng.poisson(200 + 50 * i, ROWS).astype(float),
                "label": 0,
            }
        )
        for device, column, first, n, change in FAULTS:
            if device == name:
                rows = slice(first, first + n - 1)
                frame.loc[rows, column] = change(frame.loc[rows, column].to_numpy())
                frame.loc[rows, "label"] = 1
        frame.to_csv(folder / f"{name}.csv", index=False)
        frames[name] = frame
    return frames


def test_the_readme_walkthrough_brings_a_users_csvs_to_flags_in_postgresql(stack, tmp_path):
    name = f"own_{uuid.uuid4().hex[:8]}"
    data = tmp_path / "metrics"
    frames = write_shop(data)
    script = walkthrough_block().replace("$HOME/shop", str(data))
    script = re.sub(r"\bshop\b", name, script)
    env_file = REPO_ROOT / f"{name}.env"
    created = [REPO_ROOT / "catalogues" / f"{name}.yaml", env_file, REPO_ROOT / "models" / name]
    env = dict(os.environ)  # the README's settings file sets what is the dataset's own
    began = time.monotonic()
    try:
        done = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-4000:]
        settings = Settings.from_env({**env, **read_env_file(env_file)})
        # Onboarding: the proposed window holds 12 samples of 5 minutes.
        assert settings.window_seconds == 3600
        # History older than the default retention is kept (TimescaleDB would drop it).
        assert settings.retention_days > (pd.Timestamp.now(tz="UTC") - T0).days
        assert "window 1h (12 samples per window" in out
        # The evaluation printed the model beside both baselines; the obvious faults are found.
        table = {
            line.split("  ")[0]: line for line in out.splitlines() if "(ours)" in line or
            "(baseline" in line
        }  # fmt: skip
        assert len(table) == 3, out[-3000:]
        ours = next(line for key, line in table.items() if "pca-t2q" in key)
        assert " 3/3 " in ours, ours
        rows = wait_for_windows(settings, expected=3 * (ROWS // 12 - 1))
    finally:
        cancel_jobs(job_name(name))
        drop_database(stack, f"anomaly_{name}")
        for path in created:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(True)
    print(f"\nREADME walkthrough on {3 * ROWS:,} rows: {time.monotonic() - began:.0f} s")
    # Every closed hour of every device, with the hour's means of the user's columns.
    for device, frame in frames.items():
        got = rows[rows["device_id"] == f"metrics-{device}"].sort_values("window_start")
        hours = pd.to_datetime(frame["Timestamp"], unit="s", utc=True).dt.floor("h")
        expected = frame.groupby(hours)[["CPU (%)", "Latency[ms]", "requests"]].mean()
        expected = expected.iloc[:-1]  # the newest hour stays open: no event after it
        assert list(got["window_start"]) == list(expected.index), device
        for column, metric in (("CPU (%)", "cpu"), ("Latency[ms]", "latency"),
                               ("requests", "requests")):  # fmt: skip
            np.testing.assert_allclose(got[f"{metric}_mean"], expected[column], rtol=1e-9)
    # The labelled faults' hours are flagged, and nothing else is (the data is noise around
    # fixed levels: with 18 training hours per device, a threshold calibrated in-sample
    # flagged 14 % of normal hours here; the held-out calibration none).
    hits = rows[rows["is_anomaly"]]
    flagged = set(zip(hits["device_id"], hits["window_start"], strict=True))
    faults = {
        (f"metrics-{device}", (T0 + k * STEP).floor("h"))
        for device, _, first, n, _ in FAULTS
        for k in range(first, first + n)
    }
    assert flagged == faults, (sorted(flagged), sorted(faults))


def rows_once_enough(settings: Settings, query: str, expected: int, timeout_s: float):
    """The rows of ``query`` once it gives at least ``expected`` (polled every 2 s), or the
    last it gave when ``timeout_s`` runs out."""
    from common.db import connect

    deadline = time.monotonic() + timeout_s
    frame = pd.DataFrame()
    while time.monotonic() < deadline:
        try:
            conn = connect(settings)
        except psycopg2.Error:
            time.sleep(2)
            continue
        try:
            with conn, conn.cursor() as cur:
                cur.execute(query)
                frame = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
        finally:
            conn.close()
        if len(frame) >= expected:
            break
        time.sleep(2)
    return frame


def wait_for_windows(settings: Settings, expected: int, timeout_s: float = 180.0):
    query = f"SELECT * FROM {settings.scores_table} ORDER BY device_id, window_start"  # noqa: S608
    frame = rows_once_enough(settings, query, expected, timeout_s)
    count = len(frame)
    if count < expected:
        raise AssertionError(
            f"{count} of {expected} windows in {timeout_s:.0f} s; {job_state(settings)}; "
            "stored per device (count, newest start): "
            f"{frame.groupby('device_id')['window_start'].agg(['count', 'max']).to_dict('index')}"
            if count
            else f"no windows in {timeout_s:.0f} s; {job_state(settings)}"
        )
    assert count == expected, f"{count} windows, {expected} expected"
    return frame


def job_state(settings: Settings) -> str:
    """What a test that waited in vain for windows reports of the dataset's job: its state,
    failures and each vertex's watermark (whether the windows it waits for can close)."""
    from deploy.local.stack import Flink

    flink = Flink(settings)
    jobs = flink.running_jobs(settings.job_name)
    if not jobs:
        return f"no running job {settings.job_name}"
    job_id = jobs[0]["jid"]
    marks = {
        name[:40]: None if ms is None else pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()
        for name, ms in flink.watermarks(job_id).items()
    }
    return f"job {job_id} {flink.failure_summary(job_id)}; watermarks {marks}"


def dead_letters(settings: Settings, expected: int, timeout_s: float = 30.0) -> pd.DataFrame:
    """The dead letters (device, reason), once at least ``expected`` are written."""
    query = f"SELECT device_id, reason FROM {settings.dead_letters_table}"  # noqa: S608
    return rows_once_enough(settings, query, expected, timeout_s)


def cancel_jobs(name: str) -> None:
    from deploy.local.stack import Flink

    flink = Flink(Settings.from_env())
    for job in flink.running_jobs(name):
        flink.cancel(job["jid"])


def step_samples_left_out(settings: Settings) -> dict[str, float]:
    """The dataset's running job's counters of samples its step functions left out (STEP_MAX's
    and STEP_RMS's, as the web UI lists them under the window operators' vertices)."""
    from deploy.local.stack import Flink

    flink = Flink(settings)
    (job,) = flink.running_jobs(settings.job_name)
    found: dict[str, float] = {}

    def read() -> bool:  # the web UI's metrics come in with its next fetch, seconds later
        found.update(flink.operator_metrics(job["jid"], STEP_COUNTERS))
        return len(found) >= 2

    wait_until("the step functions' metrics", read, 30)
    return found


def empty_one_metric_panels(job_name: str, tmp_path) -> tuple[list[str], list[str]]:
    """The job-health dashboard's queries of one-metric panels that a real Prometheus scraping
    the cluster answers with no series: for this job (waited for, up to 60 s), and for
    another job's name."""
    with prometheus(tmp_path) as url:
        empty = unanswered(url, job_name, True, 60)
        return empty, empty_queries(url, "no_such_job", one_metric=True)


HOURLY_DAYS = 35
# The hourly device starts 29 days before the others and ends a day after them. A replay sends
# every file's rows merged in time, as fast as it goes, so every partition goes idle at once,
# and the watermark stayed where the partition that ended first ends: with the hourly device
# ("series-requests") and "series-disk" on one partition and "series-cpu" and "series-load"
# on the other, the hourly device's last day was never scored. The replay's end marker (one
# message a partition at the newest event time) closes it. Its spike: its 32nd day (fifth
# week) at 03:00, the trough of its daily swing.
HOURLY_DEVICE = "series-requests"
HOURLY_T0 = T0 - pd.Timedelta(days=HOURLY_DAYS - 6)
HOURLY_SPIKE = T0 + pd.Timedelta(days=2, hours=3)


def write_series(folder, hourly: bool = False) -> dict[str, pd.DataFrame]:
    """A folder of one-metric exports in three units (bytes/s, CPU %, a load of ~0.1), each
    file `timestamp,value,label`; the load spikes for three samples, the CPU's agent missed
    CPU_MISSED samples (steps across 2 and 3 sampling intervals). ``hourly`` adds a slow
    series: requests, one sample an hour for HOURLY_DAYS days, a daily swing of 40 % and a
    spike of 20 % at HOURLY_SPIKE, within the swing."""
    rng = np.random.default_rng(11)
    folder.mkdir(parents=True)
    frames = {}
    for name, (level, spread) in {
        "disk": (2e7, 1e6),
        "cpu": (35.0, 2.0),
        "load": (0.12, 0.01),
    }.items():
        frame = pd.DataFrame(
            {
                "timestamp": pd.date_range(T0, periods=ROWS, freq=STEP).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
                "value": rng.normal(level, spread, ROWS).round(6),
                "label": 0,
            }
        )
        if name == "load":
            frame.loc[1100:1102, "value"] = level + 50 * spread
            frame.loc[1100:1102, "label"] = 1
        if name == "cpu":
            frame = frame.drop(index=CPU_MISSED).reset_index(drop=True)
        frame.to_csv(folder / f"{name}.csv", index=False)
        frames[name] = frame
    if hourly:
        times = pd.date_range(HOURLY_T0, periods=HOURLY_DAYS * 24, freq="1h")
        hours = np.arange(len(times))
        value = 500 * (1 + 0.4 * np.sin(2 * np.pi * (hours - 9) / 24)) + rng.normal(
            0, 5, len(times)
        )
        spike = times == HOURLY_SPIKE
        frame = pd.DataFrame(
            {
                "timestamp": times.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "value": (value + 100 * spike).round(6),
                "label": spike.astype(int),
            }
        )
        frame.to_csv(folder / f"{HOURLY_DEVICE.removeprefix('series-')}.csv", index=False)
        frames["hourly"] = frame
    return frames


def test_one_metric_series_are_scored_in_the_stream_with_their_context(stack, tmp_path):
    """The context check (on by default for a one-metric catalogue) in the stream: every row
    the job stored equals the model's score of the features and context the job stored."""
    from udfs.onnx_scorer import OnnxModel

    name = f"one_{uuid.uuid4().hex[:8]}"
    data = tmp_path / "series"
    frames = write_series(data, hourly=True)
    env_file = REPO_ROOT / f"{name}.env"
    created = [REPO_ROOT / "catalogues" / f"{name}.yaml", env_file, REPO_ROOT / "models" / name]
    script = f"""
.venv/bin/python -m training.onboard {data} --name {name} --label-column label
set -a; . ./{name}.env; set +a
make up
make train TRAIN_ARGS="--csv {data} --label-column label --fraction 0.3"
make submit
make replay REPLAY_ARGS="{data} --label-column label"
"""
    try:
        done = subprocess.run(
            ["bash", "-e", "-c", script],
            cwd=REPO_ROOT,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        assert "context check on" in done.stdout, done.stdout[-3000:]
        settings = Settings.from_env({**os.environ, **read_env_file(env_file)})
        # The partitions as described at HOURLY_T0 (librdkafka's default partitioner: CRC32 of
        # the key), so that one ends a day before the other.
        assert settings.events_topic_partitions == 2
        assert [zlib.crc32(d.encode()) % 2 for d in (HOURLY_DEVICE, "series-disk")] == [1, 1]
        assert [zlib.crc32(d.encode()) % 2 for d in ("series-cpu", "series-load")] == [0, 0]
        # Only the hourly device's newest two windows stay open: the last (no later event
        # closes it) and the one before, which ends at the newest event time, and the watermark
        # trails that by the allowed out-of-orderness. The others' last windows closed.
        rows = wait_for_windows(settings, expected=3 * (ROWS // 12) + HOURLY_DAYS * 24 - 2)
        markers = dead_letters(settings, settings.events_topic_partitions)
        assert list(markers["device_id"]) == ["replay-end"] * settings.events_topic_partitions
        assert set(markers["reason"]) == {"value: missing or null"}
        model_dir = settings.models_dir / (settings.models_dir / "CURRENT").read_text().strip()
        card = json.loads((model_dir / "card.json").read_text())
        features, context = card["feature_names"], card["context_check"]["columns"]
        model = OnnxModel.load(model_dir, features, 3600, context)
        interval_ms = load_catalogue(REPO_ROOT / "catalogues" / f"{name}.yaml").interval_ms
        left_out = step_samples_left_out(settings)
        # Where the stack reports to Prometheus (the test session's does), the job-health
        # panels of one-metric jobs, on a real Prometheus scraping this job.
        panels = empty_one_metric_panels(settings.job_name, tmp_path) if scrape_ok() else None
    finally:
        cancel_jobs(job_name(name))
        drop_database(stack, f"anomaly_{name}")
        for path in created:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(True)
    # Each partition's samples come in time order: the step functions left none out, and
    # the window operators (local and global aggregation) report their two counters.
    assert {k.split(".")[-1] for k in left_out} == set(STEP_COUNTERS)
    assert set(left_out.values()) == {0.0}, left_out
    if panels is not None:
        empty, other_job = panels
        assert not empty, empty
        assert other_job  # the check can fail: no series for another job's name
    assert features == ["value_mean", "value_std", "value_min", "value_max"]
    assert context == [
        "value_avg15d",
        "value_sd15d",
        "value_stdavg15d",
        "value_stdsd15d",
        "value_windows15d",
        "value_avg6h",  # the shortest horizon's, for the stuck reading
        "value_sd6h",
        "value_windows6h",
        "value_seasres28d",  # NULL here: five days hold no earlier weeks
        "value_seassd28d",
        "value_seasres7d",  # from a device's fourth day
        "value_seassd7d",
        "value_count",  # the window's own sample count, for the spike reading
        "value_step",  # the window's largest step and the usual one, for the step reading
        "value_stepavg15d",
        "value_change",  # the change from the window before and the usual one (change reading)
        "value_changerms15d",
    ]
    # The spreads' context the stream stored (WindowContext), by value: five days of windows
    # are all within the 15-day horizon, so each window's is that of all its device's
    # earlier windows.
    five_days = rows[rows["device_id"] != HOURLY_DEVICE]
    for _, device in five_days.sort_values("window_start").groupby("device_id"):
        earlier = device["value_std"].astype(float).shift(1)
        np.testing.assert_array_equal(device["value_windows15d"], np.arange(len(device)))
        # The shortest horizon's count: the device's windows starting in the 6 h before.
        starts = pd.to_datetime(device["window_start"], utc=True).to_numpy()
        recent = [((starts >= t - np.timedelta64(6, "h")) & (starts < t)).sum() for t in starts]
        np.testing.assert_array_equal(device["value_windows6h"], recent)
        assert device["value_windows6h"].max() == 6
        np.testing.assert_allclose(
            device["value_stdavg15d"].astype(float), earlier.expanding().mean(), rtol=1e-9
        )
        np.testing.assert_allclose(
            device["value_stdsd15d"].astype(float),
            earlier.expanding().std(ddof=0),
            rtol=1e-6,
            atol=1e-5,  # from sums of squares, as tests/reference.py allows
        )
    # The steps the stream stored (jvm/ Steps, then WindowContext), by value: each window's
    # largest step between consecutive samples and their root mean square, from the samples
    # replayed (the CPU's across its missed samples over the root of the intervals they span,
    # the catalogue's interval onboarding found: 5 minutes), and the mean of the device's
    # earlier windows' (all within the 15 days).
    assert interval_ms == STEP / pd.Timedelta("1ms")
    for name in ("disk", "cpu", "load"):
        frame = frames[name]
        times = pd.to_datetime(frame["timestamp"], utc=True)
        ms = (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta("1ms")
        want = {}
        for start, part in frame.groupby(times.dt.floor("h")):
            d = reference.steps(ms[part.index], part["value"], interval_ms)
            want[start] = (d.max(), np.sqrt(np.mean(d * d)))
        device = five_days[five_days["device_id"] == f"series-{name}"]
        device = device.sort_values("window_start")
        expected = np.array([want[t] for t in pd.to_datetime(device["window_start"], utc=True)])
        np.testing.assert_allclose(device["value_step"].astype(float), expected[:, 0], rtol=1e-12)
        np.testing.assert_allclose(device["value_steprms"].astype(float), expected[:, 1], rtol=1e-9)
        np.testing.assert_allclose(
            device["value_stepavg15d"].astype(float),
            pd.Series(expected[:, 1]).shift(1).expanding().mean(),
            rtol=1e-9,
        )
    # The hourly device's windows hold one sample each: no step.
    assert rows.loc[rows["device_id"] == HOURLY_DEVICE, "value_step"].isna().all()
    # Each window's change from the device's window just before (NULL after a gap: none in
    # these series) and the root mean square of its windows' changes over the 15 days before,
    # as the stream stored them (the change view, then WindowContext), by value: the hourly
    # device's 35 days reach past the horizon.
    by_device = rows.sort_values(["device_id", "window_start"]).reset_index(drop=True)
    want = reference.changes(by_device, "value_mean", 3_600_000)
    got = by_device["value_change"].astype(float).to_numpy()
    assert (np.isnan(got) == np.isnan(want)).all() and np.isnan(got).sum() == 4
    np.testing.assert_allclose(got, want, rtol=1e-12)
    starts = pd.to_datetime(by_device["window_start"], utc=True).to_numpy()
    devices = by_device["device_id"].to_numpy()
    horizon = np.timedelta64(15, "D")
    rms = []
    for i, t in enumerate(starts):
        seen = want[(devices == devices[i]) & (starts >= t - horizon) & (starts < t)]
        seen = seen[~np.isnan(seen)]
        rms.append(np.sqrt(np.mean(seen * seen)) if len(seen) else np.nan)
    np.testing.assert_allclose(by_device["value_changerms15d"].astype(float), rms, rtol=1e-9)
    # The seasonal readings' parts the stream stored, by value (NULL until a device has four
    # weeks behind it, or three days for the day's): the five-day devices have no week's, the
    # hourly one from its fifth week; every device has the day's from its fourth day.
    assert five_days[["value_seasres28d", "value_seassd28d"]].isna().all().all()
    ordered = rows.sort_values(["device_id", "window_start"])
    start_ms = (pd.to_datetime(ordered["window_start"], utc=True) - pd.Timestamp(0, tz="UTC")) // (
        pd.Timedelta("1ms")
    )
    expected_season = reference.season_stats(
        ordered.assign(start_ms=start_ms.to_numpy()), 3_600_000
    )
    hourly = ordered["device_id"] == HOURLY_DEVICE
    for column in ["value_seasres28d", "value_seassd28d", "value_seasres7d", "value_seassd7d"]:
        got, want = ordered[column].astype(float), expected_season[column].astype(float)
        assert (got.isna() == want.isna()).all() and got[hourly].notna().sum() > 100, column
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert ordered.loc[~hourly, "value_seasres7d"].notna().sum() > 10
    # By value: the stream's scores are the model's scores of what the stream stored.
    expected = model.score(
        rows["device_id"].to_numpy(dtype=object),
        rows[features].to_numpy(dtype=np.float64),
        rows[context].to_numpy(dtype=np.float64),
    )
    np.testing.assert_allclose(rows["anomaly_score"].astype(float), expected.score, rtol=1e-9)
    assert list(rows["is_anomaly"]) == list(expected.flag)
    # The spike's hour is flagged; the quiet device was not floored by the loud ones.
    hits = rows[rows["is_anomaly"].astype(bool)]
    spike = (T0 + 1100 * STEP).floor("h")
    flagged = set(zip(hits["device_id"], hits["window_start"], strict=True))
    assert ("series-load", spike) in flagged
    # The slow series' spike, within its daily swing: the seasonal reading flags it.
    assert (HOURLY_DEVICE, HOURLY_SPIKE) in flagged
    assert len(hits) <= 0.05 * len(rows), hits[["device_id", "window_start"]]
