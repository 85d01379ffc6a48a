"""Scoring in the stream on the real stack: the running job follows the models folder's
CURRENT pointer (hot reload), refuses a broken version while the old one keeps scoring,
explains flagged windows, and reports its scoring metrics through Flink's REST API."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from simulator.generator import SimulatorConfig, TelemetryGenerator
from tests.conftest import FIGURES, FLEET_DEVICES
from tests.e2e.test_pipeline import T0, assert_windows_exact
from tests.pipeline import (
    PacedProducer,
    count_rows,
    fetch_scores,
    job_env,
    operator_metrics,
    wait_for_rows,
    wait_for_state,
)
from udfs.onnx_scorer import MODEL_FILE

pytestmark = [pytest.mark.stack, pytest.mark.slow]

TICKS = 180  # 3 min of event time: 18 windows per device
# Failures that move one metric, so that an explanation has one right answer.
SINGLE_METRIC_SCENARIOS = ("level_shift", "dip", "spike")


def episodes_and_messages(seed: int) -> tuple[list[dict], list]:
    """The fleet's messages and the ground truth of its failure episodes (with the metric
    each one moves)."""
    config = SimulatorConfig(
        devices=FLEET_DEVICES, seed=seed, anomaly_rate=0.003, scenarios=SINGLE_METRIC_SCENARIOS
    )
    gen = TelemetryGenerator(config)
    messages, episodes = [], []
    for k in range(TICKS):
        ts = T0 + k * gen.interval_ms
        values, present, label, records = gen.tick(ts)
        episodes += records
        messages += gen.encode(ts, values, present, label)
    return episodes, messages


def explained_by_episode_metric(rows, episodes: list[dict]) -> tuple[int, list]:
    """Flagged windows that overlap exactly one episode: how many, and those whose top
    metric is not the metric that episode moved."""
    checked, wrong = 0, []
    for row in rows[rows["is_anomaly"] == True].itertuples():  # noqa: E712 (NULLs stay out)
        start = int(row.window_start.timestamp() * 1000)
        end = start + 10_000
        overlapping = [
            e
            for e in episodes
            if e["device_id"] == row.device_id
            and e["start_ts_ms"] < end
            and e["end_ts_ms"] >= start
        ]
        if len(overlapping) != 1:
            continue
        checked += 1
        if row.top_metric != overlapping[0]["metric"]:
            wrong.append((row.device_id, start, overlapping[0], row.explanation))
    return checked, wrong


def wait_until(predicate, timeout_s: float, what: str) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def test_running_job_switches_models_refuses_a_broken_one_and_explains(
    stack, fresh_topic, fresh_db, trained, retrained, tmp_path
):
    from deploy.local.stack import Flink

    first, second = trained[2]["version"], retrained[2]["version"]
    models = tmp_path / "models"
    for result in (trained[0], retrained[0]):
        shutil.copytree(result.model_dir, models / result.version)
    # A copy of the second version whose graph was cut short in transit.
    broken = models / "broken-copy"
    shutil.copytree(retrained[0].model_dir, broken)
    (broken / MODEL_FILE).write_bytes((broken / MODEL_FILE).read_bytes()[:1000])
    pointer = models / "CURRENT"
    pointer.write_text(first + "\n")

    episodes, messages = episodes_and_messages(seed=41)
    events = [json.loads(v) for _, v in messages]
    flink = Flink(stack)
    env = job_env(
        fresh_db,
        fresh_topic,
        ANOMALY_MODELS_DIR=str(models),
        ANOMALY_MODEL_RELOAD_SECONDS="1",
        ANOMALY_CHECKPOINT_INTERVAL_SECONDS="2",
    )
    producer = PacedProducer(stack, fresh_topic, messages, slices=30, pause_s=1.0)
    job_id = flink.submit([], env=env)  # no --model-dir: the job follows CURRENT
    wait_for_state(flink, job_id, ("RUNNING",), 60)
    producer.start()

    def metrics() -> dict[str, float]:
        suffixes = ("windows_scored", "anomalies", "model_load_failures", "model_loads")
        suffixes += ("model_loaded_at_ms",)
        values = operator_metrics(flink, job_id, (*suffixes, "batch_latency_ms", ".active"))
        return {
            **{s: sum(v for k, v in values.items() if k.endswith(s)) for s in suffixes},
            "active": {k.split(".")[-2] for k, v in values.items() if k.endswith(".active") and v},
            "batch_latency_ms": [v for k, v in values.items() if k.endswith("batch_latency_ms")],
        }

    wait_until(lambda: count_rows(fresh_db, stack.scores_table) > 0, 90, "first scored rows")
    pointer.write_text("broken-copy\n")
    broken_written = time.monotonic()
    refused = wait_until(lambda: metrics()["model_load_failures"] >= 1, 30, "broken refused")
    assert producer.is_alive(), "the switch must happen while events still stream"
    assert flink.rest(f"/jobs/{job_id}")["state"] == "RUNNING"
    pointer.write_text(second + "\n")
    switch_began, switch_began_wall = time.monotonic(), time.time()
    switched = wait_until(lambda: second in metrics()["active"], 30, f"{second} active")
    assert producer.is_alive(), "the switch must happen while events still stream"

    expected = len({(e["device_id"], e["ts_ms"] // 10_000) for e in events})
    wait_for_rows(fresh_db, stack.scores_table, expected, 180)
    producer.join(60)
    assert producer.error is None, producer.error
    rows = fetch_scores(fresh_db)
    scored = int(rows["anomaly_score"].notna().sum())
    # The web UI's metric values are fetched from the TaskManagers every 10 s.
    wait_until(lambda: metrics()["windows_scored"] >= scored, 30, "metrics caught up")
    final = metrics()
    flink.cancel(job_id)
    # Every window once, value for value, scored by the version it names.
    assert_windows_exact(rows, events, trained, retrained)
    assert set(rows["model_version"]) == {first, second}, set(rows["model_version"])
    # One switch, between batches: no window of the old version after the new one began.
    last_first = rows[rows["model_version"] == first]["window_end"].max()
    first_second = rows[rows["model_version"] == second]["window_end"].min()
    assert last_first <= first_second, (last_first, first_second)

    # The job's metrics count what landed; the refused version was counted once.
    assert final["windows_scored"] == scored
    assert final["anomalies"] == (rows["is_anomaly"] == True).sum()  # noqa: E712
    assert final["model_load_failures"] == 1
    assert final["model_loads"] == 2
    assert final["active"] == {second}
    assert final["batch_latency_ms"] and all(v >= 0 for v in final["batch_latency_ms"])

    # Flagged windows are explained, others are not; the explanation names the metric the
    # simulator's failure moved.
    flagged = rows["is_anomaly"] == True  # noqa: E712
    assert rows.loc[flagged, "explanation"].notna().all()
    assert rows.loc[~flagged, "explanation"].isna().all()
    checked, wrong = explained_by_episode_metric(rows, episodes)
    assert checked >= 10, f"only {checked} flagged windows inside single-metric failures"
    assert not wrong, f"{len(wrong)} of {checked} explanations miss the moved metric: {wrong[:3]}"
    for text in rows.loc[flagged, "explanation"]:
        for item in json.loads(text):
            assert set(item) == {
                "metric",
                "feature",
                "direction",
                "actual",
                "typical",
                "contribution",
            }
            assert np.isfinite([item["actual"], item["typical"], item["contribution"]]).all()

    # When the worker loaded the new version (its own clock), after CURRENT changed.
    switch_s = final["model_loaded_at_ms"] / 1000 - switch_began_wall
    assert switch_s >= 0, "loaded before CURRENT named it"
    FIGURES["hot reload: CURRENT changed -> new version scoring"] = (
        f"{switch_s:.1f} s (reload interval 1 s; seen in the REST API after "
        f"{switched - switch_began:.1f} s); a broken version refused in "
        f"{refused - broken_written:.1f} s without a restart; {checked} explanations checked "
        "against the metric the failure moved"
    )


# Windows (index from T0) of planted failures, and the incidents they must make with a quiet
# period of 30 s: windows 3-5 and 8 merge (20 s apart), 15-16 are 60 s later: a new incident.
PLANTED = {"dev-00003": (3, 4, 5, 8, 15, 16), "dev-00007": (10,)}
QUIET_S = 30
EXPECTED_INCIDENTS = {"dev-00003": [(3, 9, 4), (15, 17, 2)], "dev-00007": [(10, 11, 1)]}
GHOST = "ghost-0001"  # in neither the model nor the inventory


def planted_events(seed: int, ticks: int = 300) -> list[dict]:
    """A quiet fleet (no simulator failures), with latency 20x and heavy packet loss in the
    PLANTED windows, and a device nobody knows sending a copy of dev-00000's values."""
    gen = TelemetryGenerator(SimulatorConfig(devices=FLEET_DEVICES, seed=seed, anomaly_rate=0.0))
    events = []
    for k in range(ticks):
        tick = gen.tick_events(T0 + k * gen.interval_ms)
        events += [*tick, {**tick[0], "device_id": GHOST}]
    for e in events:
        if (e["ts_ms"] - T0) // 10_000 in PLANTED.get(e["device_id"], ()):
            e["latency_ms"] *= 20
            e["packet_loss_pct"] = min(100.0, e["packet_loss_pct"] + 30)
    return events


def reference_incidents(rows, quiet_s: int) -> list[tuple]:
    """Independent merge: a device's flagged windows in time order, a new incident whenever
    one starts more than ``quiet_s`` after the previous one ended."""
    out: list[list] = []
    flagged = rows[rows["is_anomaly"] == True].sort_values(["device_id", "window_start"])  # noqa: E712
    last: dict[str, object] = {}
    for r in flagged.itertuples():
        previous = last.get(r.device_id)
        if previous is None or (r.window_start - previous).total_seconds() > quiet_s:
            out.append([r.device_id, r.window_start, r.window_end, 0, -1.0, set()])
        incident = out[-1]
        incident[2] = max(incident[2], r.window_end)
        incident[3] += 1
        incident[4] = max(incident[4], r.severity)
        incident[5].add(r.top_metric)
        last[r.device_id] = r.window_end
    return sorted((d, s, e, n, round(p, 9), frozenset(m)) for d, s, e, n, p, m in out)


def test_incidents_merge_flagged_windows_and_windows_carry_reference_data(
    stack, fresh_topic, fresh_db, trained
):
    import pandas as pd

    from common.db import connect
    from deploy.local.stack import Flink
    from simulator.devices import fleet_reference, upsert_devices
    from simulator.sinks import KafkaSink
    from tests.pipeline import fetch_table

    # Two devices in three have a reference row.
    inventory = [
        r
        for r in fleet_reference(SimulatorConfig(devices=FLEET_DEVICES))
        if int(r["device_id"][-5:]) % 3 != 1
    ]
    upsert_devices(fresh_db, inventory)
    events = planted_events(seed=43)
    sink = KafkaSink(stack.kafka_bootstrap, fresh_topic)
    sink.send_many(events)
    sink.close()
    assert sink.errors == 0, sink.first_error

    flink = Flink(stack)
    env = job_env(fresh_db, fresh_topic, ANOMALY_INCIDENT_QUIET_SECONDS=str(QUIET_S))
    job_id = flink.submit(["--bounded", "--model-dir", str(trained[0].model_dir)], env=env)
    job = wait_for_state(flink, job_id, ("FINISHED", "FAILED", "CANCELED"), 240)
    assert job["state"] == "FINISHED", flink.rest(f"/jobs/{job_id}/exceptions")

    rows = fetch_scores(fresh_db)
    assert_windows_exact(rows, events, trained)

    # Enrichment: reference columns from the devices table, NULL and marked for the others;
    # the unknown device is scored all the same.
    reference = pd.DataFrame(inventory).rename(columns={"kind": "device_kind"})
    merged = rows.merge(reference, on="device_id", how="left", suffixes=("", "_expected"))
    listed = merged["device_id"].isin(reference["device_id"])
    assert (
        merged.loc[listed, "in_inventory"].all() and not merged.loc[~listed, "in_inventory"].any()
    )
    for column in ("site", "region", "device_kind", "criticality"):
        assert (merged.loc[listed, column] == merged.loc[listed, f"{column}_expected"]).all()
        assert merged.loc[~listed, column].isna().all()
    ghost = rows[rows["device_id"] == GHOST]
    assert len(ghost) == 30 and ghost["anomaly_score"].notna().all()
    assert not ghost["known_device"].any() and not ghost["in_inventory"].any()

    # Incidents: exactly the independent merge of the flagged windows, and the planted ones.
    incidents = fetch_table(fresh_db, stack.incidents_table, "device_id, started_at")
    for column in ("started_at", "ended_at"):
        incidents[column] = pd.to_datetime(incidents[column], utc=True)
    got = sorted(
        (
            r.device_id,
            r.started_at,
            r.ended_at,
            r.windows,
            round(r.peak_severity, 9),
            frozenset(r.top_metrics.split(",")),
        )
        for r in incidents.itertuples()
    )
    assert got == reference_incidents(rows, QUIET_S)
    t0 = pd.Timestamp(T0, unit="ms", tz="UTC")
    for device, expected in EXPECTED_INCIDENTS.items():
        mine = [(s, e, n) for d, s, e, n, _, _ in got if d == device]
        assert mine == [
            (t0 + pd.Timedelta(seconds=10 * a), t0 + pd.Timedelta(seconds=10 * b), n)
            for a, b, n in expected
        ], device
    planted = incidents[incidents["device_id"] == "dev-00003"]
    assert (
        planted["site"] == next(r["site"] for r in inventory if r["device_id"] == "dev-00003")
    ).all()

    # Old incidents read as closed; one that ended a moment ago is open.
    status = fetch_table(fresh_db, "incident_status", "device_id, started_at")
    assert len(status) == len(incidents) and (status["status"] == "closed").all()
    conn = connect(fresh_db)
    with conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {stack.incidents_table} (device_id, started_at, ended_at, windows)"  # noqa: S608
            " VALUES ('now-device', now() - interval '20 s', now() - interval '10 s', 1)"
        )
        cur.execute("SELECT status FROM incident_status WHERE device_id = 'now-device'")
        assert cur.fetchone() == ("open",)
    conn.close()
