"""Faults while the endless job streams a known event set on the real stack: a killed
TaskManager, a killed JobManager, an upgrade through a savepoint, PostgreSQL and Kafka outages.
After each, the result tables must equal those of an undisturbed run (computed independently),
row for row and value for value: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from common.models import current_version
from common.settings import Settings
from simulator.generator import SimulatorConfig, TelemetryGenerator
from tests.conftest import FIGURES, FLEET_DEVICES
from tests.e2e.test_pipeline import T0, assert_windows_exact
from tests.pipeline import (
    PacedProducer,
    count_rows,
    fetch_scores,
    fetch_table,
    job_env,
    operator_metrics,
    reject_reason,
    wait_for_rows,
    wait_for_state,
    wait_until,
)

pytestmark = [pytest.mark.stack, pytest.mark.slow]

TICKS = 180  # 3 min of event time: 18 windows per device
OUTAGE_S = 15  # how long the database, then the broker, is down
# A few unusable messages, so that the dead letters are checked for doubles too.
BAD = [(b"x", b"{not json"), (b"x", b"[]"), (b"x", b'{"device_id": "d", "ts_ms": "soon"}')]


def known_messages(seed: int) -> tuple[list, list[dict]]:
    config = SimulatorConfig(devices=FLEET_DEVICES, seed=seed, anomaly_rate=0.002)
    gen = TelemetryGenerator(config)
    messages = []
    for k in range(TICKS):
        ts = T0 + k * gen.interval_ms
        messages += gen.tick_messages(ts)
        if k in (30, 90, 150):
            messages.append(BAD[(k // 60) % len(BAD)])
    events = [json.loads(v) for _, v in messages if reject_reason(v) is None]
    return messages, events


def expected_windows(events: list[dict]) -> int:
    return len({(e["device_id"], e["ts_ms"] // 10_000) for e in events})


class Streaming:
    """The endless job on the cluster (checkpoints every 2 s), fed by a paced producer."""

    def __init__(self, stack, topic, db, trained, seed: int, model_dir=None):
        from deploy.local.stack import Flink

        self.stack, self.topic, self.db, self.trained = stack, topic, db, trained
        self.flink = Flink(stack)
        self.messages, self.events = known_messages(seed)
        self.env = job_env(db, topic, ANOMALY_CHECKPOINT_INTERVAL_SECONDS="2")
        # Input is still to come when the fault hits (the last slice waits for it), and what is
        # left of it comes at once after the fault, as a backlog.
        self.fault_hit = threading.Event()
        self.producer = PacedProducer(
            stack, topic, self.messages, slices=30, pause_s=1.0, hold=self.fault_hit
        )
        self.late_drops: dict[str, float] | None = None  # set by finish()
        self.job_id = self.submit(model_dir or trained[0].model_dir)

    def submit(self, model_dir, from_savepoint=None) -> str:
        job_id = self.flink.submit(
            ["--model-dir", str(model_dir)], env=self.env, from_savepoint=from_savepoint
        )
        wait_for_state(self.flink, job_id, ("RUNNING",), 60)
        return job_id

    def checkpoints(self, job_id: str | None = None) -> int:
        stats = self.flink.rest(f"/jobs/{job_id or self.job_id}/checkpoints")
        return stats["counts"]["completed"]

    def wait_mid_run(self, timeout_s: float = 90) -> None:
        """Until the job has checkpointed twice and written rows, with input still to come."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.checkpoints() >= 2 and count_rows(self.db, self.stack.scores_table) > 0:
                return
            time.sleep(0.3)
        raise AssertionError(f"no checkpoint and rows within {timeout_s:.0f} s")

    def all_running(self, job_id: str) -> bool:
        job = self.flink.rest(f"/jobs/{job_id}")
        return job["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in job["vertices"])

    def wait_all_running(self, job_id: str, timeout_s: float = 120) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self.all_running(job_id):
                    return time.monotonic()
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} not running again within {timeout_s:.0f} s")

    def finish(self, job_id: str, timeout_s: float = 180) -> float:
        """Wait for every window's row, then cancel; returns when the last row landed."""
        done = wait_for_rows(
            self.db, self.stack.scores_table, expected_windows(self.events), timeout_s
        )
        self.producer.join(60)
        assert self.producer.error is None, self.producer.error
        time.sleep(3)  # a doubled or late-rewritten row would show up now
        # No operator dropped a row as late: a stage out of step with another after the fault
        # (e.g. when the sources idled) would lose rows this way, not only events.
        self.late_drops = {
            name: value
            for name, value in operator_metrics(
                self.flink, job_id, ("numLateRecordsDropped",)
            ).items()
            if value
        }
        self.flink.cancel(job_id)
        return done

    def assert_exact(self) -> None:
        assert self.late_drops == {}, f"rows dropped as late inside the job: {self.late_drops}"
        assert_windows_exact(fetch_scores(self.db), self.events, self.trained)
        dead = fetch_table(self.db, self.stack.dead_letters_table, "source_offset")
        assert len(dead) == sum(reject_reason(v) is not None for _, v in self.messages)
        assert count_rows(self.db, self.stack.late_events_table) == 0


def record(fault: str, recovery_s: float, caught_up_s: float) -> None:
    FIGURES[f"recovery: {fault}"] = (
        f"running again {recovery_s:.1f} s after the fault, all rows {caught_up_s:.1f} s after; "
        "0 rows lost, 0 doubled (tables equal an undisturbed run)"
    )


def test_killed_taskmanager_resumes_from_checkpoint_exactly(stack, fresh_topic, fresh_db, trained):
    run = Streaming(stack, fresh_topic, fresh_db, trained, seed=31)
    run.producer.start()
    run.wait_mid_run()
    (pid,) = run.flink.pids("taskmanager")
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    run.fault_hit.set()
    # Standalone Flink does not replace a dead TaskManager itself (a supervisor such as
    # systemd or Kubernetes does); this is that supervisor.
    run.flink.start_daemon("taskmanager")
    running = run.wait_all_running(run.job_id)
    done = run.finish(run.job_id)
    restarts = run.flink.rest(f"/jobs/{run.job_id}/exceptions")
    run.assert_exact()
    assert restarts.get("exceptionHistory", {}).get("entries"), "the kill must have failed the job"
    record("TaskManager killed (SIGKILL)", running - killed, done - killed)


def test_killed_jobmanager_resubmitted_from_retained_checkpoint_exactly(
    stack, fresh_topic, fresh_db, trained
):
    """Standalone Flink without HA loses its jobs with the JobManager; the job resumes from
    its last retained checkpoint with `flink run -s` (what `make demo` offers too)."""
    run = Streaming(stack, fresh_topic, fresh_db, trained, seed=32)
    run.producer.start()
    run.wait_mid_run()
    (pid,) = run.flink.pids("jobmanager")
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    run.fault_hit.set()
    run.flink.start_daemon("jobmanager")
    deadline = time.monotonic() + 90
    while not run.flink.running():
        assert time.monotonic() < deadline, "JobManager not back with a TaskManager in 90 s"
        time.sleep(0.5)
    checkpoint = run.flink.latest_checkpoint(run.job_id)
    assert checkpoint is not None, "the killed job left no checkpoint"
    job_id = run.submit(trained[0].model_dir, from_savepoint=checkpoint)
    running = run.wait_all_running(job_id)
    done = run.finish(job_id)
    run.assert_exact()
    record(
        "JobManager killed (SIGKILL), job resubmitted from its checkpoint",
        running - killed,
        done - killed,
    )


def test_upgrade_through_savepoint_loses_and_doubles_nothing(
    stack, fresh_topic, fresh_db, trained, retrained, monkeypatch
):
    from deploy.local import stack as local

    run = Streaming(stack, fresh_topic, fresh_db, trained, seed=33)
    run.producer.start()
    run.wait_mid_run()
    # `make upgrade`: the job of these settings moves to their CURRENT model, the new one.
    for name, value in {**run.env, "ANOMALY_MODELS_DIR": str(retrained[1].models_dir)}.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert current_version(settings) == retrained[2]["version"]
    stopped = time.monotonic()
    run.fault_hit.set()
    local.upgrade(settings)
    (job,) = run.flink.running_jobs(settings.job_name)
    job_id = job["jid"]
    running = run.wait_all_running(job_id)
    done = run.finish(job_id)
    rows = fetch_scores(fresh_db)
    assert run.late_drops == {}, run.late_drops
    assert_windows_exact(rows, run.events, trained, retrained)
    versions = set(rows["model_version"])
    assert versions == {trained[2]["version"], retrained[2]["version"]}, versions
    # Every window after the switch was scored by the new version.
    switch = rows[rows["model_version"] == retrained[2]["version"]]["window_start"].min()
    assert (rows[rows["window_start"] > switch]["model_version"] == retrained[2]["version"]).all()
    dead = fetch_table(fresh_db, stack.dead_letters_table, "source_offset")
    assert len(dead) == sum(reject_reason(v) is not None for _, v in run.messages)
    record(
        "upgrade: stop with savepoint, new model version from it", running - stopped, done - stopped
    )


def test_database_then_broker_outage_is_ridden_out_without_loss(
    stack, fresh_topic, fresh_db, trained
):
    """PostgreSQL down for 15 s, then, once the job checkpoints again, Kafka down for 15 s, in
    one run (one job's start and end for both): input is still to come through both, as the
    last slice waits for the second."""
    from deploy.local import stack as local

    run = Streaming(stack, fresh_topic, fresh_db, trained, seed=34)
    run.producer.start()
    run.wait_mid_run()

    postgres = local.Postgres(stack)
    postgres.stop()
    pg_down = time.monotonic()
    time.sleep(OUTAGE_S)
    postgres.start()
    pg_back = time.monotonic()
    # Writing again: the sink flushes its rows at each checkpoint, so a checkpoint completed
    # after the database came back has written them.
    taken = run.checkpoints()
    pg_writing = wait_until(
        "a checkpoint after PostgreSQL's return", lambda: run.checkpoints() > taken, 120
    )

    kafka = local.Kafka(stack)
    kafka.stop()
    kafka_down = time.monotonic()
    run.fault_hit.set()  # the last slice goes to a broker that is down: the producer retries
    time.sleep(OUTAGE_S)
    kafka.start()
    kafka_back = time.monotonic()
    done = run.finish(run.job_id, timeout_s=240)
    run.assert_exact()
    FIGURES[f"recovery: postgres down for {OUTAGE_S} s"] = (
        f"checkpointing (so writing) again {pg_writing - pg_back:.1f} s after it was back "
        f"({pg_writing - pg_down:.1f} s after it went down)"
    )
    FIGURES[f"recovery: kafka down for {OUTAGE_S} s (after the postgres outage)"] = (
        f"all rows {done - kafka_back:.1f} s after it was back ({done - kafka_down:.1f} s after "
        "it went down); 0 rows lost, 0 doubled through both outages"
    )


def test_late_events_right_after_a_restore_leave_written_windows_whole(
    stack, fresh_topic, fresh_db, trained
):
    """Flink does not restore watermarks: right after a restart, an event for a window that
    was written before the fault would reopen it and overwrite its row with a partial one.
    LateMarker (jvm/) checkpoints the watermark and judges by it after the restore: such events
    are late events, and every window keeps its row, value for value."""
    from confluent_kafka import Producer

    run = Streaming(stack, fresh_topic, fresh_db, trained, seed=34)
    half = len(run.messages) // 2
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "enable.idempotence": True})
    for key, value in run.messages[:half]:
        producer.produce(fresh_topic, value, key)
    assert producer.flush(60) == 0

    # Everything sent so far read, and checkpointed: the restore resumes after it, so the
    # late events below are the first events the job reads after the fault.
    def records_read() -> float:
        metrics = operator_metrics(run.flink, run.job_id, ("numRecordsOut",))
        return sum(v for k, v in metrics.items() if "Source__telemetry_source" in k)

    deadline = time.monotonic() + 90
    while records_read() < half:
        assert time.monotonic() < deadline, f"the job read {records_read()} of {half} messages"
        time.sleep(0.5)
    taken = run.checkpoints()
    while run.checkpoints() < taken + 2:
        assert time.monotonic() < deadline, "no checkpoint after the first half was read"
        time.sleep(0.3)
    # Late events: the second window of five devices, whose rows are already written.
    second_window = T0 + 10_000
    written = fetch_scores(fresh_db)
    assert any(int(t.timestamp() * 1000) == second_window for t in written["window_start"])
    originals = [e for e in run.events if second_window <= e["ts_ms"] < second_window + 10_000]
    late = [{**e, "ts_ms": e["ts_ms"] + 1} for e in originals[:5]]

    (pid,) = run.flink.pids("taskmanager")
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    for event in late:
        producer.produce(fresh_topic, json.dumps(event).encode(), event["device_id"].encode())
    assert producer.flush(60) == 0
    run.flink.start_daemon("taskmanager")
    running = run.wait_all_running(run.job_id)
    run.producer = PacedProducer(stack, fresh_topic, run.messages[half:], slices=10, pause_s=0.5)
    run.producer.start()
    done = run.finish(run.job_id)

    assert run.late_drops == {}, f"rows dropped as late inside the job: {run.late_drops}"
    assert_windows_exact(fetch_scores(fresh_db), run.events, trained)
    rows = fetch_table(fresh_db, stack.late_events_table, "device_id, event_time")
    got = sorted(
        (d, int(t.timestamp() * 1000))
        for d, t in zip(rows["device_id"], rows["event_time"], strict=True)
    )
    assert got == sorted((e["device_id"], e["ts_ms"]) for e in late)
    dead = fetch_table(fresh_db, stack.dead_letters_table, "source_offset")
    assert len(dead) == sum(reject_reason(v) is not None for _, v in run.messages)
    record(
        "TaskManager killed, 5 late events first after the restore (all late, windows whole)",
        running - killed,
        done - killed,
    )
