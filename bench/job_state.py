"""Benchmark: the job's Flink state per stage, once every device has filled its longest context
horizon, on the local stack.

  python -m bench.job_state                        # 1,000 devices
  python -m bench.job_state --devices 3000

Preloads with the simulator one event per device per window (the context stage keeps window
rows, so its state depends on windows per device, not events per window) over the longest
context horizon plus 10 minutes. Runs the job (unbounded, scoring off: scoring keeps no state)
into a scratch database until the windows stop coming, then reads from Flink's REST API the
state of each job vertex in the first checkpoint completed after that (full snapshot sizes of
the hashmap state backend). Prints bytes per vertex and per device, and the per-device figure
times 10,000 (a linear projection, not a measurement). Topic and database are removed
afterwards. Writes JSON to .state/bench/job_state.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

from bench.pipeline import execute, log, preload, scratch
from common.settings import Settings

QUIET_S = 20  # no new window rows for this long: the job has caught up


def wait_caught_up(db: Settings, table: str, timeout_s: float) -> int:
    """Window rows once their count has not grown for QUIET_S seconds."""
    deadline = time.monotonic() + timeout_s
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        (rows,) = execute(db, "SELECT count(*) FROM {}", table)
        if rows != last:
            log(f"{rows:,} window rows written")
            last, since = rows, time.monotonic()
        elif rows and time.monotonic() - since >= QUIET_S:
            return rows
        time.sleep(2)
    raise RuntimeError(f"the job did not catch up within {timeout_s:.0f} s ({last:,} rows)")


def checkpoint_after(flink, job_id: str, after_ms: int, timeout_s: float = 120) -> dict:
    """Details of the first checkpoint triggered after ``after_ms`` (epoch ms) to complete."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        latest = flink.rest(f"/jobs/{job_id}/checkpoints")["latest"]["completed"]
        if latest and latest["trigger_timestamp"] > after_ms:
            return flink.rest(f"/jobs/{job_id}/checkpoints/details/{latest['id']}")
        time.sleep(1)
    raise RuntimeError(f"no checkpoint completed within {timeout_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    from common.features import HORIZONS
    from deploy.local.stack import Flink

    settings = Settings.from_env()
    p = argparse.ArgumentParser(prog="python -m bench.job_state", description=__doc__)
    p.add_argument("--devices", type=int, default=1_000)
    p.add_argument("--json-out", type=Path, default=settings.state_dir / "bench" / "job_state.json")
    a = p.parse_args(argv)
    flink = Flink(settings)
    if not flink.overview():
        print("bench: the local stack is not running: `make up` starts it", file=sys.stderr)
        return 2
    longest = max((h.seconds for h in HORIZONS), default=0)
    span_s = longest + 600
    window_ms = settings.window_seconds * 1000
    with scratch(settings, "bench-state") as (topic, database):
        preload_s = preload(
            settings,
            topic,
            ["--devices", str(a.devices), "--interval-ms", str(window_ms),
             "--duration-s", str(span_s), "--anomaly-rate", "0"],
            f"{span_s // 60} min of one event per window from {a.devices:,} devices",
        )  # fmt: skip
        env = {
            "ANOMALY_EVENTS_TOPIC": topic,
            "ANOMALY_PG_DATABASE": database,
            "ANOMALY_SCORING": "off",
            "ANOMALY_JOB_NAME": "bench-job-state",
            "ANOMALY_KAFKA_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        }
        log("running the job over the topic (scoring off)")
        job_id = flink.submit([], env=env)
        try:
            db = settings.replace(pg_database=database)
            windows = wait_caught_up(db, settings.scores_table, timeout_s=1800)
            details = checkpoint_after(flink, job_id, int(time.time() * 1000))
            names = {v["id"]: v["name"] for v in flink.rest(f"/jobs/{job_id}")["vertices"]}
        finally:
            flink.cancel(job_id)
    vertices = sorted(
        ((names[vid], t["state_size"]) for vid, t in details["tasks"].items()),
        key=lambda v: -v[1],
    )
    total = details["state_size"]
    print(
        f"\njob state with {a.devices:,} devices after {span_s // 60} min of event time "
        f"({windows:,} windows written; horizons {settings.context_horizons or 'none'}, "
        f"{settings.window_seconds} s windows; preloaded in {preload_s:.1f} s; "
        f"checkpoint {details['id']}, {os.cpu_count()} cores)"
    )
    print(f"{'state MB':>9} {'KB/device':>10} {'MB at 10k devices*':>19}  vertex")
    for name, size in vertices:
        if size:
            per = size / a.devices
            print(f"{size / 1e6:>9.1f} {per / 1e3:>10.1f} {per * 10_000 / 1e6:>19.0f}  {name[:90]}")
    per = total / a.devices
    print(f"{total / 1e6:>9.1f} {per / 1e3:>10.1f} {per * 10_000 / 1e6:>19.0f}  all vertices")
    print("* the per-device figure times 10,000: a linear projection, not a measurement")
    out = {
        "devices": a.devices,
        "event_time_s": span_s,
        "horizons": settings.context_horizons,
        "window_seconds": settings.window_seconds,
        "windows_written": windows,
        "checkpoint_id": details["id"],
        "state_bytes": total,
        "vertices": [{"name": n, "state_bytes": s} for n, s in vertices],
    }
    a.json_out.parent.mkdir(parents=True, exist_ok=True)
    a.json_out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {a.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
