"""Sparse input against dense input (make bench-agents, part of make bench): the job's
throughput on the same simulated measurements sent as one flat event per device and time
(every metric in one message) and as collectd value lists (one metric a message, keyed at
random as agents key them), and what keying by device for counters costs.

  python -m bench.agents                         # 500,000 events of 1,000 devices (2.5M points)
  python -m bench.agents --events 50000 --devices 100               # smoke

The simulator preloads the dense topic; the sparse topic gets the same values re-encoded,
each metric of each event a collectd message (plugin "sim", type "gauge", type_instance the
metric). Four bounded runs, scoring as given (default off: the ingest alone):

- dense: the flat events (catalogue network);
- dense, keyed counters: the same, one metric marked a counter (its values become rates
  behind a keyBy(device) with its state and timers, jvm/ CounterRates);
- sparse: the collectd topic (the network catalogue's metrics named as collectd names them);
- sparse, keyed counters: the same with that metric a counter (collectd type derive).

Reported per run: messages/s, points/s (metric values) and windows/s in the steady state (from
the first record read to the job's end), and the ratios to dense. The values of a metric made
a counter here are the simulator's levels read as running totals: their rates mean nothing,
the cost is what is measured. Written to .state/bench/agents.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import yaml

from bench.pipeline import Throughput, bounded_run, log, preload, scratch
from common.settings import REPO_ROOT, Settings

COUNTER_METRIC = "throughput_mbps"


def catalogue_variant(folder: Path, name: str, *, counter: bool) -> Path:
    """The network catalogue with each metric's collectd name (``sim.gauge-<metric>``), and
    COUNTER_METRIC a counter if asked."""
    raw = yaml.safe_load((REPO_ROOT / "catalogues" / "network.yaml").read_text())
    for metric in raw["metrics"]:
        metric["agents"] = {"collectd": f"sim.gauge-{metric['name']}"}
        if counter and metric["name"] == COUNTER_METRIC:
            metric["counter"] = True
    raw["name"] = name
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def encode_sparse(settings: Settings, dense_topic: str, sparse_topic: str, metrics) -> tuple:
    """Every event of ``dense_topic``, in event-time order (as an agent sends), as one
    collectd message per metric into ``sparse_topic``, keys at random; returns (events,
    messages)."""
    from confluent_kafka import Producer

    from common.kafka_admin import consume_all, ensure_topic

    ensure_topic(settings.kafka_bootstrap, sparse_topic, settings.events_topic_partitions)
    events = [
        json.loads(value)
        for _, value in consume_all(
            settings.kafka_bootstrap, dense_topic, settings.events_topic_partitions
        )
    ]
    events.sort(key=lambda e: e["ts_ms"])
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 20, "batch.size": 262144,
         "queue.buffering.max.messages": 1_000_000}
    )  # fmt: skip
    messages = 0
    last_log = time.monotonic()
    for n, event in enumerate(events):
        seconds = event["ts_ms"] / 1000
        for m in metrics:
            value_list = [{
                "values": [event[m]], "dstypes": ["derive" if m == COUNTER_METRIC else "gauge"],
                "dsnames": ["value"], "time": seconds, "interval": 1.0,
                "host": event["device_id"], "plugin": "sim", "plugin_instance": "",
                "type": "gauge", "type_instance": m,
            }]  # fmt: skip
            while True:
                try:
                    producer.produce(
                        sparse_topic, key=uuid.uuid4().bytes, value=json.dumps(value_list)
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            messages += 1
        if time.monotonic() - last_log > 10:
            log(f"re-encoded {n + 1:,} of {len(events):,} events as collectd messages")
            last_log = time.monotonic()
    producer.flush(120)
    return len(events), messages


def main(argv: list[str] | None = None) -> int:
    from deploy.local.stack import Flink, model_unusable

    settings = Settings.from_env()
    p = argparse.ArgumentParser(
        prog="python -m bench.agents",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--events", type=int, default=500_000, help="dense events (x5 points)")
    p.add_argument("--devices", type=int, default=1_000)
    p.add_argument("--parallelism", type=int, default=1)
    p.add_argument("--scoring", choices=("off", "on"), default="off")
    p.add_argument("--json-out", type=Path, default=settings.state_dir / "bench" / "agents.json")
    a = p.parse_args(argv)
    flink = Flink(settings)
    if not flink.overview():
        print("bench: the local stack is not running: `make up` starts it", file=sys.stderr)
        return 2
    if a.scoring == "on" and model_unusable(settings):
        print(f"bench: {model_unusable(settings)}: `make train` makes one", file=sys.stderr)
        return 2
    from common.features import METRIC_NAMES

    began = time.monotonic()
    folder = settings.state_dir / "bench" / "catalogues"
    folder.mkdir(parents=True, exist_ok=True)
    plain = catalogue_variant(folder, "network-agents", counter=False)
    counted = catalogue_variant(folder, "network-agents-counter", counter=True)
    rows = []
    with scratch(settings, "bench-dense") as (dense, database):
        preload(
            settings,
            dense,
            ["--devices", str(a.devices), "--count", str(a.events)],
            f"{a.events:,} events from {a.devices:,} devices",
        )
        sparse = f"bench-sparse-{uuid.uuid4().hex[:8]}"
        try:
            t = time.monotonic()
            events, messages = encode_sparse(settings, dense, sparse, METRIC_NAMES)
            took = time.monotonic() - t
            log(f"{events:,} events -> {messages:,} collectd messages in {took:.0f} s")
            plan = [
                ("dense", dense, events, {"ANOMALY_CATALOGUE": str(plain)}),
                ("dense-keyed-counters", dense, events, {"ANOMALY_CATALOGUE": str(counted)}),
                ("sparse", sparse, messages,
                 {"ANOMALY_CATALOGUE": str(plain), "ANOMALY_SOURCES": f"{sparse}:collectd"}),
                ("sparse-keyed-counters", sparse, messages,
                 {"ANOMALY_CATALOGUE": str(counted), "ANOMALY_SOURCES": f"{sparse}:collectd"}),
            ]  # fmt: skip
            for label, topic, count, env in plan:
                run = Throughput(
                    label, a.devices, a.parallelism, a.scoring, "pandas", count, extra_env=env
                )
                bounded_run(flink, settings, topic, database, run)
                points = events * len(METRIC_NAMES)
                rows.append(
                    {
                        "run": label,
                        "messages": count,
                        "points": points,
                        "windows": run.windows,
                        "running_s": run.running_s,
                        "job_s": run.job_s,
                        "messages_per_s": round(count / run.running_s) if run.running_s else 0,
                        "points_per_s": round(points / run.running_s) if run.running_s else 0,
                        "windows_per_s": round(run.windows / run.running_s) if run.running_s else 0,
                        "late_events": run.late_events,
                        "tm_rss_peak_mb": run.tm_rss_peak_mb,
                        "detail": {k: v for k, v in asdict(run).items() if k != "samples"},
                    }
                )
        finally:
            from common.kafka_admin import delete_topic

            delete_topic(settings.kafka_bootstrap, sparse)
    print(
        f"\nsparse against dense input, {events:,} events of {a.devices:,} devices "
        f"({events * len(METRIC_NAMES):,} points), scoring {a.scoring}, p{a.parallelism}; "
        "steady = from the first record read to the job's end"
    )
    print(
        f"{'run':<24}{'messages/s':>12}{'points/s':>12}{'windows/s':>11}{'windows':>9}"
        f"{'job s':>8}{'late':>6}"
    )
    for r in rows:
        print(
            f"{r['run']:<24}{r['messages_per_s']:>12,}{r['points_per_s']:>12,}"
            f"{r['windows_per_s']:>11,}{r['windows']:>9,}{r['job_s']:>8.1f}{r['late_events']:>6}"
        )
    dense_rate = rows[0]["points_per_s"] or 1
    ratios = {
        f"{r['run']} / dense (points/s)": round(r["points_per_s"] / dense_rate, 3) for r in rows[1:]
    }
    ratios["sparse keyed / sparse (points/s)"] = round(
        rows[3]["points_per_s"] / max(rows[2]["points_per_s"], 1), 3
    )
    for name, value in ratios.items():
        print(f"{name}: {value}")
    out = {"runs": rows, "ratios": ratios, "wall_s": round(time.monotonic() - began, 1)}
    a.json_out.parent.mkdir(parents=True, exist_ok=True)
    a.json_out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"bench: done in {out['wall_s']:.0f} s; written to {a.json_out}")
    windows = {r["windows"] for r in rows[:1] + rows[2:3]}
    if len(windows) > 1:
        print(f"bench: dense and sparse wrote different windows: {windows}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
