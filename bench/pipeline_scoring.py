"""Benchmark: what scoring costs the whole pipeline, Kafka to PostgreSQL, on the local stack.

  python -m bench.pipeline_scoring                       # 1M events, 10k devices
  python -m bench.pipeline_scoring --events 200000 --devices 1000
  python -m bench.pipeline_scoring --raw-events          # also: landing every raw event

Preloads the events into a new topic with the simulator, then runs the job bounded (`flink
run`, parallelism from settings) over them into a scratch database: once with scoring off
(window features only, score columns NULL), once with the CURRENT model scoring and
explaining every window, and (--raw-events) once more scoring with every raw event landed in
the raw_events table too. Reports job time (from Flink's REST API, start-up included),
events/s, windows written, and the ratios. Topic and database are removed afterwards.
Writes JSON to .state/bench/pipeline_scoring.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common.settings import REPO_ROOT, Settings


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def execute(settings: Settings, statement: str, name: str):
    """Run ``statement`` with ``{}`` as the quoted identifier ``name``; returns its first row
    (None for statements that return none)."""
    from psycopg2 import sql

    from common.db import connect

    conn = connect(settings)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL(statement).format(sql.Identifier(name)))
            return cur.fetchone() if cur.description else None
    finally:
        conn.close()


@contextlib.contextmanager
def scratch(settings: Settings, prefix: str):
    """A new topic name and a new migrated database (topic ``<prefix>-<tag>``, database
    ``bench_<tag>``), both removed afterwards."""
    from confluent_kafka.admin import AdminClient

    from common.db import migrate

    tag = uuid.uuid4().hex[:8]
    topic, database = f"{prefix}-{tag}", f"bench_{tag}"
    execute(settings, "CREATE DATABASE {}", database)
    try:
        migrate(settings.replace(pg_database=database))
        yield topic, database
    finally:
        drop_database(settings, database)
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).delete_topics([topic])


def drop_database(settings: Settings, name: str) -> None:
    """As the local server's superuser where it is the local stack's, else as the owner."""
    from deploy.local.stack import Postgres

    try:
        Postgres(settings).drop_database(name)
    except Exception:  # not the local stack's server
        execute(settings, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


def preload(settings: Settings, topic: str, simulator_args: list[str], what: str) -> float:
    """Fill a new topic with the simulator; returns the seconds it took. One process: two
    would interleave their events in each partition, seconds apart in event time, and make
    a share of them late (how many depends on the run's timing)."""
    from common.kafka_admin import ensure_topic

    ensure_topic(settings.kafka_bootstrap, topic, settings.events_topic_partitions)
    log(f"preloading {what} into topic {topic}")
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "simulator", *simulator_args, "--topic", topic,
         "--processes", "1", "--progress-s", "10"],
        check=True,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.monotonic() - began


def run_job(
    flink, settings: Settings, topic: str, database: str, scoring: str, raw_events: str = "off"
) -> dict:
    env = {
        "ANOMALY_EVENTS_TOPIC": topic,
        "ANOMALY_PG_DATABASE": database,
        "ANOMALY_SCORING": scoring,
        "ANOMALY_RAW_EVENTS": raw_events,
        "ANOMALY_JOB_NAME": f"bench-scoring-{scoring}-raw-{raw_events}",
        "ANOMALY_KAFKA_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
    }
    log(f"running the job over the topic with scoring {scoring}, raw events {raw_events}")
    job_id = flink.submit(["--bounded"], env=env)
    while True:
        job = flink.rest(f"/jobs/{job_id}")
        if job["state"] in ("FINISHED", "FAILED", "CANCELED"):
            break
        time.sleep(1)
    if job["state"] != "FINISHED":
        raise RuntimeError(
            f"job {job_id} ended {job['state']}: {flink.rest(f'/jobs/{job_id}/exceptions')}"
        )
    db = settings.replace(pg_database=database)
    windows, scored, flagged = execute(
        db,
        "SELECT count(*), count(anomaly_score), count(*) FILTER (WHERE is_anomaly) FROM {}",
        settings.scores_table,
    )
    (raw,) = execute(db, "SELECT count(*) FROM {}", settings.raw_events_table)
    (late,) = execute(db, "SELECT count(*) FROM {}", settings.late_events_table)
    for table in (settings.scores_table, settings.raw_events_table, settings.late_events_table):
        execute(db, "TRUNCATE {}", table)
    return {
        "scoring": scoring,
        "raw_events": raw_events,
        "job_s": job["duration"] / 1000,
        "windows": windows,
        "scored": scored,
        "flagged": flagged,
        "raw_rows": raw,
        "late_events": late,
    }


def main(argv: list[str] | None = None) -> int:
    from deploy.local.stack import Flink, model_unusable

    settings = Settings.from_env()
    p = argparse.ArgumentParser(prog="python -m bench.pipeline_scoring", description=__doc__)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument(
        "--raw-events", action="store_true", help="a third run landing every raw event as well"
    )
    p.add_argument(
        "--json-out", type=Path, default=settings.state_dir / "bench" / "pipeline_scoring.json"
    )
    a = p.parse_args(argv)
    flink = Flink(settings)
    if not flink.overview():
        print("bench: the local stack is not running: `make up` starts it", file=sys.stderr)
        return 2
    reason = model_unusable(settings)
    if reason:
        print(f"bench: {reason}: `make train` makes one", file=sys.stderr)
        return 2

    with scratch(settings, "bench-scoring") as (topic, database):
        preload_s = preload(
            settings,
            topic,
            ["--devices", str(a.devices), "--count", str(a.events)],
            f"{a.events:,} events from {a.devices:,} devices",
        )
        plan = [("off", "off"), ("on", "off")] + ([("on", "on")] if a.raw_events else [])
        runs = [run_job(flink, settings, topic, database, s, raw) for s, raw in plan]
    for r in runs:
        r["events_per_s"] = round(a.events / r["job_s"])
    off, on = runs[:2]
    ratio = on["job_s"] / off["job_s"]

    print(
        f"\npipeline Kafka -> PostgreSQL, {a.events:,} events from {a.devices:,} devices "
        f"(preloaded in {preload_s:.1f} s), parallelism {settings.parallelism}, "
        f"{os.cpu_count()} cores; job time includes start-up"
    )
    print(
        f"{'scoring':<9} {'raw events':<11} {'job time s':>10} {'events/s':>10} {'windows':>9} "
        f"{'flagged':>8} {'raw rows':>9} {'late':>6}"
    )
    for r in runs:
        print(
            f"{r['scoring']:<9} {r['raw_events']:<11} {r['job_s']:>10.1f} "
            f"{r['events_per_s']:>10,} {r['windows']:>9,} {r['flagged']:>8,} {r['raw_rows']:>9,} "
            f"{r['late_events']:>6,}"
        )
    print(f"scoring on / off job time: {ratio:.2f}x ({(ratio - 1) * 100:+.0f} %)")
    raw_ratio = None
    if a.raw_events:
        raw_ratio = runs[2]["job_s"] / on["job_s"]
        print(f"raw events on / off job time: {raw_ratio:.2f}x ({(raw_ratio - 1) * 100:+.0f} %)")
    out = {
        "events": a.events,
        "devices": a.devices,
        "parallelism": settings.parallelism,
        "preload_s": round(preload_s, 1),
        "runs": runs,
        "on_over_off_job_time": round(ratio, 3),
        "raw_events_on_over_off_job_time": round(raw_ratio, 3) if raw_ratio else None,
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
    }
    a.json_out.parent.mkdir(parents=True, exist_ok=True)
    a.json_out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {a.json_out}")
    ok = all(r["windows"] == off["windows"] for r in runs) and off["scored"] == 0 < on["scored"]
    if not ok:
        print("bench: the runs wrote different windows", file=sys.stderr)
    if a.raw_events and not runs[2]["raw_rows"]:
        ok = False
        print("bench: the raw-events run landed no raw events", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
