"""Sparse points from metric agents, through the real job on the Flink cluster, by value.

A real collectd (Debian's, write_kafka with Format JSON) sends this machine's cpu, load, memory
and loopback traffic to one topic; the same known points as Telegraf JSON and as OTLP/JSON go
to two more, keyed at random as agents key them. One bounded job reads the three
(ANOMALY_SOURCES, catalogue `host`), before any model exists. The windows it stores must equal
an independent reading of the three topics (tests/agent_reference.py): agent names mapped to
the catalogue's metrics, counters as rates in time order (a reset, and points that reach the
job out of order through different partitions), the other points ignored; what cannot be
mapped is a dead letter with its reason; and nothing is scored without a model."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid

import numpy as np
import pandas as pd
import pytest

from common.catalogue import load as load_catalogue
from common.kafka_admin import consume_all
from common.settings import REPO_ROOT
from tests import agent_reference as ref
from tests.conftest import new_database
from tests.pipeline import fetch_table, wait_for_state
from tests.reference import one_pass_std_atol

pytestmark = [pytest.mark.stack, pytest.mark.slow]

HOST = load_catalogue("host")
WINDOW_S = 10
STEPS = 30  # one point a second for 30 s: three windows
# collectd's run, from its first message on: at a point a second, 15 s hold at least one whole
# window of 10 points (the test asks for one of at least 5).
COLLECTD_S = 15


def known_points(t0_ms: int) -> list[dict]:
    """The points the Telegraf and OTLP topics carry (one dict per second)."""
    out = []
    rx = 0.0
    for i in range(STEPS):
        rx = 300.0 if i == 20 else rx + 1000 + 17 * i  # a reset at i = 20
        out.append(
            {
                "ts_ms": t0_ms + 1000 * i,
                "cpu_user": 10.0 + i % 7,
                "cpu_system": 5.0 + (i % 3) * 0.5,
                "cpu_idle": 80.0 - i % 5,
                "load1": 0.5 + 0.01 * i,
                "mem_used": 1e9 + 1e6 * (i % 4),
                "net_rx_bytes": rx,
                "net_tx_bytes": 2000.0 * i,
                "net_rx_packets": 10.0 * i * i,
            }
        )
    return out


def telegraf_messages(device: str, points: list[dict]) -> list[list[bytes]]:
    """The messages of each second."""
    messages = []
    for n, p in enumerate(points):
        # Telegraf's default timestamp is whole seconds; every third one in nanoseconds
        # (json_timestamp_units = "1ns").
        ts = p["ts_ms"] // 1000 if n % 3 else p["ts_ms"] * 1_000_000
        host = {"host": device}
        metrics = [
            {"name": "cpu", "tags": {**host, "cpu": "cpu-total"}, "timestamp": ts,
             "fields": {"usage_user": p["cpu_user"], "usage_system": p["cpu_system"],
                        "usage_idle": p["cpu_idle"], "usage_nice": 0.0}},
            {"name": "cpu", "tags": {**host, "cpu": "cpu0"}, "timestamp": ts,
             "fields": {"usage_user": 99.0}},  # another CPU: not the catalogue's
            {"name": "system", "tags": host, "timestamp": ts,
             "fields": {"load1": p["load1"], "load5": 0.3, "n_cpus": 4}},
            {"name": "mem", "tags": host, "timestamp": ts,
             "fields": {"used": int(p["mem_used"]), "free": 5}},
            {"name": "net", "tags": {**host, "interface": "lo"}, "timestamp": ts,
             "fields": {"bytes_recv": int(p["net_rx_bytes"]), "bytes_sent": int(p["net_tx_bytes"]),
                        "packets_recv": int(p["net_rx_packets"])}},
            {"name": "net", "tags": {**host, "interface": "eth0"}, "timestamp": ts,
             "fields": {"bytes_recv": 1}},
        ]  # fmt: skip
        # One metric a message (Telegraf's Kafka output), and now and then a batch.
        if n % 5 == 0:
            messages.append([json.dumps({"metrics": metrics}).encode()])
        else:
            messages.append([json.dumps(m).encode() for m in metrics])
    return messages


def otlp_messages(device: str, points: list[dict]) -> list[list[bytes]]:
    def attr(key, value):
        return {"key": key, "value": {"stringValue": value}}

    def gauge(name, points_):
        return {"name": name, "gauge": {"dataPoints": points_}}

    def total(name, points_, monotonic=True):
        return {"name": name, "sum": {"aggregationTemporality": 2, "isMonotonic": monotonic,
                                      "dataPoints": points_}}  # fmt: skip

    messages = []
    for p in points:
        t = str(p["ts_ms"] * 1_000_000)
        start = str((p["ts_ms"] - 3_600_000) * 1_000_000)

        def point(value, *attrs, as_int=False, t=t, start=start):
            out = {"timeUnixNano": t, "startTimeUnixNano": start, "attributes": list(attrs)}
            out["asInt" if as_int else "asDouble"] = str(int(value)) if as_int else value
            return out

        metrics = [
            gauge("system.cpu.utilization", [
                point(p["cpu_user"], attr("state", "user")),
                point(p["cpu_system"], attr("state", "system")),
                point(p["cpu_idle"], attr("state", "idle")),
                point(0.0, attr("state", "nice")),
            ]),
            gauge("system.cpu.load_average.1m", [point(p["load1"])]),
            gauge("system.cpu.load_average.5m", [point(0.3)]),
            total("system.memory.usage", [point(p["mem_used"], attr("state", "used"), as_int=True)],
                  monotonic=False),
            total("system.network.io", [
                point(p["net_rx_bytes"], attr("device", "lo"), attr("direction", "receive"),
                      as_int=True),
                point(p["net_tx_bytes"], attr("device", "lo"), attr("direction", "transmit"),
                      as_int=True),
                point(7, attr("device", "eth0"), attr("direction", "receive"), as_int=True),
            ]),
            total("system.network.packets", [
                point(p["net_rx_packets"], attr("device", "lo"), attr("direction", "receive"),
                      as_int=True),
            ]),
        ]  # fmt: skip
        request = {
            "resourceMetrics": [
                {
                    "resource": {"attributes": [attr("host.name", device)]},
                    "scopeMetrics": [{"scope": {"name": "hostmetrics"}, "metrics": metrics}],
                }
            ]
        }
        messages.append([json.dumps(request).encode()])
    return messages


BAD_TELEGRAF = json.dumps(
    {"name": "system", "tags": {}, "timestamp": 1, "fields": {"load1": 1.0}}
).encode()
BAD_OTLP = json.dumps(
    {
        "resourceMetrics": [
            {
                "resource": {"attributes": [{"key": "host.name", "value": {"stringValue": "x"}}]},
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "system.cpu.load_average.1m",
                                "histogram": {"dataPoints": [{"count": "1"}]},
                            }
                        ]
                    }
                ],
            }
        ]
    }
).encode()


def produce_shuffled(bootstrap: str, topic: str, messages: list[bytes], seed: int) -> None:
    """As an agent sends: in time order, keyed at random (so one device's messages spread over
    the partitions and reach the job in no set order), and here each second's messages
    shuffled among themselves."""
    from confluent_kafka import Producer

    rng = random.Random(seed)
    order = []
    for step in messages:
        step = list(step)
        rng.shuffle(step)
        order.extend(step)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for m in order:
        producer.produce(topic, key=uuid.uuid4().bytes, value=m)
    assert producer.flush(30) == 0


@pytest.fixture(scope="module")
def agent_run(stack, tmp_path_factory):
    from common.kafka_admin import ensure_topic
    from deploy.local.agent import Collectd
    from deploy.local.stack import Flink

    run = uuid.uuid4().hex[:8]
    topics = {name: f"test-{name}-{run}" for name in ("collectd", "telegraf", "otlp")}
    for topic in topics.values():
        ensure_topic(stack.kafka_bootstrap, topic, 2)
    host = f"agent-test-{run}"
    now_ms = int(time.time() * 1000)
    t0 = now_ms - 120_000 - now_ms % 10_000
    points = known_points(t0)
    produce_shuffled(stack.kafka_bootstrap, topics["telegraf"],
                     [*telegraf_messages("tg-1", points), [BAD_TELEGRAF]], seed=1)  # fmt: skip
    produce_shuffled(stack.kafka_bootstrap, topics["otlp"],
                     [*otlp_messages("ot-1", points), [BAD_OTLP]], seed=2)  # fmt: skip

    agent_settings = stack.replace(agent_topic=topics["collectd"], agent_interval_seconds=1)
    collectd = Collectd(agent_settings, hostname=host, state_dir=tmp_path_factory.mktemp("cd"))
    collectd.start()
    try:
        time.sleep(COLLECTD_S)
    finally:
        collectd.stop()

    with new_database(stack) as db:
        env = {
            "ANOMALY_CATALOGUE": "host",
            "ANOMALY_SOURCES": ",".join(f"{t}:{name}" for name, t in topics.items()),
            "ANOMALY_PG_DATABASE": db.pg_database,
            "ANOMALY_MODELS_DIR": str(tmp_path_factory.mktemp("no-models")),
            "ANOMALY_JOB_NAME": f"agents-test-{run}",
            "ANOMALY_KAFKA_GROUP_ID": f"agents-test-{run}",
        }
        # The database gets the host catalogue's metric columns.
        subprocess.run(
            [sys.executable, "-m", "common.db", "migrate"],
            env={**os.environ, **env}, cwd=REPO_ROOT, check=True, capture_output=True,
        )  # fmt: skip
        flink = Flink(stack)
        job_id = flink.submit(["--bounded"], env=env)
        job = wait_for_state(flink, job_id, ("FINISHED", "FAILED", "CANCELED"), 240)
        assert job["state"] == "FINISHED", flink.rest(f"/jobs/{job_id}/exceptions")
        yield {
            "host": host,
            "topics": topics,
            "points": points,
            "scores": fetch_table(db, db.scores_table, "device_id, window_start"),
            "dead": fetch_table(db, db.dead_letters_table, "source_topic, source_offset"),
            "stack": stack,
        }


def expected(run: dict, name: str, reader) -> pd.DataFrame:
    stack = run["stack"]
    points = []
    for _, value in consume_all(stack.kafka_bootstrap, run["topics"][name], 2):
        try:
            points.extend(reader(HOST, value))
        except (KeyError, TypeError, ValueError):
            continue  # the dead letters: the job's reasons are checked apart
    return ref.windows(HOST, ref.rates(HOST, points), WINDOW_S)


def assert_windows_equal(stored: pd.DataFrame, reference: pd.DataFrame, device: str) -> None:
    got = stored[stored["device_id"] == device].reset_index(drop=True)
    want = reference[reference["device_id"] == device].reset_index(drop=True)
    assert list(got["window_start"]) == list(want["window_start"]), (device, got["window_start"])
    for m in HOST.metric_names:
        for agg in ("mean", "min", "max"):
            column = f"{m}_{agg}"
            np.testing.assert_allclose(
                got[column].to_numpy(dtype=float), want[column].to_numpy(dtype=float),
                rtol=1e-9, atol=1e-6, equal_nan=True, err_msg=f"{device} {column}",
            )  # fmt: skip
        # The std comes from sums of squares: on byte counters (~1e10) with a small spread
        # it holds fewer digits than rtol 1e-9, within the one-pass formula's bound.
        peak = np.fmax(want[f"{m}_min"].abs(), want[f"{m}_max"].abs())
        bound = one_pass_std_atol(want[f"{m}_count"], peak, want[f"{m}_std"])
        got_std = got[f"{m}_std"].to_numpy(dtype=float)
        want_std = want[f"{m}_std"].to_numpy(dtype=float)
        assert np.array_equal(np.isnan(got_std), np.isnan(want_std)), (device, m)
        off = np.abs(got_std - want_std) > np.fmax(np.nan_to_num(bound), 1e-6) + 1e-9 * want_std
        assert not off.any(), (device, m, got_std[off], want_std[off], bound[off])
        assert list(got[f"{m}_count"]) == list(want[f"{m}_count"]), (device, m)


def test_collectd_windows_equal_an_independent_reading_of_its_topic(agent_run):
    scores, host = agent_run["scores"], agent_run["host"]
    reference = expected(agent_run, "collectd", ref.collectd_points)
    assert_windows_equal(scores, reference, host)
    mine = scores[scores["device_id"] == host]
    # The agent really sent this machine's metrics: CPU and load every second, and traffic
    # on the loopback interface (the broker's own), as rates.
    full = mine[mine["cpu_user_count"] >= 5]
    assert len(full) >= 1, mine[["window_start", "cpu_user_count"]]
    assert (full["load1_count"] >= 5).all() and (full["mem_used_count"] >= 5).all()
    rx = mine["net_rx_bytes_mean"].dropna()
    assert len(rx) and (rx > 0).all(), mine["net_rx_bytes_mean"]


def test_telegraf_and_otlp_give_the_windows_of_their_points(agent_run):
    scores = agent_run["scores"]
    assert_windows_equal(scores, expected(agent_run, "telegraf", ref.telegraf_points), "tg-1")
    assert_windows_equal(scores, expected(agent_run, "otlp", ref.otlp_points), "ot-1")
    tg = scores[scores["device_id"] == "tg-1"].reset_index(drop=True)
    ot = scores[scores["device_id"] == "ot-1"].reset_index(drop=True)
    # The same points in two dialects: the same windows.
    feature_columns = [c for c in tg.columns if c.split("_")[-1] in ("mean", "std", "min", "max")]
    pd.testing.assert_frame_equal(tg[feature_columns], ot[feature_columns])
    # By hand: 2,000 bytes sent a second throughout; the first point of a counter is its base.
    assert np.allclose(tg["net_tx_bytes_mean"], 2000.0)
    assert list(tg["net_tx_bytes_count"]) == [9, 10, 10]
    assert list(tg["cpu_user_count"]) == [10, 10, 10]
    # The reset at the 21st second: 300 bytes since the counter restarted.
    assert tg.loc[2, "net_rx_bytes_min"] == pytest.approx(300.0)


def test_what_cannot_be_mapped_is_a_dead_letter_with_its_reason(agent_run):
    dead = agent_run["dead"]
    dead = dead[dead["source_topic"] != agent_run["topics"]["collectd"]]
    reasons = set(dead["reason"])
    assert "telegraf: tag host: missing or null" in reasons, reasons
    assert (
        "load1: otlp histogram system.cpu.load_average.1m is not mapped (gauges and sums are)"
        in reasons
    ), reasons
    assert len(dead) == 2, dead[["source_topic", "reason"]]


def test_without_a_model_the_windows_are_stored_unscored(agent_run):
    scores = agent_run["scores"]
    assert len(scores) >= 6
    assert scores["anomaly_score"].isna().all() and scores["model_version"].isna().all()
