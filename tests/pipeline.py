"""Helpers for tests that run the streaming job on the real stack: job settings, waiting for
job states, reading result tables, and an independent check of what the job must reject."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pandas as pd

from common.settings import Settings
from tests.hostile import verdict


def wait_until(
    what: str, check, timeout_s: float, poll_s: float = 0.3, passing: tuple = ()
) -> float:
    """Poll ``check`` until it is true; returns when (monotonic clock). An exception of
    ``passing`` counts as "not yet" (e.g. a service on its way down or up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return time.monotonic()
        except passing:
            pass
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


def job_env(settings: Settings, topic: str, **extra: str) -> dict[str, str]:
    return {
        "ANOMALY_EVENTS_TOPIC": topic,
        "ANOMALY_PG_DATABASE": settings.pg_database,
        "ANOMALY_JOB_NAME": f"anomaly-scoring-test-{topic}",
        "ANOMALY_KAFKA_GROUP_ID": f"test-{uuid.uuid4().hex[:8]}",
        **extra,
    }


def wait_for_state(flink, job_id: str, states: tuple[str, ...], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    job: dict = {}
    while time.monotonic() < deadline:
        job = flink.rest(f"/jobs/{job_id}")
        if job["state"] in states:
            return job
        time.sleep(0.5)
    raise AssertionError(
        f"job {job_id} is {job.get('state')}, not {states} after {timeout_s:.0f} s: "
        f"{flink.rest(f'/jobs/{job_id}/exceptions')}"
    )


def fetch_table(settings: Settings, table: str, order_by: str) -> pd.DataFrame:
    from psycopg2 import sql

    from common.db import connect

    conn = connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT * FROM {} ORDER BY {}").format(sql.Identifier(table), sql.SQL(order_by))
        )
        columns = [d.name for d in cur.description]
        frame = pd.DataFrame(cur.fetchall(), columns=columns)
    conn.close()
    for col in ("window_start", "window_end", "event_time", "watermark", "broker_time"):
        if col in frame:
            frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def fetch_scores(settings: Settings) -> pd.DataFrame:
    return fetch_table(settings, settings.scores_table, "device_id, window_start")


def reject_reason(value: bytes | None) -> str | None:
    """Why the job must send this message to the dead letters (None: a good event); the
    independent model of tests/hostile.py."""
    return verdict(value).reason


class PacedProducer(threading.Thread):
    """Sends a known list of messages in slices with pauses, as a live fleet would, then one
    sentinel event per partition far enough ahead to close every window of the list.

    With ``hold`` (an event the test sets once what must happen mid-stream has happened), the
    last slice waits for it, so that input is still to come however slow the machine, and once
    it is set the slices left go without pauses (the test need not wait out the pacing)."""

    HOLD_TIMEOUT_S = 300

    def __init__(
        self,
        settings: Settings,
        topic: str,
        messages: list,
        slices: int,
        pause_s: float,
        hold: threading.Event | None = None,
    ):
        super().__init__(daemon=True)
        self.settings, self.topic, self.messages = settings, topic, messages
        self.slices, self.pause_s, self.hold = slices, pause_s, hold
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from confluent_kafka import Producer

        try:
            producer = Producer(
                {
                    "bootstrap.servers": self.settings.kafka_bootstrap,
                    "linger.ms": 5,
                    # Once and in order across a broker outage (the recovery tests stop it).
                    "enable.idempotence": True,
                }
            )
            size = -(-len(self.messages) // self.slices)
            held = self.hold is not None
            for start in range(0, len(self.messages), size):
                final_slice = start + size >= len(self.messages)
                if final_slice and held and not self.hold.wait(self.HOLD_TIMEOUT_S):
                    raise RuntimeError(f"the hold was not released in {self.HOLD_TIMEOUT_S} s")
                for key, value in self.messages[start : start + size]:
                    producer.produce(self.topic, value, key)
                producer.flush(120)
                self.sent = min(start + size, len(self.messages))
                if not (held and self.hold.is_set()):
                    time.sleep(self.pause_s)
            events = [json.loads(v) for _, v in self.messages if reject_reason(v) is None]
            last = max(e["ts_ms"] for e in events)
            for partition in range(self.settings.events_topic_partitions):
                # A good event (its own window never closes, so it leaves no row).
                event = {**events[0], "device_id": f"sentinel-{partition}", "ts_ms": last + 60_000}
                producer.produce(self.topic, json.dumps(event).encode(), partition=partition)
            if producer.flush(120):
                raise RuntimeError("sentinel events not delivered within 120 s")
        except BaseException as exc:  # reported by the test thread
            self.error = exc


def count_rows(settings: Settings, table: str) -> int:
    from psycopg2 import sql

    from common.db import connect

    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            return cur.fetchone()[0]
    finally:
        conn.close()


def wait_for_rows(settings: Settings, table: str, expected: int, timeout_s: float) -> float:
    """Wait until ``table`` holds ``expected`` rows; returns when (monotonic clock)."""
    deadline = time.monotonic() + timeout_s
    got = -1
    while time.monotonic() < deadline:
        try:
            got = count_rows(settings, table)
        except Exception:  # the database may be down on purpose
            got = -1
        if got >= expected:
            return time.monotonic()
        time.sleep(0.5)
    raise AssertionError(f"{table}: {got} rows after {timeout_s:.0f} s, {expected} expected")


def operator_metrics(flink, job_id: str, suffixes: tuple[str, ...]) -> dict[str, float]:
    """Current values of the job's operator metrics whose names end with one of ``suffixes``."""
    return flink.operator_metrics(job_id, suffixes)
