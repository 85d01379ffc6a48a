"""End to end on the real stack: known events into Kafka, the job (bounded), exact rows out of
PostgreSQL: count, window bounds, every feature value, score and flag."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from common.features import FEATURE_NAMES, MODEL_FEATURE_NAMES, SCORER_CONTEXT_NAMES
from common.settings import PG_SECRET_FIELDS, REPO_ROOT, Settings
from simulator.generator import SimulatorConfig, TelemetryGenerator
from simulator.sinks import KafkaSink
from tests import reference
from tests.conftest import FIGURES, FLEET_DEVICES
from tests.pipeline import fetch_scores, job_env, wait_for_state

pytestmark = [pytest.mark.stack, pytest.mark.slow]

T0 = 1_700_100_000_000  # a multiple of 10 s: windows align with ticks


def produce_events(settings: Settings, topic: str, ticks: int, seed: int) -> list[dict]:
    """Stream a known event set (the trained fleet, new noise and anomalies) into Kafka."""
    # Faults that span whole windows and move several metrics, which the model must catch.
    config = SimulatorConfig(
        devices=FLEET_DEVICES, seed=seed, anomaly_rate=0.004, scenarios=("overload", "link_failure")
    )
    events = [e for tick in TelemetryGenerator(config).events(T0, ticks) for e in tick]
    sink = KafkaSink(settings.kafka_bootstrap, topic)
    sink.send_many(events)
    sink.close()
    assert sink.errors == 0, sink.first_error
    return events


def assert_windows_exact(rows: pd.DataFrame, events: list[dict], *trained) -> None:
    """Rows equal, by value, what the events must give: bounds, features, and the scores,
    severity and known-device mark of the model version each row names (one of ``trained``)."""
    expected = reference.window_features(events, 10)
    assert len(rows) == len(expected), f"{len(rows)} rows in PostgreSQL, {len(expected)} expected"
    assert list(rows["device_id"]) == list(expected["device_id"])
    assert (rows["window_start"].to_numpy() == expected["window_start"].to_numpy()).all()
    assert (rows["window_end"].to_numpy() == expected["window_end"].to_numpy()).all()
    # Flink's STDDEV_POP uses sums of squares: stds agree to ~1e-11 absolute, not always
    # 1e-9 relative when the spread is small.
    for name in FEATURE_NAMES:
        np.testing.assert_allclose(
            rows[name].to_numpy(float),
            expected[name].to_numpy(float),
            rtol=1e-9,
            atol=reference.atol(name),
            err_msg=name,
        )
    models = {card["version"]: result for result, _, card in trained}
    assert set(rows["model_version"]) <= set(models), set(rows["model_version"])
    for version, result in models.items():
        mine = (rows["model_version"] == version).to_numpy()
        # Scores: the training-side reference (numpy / scikit-learn, no ONNX) on the
        # independently computed features; severity from the card's calibration, above 50
        # exactly when flagged.
        ids = expected["device_id"].to_numpy(dtype=object)[mine]
        x = expected[list(MODEL_FEATURE_NAMES)].to_numpy(np.float64)[mine]
        # With the job's context columns (a window of few samples is judged on its level).
        context = expected[list(SCORER_CONTEXT_NAMES)].to_numpy(np.float64)[mine]
        score, flag = result.reference_scores(ids, x, context)
        got = rows["anomaly_score"].to_numpy(float)[mine]
        np.testing.assert_allclose(got, score, rtol=1e-5, atol=1e-5)
        assert (rows["is_anomaly"].to_numpy(bool)[mine] == flag).all()
        severity = rows["severity"].to_numpy(float)[mine]
        np.testing.assert_allclose(severity, result.severity(got), atol=1e-9)
        assert ((severity > 50) == flag).all()
        assert (rows["known_device"].to_numpy(bool)[mine] == result.normaliser.known(ids)).all()


def assert_rows_exact(rows: pd.DataFrame, events: list[dict], trained) -> None:
    assert_windows_exact(rows, events, trained)
    # The injected anomalies are flagged; clean windows mostly are not.
    all_anomalous, clean = reference.anomalous_windows(events, 10)
    flagged = {
        (d, int(ts.timestamp() * 1000))
        for d, ts, f in zip(
            rows["device_id"], rows["window_start"], rows["is_anomaly"], strict=True
        )
        if f
    }
    assert all_anomalous, "the event set must contain fully anomalous windows"
    missed = all_anomalous - flagged
    assert not missed, f"{len(missed)} of {len(all_anomalous)} injected windows not flagged"
    false_alarms = len(flagged & clean) / len(clean)
    assert false_alarms < 0.02, f"{false_alarms:.1%} of clean windows flagged"


def test_flink_run_on_the_cluster_lands_exact_rows(stack, fresh_topic, fresh_db, trained):
    from deploy.local.stack import Flink

    events = produce_events(stack, fresh_topic, ticks=300, seed=11)
    flink = Flink(stack)
    env = job_env(fresh_db, fresh_topic)
    job_id = flink.submit(["--bounded", "--model-dir", str(trained[0].model_dir)], env=env)

    listed = {j["jid"]: j for j in flink.jobs()}
    assert job_id in listed, f"job {job_id} not in /jobs/overview: {list(listed)}"
    assert listed[job_id]["name"] == env["ANOMALY_JOB_NAME"]

    job = wait_for_state(flink, job_id, ("FINISHED", "FAILED", "CANCELED"), 240)
    assert job["state"] == "FINISHED", (
        f"job {job_id} ended {job['state']}: {flink.rest(f'/jobs/{job_id}/exceptions')}"
    )

    rows = fetch_scores(fresh_db)
    assert_rows_exact(rows, events, trained)

    # The sink's database password (the writer's) reaches the job, but nothing the web UI
    # serves or logs; neither do the other roles' passwords.
    passwords = [getattr(stack, name) for name in PG_SECRET_FIELDS]
    assert all(passwords)
    for path in (
        f"/jobs/{job_id}",
        f"/jobs/{job_id}/plan",
        f"/jobs/{job_id}/config",
        "/jobmanager/config",
    ):
        body = json.dumps(flink.rest(path))
        assert not any(p in body for p in passwords), f"password exposed by {path}"
    for log_file in flink.log_dir.glob("*"):
        text = log_file.read_text(errors="replace")
        assert not any(p in text for p in passwords), log_file

    duration_s = job["duration"] / 1000
    FIGURES["e2e flink run: events -> scored rows"] = (
        f"{len(events):,} events -> {len(rows):,} rows in {duration_s:.1f} s job time "
        f"({len(events) / duration_s:,.0f} events/s, {len(rows) / duration_s:,.0f} rows/s, "
        "start-up included)"
    )


def test_in_process_run_lands_exact_rows(stack, fresh_topic, fresh_db, trained):
    events = produce_events(stack, fresh_topic, ticks=120, seed=12)
    env = {**os.environ, **job_env(fresh_db, fresh_topic)}
    began = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.score_telemetry",
            "--bounded",
            "--wait",
            "--model-dir",
            str(trained[0].model_dir),
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.monotonic() - began
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = fetch_scores(fresh_db)
    assert_rows_exact(rows, events, trained)
    FIGURES["e2e in-process: events -> scored rows"] = (
        f"{len(events):,} events -> {len(rows):,} rows in {wall:.1f} s wall (JVM start included)"
    )
