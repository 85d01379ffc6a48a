"""Notifications through a real Alertmanager to a webhook receiver in the test: a cascade pages
once with its root, an unrelated failure pages on its own, and neither a killed notifier, a
killed Alertmanager nor an Alertmanager that is away loses or doubles a notification.

The test plays the job's part: it writes the incidents, alerts, device and link rows the job
and the inventory write, and moves the stream's event time (device_health) forward to close
them. tests/e2e/test_scoring.py runs the notifier on what the real job wrote.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from common.db import connect
from common.settings import REPO_ROOT
from tests.conftest import FIGURES
from tests.pipeline import wait_until

pytestmark = [pytest.mark.stack]

T = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
DEVICES = [
    # device, kind, criticality, site
    ("r-01", "router", "critical", "eu-west-01"),
    ("s-01", "switch", "high", "eu-west-01"),
    ("s-02", "switch", "high", "eu-west-02"),
    ("x-01", "server", "medium", "us-east-01"),
]
LINKS = [("r-01", "s-01"), ("r-01", "s-02")]
EXPLANATION = json.dumps(
    [{"metric": "latency_ms", "feature": "latency_ms_mean", "direction": "high",
      "actual": 310.0, "typical": 12.5, "contribution": 0.8}]
)  # fmt: skip
QUICK = {
    "ANOMALY_ALERT_RESEND_SECONDS": "2",
    "ANOMALY_ALERT_MIN_FIRING_SECONDS": "3",
}


def quick(settings, alerting):
    return settings.replace(
        alertmanager_url=alerting.url,
        alert_resend_seconds=2,
        alert_min_firing_seconds=3,
    )


def execute(settings, statement: str, params=()) -> list[tuple]:
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def set_stream_time(settings, at: datetime) -> None:
    """Where the job's event time stands: the newest window end in device_health."""
    execute(
        settings,
        f"INSERT INTO {settings.health_table} (device_id, window_end, health)"  # noqa: S608
        " VALUES ('clock', %s, 100) ON CONFLICT (device_id) DO UPDATE SET window_end = %s",
        (at, at),
    )


def write_fleet(settings, incidents: list[tuple]) -> None:
    """Devices, links, and (device, start offset s, end offset s, severity, source) incidents
    with one alert each (a model alert explains itself, a rule alert has its threshold)."""
    for device, kind, criticality, site in DEVICES:
        execute(
            settings,
            f"INSERT INTO {settings.devices_table} (device_id, kind, criticality, site, region)"  # noqa: S608
            " VALUES (%s, %s, %s, %s, %s)",
            (device, kind, criticality, site, site.rsplit("-", 1)[0]),
        )
    for a, b in LINKS:
        execute(settings, f"INSERT INTO {settings.links_table} VALUES (%s, %s)", (a, b))  # noqa: S608
    for device, start_s, end_s, severity, source in incidents:
        start, end = T + timedelta(seconds=start_s), T + timedelta(seconds=end_s)
        _, _, criticality, site = next(d for d in DEVICES if d[0] == device)
        execute(
            settings,
            f"INSERT INTO {settings.incidents_table} (device_id, started_at, ended_at, windows,"  # noqa: S608
            " peak_severity, top_metrics, sources, site, region, criticality)"
            " VALUES (%s, %s, %s, 2, %s, 'latency_ms', %s, %s, %s, %s)",
            (device, start, end, severity, source, site, site.rsplit("-", 1)[0], criticality),
        )
        rule = source.startswith("rule:")
        execute(
            settings,
            f"INSERT INTO {settings.alerts_table} (device_id, window_start, source, window_end,"  # noqa: S608
            " severity, metric, value, threshold, explanation, incident_start)"
            " VALUES (%s, %s, %s, %s, %s, 'packet_loss_pct', %s, %s, %s, %s)",
            (device, start, source, start + timedelta(seconds=10), severity,
             42.0 if rule else 0.97, 5.0 if rule else None, None if rule else EXPLANATION, start),
        )  # fmt: skip


def notifier(settings, alerting) -> subprocess.Popen:
    env = {
        **os.environ,
        **QUICK,
        "ANOMALY_PG_DATABASE": settings.pg_database,
        "ANOMALY_ALERTMANAGER_URL": alerting.url,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "alerting.notifier", "run", "--poll-s", "0.5"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def by_incident(inbox) -> dict[str, list[tuple[str, str, dict]]]:
    """What the receiver got per correlated incident: (receiver, status, alert) in order."""
    out: dict[str, list] = {}
    for receiver, status, alert in inbox.notifications():
        out.setdefault(alert["labels"]["incident"], []).append((receiver, status, alert))
    return out


def statuses(inbox) -> dict[str, list[str]]:
    return {k: [s for _, s, _ in v] for k, v in by_incident(inbox).items()}


CASCADE = f"r-01@{T.isoformat()}"
SINGLE = f"x-01@{T.isoformat()}"


def test_a_killed_notifier_loses_and_doubles_nothing(fresh_db, alerting):
    # A cascade (the router, then two switches its links lead to, one window later) and an
    # unrelated failure at the same time on an unlinked server, raised by a rule only.
    write_fleet(
        fresh_db,
        [("r-01", 0, 20, 90.0, "model"), ("s-01", 10, 30, 60.0, "model"),
         ("s-02", 10, 30, 95.0, "model"), ("x-01", 0, 20, 70.0, "rule:packet_loss_high")],
    )  # fmt: skip
    set_stream_time(fresh_db, T + timedelta(seconds=40))  # all four open
    began = time.monotonic()
    proc = notifier(fresh_db, alerting)
    try:
        paged = wait_until(
            "both firing notifications",
            lambda: statuses(alerting.inbox) == {CASCADE: ["firing"], SINGLE: ["firing"]},
            30,
            poll_s=0.1,
        )
        FIGURES["notifier started -> both pages at the receiver"] = (
            f"{paged - began:.1f} s (process start, 0.5 s poll, Alertmanager group_wait 1 s)"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = notifier(fresh_db, alerting)
        # The new notifier re-sends what is open (every 2 s) before the incidents close.
        sends = f"SELECT min(sends) FROM {fresh_db.notifications_table}"  # noqa: S608
        wait_until("re-sends", lambda: execute(fresh_db, sends)[0][0] >= 3, 30)
        set_stream_time(fresh_db, T + timedelta(seconds=300))
        wait_until(
            "both resolved",
            lambda: all(s[-1] == "resolved" for s in statuses(alerting.inbox).values()),
            30,
        )
        time.sleep(4)  # two more re-send rounds of the resolved ones
    finally:
        proc.kill()
        log = proc.communicate(timeout=10)[0]
    got = by_incident(alerting.inbox)
    assert statuses(alerting.inbox) == {
        CASCADE: ["firing", "resolved"],
        SINGLE: ["firing", "resolved"],
    }, log
    # One page for the cascade, to the pager (critical), naming its root and its symptoms.
    (receiver, _, page), (resolved_to, _, _) = got[CASCADE]
    assert receiver == resolved_to == "pager"
    assert page["labels"] == {
        "alertname": "AnomalyIncident",
        "incident": CASCADE,
        "device": "r-01",
        "site": "eu-west-01",
        "region": "eu-west",
        "criticality": "critical",
        "kind": "router",
    }
    notes = page["annotations"]
    assert notes["symptoms"] == "s-01,s-02" and notes["root"] == "r-01"
    assert notes["severity"] == "95" and notes["top_metrics"] == "latency_ms"
    assert notes["explanation"] == "latency_ms_mean high: 310 (typical 12.5)"
    assert "links lead from it to 2" in notes["root_reason"]
    assert notes["grafana"].startswith(f"{fresh_db.grafana_url}/d/anomaly-device?var-device=r-01")
    assert page["startsAt"].startswith("2024-03-01T12:00:00")
    # The unrelated failure: its own page, to the chat, named by its rule, with the threshold.
    (receiver, _, page), _ = got[SINGLE]
    assert receiver == "chat" and page["labels"]["alertname"] == "packet_loss_high"
    assert page["labels"]["device"] == "x-01" and "symptoms" not in page["annotations"]
    assert page["annotations"]["rules"] == "packet_loss_high: packet_loss_pct 42 vs threshold 5"
    # The same as SQL reads it.
    rows = execute(
        fresh_db,
        "SELECT id, root_device, symptoms, devices, status, notification"
        " FROM correlated_incident_status ORDER BY id",
    )
    assert rows == [
        (CASCADE, "r-01", ["s-01", "s-02"], 3, "closed", "resolved sent"),
        (SINGLE, "x-01", [], 1, "closed", "resolved sent"),
    ]


def test_a_killed_alertmanager_loses_and_doubles_nothing(fresh_db, alerting):
    write_fleet(fresh_db, [("x-01", 0, 20, 70.0, "model")])
    set_stream_time(fresh_db, T + timedelta(seconds=40))
    proc = notifier(fresh_db, alerting)
    try:
        wait_until("firing", lambda: statuses(alerting.inbox) == {SINGLE: ["firing"]}, 30)
        # Alertmanager writes its notification log every 2 s here (1 min on the local
        # stack): it has the page on disk when it is killed mid-incident.
        time.sleep(3)
        alerting.am.pid_file.exists() and os.kill(int(alerting.am.pid_file.read_text()), 9)
        wait_until("Alertmanager gone", lambda: not alerting.am.ready(), 10)
        time.sleep(3)  # the notifier's re-sends fail meanwhile
        alerting.am.start()
        sends = f"SELECT sends FROM {fresh_db.notifications_table}"  # noqa: S608
        before = execute(fresh_db, sends)[0][0]
        wait_until("re-sent to the new one", lambda: execute(fresh_db, sends)[0][0] > before, 30)
        time.sleep(3)  # its group_wait: a second page would come now
        set_stream_time(fresh_db, T + timedelta(seconds=300))
        wait_until("resolved", lambda: statuses(alerting.inbox)[SINGLE][-1] == "resolved", 30)
        time.sleep(3)
    finally:
        proc.kill()
        log = proc.communicate(timeout=10)[0]
    assert statuses(alerting.inbox) == {SINGLE: ["firing", "resolved"]}, log
    assert "unreachable" in log and "reachable again" in log


def test_an_absent_alertmanager_keeps_a_counted_backlog_and_gets_it_later(
    fresh_db, alerting, capsys
):
    from alerting.notifier import Alertmanager, backlog, cycle
    from deploy.local.stack import print_notification_backlog

    settings = quick(fresh_db, alerting)
    alerting.am.stop()
    # An incident that opened and closed while Alertmanager was away.
    write_fleet(settings, [("x-01", 0, 20, 70.0, "model")])
    set_stream_time(settings, T + timedelta(seconds=300))
    conn = connect(settings, role="writer")
    am = Alertmanager(settings.alertmanager_url, timeout_s=1)
    try:
        result = cycle(conn, settings, am)
        assert result.backlog == 1 and f"Alertmanager at {alerting.url} is unreachable" in (
            result.error or ""
        )
        assert backlog(settings) == (1, result.error)
        print_notification_backlog(settings)
        assert "1 waiting for Alertmanager (backlog)" in capsys.readouterr().out
        alerting.am.start()

        def delivered() -> bool:
            cycle(conn, settings, am)
            return statuses(alerting.inbox).get(SINGLE) == ["firing", "resolved"]

        wait_until("the backlog delivered: firing, then resolved", delivered, 30, poll_s=0.5)
        for _ in range(6):  # re-sends of the resolved one page nobody
            cycle(conn, settings, am)
            time.sleep(0.5)
    finally:
        conn.close()
    assert statuses(alerting.inbox) == {SINGLE: ["firing", "resolved"]}
    assert backlog(settings) == (0, None)


def test_an_invalid_route_file_is_refused_with_amtools_reason(tmp_path, base_settings):
    from deploy.local.alerting import Alertmanager
    from deploy.local.helpers import StackError

    bad = "route:\n  receiver: nobody\nreceivers:\n  - name: chat\n"
    am = Alertmanager(base_settings.replace(alertmanager_url="http://127.0.0.1:1"), bad, tmp_path)
    with pytest.raises(StackError, match="is invalid") as err:
        am.start()
    assert 'undefined receiver "nobody"' in str(err.value)
    assert not am.pid_file.exists()
