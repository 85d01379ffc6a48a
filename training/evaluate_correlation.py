"""How well incidents are correlated: simulator runs with known ground truth, through the real
job on the local stack, then the notifier's correlation replayed in event-time order.

  python -m training.evaluate_correlation            (make evaluate-correlation; needs make up)

Two runs of the demo fleet (100 devices, fleet seed 0: the demo model's fleet):
- cascades only: each episode names its root router and the neighbours its links lead to.
  Per cascade: did its incidents collapse into one correlated incident whose root is the true
  root (goal >= 90 %), and how many alerts (pages) did it make (goal 1)?
- unrelated failures (every other scenario) at a rate at which many overlap in time: how many
  pairs of distinct failures on unlinked devices were merged into one incident (goal 0), and
  on linked ones (reported).

The replay: every window of event time, the incidents as the notifier would have seen them
then (an alert window is in PostgreSQL once its window closed), correlated with
alerting.correlate.assign, the root ranked with rank_root until the correlated incident's
first send (alerting.notifier.plan decides when), as the notifier does.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alerting.correlate import Incident, Links, assign, rank_root
from alerting.notifier import Group, plan
from common.settings import REPO_ROOT, Settings

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DEVICES = 100


@dataclass(frozen=True)
class Run:
    name: str
    scenarios: str
    anomaly_rate: float
    duration_s: int
    seed: int


CASCADES = Run("cascades", "cascade", 0.0003, 24000, 21)
UNRELATED = Run(
    "unrelated failures",
    "spike,dip,level_shift,drift,stuck,overload,link_failure",
    0.0008,
    1800,
    22,
)


def log(message: str) -> None:
    print(f"evaluate-correlation: {message}", file=sys.stderr, flush=True)


def stream_run(settings: Settings, run: Run, workdir: Path, model_dir: Path):
    """Simulate the run into a new topic, run the job on it (bounded) into a new database
    with the fleet's inventory; returns (settings of that database, episodes, links)."""
    import subprocess

    from common.db import connect, migrate
    from common.kafka_admin import ensure_topic
    from deploy.local.stack import Flink
    from simulator.devices import fleet_inventory, upsert_devices
    from simulator.generator import SimulatorConfig

    tag = uuid.uuid4().hex[:8]
    topic, database = f"eval-corr-{tag}", f"eval_corr_{tag}"
    ensure_topic(settings.kafka_bootstrap, topic, settings.events_topic_partitions)
    truth = workdir / f"{tag}-truth.jsonl"
    log(f"{run.name}: simulating {run.duration_s} s of {DEVICES} devices into {topic}")
    args = [
        sys.executable, "-m", "simulator", "--devices", str(DEVICES), "--fleet-seed", "0",
        "--seed", str(run.seed), "--anomaly-rate", str(run.anomaly_rate),
        "--scenarios", run.scenarios, "--duration-s", str(run.duration_s),
        "--start-ms", str(START_MS), "--truth-path", str(truth),
        "--output", "kafka", "--bootstrap", settings.kafka_bootstrap, "--topic", topic,
        "--processes", "1", "--progress-s", "30",
    ]  # fmt: skip
    subprocess.run(args, cwd=REPO_ROOT, check=True)
    conn = connect(settings)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{database}"')
    conn.close()
    db = settings.replace(pg_database=database)
    migrate(db)
    rows, links = fleet_inventory(SimulatorConfig(devices=DEVICES))
    upsert_devices(db, rows, links)
    flink = Flink(settings)
    env = {
        "ANOMALY_EVENTS_TOPIC": topic,
        "ANOMALY_PG_DATABASE": database,
        "ANOMALY_JOB_NAME": f"evaluate-correlation-{tag}",
        "ANOMALY_KAFKA_GROUP_ID": f"eval-{tag}",
    }
    began = time.monotonic()
    job = flink.submit(["--bounded", "--model-dir", str(model_dir)], env=env)
    log(f"{run.name}: job {job} scoring the topic (bounded)")
    while (state := flink.rest(f"/jobs/{job}")["state"]) not in ("FINISHED", "FAILED", "CANCELED"):
        time.sleep(2)
    if state != "FINISHED":
        raise RuntimeError(f"job {job} {state}: {flink.rest(f'/jobs/{job}/exceptions')}")
    log(f"{run.name}: job finished in {time.monotonic() - began:.0f} s")
    episodes = [
        e for e in map(json.loads, truth.read_text().splitlines()) if e.get("type") == "episode"
    ]
    return db, episodes, links


def read_alerts(db: Settings) -> list[dict]:
    from common.db import connect

    conn = connect(db)
    with conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT device_id, incident_start, window_end, severity FROM {db.alerts_table}"  # noqa: S608
        )
        out = [
            {"device_id": d, "started_at": s, "window_end": e, "severity": v or 0.0}
            for d, s, e, v in cur.fetchall()
        ]
    conn.close()
    return out


def replay(alerts: list[dict], links, s: Settings) -> tuple[dict, dict]:
    """The notifier's correlation, cycle by cycle in event time. Returns (the correlated id of
    each device incident, the root each correlated incident was first sent with)."""
    window = timedelta(seconds=s.window_seconds)
    visible_after = timedelta(seconds=s.watermark_delay_seconds)
    closes_after = timedelta(
        seconds=s.incident_quiet_seconds + s.window_seconds + s.watermark_delay_seconds
    )
    by_incident: dict[tuple, list[dict]] = defaultdict(list)
    for a in alerts:
        by_incident[(a["device_id"], a["started_at"])].append(a)
    assigned: dict[tuple, str] = {}
    roots: dict[str, str] = {}  # frozen at the first send
    live_roots: dict[str, str] = {}
    if not alerts:
        return assigned, roots
    t = min(a["window_end"] for a in alerts)
    end = max(a["window_end"] for a in alerts) + closes_after + window
    links = Links(links)
    gap = timedelta(seconds=s.correlation_gap_seconds)
    tolerance = timedelta(seconds=s.correlation_onset_seconds)
    horizon = timedelta(seconds=s.alert_horizon_seconds)
    while t <= end:
        seen = t - visible_after
        known: dict[tuple, dict] = {}
        for key, rows in by_incident.items():
            shown = [r for r in rows if r["window_end"] <= seen]
            if not shown:
                continue
            ended = max(r["window_end"] for r in shown)
            if ended < t - horizon:
                continue
            known[key] = {
                "device_id": key[0],
                "started_at": key[1],
                "ended_at": ended,
                "peak_severity": max(r["severity"] for r in shown),
                "status": "open" if ended + closes_after > t else "closed",
            }
        incidents = [
            Incident(m["device_id"], m["started_at"], m["ended_at"], m["peak_severity"])
            for m in known.values()
        ]
        # As the notifier: incidents of a sent correlated incident keep it, the others are
        # grouped afresh.
        sent = {k: v for k, v in assigned.items() if k in known and v in roots}
        assigned.update(assign(incidents, sent, links, gap))
        groups: dict[str, Group] = {}
        for key, member in known.items():
            groups.setdefault(assigned[key], Group(assigned[key])).members.append(member)
        for gid, g in groups.items():
            if gid not in roots:
                members = [Incident(**{k: m[k] for k in Incident.__dataclass_fields__})
                           for m in g.members]  # fmt: skip
                live_roots[gid] = rank_root(members, links, tolerance).device_id
                g.root_device = live_roots[gid]
        waiting = [g for g in groups.values() if g.id not in roots]
        for x in plan(waiting, t, t, s):
            roots[x.group.id] = live_roots[x.group.id]
        t += window
    return assigned, roots


def overlaps_episode(key, ended, e: dict, slack: timedelta) -> bool:
    """The incident started during the episode (give or take a window and its lateness): one
    that was already under way when the episode began has another cause."""
    start = datetime.fromtimestamp(e["start_ts_ms"] / 1000, UTC)
    stop = datetime.fromtimestamp(e["end_ts_ms"] / 1000, UTC)
    return start - slack <= key[1] <= stop + slack


def score_cascades(alerts, assigned, roots, episodes, s: Settings, details=False) -> dict:
    ended = defaultdict(lambda: datetime.min.replace(tzinfo=UTC))
    for a in alerts:
        key = (a["device_id"], a["started_at"])
        ended[key] = max(ended[key], a["window_end"])
    slack = timedelta(seconds=s.window_seconds + s.watermark_delay_seconds)
    cascades = [e for e in episodes if e["scenario_type"] == "cascade"]
    counted = collapsed = right_root = two_plus = 0
    pages: list[int] = []
    for e in cascades:
        devices = {e["device_id"], *e.get("neighbours", [])}
        mine = [k for k in ended if k[0] in devices and overlaps_episode(k, ended[k], e, slack)]
        if not mine:
            continue
        counted += 1
        groups = {assigned[k] for k in mine}
        pages.append(len(groups))
        if len({k[0] for k in mine}) >= 2:
            two_plus += 1
        if len(groups) == 1:
            collapsed += 1
            if roots.get(next(iter(groups))) == e["device_id"]:
                right_root += 1
                continue
        if details:
            t0 = e["start_ts_ms"] / 1000
            seen = ", ".join(
                f"{k[0]}{'*' if k[0] == e['device_id'] else ''} +{k[1].timestamp() - t0:.0f}s"
                f"..+{ended[k].timestamp() - t0:.0f}s"
                for k in sorted(mine, key=lambda k: k[1])
            )
            print(f"  cascade of {e['device_id']} ({e['end_ts_ms'] / 1000 - t0:.0f} s): {seen};"
                  f" roots {[roots.get(g) for g in groups]}")  # fmt: skip
    return {
        "cascades": len(cascades),
        "detected": counted,
        "with_2plus_devices_alerting": two_plus,
        "collapsed_into_one": collapsed,
        "collapsed_with_true_root": right_root,
        "share_collapsed_with_true_root": right_root / counted if counted else None,
        "pages_per_cascade_mean": sum(pages) / len(pages) if pages else None,
        "pages_per_cascade_max": max(pages) if pages else None,
        "cascades_with_one_page": sum(1 for p in pages if p == 1),
    }


def score_unrelated(alerts, assigned, episodes, links, s: Settings) -> dict:
    ended = defaultdict(lambda: datetime.min.replace(tzinfo=UTC))
    for a in alerts:
        key = (a["device_id"], a["started_at"])
        ended[key] = max(ended[key], a["window_end"])
    slack = timedelta(seconds=s.window_seconds + s.watermark_delay_seconds)
    linked = {frozenset(x) for x in links}
    episode_of: dict[tuple, int] = {}
    for i, e in enumerate(episodes):
        for k in ended:
            if k[0] == e["device_id"] and overlaps_episode(k, ended[k], e, slack):
                episode_of.setdefault(k, i)
    by_group: dict[str, set[int]] = defaultdict(set)
    for k, i in episode_of.items():
        by_group[assigned[k]].add(i)
    unlinked = linked_pairs = 0
    for members in by_group.values():
        for i in members:
            for j in members:
                if i < j:
                    pair = frozenset((episodes[i]["device_id"], episodes[j]["device_id"]))
                    if pair in linked:
                        linked_pairs += 1
                    else:
                        unlinked += 1
    # Failures that overlapped in time with another one: the ones that could have merged.
    spans = sorted((e["start_ts_ms"], e["end_ts_ms"]) for e in episodes)
    concurrent = sum(
        1
        for i, (a0, a1) in enumerate(spans)
        if any(
            b0 <= a1 + 60_000 and a0 <= b1 + 60_000 for j, (b0, b1) in enumerate(spans) if j != i
        )
    )
    return {
        "failures": len(episodes),
        "overlapping_another_in_time": concurrent,
        "detected": len(set(episode_of.values())),
        "correlated_incidents": len(set(assigned.values())),
        "wrongly_merged_pairs_unlinked_devices": unlinked,
        "merged_pairs_on_linked_devices": linked_pairs,
    }


def main(argv: list[str] | None = None) -> int:
    from common.models import resolve_model_dir
    from deploy.local.stack import Postgres

    parser = argparse.ArgumentParser(prog="python -m training.evaluate_correlation")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--keep", action="store_true", help="keep the two databases")
    parser.add_argument(
        "--details", action="store_true", help="print each cascade not rooted right"
    )
    parser.add_argument("--only", choices=["cascades", "unrelated"], help="one of the runs")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    model_dir = resolve_model_dir(settings)
    report = {}
    with tempfile.TemporaryDirectory(prefix="eval-corr-") as tmp:
        runs = {"cascades": [CASCADES], "unrelated": [UNRELATED]}.get(
            args.only, [CASCADES, UNRELATED]
        )
        for run in runs:
            db, episodes, links = stream_run(settings, run, Path(tmp), model_dir)
            try:
                alerts = read_alerts(db)
                began = time.perf_counter()
                assigned, roots = replay(alerts, links, db)
                took = time.perf_counter() - began
                log(f"{run.name}: replayed {len(alerts)} alert rows in {took:.1f} s")
                if run is CASCADES:
                    figures = score_cascades(alerts, assigned, roots, episodes, db, args.details)
                else:
                    figures = score_unrelated(alerts, assigned, episodes, links, db)
            finally:
                if not args.keep:
                    Postgres(settings).drop_database(db.pg_database)
            report[run.name] = {"run": run.__dict__, **figures}
            print(f"{run.name}:")
            for key, value in figures.items():
                shown = f"{value:.3f}" if isinstance(value, float) else value
                print(f"  {key:<40} {shown}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
