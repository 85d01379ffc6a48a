"""Benchmark: the TaskManager's heap with the reference tables held whole against cached per
key (ANOMALY_DEVICE_CACHE=full / partial), on the local stack.

  python -m bench.reference_cache                    # 200,000 rows; events of 1,000 devices
  python -m bench.reference_cache --rows 50000 --rounds 1

Writes the simulated fleet's rows (--rows devices) into the devices table of a scratch
database (the segment limits stay empty) and preloads a topic with --events events of the
first --devices of them, so the per-key cache holds those rows only: the difference between
the modes is what holding the whole table costs. Per round and mode (alternating): the
TaskManager's heap after a full GC with no job, then the job (unbounded, p = 1, scoring as
set) once it has read every event and 15 s more, heap after a full GC again; the job is
cancelled. The job's own state is the same in both modes; one heap figure is noisy, hence
the rounds. Topic and database are removed afterwards. Needs `jcmd` (the JDK's). Writes JSON to
.state/bench/reference_cache.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
import uuid

from bench.pipeline import SOURCE_NAME, SourceRecords, log, preload, scratch
from common.settings import Settings

SETTLE_S = 15  # after the last event is read: windows close, lookups and sinks finish


def heap_used_mb(pid: int) -> float:
    """Heap in use after two full GCs (jcmd GC.run, GC.heap_info)."""
    for _ in range(2):
        subprocess.run(["jcmd", str(pid), "GC.run"], check=True, capture_output=True)
        time.sleep(1)
    out = subprocess.run(
        ["jcmd", str(pid), "GC.heap_info"], check=True, capture_output=True, text=True
    ).stdout
    found = re.search(r"used (\d+)K", out)
    if not found:
        raise RuntimeError(f"jcmd GC.heap_info printed no heap figure:\n{out}")
    return int(found.group(1)) / 1024


def main(argv: list[str] | None = None) -> int:
    from deploy.local.stack import Flink
    from simulator.devices import fleet_inventory, upsert_devices
    from simulator.generator import SimulatorConfig

    p = argparse.ArgumentParser(
        prog="python -m bench.reference_cache",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--rows", type=int, default=200_000, help="device rows (%(default)s)")
    p.add_argument("--devices", type=int, default=1_000, help="devices sending (%(default)s)")
    p.add_argument("--events", type=int, default=200_000, help="events (%(default)s)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of both modes (%(default)s)")
    a = p.parse_args(argv)
    if not shutil.which("jcmd"):
        print("bench.reference_cache: jcmd not found (it comes with the JDK)", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    flink = Flink(settings)
    figures: dict[str, list[float]] = {"partial": [], "full": []}
    with scratch(settings, "bench-reference") as (topic, database):
        db = settings.replace(pg_database=database)
        rows, _ = fleet_inventory(SimulatorConfig(catalogue=settings.catalogue, devices=a.rows))
        upsert_devices(db, rows)
        log(f"{len(rows):,} rows in the devices table of {database}")
        preload(settings, topic, ["--devices", str(a.devices), "--count", str(a.events)],
                f"{a.events:,} events from {a.devices:,} devices")  # fmt: skip
        for r in range(a.rounds):
            for mode in figures:
                pid = flink.pids("taskmanager")[0]
                idle = heap_used_mb(pid)
                env = {
                    "ANOMALY_EVENTS_TOPIC": topic,
                    "ANOMALY_PG_DATABASE": database,
                    "ANOMALY_DEVICE_CACHE": mode,
                    "ANOMALY_DEVICE_CACHE_FULL_MAX_ROWS": str(max(a.rows, 1)),
                    "ANOMALY_JOB_NAME": f"bench-reference-{mode}",
                    "ANOMALY_KAFKA_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
                }
                job = flink.submit([], env=env)
                records = SourceRecords(flink, job, SOURCE_NAME)
                began = time.monotonic()
                while (read := records()) < a.events:
                    if time.monotonic() - began > 900:
                        raise RuntimeError(f"{mode}: {read:,} of {a.events:,} events in 900 s")
                    time.sleep(2)
                time.sleep(SETTLE_S)
                used = heap_used_mb(pid)
                flink.cancel(job)
                figures[mode].append(used)
                log(
                    f"round {r + 1}, {mode}: heap after full GC {idle:,.0f} MB without a job, "
                    f"{used:,.0f} MB with it ({read:,.0f} events read)"
                )
                time.sleep(5)
    print(
        f"\nTaskManager heap after full GC, job running, {a.rows:,} device rows, events of "
        f"{a.devices:,} devices, p = 1:"
    )
    for mode, used in figures.items():
        print(f"  {mode:<8} {', '.join(f'{u:,.0f}' for u in used)} MB")
    diff = [f - q for f, q in zip(figures["full"], figures["partial"], strict=True)]
    per_row = [1024 * 1024 * d / max(a.rows - a.devices, 1) for d in diff]
    print(
        f"  full - partial: {', '.join(f'{d:+,.0f}' for d in diff)} MB "
        f"({', '.join(f'{b:+,.0f}' for b in per_row)} bytes a row not seen)"
    )
    out = settings.state_dir / "bench" / "reference_cache.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"rows": a.rows, "devices": a.devices, "events": a.events, "heap_mb": figures}
    out.write_text(json.dumps(report | {"bytes_a_row_not_seen": per_row}, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
