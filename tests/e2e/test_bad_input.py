"""Bad, late and out-of-order input on the real stack: the job never fails on it, every bad
message lands in the dead letters with the right reason, late events land in late_events,
and the windows of the good events are exact."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from common.features import METRIC_NAMES
from simulator.badinput import KINDS, BadInput, BadInputConfig
from simulator.generator import SimulatorConfig, TelemetryGenerator
from simulator.sinks import KafkaSink
from tests.conftest import FIGURES, FLEET_DEVICES
from tests.e2e.test_pipeline import T0, assert_windows_exact
from tests.pipeline import (
    fetch_scores,
    fetch_table,
    job_env,
    reject_reason,
    wait_for_rows,
    wait_for_state,
)

pytestmark = [pytest.mark.stack, pytest.mark.slow]

# Hand-made messages beside the simulator's corruptions: kinds it does not make.
EXTRA_MESSAGES = [
    (b"dev-empty", None),  # a tombstone
    (b"x", b"[1, 2, 3]"),
    (b"x", b'"just a string"'),
    (b"x", b"\xff\xfe not utf-8"),
    (b"x", json.dumps({"device_id": " ", "ts_ms": T0}).encode()),
    (b"x", json.dumps({"device_id": "d" * 200, "ts_ms": T0}).encode()),
    # An event from the year 2100: a wrong clock must not drag the watermark along.
    (b"dev-0001", json.dumps({"device_id": "dev-0001", "ts_ms": 4_102_444_800_000}).encode()),
    (b"x", json.dumps({"device_id": "x", "ts_ms": True}).encode()),
]


def corrupted_messages(ticks: int, seed: int) -> tuple[list, list[dict]]:
    """The fleet's messages with every kind of simulator corruption, plus the
    hand-made ones; returns (messages, ground-truth records of the corruptions)."""
    gen = TelemetryGenerator(SimulatorConfig(devices=FLEET_DEVICES, seed=seed, anomaly_rate=0.002))
    # Oversized here means a 200 KiB padding field: a valid event whose extra field is ignored.
    rates = dict.fromkeys(KINDS, 0.003)
    bad = BadInput(BadInputConfig(rates=rates), METRIC_NAMES, seed=seed)
    messages, records = [], []
    for k in range(ticks):
        ts = T0 + k * gen.interval_ms
        batch, batch_records = bad.apply(gen.tick_messages(ts))
        messages += batch
        records += batch_records
        if k == ticks // 2:
            messages += EXTRA_MESSAGES
    return messages, records


def test_bad_and_late_input_is_kept_aside_and_good_windows_stay_exact(
    stack, fresh_topic, fresh_db, trained
):
    from deploy.local.stack import Flink

    messages, records = corrupted_messages(ticks=240, seed=21)
    sink = KafkaSink(stack.kafka_bootstrap, fresh_topic)
    sink.send(messages)
    sink.close()
    assert sink.errors == 0, sink.first_error

    # Oversized: refused to its producer; it never reaches the job.
    oversized = KafkaSink(stack.kafka_bootstrap, fresh_topic)
    pad = b"x" * stack.max_message_bytes
    oversized.send([(b"dev-0001", b'{"device_id": "dev-0001", "pad": "' + pad + b'"}')])
    oversized.close()
    assert oversized.errors == 1 and "too large" in (oversized.first_error or "").lower()

    flink = Flink(stack)
    job_id = flink.submit(
        ["--bounded", "--model-dir", str(trained[0].model_dir)],
        env=job_env(fresh_db, fresh_topic, ANOMALY_RAW_EVENTS="on"),
    )
    job = wait_for_state(flink, job_id, ("FINISHED", "FAILED", "CANCELED"), 240)
    assert job["state"] == "FINISHED", flink.rest(f"/jobs/{job_id}/exceptions")

    # Dead letters: exactly the messages an independent check rejects, with its reasons.
    expected_reasons = Counter(r for _, v in messages if (r := reject_reason(v)) is not None)
    dead = fetch_table(fresh_db, stack.dead_letters_table, "source_partition, source_offset")
    assert Counter(dead["reason"]) == expected_reasons
    assert len(dead) == dead[["source_partition", "source_offset"]].drop_duplicates().shape[0]
    verbatim = dead[dead["reason"] == "not a JSON object"]["payload"]
    assert set(verbatim) >= {"[1, 2, 3]", '"just a string"'}

    # Late events: only events the simulator moved back beyond the allowed lateness, and
    # with the watermark past their window.
    good = [json.loads(v) for _, v in messages if reject_reason(v) is None]
    late = fetch_table(fresh_db, stack.late_events_table, "device_id, event_time")
    moved_late = {(r["device_id"], r["ts_ms"]) for r in records if r["kind"] == "late"}
    late_keys = Counter(
        (d, int(t.timestamp() * 1000))
        for d, t in zip(late["device_id"], late["event_time"], strict=True)
    )
    assert set(late_keys) <= moved_late
    assert (
        late["watermark"] >= late["window_start"] + (late["event_time"] - late["event_time"])
    ).all()
    assert (late["lateness_ms"] > 0).all()

    # Windows: every good event that was not late counts once (duplicates twice: events carry
    # no id), and the rows equal the independent computation by value.
    # A late event shares device and time with the on-time event it was moved onto; it is
    # the one that came later.
    remaining = late_keys.copy()
    on_time = []
    for e in reversed(good):
        key = (e["device_id"], e["ts_ms"])
        if remaining[key] > 0:
            remaining[key] -= 1
        else:
            on_time.append(e)
    assert not +remaining, f"late events not among the good ones: {+remaining}"
    rows = fetch_scores(fresh_db)
    assert_windows_exact(rows, on_time, trained)
    assert not rows["known_device"].all(), "the unknown devices' windows are marked"

    # Raw events (ANOMALY_RAW_EVENTS=on): every good event once, late ones too, by value.
    raw = fetch_table(fresh_db, stack.raw_events_table, "source_partition, source_offset")
    assert len(raw) == len(good)
    assert Counter(
        (r.device_id, int(r.event_time.timestamp() * 1000), *(getattr(r, m) for m in METRIC_NAMES))
        for r in raw.itertuples()
    ) == Counter((e["device_id"], e["ts_ms"], *(float(e[m]) for m in METRIC_NAMES)) for e in good)

    kinds = Counter(r["kind"] for r in records)
    FIGURES["bad input: messages -> dead letters / late / windows"] = (
        f"{len(messages):,} messages ({sum(kinds.values())} corrupted: {dict(kinds)}) -> "
        f"{len(dead)} dead letters, {len(late)} late events, {len(rows):,} windows"
    )


def test_a_silent_partition_does_not_hold_windows_open(stack, fresh_topic, fresh_db, trained):
    """Every event goes to partition 0; partition 1 never sees one. The endless job must
    still close windows (the idle timeout releases the watermark)."""
    from confluent_kafka import Producer

    from deploy.local.stack import Flink

    gen = TelemetryGenerator(SimulatorConfig(devices=20, seed=41, anomaly_rate=0.0))
    events = [e for tick in gen.events(T0, 60) for e in tick]
    flink = Flink(stack)
    job_id = flink.submit(
        ["--model-dir", str(trained[0].model_dir)], env=job_env(fresh_db, fresh_topic)
    )
    wait_for_state(flink, job_id, ("RUNNING",), 60)
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    for e in events:
        producer.produce(fresh_topic, json.dumps(e).encode(), e["device_id"].encode(), partition=0)
    # One event 20 s later moves the watermark past every window above.
    later = {**events[-1], "ts_ms": events[-1]["ts_ms"] + 20_000}
    producer.produce(fresh_topic, json.dumps(later).encode(), partition=0)
    assert producer.flush(60) == 0
    expected = len({(e["device_id"], e["ts_ms"] // 10_000) for e in events})
    try:
        wait_for_rows(fresh_db, stack.scores_table, expected, timeout_s=90)
    finally:
        flink.cancel(job_id)
    assert_windows_exact(fetch_scores(fresh_db), events, trained)
