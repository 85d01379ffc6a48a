"""The notifier: follows the incidents the job writes, correlates them into one incident per
failure (alerting/correlate.py), and sends them to Prometheus Alertmanager, which routes,
groups, silences and delivers them.

  python -m alerting.notifier run      follow and send, every --poll-s seconds (a service)
  python -m alerting.notifier once     one cycle, then exit
  python -m alerting.notifier status   the backlog: what waits to be delivered

Each correlated incident is one Alertmanager alert. It fires once it has been open for
ANOMALY_ALERT_HOLD_SECONDS of event time (so that its linked neighbours have joined and its
root is known), is re-sent every ANOMALY_ALERT_RESEND_SECONDS while open, and is resolved
when the last of its device incidents closes. What Alertmanager accepted is recorded in the
notifications table after it accepted it: a restart of the notifier sends again what was not
recorded (Alertmanager deduplicates), and while Alertmanager is away the backlog waits there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from psycopg2 import sql
from psycopg2.extras import Json

from alerting.correlate import Incident, Links, assign, rank_root
from common.db import connect
from common.settings import Settings

MODEL_ALERT = "AnomalyIncident"


class AlertmanagerError(RuntimeError):
    pass


class Alertmanager:
    """Alertmanager's v2 API: POST /api/v2/alerts."""

    def __init__(self, url: str, timeout_s: float = 5.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def post(self, alerts: list[dict]) -> None:
        request = urllib.request.Request(
            f"{self.url}/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")[:300]
            raise AlertmanagerError(
                f"Alertmanager at {self.url} refused the alerts: HTTP {exc.code} {body}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AlertmanagerError(
                f"Alertmanager at {self.url} is unreachable ({reason}): is it running? "
                "(`make up` starts the local one; ANOMALY_ALERTMANAGER_URL names another)"
            ) from exc


@dataclass
class Group:
    """A correlated incident as the notifier sees it in one cycle."""

    id: str
    members: list[dict] = field(default_factory=list)
    root_device: str | None = None
    root_reason: str | None = None
    root_frozen: bool = False
    notification: dict | None = None

    @property
    def open(self) -> bool:
        return any(m["status"] == "open" for m in self.members)

    @property
    def started_at(self) -> datetime:
        return min(m["started_at"] for m in self.members)

    @property
    def ended_at(self) -> datetime:
        return max(m["ended_at"] for m in self.members)

    def root(self) -> dict:
        mine = [m for m in self.members if m["device_id"] == self.root_device]
        return min(mine or self.members, key=lambda m: m["started_at"])


@dataclass(frozen=True)
class Send:
    group: Group
    state: str  # firing or resolved


def plan(groups: list[Group], stream_time: datetime, now: datetime, s: Settings) -> list[Send]:
    """What to send this cycle: a group's first firing once it has been open for the hold
    (event time) or has closed; a re-send every resend interval while open (and while a
    closed one's firing is younger than alert_min_firing_seconds); then its resolved, re-sent
    for a few intervals so that an Alertmanager that restarted meanwhile still gets it."""
    resend = timedelta(seconds=s.alert_resend_seconds)
    out = []
    for g in groups:
        n = g.notification or {}
        fired, resolved, last = n.get("fired_at"), n.get("resolved_at"), n.get("last_sent_at")
        stale = last is None or now - last >= resend
        if fired is None:
            waited = stream_time - g.started_at >= timedelta(seconds=s.alert_hold_seconds)
            if waited or not g.open:
                out.append(Send(g, "firing"))
        elif g.open or now - fired < timedelta(seconds=s.alert_min_firing_seconds):
            if resolved is None and stale:
                out.append(Send(g, "firing"))
        elif resolved is None or (now - resolved < 4 * resend and stale):
            out.append(Send(g, "resolved"))
    return out


def backlog_of(sends: list[Send]) -> int:
    """Notifications Alertmanager has not yet accepted once (a re-send is not backlog)."""
    return sum(
        1
        for x in sends
        if not (x.group.notification or {}).get(
            "fired_at" if x.state == "firing" else "resolved_at"
        )
    )


# --------------------------------------------------------------------------------------------
# reading and recording


def _rows(cur, query, params=()) -> list[dict]:
    cur.execute(query, params)
    names = [d.name for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def read_groups(cur, s: Settings) -> tuple[datetime, list[Group], Links]:
    """Correlate, record, and return (stream time, the groups to consider, the links): the
    incidents that ended within the horizon, and those of groups whose notification is not
    complete (Alertmanager was away longer than the horizon).

    Incidents of a correlated incident that was sent keep it (its labels, root included, are
    what Alertmanager knows it by); the others are grouped afresh each cycle, so that two
    groups a late-arriving root links together become one before anything is sent."""
    cur.execute("SELECT stream_time FROM stream_time")
    (stream_time,) = cur.fetchone()
    incidents = _rows(
        cur,
        sql.SQL(
            "SELECT s.device_id, s.started_at, s.ended_at, s.peak_severity, s.status,"
            " s.top_metrics, s.sources, s.site, s.region, s.criticality, d.kind,"
            " m.correlated_id, COALESCE(c.root_frozen, false) AS frozen,"
            " n.resolved_at IS NOT NULL AS resolved"
            " FROM incident_status AS s"
            " LEFT JOIN {devices} AS d ON d.device_id = s.device_id"
            " LEFT JOIN {correlation} AS m"
            "   ON m.device_id = s.device_id AND m.started_at = s.started_at"
            " LEFT JOIN {correlated} AS c ON c.id = m.correlated_id"
            " LEFT JOIN {notifications} AS n ON n.correlated_id = m.correlated_id"
            " WHERE s.ended_at >= %s - make_interval(secs => %s)"
            "    OR m.correlated_id IN (SELECT correlated_id FROM {notifications}"
            "                           WHERE resolved_at IS NULL)"
        ).format(
            devices=sql.Identifier(s.devices_table),
            correlation=sql.Identifier(s.correlation_table),
            correlated=sql.Identifier(s.correlated_table),
            notifications=sql.Identifier(s.notifications_table),
        ),
        (stream_time, s.alert_horizon_seconds),
    )
    cur.execute(sql.SQL("SELECT device_a, device_b FROM {}").format(sql.Identifier(s.links_table)))
    links = Links(cur.fetchall())
    by_key = {(r["device_id"], r["started_at"]): r for r in incidents}
    as_incident = {
        k: Incident(k[0], k[1], r["ended_at"], r["peak_severity"] or 0.0) for k, r in by_key.items()
    }
    sent = {k: r["correlated_id"] for k, r in by_key.items() if r["frozen"]}
    gap = timedelta(seconds=s.correlation_gap_seconds)
    resolved = frozenset(r["correlated_id"] for r in by_key.values() if r["resolved"])
    regrouped = assign(list(as_incident.values()), sent, links, gap, resolved)
    changed = {k: cid for k, cid in regrouped.items() if by_key[k]["correlated_id"] != cid}
    for k, cid in regrouped.items():
        by_key[k]["correlated_id"] = cid
    if changed:
        keys = list(changed)
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (id, root_device, started_at)"
                " SELECT DISTINCT ON (id) id, device, started FROM unnest(%s::text[], %s::text[],"
                " %s::timestamptz[]) AS n(id, device, started) ORDER BY id, started"
                " ON CONFLICT (id) DO NOTHING"
            ).format(sql.Identifier(s.correlated_table)),
            ([changed[k] for k in keys], [k[0] for k in keys], [k[1] for k in keys]),
        )
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (device_id, started_at, correlated_id)"
                " SELECT * FROM unnest(%s::text[], %s::timestamptz[], %s::text[])"
                " ON CONFLICT (device_id, started_at)"
                " DO UPDATE SET correlated_id = EXCLUDED.correlated_id"
            ).format(sql.Identifier(s.correlation_table)),
            ([k[0] for k in keys], [k[1] for k in keys], [changed[k] for k in keys]),
        )
    by_group: dict[str, Group] = {}
    for r in incidents:
        by_group.setdefault(r["correlated_id"], Group(r["correlated_id"])).members.append(r)
    ids = list(by_group)
    for r in _rows(
        cur,
        sql.SQL(
            "SELECT id, root_device, root_reason, root_frozen FROM {} WHERE id = ANY(%s)"
        ).format(sql.Identifier(s.correlated_table)),
        (ids,),
    ):
        g = by_group[r["id"]]
        g.root_device, g.root_reason = r["root_device"], r["root_reason"]
        g.root_frozen = r["root_frozen"]
    for r in _rows(
        cur,
        sql.SQL("SELECT * FROM {} WHERE correlated_id = ANY(%s)").format(
            sql.Identifier(s.notifications_table)
        ),
        (ids,),
    ):
        by_group[r["correlated_id"]].notification = r
    tolerance = timedelta(seconds=s.correlation_onset_seconds)
    for g in by_group.values():
        if g.root_frozen:
            continue
        members = [as_incident[(m["device_id"], m["started_at"])] for m in g.members]
        root = rank_root(members, links, tolerance)
        if (root.device_id, root.reason) != (g.root_device, g.root_reason):
            g.root_device, g.root_reason = root.device_id, root.reason
            cur.execute(
                sql.SQL(
                    "UPDATE {} SET root_device = %s, root_reason = %s, updated_at = now()"
                    " WHERE id = %s"
                ).format(sql.Identifier(s.correlated_table)),
                (root.device_id, root.reason, g.id),
            )
    return stream_time, list(by_group.values()), links


def labels_of(g: Group) -> dict[str, str]:
    """What Alertmanager identifies the alert by; fixed at the first send. alertname: the
    model's incidents are AnomalyIncident; one that only catalogue rules raised carries the
    rule's name."""
    root = g.root()
    sources = sorted((root.get("sources") or "model").split(","))
    rules = [x.removeprefix("rule:") for x in sources if x.startswith("rule:")]
    name = MODEL_ALERT if "model" in sources or not rules else rules[0]
    labels = {
        "alertname": name,
        "incident": g.id,
        "device": g.root_device or root["device_id"],
        "site": root.get("site"),
        "region": root.get("region"),
        "criticality": root.get("criticality"),
        "kind": root.get("kind"),
    }
    return {k: str(v) for k, v in labels.items() if v not in (None, "")}


def annotations_of(cur, g: Group, s: Settings) -> dict[str, str]:
    """What a person reads: severity, top metrics, the explanation (actual vs typical) of the
    root's worst model window, the rules that fired, the root and its symptoms, and links."""
    root = g.root()
    device = root["device_id"]
    explanation = _rows(
        cur,
        sql.SQL(
            "SELECT source, metric, value, threshold, explanation, severity FROM {}"
            " WHERE device_id = %s AND incident_start = %s ORDER BY severity DESC NULLS LAST"
        ).format(sql.Identifier(s.alerts_table)),
        (device, root["started_at"]),
    )
    model = next((a for a in explanation if a["source"] == "model" and a["explanation"]), None)
    rules: dict[str, dict] = {}
    for a in explanation:
        if a["source"].startswith("rule:") and a["source"] not in rules:
            rules[a["source"]] = a
    symptoms = sorted({m["device_id"] for m in g.members} - {device})
    start = int(g.started_at.timestamp() * 1000) - 600_000
    end = int(g.ended_at.timestamp() * 1000) + 600_000
    panel = f"{s.grafana_url}/d/anomaly-device?" + urlencode(
        {"var-device": device, "from": start, "to": end}
    )
    out = {
        "summary": (
            f"{device}: anomaly incident"
            + (f" with {len(symptoms)} linked device(s) as symptoms" if symptoms else "")
        ),
        "severity": f"{max(m['peak_severity'] or 0.0 for m in g.members):.0f}",
        "top_metrics": root.get("top_metrics") or "",
        "explanation": explanation_text(model["explanation"]) if model else "",
        "rules": "; ".join(
            f"{name.removeprefix('rule:')}: {a['metric']} {a['value']:.4g} vs threshold "
            f"{a['threshold']:.4g}"
            for name, a in sorted(rules.items())
            if a["value"] is not None and a["threshold"] is not None
        ),
        "root": device,
        "root_reason": g.root_reason or "",
        "symptoms": ",".join(symptoms),
        "grafana": panel,
        "api": f"{s.api_url}/incidents/correlated?" + urlencode({"device": device}),
    }
    return {k: v for k, v in out.items() if v}


def explanation_text(explanation: str) -> str:
    """A model alert's explanation (JSON, as the job stores it) in words: each metric the
    window deviated on (its most deviating feature), actual against typical, in the order
    of their part in the score, and the context check's reading that flagged it, if one
    did."""
    try:
        return "; ".join(
            f"{i['feature']} {i['direction']}: {i['actual']:.4g} (typical {i['typical']:.4g})"
            + (f", flagged by the {i['reading']} reading" if i.get("reading") else "")
            for i in json.loads(explanation)
        )
    except (ValueError, TypeError, KeyError):
        return explanation


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def alert_of(cur, x: Send, now: datetime, s: Settings) -> tuple[dict, dict]:
    labels = (x.group.notification or {}).get("labels") or labels_of(x.group)
    ends = now if x.state == "resolved" else now + timedelta(seconds=10 * s.alert_resend_seconds)
    return labels, {
        "labels": labels,
        "annotations": annotations_of(cur, x.group, s),
        "startsAt": _iso(x.group.started_at),
        "endsAt": _iso(max(ends, x.group.started_at)),
        "generatorURL": f"{s.api_url}/incidents/correlated",
    }


def record(cur, s: Settings, x: Send, labels: dict, now: datetime, error: str | None) -> None:
    ok = error is None
    cur.execute(
        sql.SQL(
            "INSERT INTO {n} (correlated_id, labels, fired_at, resolved_at, last_sent_at, sends,"
            " last_error) VALUES (%(id)s, %(labels)s, %(fired)s, %(resolved)s, %(sent)s,"
            " %(sends)s, %(error)s)"
            " ON CONFLICT (correlated_id) DO UPDATE SET"
            " fired_at = COALESCE({n}.fired_at, EXCLUDED.fired_at),"
            " resolved_at = COALESCE({n}.resolved_at, EXCLUDED.resolved_at),"
            " last_sent_at = COALESCE(EXCLUDED.last_sent_at, {n}.last_sent_at),"
            " sends = {n}.sends + EXCLUDED.sends, last_error = EXCLUDED.last_error"
        ).format(n=sql.Identifier(s.notifications_table)),
        {
            "id": x.group.id,
            "labels": Json(labels),
            "fired": now if ok and x.state == "firing" else None,
            "resolved": now if ok and x.state == "resolved" else None,
            "sent": now if ok else None,
            "sends": 1 if ok else 0,
            "error": error,
        },
    )
    cur.execute(
        sql.SQL("UPDATE {} SET root_frozen = true WHERE id = %s AND NOT root_frozen").format(
            sql.Identifier(s.correlated_table)
        ),
        (x.group.id,),
    )


@dataclass
class CycleResult:
    firing: int = 0
    resolved: int = 0
    backlog: int = 0
    error: str | None = None
    groups: int = 0


def cycle(conn, s: Settings, am: Alertmanager, now: datetime | None = None) -> CycleResult:
    """One round: correlate, plan, send, record. Correlations are committed before the send;
    a notification is recorded as delivered only after Alertmanager accepted it."""
    now = now or datetime.now(UTC)
    with conn, conn.cursor() as cur:
        stream_time, groups, _ = read_groups(cur, s)
    sends = plan(groups, stream_time, now, s)
    result = CycleResult(groups=len(groups))
    if not sends:
        return result
    with conn, conn.cursor() as cur:
        built = [(x, *alert_of(cur, x, now, s)) for x in sends]
        try:
            am.post([alert for _, _, alert in built])
        except AlertmanagerError as exc:
            result.error, result.backlog = str(exc), backlog_of(sends)
        for x, labels, _ in built:
            record(cur, s, x, labels, now, result.error)
    if result.error is None:
        counts = defaultdict(int)
        for x in sends:
            counts[x.state] += 1
        result.firing, result.resolved = counts["firing"], counts["resolved"]
    return result


def backlog(s: Settings, now: datetime | None = None) -> tuple[int, str | None]:
    """(notifications not yet accepted by Alertmanager, the last error) without sending."""
    conn = connect(s, role="writer")
    try:
        # Read only: what read_groups would correlate is rolled back (the notifier records it).
        with conn.cursor() as cur:
            stream_time, groups, _ = read_groups(cur, s)
            cur.execute(
                sql.SQL(
                    "SELECT last_error FROM {} WHERE last_error IS NOT NULL"
                    " ORDER BY correlated_id DESC LIMIT 1"
                ).format(sql.Identifier(s.notifications_table))
            )
            error = cur.fetchone()
        return backlog_of(plan(groups, stream_time, now or datetime.now(UTC), s)), (
            error[0] if error else None
        )
    finally:
        conn.rollback()
        conn.close()


def run(s: Settings, poll_s: float, once: bool = False) -> int:
    if not s.alertmanager_url:
        print("notifier: ANOMALY_ALERTMANAGER_URL is empty: nothing to send to", file=sys.stderr)
        return 2
    am = Alertmanager(s.alertmanager_url)
    conn = connect(s, role="writer")
    print(
        f"notifier: following {s.incidents_table} in {s.pg_database}, sending to "
        f"{s.alertmanager_url} (hold {s.alert_hold_seconds} s of event time, re-send every "
        f"{s.alert_resend_seconds} s)",
        flush=True,
    )
    last_error = None
    try:
        while True:
            result = cycle(conn, s, am)
            if result.error:
                if result.error != last_error:
                    print(
                        f"notifier: {result.error}; {result.backlog} notification(s) wait "
                        f"(backlog), retrying every {poll_s:g} s",
                        file=sys.stderr,
                        flush=True,
                    )
                last_error = result.error
            else:
                if last_error:
                    print("notifier: Alertmanager reachable again", flush=True)
                last_error = None
                if result.firing or result.resolved:
                    print(
                        f"notifier: sent {result.firing} firing, {result.resolved} resolved "
                        f"({result.groups} correlated incidents in the horizon)",
                        flush=True,
                    )
            if once:
                return 1 if result.error else 0
            time.sleep(poll_s)
    except KeyboardInterrupt:
        return 0
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alerting.notifier", description=__doc__)
    parser.add_argument("command", choices=["run", "once", "status"])
    parser.add_argument("--poll-s", type=float, default=2.0, help="seconds between cycles")
    args = parser.parse_args(argv)
    s = Settings.from_env()
    if args.command == "status":
        pending, error = backlog(s)
        print(f"notifications waiting for Alertmanager: {pending}")
        if error:
            print(f"last error: {error}")
        return 0
    return run(s, args.poll_s, once=args.command == "once")


if __name__ == "__main__":
    sys.exit(main())
