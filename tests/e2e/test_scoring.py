"""Scoring in the stream on the real stack: the running job follows the models folder's
CURRENT pointer (hot reload), refuses a broken version while the old one keeps scoring,
explains flagged windows, and reports its scoring metrics through Flink's REST API."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pandas as pd
import pytest

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
    wait_for_rows,
    wait_for_state,
    wait_until,
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
    messages, episodes = TelemetryGenerator(config).run_messages(T0, TICKS)
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
    # The switches happen while events still stream: the last slice waits for them.
    switched_over = threading.Event()
    producer = PacedProducer(
        stack, fresh_topic, messages, slices=60, pause_s=1.0, hold=switched_over
    )
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

    wait_until("first scored rows", lambda: count_rows(fresh_db, stack.scores_table) > 0, 90)
    pointer.write_text("broken-copy\n")
    broken_written = time.monotonic()
    refused = wait_until("broken refused", lambda: metrics()["model_load_failures"] >= 1, 30)
    assert flink.rest(f"/jobs/{job_id}")["state"] == "RUNNING"
    pointer.write_text(second + "\n")
    switch_began, switch_began_wall = time.monotonic(), time.time()
    switched = wait_until(f"{second} active", lambda: second in metrics()["active"], 30)
    switched_over.set()

    expected = len({(e["device_id"], e["ts_ms"] // 10_000) for e in events})
    wait_for_rows(fresh_db, stack.scores_table, expected, 180)
    producer.join(60)
    assert producer.error is None, producer.error
    rows = fetch_scores(fresh_db)
    scored = int(rows["anomaly_score"].notna().sum())
    # The web UI's metric values are fetched from the TaskManagers every 10 s.
    wait_until("metrics caught up", lambda: metrics()["windows_scored"] >= scored, 30)
    final = metrics()
    flink.cancel(job_id)
    # Every window once, value for value, scored by the version it names.
    assert_windows_exact(rows, events, trained, retrained)
    assert set(rows["model_version"]) == {first, second}, set(rows["model_version"])
    # One switch, between batches: no window of the old version after the new one began.
    last_first = rows[rows["model_version"] == first]["window_end"].max()
    first_second = rows[rows["model_version"] == second]["window_end"].min()
    assert last_first <= first_second, (last_first, first_second)
    # An incident names the version of its latest model alert (the one judging it now).
    alerts = fetch_table(fresh_db, stack.alerts_table, "device_id, window_start")
    alerts = alerts[alerts["source"] == "model"]
    alerts["started_at"] = pd.to_datetime(alerts["incident_start"], utc=True)
    latest = alerts.groupby(["device_id", "started_at"])["model_version"].last()
    incidents = fetch_table(fresh_db, stack.incidents_table, "device_id, started_at")
    incidents["started_at"] = pd.to_datetime(incidents["started_at"], utc=True)
    named = incidents.dropna(subset=["model_version"]).set_index(["device_id", "started_at"])
    assert len(named) > 0
    assert named["model_version"].to_dict() == latest.loc[named.index].to_dict()

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
# dev-00003 is a router whose links lead to dev-00029 and dev-00045: they fail a window after
# it, a cascade (one correlated incident, root dev-00003).
PLANTED = {
    "dev-00003": (3, 4, 5, 8, 15, 16),
    "dev-00007": (10,),
    "dev-00029": (4, 5),
    "dev-00045": (4, 5),
}
CASCADE_ROOT, CASCADE_SYMPTOMS = "dev-00003", ["dev-00029", "dev-00045"]
QUIET_S = 30
# Segments of one minute: T0 is 02:00 UTC, so windows 6-11 lie in segment 121 and 18-23 in
# segment 123, where dev-00012's traffic limit is 0.
SEGMENT_S = 60
SEGMENT_LIMITED = {"dev-00012": (121, 123)}
EXPECTED_INCIDENTS = {
    "dev-00003": [(3, 9, 4), (15, 17, 2)],
    "dev-00007": [(10, 11, 1)],
    "dev-00029": [(4, 6, 2)],
    "dev-00045": [(4, 6, 2)],
    "dev-00009": [(0, 30, 30)],  # its own latency limit is 0: a rule alert in every window
    "dev-00012": [(6, 12, 6), (18, 24, 6)],  # its segment limits
}
LIMITED = "dev-00009"
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


def reference_incidents(alerts, quiet_s: int) -> list[tuple]:
    """Independent merge: a device's alert windows in time order, a new incident whenever
    one starts more than ``quiet_s`` after the previous one ended."""
    out: list[list] = []
    last: dict[str, object] = {}
    for r in alerts.sort_values(["device_id", "window_start"]).itertuples():
        previous = last.get(r.device_id)
        if previous is None or (r.window_start - previous).total_seconds() > quiet_s:
            out.append([r.device_id, r.window_start, r.window_end, set(), -1.0, set(), set()])
        incident = out[-1]
        incident[2] = max(incident[2], r.window_end)
        incident[3].add(r.window_start)
        incident[4] = max(incident[4], r.severity)
        incident[5].add(r.metric)
        incident[6].add(r.source)
        last[r.device_id] = max(previous or r.window_end, r.window_end)
    return sorted(
        (d, s, e, len(w), round(p, 9), frozenset(m), frozenset(src))
        for d, s, e, w, p, m, src in out
    )


def reference_rule_alerts(rows, inventory: list[dict], segments: list[dict]) -> set[tuple]:
    """(device, window_start, source, value, threshold) of every rule that must fire, from
    the job's window features, the reference rows and the catalogue's rules, evaluated here
    with pandas."""
    from common.features import CATALOGUE

    limits = {r["device_id"]: r for r in inventory}
    segment_limits = {(r["device_id"], r["segment"]): r for r in segments}
    fired = set()
    for rule in CATALOGUE.rules:
        for r in rows.itertuples():
            value = getattr(r, rule.feature)
            start = r.window_start
            segment = (start.hour * 3600 + start.minute * 60 + start.second) // SEGMENT_S
            if rule.reference == "device":
                threshold = limits.get(r.device_id, {}).get(rule.limit_column)
            elif rule.reference == "segment":
                row = segment_limits.get((r.device_id, segment), {})
                threshold = row.get(rule.limit_column)
            else:
                threshold = rule.threshold
            if threshold is None:
                continue
            if (value > threshold) if rule.direction == "above" else (value < threshold):
                fired.add((r.device_id, r.window_start, f"rule:{rule.name}", value, threshold))
    return fired


def test_alerts_incidents_health_and_reference_data_of_a_known_stream(
    stack, fresh_topic, fresh_db, trained, alerting
):
    import pandas as pd

    from common.db import connect, refresh_aggregates
    from common.features import CATALOGUE
    from common.models import register
    from deploy.grafana.check import check_all
    from deploy.local.stack import Flink
    from simulator.devices import fleet_inventory, segment_limits, upsert_devices
    from simulator.sinks import KafkaSink

    # Two devices in three have a reference row, and limits per segment of the day.
    fleet, links = fleet_inventory(SimulatorConfig(devices=FLEET_DEVICES))
    inventory = [r for r in fleet if int(r["device_id"][-5:]) % 3 != 1]
    for row in inventory:
        if row["device_id"] == LIMITED:
            row["latency_ms_high"] = 0.0
    segments = segment_limits(inventory, SEGMENT_S)
    for row in segments:
        if row["segment"] in SEGMENT_LIMITED.get(row["device_id"], ()):
            row["throughput_mbps_high"] = 0.0
    upsert_devices(fresh_db, inventory, links, segments)
    register(fresh_db.replace(models_dir=trained[1].models_dir), [trained[2]["version"]])
    events = planted_events(seed=43)
    sink = KafkaSink(stack.kafka_bootstrap, fresh_topic)
    sink.send_many(events)
    sink.close()
    assert sink.errors == 0, sink.first_error

    flink = Flink(stack)
    env = job_env(
        fresh_db,
        fresh_topic,
        ANOMALY_INCIDENT_QUIET_SECONDS=str(QUIET_S),
        ANOMALY_REFERENCE_SEGMENT_SECONDS=str(SEGMENT_S),
    )
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

    # Alerts: a 'model' row for each flagged window, a rule row for each rule that fires.
    alerts = fetch_table(fresh_db, stack.alerts_table, "device_id, window_start, source")
    model = alerts[alerts["source"] == "model"]
    flagged = rows[rows["is_anomaly"] == True]  # noqa: E712
    assert sorted(zip(model["device_id"], model["window_start"], strict=True)) == sorted(
        zip(flagged["device_id"], flagged["window_start"], strict=True)
    )
    assert (model["metric"].to_numpy() == flagged["top_metric"].to_numpy()).all()
    rules = alerts[alerts["source"] != "model"]
    got_rules = {
        (r.device_id, r.window_start, r.source, r.value, r.threshold) for r in rules.itertuples()
    }
    assert got_rules == reference_rule_alerts(rows, inventory, segments)
    assert {
        "rule:packet_loss_high",
        "rule:latency_over_device_limit",
        "rule:traffic_over_segment_limit",
    } <= set(rules["source"])
    # The device whose latency limit is 0 alerts in every window: one long incident.
    assert (rules["device_id"] == LIMITED).sum() == 30
    # The segment rule fires in the limited segments only: their 12 windows.
    by_segment = rules[rules["source"] == "rule:traffic_over_segment_limit"]
    t0 = pd.Timestamp(T0, unit="ms", tz="UTC")
    assert sorted(zip(by_segment["device_id"], by_segment["window_start"], strict=True)) == [
        ("dev-00012", t0 + pd.Timedelta(seconds=10 * k)) for k in (*range(6, 12), *range(18, 24))
    ]

    # Incidents: exactly the independent merge of the alerts, and the planted ones.
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
            frozenset(r.sources.split(",")),
        )
        for r in incidents.itertuples()
    )
    assert got == reference_incidents(alerts, QUIET_S)
    # Each alert names the incident it belongs to.
    alerts["incident_start"] = pd.to_datetime(alerts["incident_start"], utc=True)
    spans = {(d, s): e for d, s, e, *_ in got}
    for a in alerts.itertuples():
        assert a.incident_start <= a.window_start < spans[(a.device_id, a.incident_start)]
    for device, expected in EXPECTED_INCIDENTS.items():
        mine = [(s, e, n) for d, s, e, n, _, _, _ in got if d == device]
        assert mine == [
            (t0 + pd.Timedelta(seconds=10 * a), t0 + pd.Timedelta(seconds=10 * b), n)
            for a, b, n in expected
        ], device
    planted = incidents[incidents["device_id"] == "dev-00003"]
    assert (
        planted["site"] == next(r["site"] for r in inventory if r["device_id"] == "dev-00003")
    ).all()

    # Incidents close by the stream's event time (its newest window end, T0 + 300 s), not
    # the wall clock: those whose quiet period, window and lateness have passed by then are
    # closed; one that ended a moment ago (in event time too) is open.
    status = fetch_table(fresh_db, "incident_status", "device_id, started_at")
    closes = pd.Timedelta(seconds=fresh_db.incident_quiet_seconds + fresh_db.window_seconds
                          + fresh_db.watermark_delay_seconds)  # fmt: skip
    stream_end = t0 + pd.Timedelta(seconds=300)
    status["ended_at"] = pd.to_datetime(status["ended_at"], utc=True)
    assert len(status) == len(incidents)
    assert (
        status["status"] == np.where(status["ended_at"] + closes > stream_end, "open", "closed")
    ).all()
    assert "open" in set(status["status"]) and "closed" in set(status["status"])
    conn = connect(fresh_db)
    with conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {stack.incidents_table} (device_id, started_at, ended_at, windows)"  # noqa: S608
            " VALUES ('now-device', now() - interval '20 s', now() - interval '10 s', 1)"
        )
        cur.execute("SELECT status FROM incident_status WHERE device_id = 'now-device'")
        assert cur.fetchone() == ("open",)
        # (Not the job's: the notifications below are of what the job wrote.)
        cur.execute(f"DELETE FROM {stack.incidents_table} WHERE device_id = 'now-device'")  # noqa: S608
    conn.close()

    # Health: one row per device, 100 minus the highest model or rule severity of its windows
    # in the last 300 s of event time (here: all 30 of them), as of its last window.
    health = fetch_table(fresh_db, stack.health_table, "device_id").set_index("device_id")
    rule_severity = {f"rule:{r.name}": r.severity for r in CATALOGUE.rules}
    worst: dict[str, float] = {}
    for r in rows.itertuples():
        model_severity = 0.0 if np.isnan(r.severity) else r.severity
        worst[r.device_id] = max(worst.get(r.device_id, 0.0), model_severity)
    for r in rules.itertuples():
        worst[r.device_id] = max(worst[r.device_id], rule_severity[r.source])
    assert sorted(health.index) == sorted(worst)
    expected_health = pd.Series({d: 100.0 - w for d, w in worst.items()}).sort_index()
    np.testing.assert_allclose(health["health"].sort_index(), expected_health, atol=1e-9)
    assert (health["window_end"] == t0 + pd.Timedelta(seconds=300)).all()
    assert health.loc[LIMITED, "health"] <= 30
    assert health.loc["dev-00003", "health"] < 50 and health.loc["dev-00001", "health"] > 50

    # Links: as healthy as their less healthy end.
    link_health = fetch_table(fresh_db, "link_health", "device_a, device_b")
    assert len(link_health) == len(links) > 0
    for r in link_health.itertuples():
        ends = [health.loc[d, "health"] for d in (r.device_a, r.device_b) if d in health.index]
        assert r.health == min(ends)

    notifications_of_what_the_job_wrote(fresh_db, alerting, inventory)

    # Every Grafana panel on what the pipeline wrote, as Grafana would send it, as the
    # read-only role: it runs, has its columns, and only the panels on what this stream has
    # none of (refused events; incidents open now: its event times are in 2023) are empty.
    refresh_aggregates(fresh_db)
    results = check_all(
        fresh_db,
        t0.to_pydatetime(),
        (t0 + pd.Timedelta(seconds=300)).to_pydatetime(),
        {"device": "dev-00003"},
    )
    assert not [(r.name, r.problem) for r in results if r.problem]
    empty = {r.name for r in results if not r.rows}
    assert empty <= {"Open incidents", "Dead letters and late events", "Why events were refused"}
    by_name = {r.name: r for r in results}
    assert sum(r[1] for r in by_name["Anomalous windows"].rows) == len(flagged)
    (drift,) = by_name["Drift check (last hour of the range)"].rows
    assert drift[0] == trained[2]["version"] and drift[1] == rows["anomaly_score"].notna().sum()
    assert "dev-00003" in {r[0] for r in by_name["Unhealthy now"].rows}


def notifications_of_what_the_job_wrote(db, alerting, inventory: list[dict]) -> None:
    """The notifier on the job's incidents, through a real Alertmanager (the example route)
    to the receiver: one page per correlated incident, the planted cascade as one with its
    root, each closed one resolved once, the pager for high and critical devices."""
    from alerting.notifier import Alertmanager, cycle
    from common.db import connect

    settings = db.replace(
        alertmanager_url=alerting.url, alert_resend_seconds=1, alert_min_firing_seconds=3
    )
    conn = connect(settings, role="writer")
    am = Alertmanager(alerting.url)

    def groups() -> dict[str, tuple]:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT id, root_device, symptoms, status, notification"
                " FROM correlated_incident_status"
            )
            return {r[0]: r[1:] for r in cur.fetchall()}

    def received() -> dict[str, list[tuple[str, str, dict]]]:
        out: dict[str, list] = {}
        for receiver, status, alert in alerting.inbox.notifications():
            out.setdefault(alert["labels"]["incident"], []).append((receiver, status, alert))
        return out

    def expected(gs) -> dict[str, list[str]]:
        return {k: ["firing"] + (["resolved"] if g[2] == "closed" else []) for k, g in gs.items()}

    def settled() -> bool:
        cycle(conn, settings, am)
        got = {k: [s for _, s, _ in v] for k, v in received().items()}
        return got == expected(groups())

    try:
        try:
            wait_until("every correlated incident paged (and resolved)", settled, 60, poll_s=0.5)
        except AssertionError as exc:
            got = {k: [s for _, s, _ in v] for k, v in received().items()}
            raise AssertionError(f"{exc}: received {got}, expected {expected(groups())}") from None
        took = []
        for _ in range(6):  # re-sends and resolved re-sends page nobody again
            began = time.perf_counter()
            cycle(conn, settings, am)
            took.append(time.perf_counter() - began)
            time.sleep(0.5)
        gs = groups()
        with conn, conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {db.incidents_table}")  # noqa: S608
            (incidents,) = cur.fetchone()
            cur.execute(f"SELECT count(*) FROM {db.correlation_table}")  # noqa: S608
            (members,) = cur.fetchone()
    finally:
        conn.close()
    got = received()
    assert {k: [s for _, s, _ in v] for k, v in got.items()} == expected(gs)
    assert members == incidents  # every device incident is in exactly one
    (cascade,) = [k for k, g in gs.items() if g[0] == CASCADE_ROOT and g[1]]
    assert gs[cascade][1] == CASCADE_SYMPTOMS and gs[cascade][2] == "closed"
    (page, resolved) = got[cascade]
    assert page[0] == resolved[0] == "pager" and page[2]["labels"]["device"] == CASCADE_ROOT
    assert page[2]["annotations"]["symptoms"] == ",".join(CASCADE_SYMPTOMS)
    # A rule-only incident is named by its rule; the one still open has not resolved.
    (limited,) = [k for k, g in gs.items() if g[0] == LIMITED]
    assert [s for _, s, _ in got[limited]] == ["firing"]
    assert got[limited][0][2]["labels"]["alertname"] == "latency_over_device_limit"
    criticality = {r["device_id"]: r["criticality"] for r in inventory}
    for k, notes in got.items():
        root = gs[k][0]
        want = "pager" if criticality.get(root) in ("high", "critical") else "chat"
        assert {r for r, _, _ in notes} == {want}, (k, root)
    FIGURES["notifications of the known stream"] = (
        f"{incidents} device incidents -> {len(gs)} correlated -> {len(gs)} firing and "
        f"{sum(1 for g in gs.values() if g[2] == 'closed')} resolved notifications at the "
        "receiver; the planted 3-device cascade paged once, rooted at its router; one "
        f"notifier cycle {1000 * sorted(took)[len(took) // 2]:.0f} ms (median of 6)"
    )
