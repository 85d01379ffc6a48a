"""Benchmark: simulator events/s into the local Kafka, by one process and by several.

  python -m bench.simulator_throughput                 # 10k devices, 2M events, 1 and 2 processes
  python -m bench.simulator_throughput --events 200000 --processes 1,2,4

Prints a table, where the time goes (one process, per stage) and writes JSON with machine facts
to .state/bench/simulator.json. Figures from one run on a shared 2-core machine are noisy;
compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common.settings import REPO_ROOT, Settings


def kafka_pid(settings: Settings) -> int | None:
    try:
        return int((settings.state_dir / "kafka" / "kafka.pid").read_text().split()[0])
    except (OSError, ValueError):
        return None


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_simulator(args: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "simulator", "--progress-s", "1e9", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"simulator failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stderr.split("done ", 1)[1].splitlines()[0])


def stage_profile(catalogue: str, devices: int, events: int, bootstrap: str) -> dict:
    """Per-event cost of each stage in one process: generate, encode, produce."""
    from simulator.generator import SimulatorConfig, TelemetryGenerator
    from simulator.sinks import KafkaSink

    gen = TelemetryGenerator(SimulatorConfig(catalogue=catalogue, devices=devices))
    ticks = max(1, events // devices)
    t0 = time.perf_counter()
    produced = [gen.tick(1_700_000_000_000 + k * 1000) for k in range(ticks)]
    t1 = time.perf_counter()
    encoded = [
        gen.encode(1_700_000_000_000 + k * 1000, v, p, lab)
        for k, (v, p, lab, _) in enumerate(produced)
    ]
    t2 = time.perf_counter()
    sink = KafkaSink(bootstrap, f"bench-stages-{uuid.uuid4().hex[:8]}")
    t3 = time.perf_counter()
    for batch in encoded:
        sink.send(batch)
    sink.close()
    t4 = time.perf_counter()
    n = sum(len(b) for b in encoded)
    return {
        "events": n,
        "generate_us_per_event": round((t1 - t0) / n * 1e6, 3),
        "encode_us_per_event": round((t2 - t1) / n * 1e6, 3),
        "produce_us_per_event": round((t4 - t3) / n * 1e6, 3),
        "delivery_errors": sink.errors,
    }


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    p = argparse.ArgumentParser(prog="python -m bench.simulator_throughput", description=__doc__)
    p.add_argument("--catalogue", default="network")
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--events", type=int, default=2_000_000)
    p.add_argument("--processes", default="1,2", help="comma-separated process counts")
    p.add_argument("--json-out", type=Path, default=settings.state_dir / "bench" / "simulator.json")
    a = p.parse_args(argv)
    from common.kafka_admin import ensure_topic

    try:
        ensure_topic(settings.kafka_bootstrap, "bench-probe", 1, timeout_s=10)
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    broker = kafka_pid(settings)
    common = ["--catalogue", a.catalogue, "--devices", str(a.devices), "--count", str(a.events)]
    rows = []
    for procs in [int(x) for x in a.processes.split(",")]:
        for output in ("null", "kafka"):
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            cpu0 = cpu_seconds(broker)
            print(
                f"bench: {a.events:,} events, {procs} process(es) -> {output} ...",
                file=sys.stderr,
                flush=True,
            )
            s = run_simulator(
                [*common, "--processes", str(procs), "--output", output, "--topic", topic]
            )
            broker_cpu = cpu_seconds(broker) - cpu0
            rows.append(
                {
                    "processes": procs,
                    "output": output,
                    "events": s["events"],
                    "elapsed_s": s["elapsed_s"],
                    "events_per_s": s["events_per_s"],
                    "delivery_errors": s["delivery_errors"],
                    "broker_cpu_s": round(broker_cpu, 2) if output == "kafka" else None,
                }
            )
    stages = stage_profile(a.catalogue, a.devices, min(a.events, 500_000), settings.kafka_bootstrap)

    print(
        f"\nsimulator -> Kafka {settings.kafka_bootstrap}, catalogue {a.catalogue}, "
        f"{a.devices:,} devices, {os.cpu_count()} cores"
    )
    print(
        f"{'processes':>9} {'output':>7} {'events':>10} {'seconds':>8} {'events/s':>10} "
        f"{'broker CPU s':>12}"
    )
    for r in rows:
        broker_cpu = "" if r["broker_cpu_s"] is None else f"{r['broker_cpu_s']:.1f}"
        print(
            f"{r['processes']:>9} {r['output']:>7} {r['events']:>10,} {r['elapsed_s']:>8.2f} "
            f"{r['events_per_s']:>10,} {broker_cpu:>12}"
        )
    total = sum(
        stages[k] for k in ("generate_us_per_event", "encode_us_per_event", "produce_us_per_event")
    )
    print(f"\nwhere the time goes in one process ({stages['events']:,} events, µs per event):")
    for key in ("generate", "encode", "produce"):
        us = stages[f"{key}_us_per_event"]
        print(f"  {key:<9} {us:6.2f} µs  {us / total:5.1%}")
    result = {
        "benchmark": "simulator_throughput",
        "settings": vars(a) | {"json_out": str(a.json_out)},
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "runs": rows,
        "stages_one_process": stages,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    a.json_out.parent.mkdir(parents=True, exist_ok=True)
    a.json_out.write_text(json.dumps(result, indent=2) + "\n")
    best = max((r for r in rows if r["output"] == "kafka"), key=lambda r: r["events_per_s"])
    print(
        f"\nbench: best {best['events_per_s']:,} events/s into Kafka with "
        f"{best['processes']} process(es); results in {a.json_out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
