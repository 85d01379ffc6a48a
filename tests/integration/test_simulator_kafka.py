"""The simulator against the real broker: several producer processes, every event arrives."""

from __future__ import annotations

import collections
import json
import subprocess
import sys

import pytest

from common.kafka_admin import consume_all
from common.settings import REPO_ROOT

pytestmark = pytest.mark.stack


def test_two_processes_deliver_every_event_keyed_by_device(stack, fresh_topic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator",
            "--devices",
            "500",
            "--count",
            "30000",
            "--processes",
            "2",
            "--topic",
            fresh_topic,
            "--bootstrap",
            stack.kafka_bootstrap,
            "--anomaly-rate",
            "0.01",
            "--truth-path",
            str(truth),
            "--bad",
            "duplicate=0.001",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stderr.split("done ", 1)[1].splitlines()[0])
    assert summary["events"] == 30000 and summary["delivery_errors"] == 0
    messages = consume_all(stack.kafka_bootstrap, fresh_topic, stack.events_topic_partitions)
    assert len(messages) == 30000
    events = [json.loads(v) for _, v in messages]
    assert all(k.decode() == e["device_id"] for (k, _), e in zip(messages, events, strict=True))
    assert len({e["device_id"] for e in events}) == 500
    # The truth file's episodes are those whose label the events carry.
    records = [json.loads(line) for line in truth.read_text().splitlines()]
    labelled = collections.Counter(e["scenario"] for e in events if e["is_anomaly"])
    episode_scenarios = {r["scenario"] for r in records if r["type"] == "episode"}
    assert set(labelled) <= episode_scenarios
    duplicates = sum(1 for r in records if r["type"] == "bad_input" and r["kind"] == "duplicate")
    assert summary["bad_input"].get("duplicate", 0) == duplicates


def test_replay_warns_when_its_topic_already_holds_messages(stack, fresh_topic, tmp_path):
    """The job reads its topic from the earliest offset: a second dataset replayed into the
    same topic would be scored beside the first, so replay says so."""
    data = tmp_path / "shop" / "web1.csv"
    data.parent.mkdir()
    data.write_text("timestamp,cpu\n2026-01-01T00:00:00Z,1\n2026-01-01T00:00:10Z,2\n")

    def replay() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "simulator.replay", str(data), "--all-columns",
             "--bootstrap", stack.kafka_bootstrap, "--topic", fresh_topic],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stderr

    partitions = stack.events_topic_partitions
    assert "warning" not in replay()
    # Each replay ends with one marker a partition at its newest event time (no metric).
    held = 2 + partitions
    assert f"warning: topic {fresh_topic} already holds {held} messages" in replay()
    messages = consume_all(stack.kafka_bootstrap, fresh_topic, partitions)
    keys = collections.Counter(k for k, _ in messages)
    assert keys == {b"shop-web1": 4, b"replay-end": 2 * partitions}
    markers = [json.loads(v) for k, v in messages if k == b"replay-end"]
    newest = 1767225610000  # 2026-01-01T00:00:10Z
    assert markers == [{"device_id": "replay-end", "ts_ms": newest, "replay_end": True}] * (
        2 * partitions
    )


def test_a_deleted_topic_is_gone_when_delete_topic_returns(stack):
    import time
    import uuid

    from kafka import KafkaAdminClient

    from common.kafka_admin import delete_topic, ensure_topic

    topic = f"test-delete-{uuid.uuid4().hex[:8]}"
    assert ensure_topic(stack.kafka_bootstrap, topic, 2)
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    try:
        assert topic in admin.list_topics()
        assert delete_topic(stack.kafka_bootstrap, topic) is True
        deadline = time.monotonic() + 10  # the broker's metadata follows its controller
        while topic in admin.list_topics() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert topic not in admin.list_topics()
        assert delete_topic(stack.kafka_bootstrap, topic) is False  # no longer there
    finally:
        admin.close()
