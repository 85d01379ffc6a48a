"""Benchmark: the telemetry-json format's CPU per message beside Flink's own JSON format.

  python -m bench.format                       # 300,000 simulator messages, 12 rounds
  python -m bench.format --events 1000000 --rounds 20

The same simulator messages (the network catalogue, 10k devices, written to a file) through
both formats in one JVM, round after round (jvm/ FormatBench): ours with every check the job
makes (the catalogue's ranges, the device id's length), Flink's as the bare engine reads the
topic (typed fields, no checks). Prints each round and a summary: the median over the rounds
after the first third (the JIT's warm-up), and the ratio of ours to Flink's; writes JSON to
.state/bench/format.json. No Kafka, PostgreSQL or Flink cluster: a java and the built jar.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.settings import REPO_ROOT, Settings

JAR = REPO_ROOT / ".deps" / "jars" / "anomaly-flink.jar"


def summarise(rounds: list[dict]) -> dict:
    """Median ns a message of each format over the rounds after the first third."""
    steady = rounds[len(rounds) // 3 :]
    ours = statistics.median(r["ours_ns"] for r in steady)
    flink = statistics.median(r["flink_json_ns"] for r in steady)
    return {
        "rounds_counted": len(steady),
        "ours_ns_per_message": round(ours, 1),
        "flink_json_ns_per_message": round(flink, 1),
        "ours_over_flink_json": round(ours / flink, 3),
        "ours_messages_per_s": round(1e9 / ours),
        "flink_json_messages_per_s": round(1e9 / flink),
    }


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    p = argparse.ArgumentParser(prog="python -m bench.format", description=__doc__)
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--json-out", type=Path, default=settings.state_dir / "bench" / "format.json")
    a = p.parse_args(argv)
    java = shutil.which("java")
    if java is None or not JAR.is_file():
        print(
            f"bench.format: needs a java and {JAR.relative_to(REPO_ROOT)}: run make setup",
            file=sys.stderr,
        )
        return 2
    from bench.simulator_throughput import run_simulator
    from common.features import METRICS
    from common.sql import format_limits
    from deploy.flink_run import tool_classpath

    with tempfile.TemporaryDirectory() as tmp:
        messages = Path(tmp) / "messages.jsonl"
        print(f"bench.format: {a.events:,} simulator messages ({a.devices:,} devices)", flush=True)
        try:
            run_simulator(
                [
                    *("--catalogue", settings.catalogue, "--devices", str(a.devices)),
                    *("--count", str(a.events), "--output", "file", "--path", str(messages)),
                ]
            )
        except RuntimeError as exc:
            print(f"bench.format: {exc}", file=sys.stderr)
            return 1
        args = [
            java,
            "-cp",
            tool_classpath(JAR),
            "local.anomaly.flink.FormatBench",
            str(messages),
            ",".join(m.name for m in METRICS),
            format_limits(),
            str(settings.max_device_id_length),
            str(a.rounds),
        ]
        began = time.monotonic()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        rounds = []
        for line in proc.stdout:
            r = json.loads(line)
            rounds.append(r)
            print(
                f"bench.format: round {r['round'] + 1}/{a.rounds}: telemetry-json "
                f"{r['ours_ns']:.0f} ns/message, Flink's json {r['flink_json_ns']:.0f}",
                flush=True,
            )
        if proc.wait() != 0 or not rounds:
            print("bench.format: FormatBench failed (its output is above)", file=sys.stderr)
            return 1
    result = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "settings": vars(a) | {"json_out": str(a.json_out), "catalogue": settings.catalogue},
        "seconds": round(time.monotonic() - began, 1),
        "rounds": rounds,
        "summary": summarise(rounds),
    }
    a.json_out.parent.mkdir(parents=True, exist_ok=True)
    a.json_out.write_text(json.dumps(result, indent=2) + "\n")
    s = result["summary"]
    print(
        f"\nformat, ns per message (median of the last {s['rounds_counted']} rounds)\n"
        f"  telemetry-json (ours, every check)  {s['ours_ns_per_message']:8.1f}"
        f"  ({s['ours_messages_per_s']:,} messages/s)\n"
        f"  Flink's json (the bare engine's)    {s['flink_json_ns_per_message']:8.1f}"
        f"  ({s['flink_json_messages_per_s']:,} messages/s)\n"
        f"ours_over_flink_json: {s['ours_over_flink_json']}\n"
        f"bench.format: done in {result['seconds']} s; written to {a.json_out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
