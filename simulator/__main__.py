"""Telemetry simulator: labelled network-device metrics into Kafka or a JSONL file.

Examples:
  python -m simulator --devices 100 --realtime                 # endless, live, into Kafka
  python -m simulator --devices 200 --duration-s 3600 --output file --path dump.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common.settings import Settings
from simulator.generator import SimulatorConfig, TelemetryGenerator
from simulator.sinks import FileSink, KafkaSink


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    settings = Settings.from_env()
    p = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Generate labelled device telemetry (JSON events keyed by device id).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--devices", type=int, default=50, help="number of simulated devices")
    p.add_argument(
        "--interval-ms", type=int, default=1000, help="each device sends one event per interval"
    )
    p.add_argument(
        "--anomaly-rate",
        type=float,
        default=0.002,
        help="chance per device and sample that an anomaly episode starts",
    )
    p.add_argument(
        "--anomaly-samples", type=int, default=15, help="length of an anomaly episode in samples"
    )
    p.add_argument(
        "--seed", type=int, default=42, help="seed of noise and anomalies; same seed, same events"
    )
    p.add_argument(
        "--fleet-seed", type=int, default=0, help="seed of the devices' baselines (the fleet)"
    )
    p.add_argument(
        "--duration-s",
        type=float,
        default=None,
        help="event-time span to generate, in seconds; omit for an endless stream",
    )
    p.add_argument(
        "--start-ms",
        type=int,
        default=None,
        help="event time of the first tick (epoch ms); default: now, or now minus the "
        "duration when not --realtime (a backfill that ends now)",
    )
    p.add_argument(
        "--realtime",
        action="store_true",
        help="pace ticks to the wall clock; otherwise generate as fast as possible",
    )
    p.add_argument("--output", choices=("kafka", "file"), default="kafka", help="where to send")
    p.add_argument("--path", type=Path, help="JSONL file for --output file")
    p.add_argument("--bootstrap", default=settings.kafka_bootstrap, help="Kafka bootstrap servers")
    p.add_argument("--topic", default=settings.events_topic, help="Kafka topic")
    p.add_argument(
        "--progress-s", type=float, default=5.0, help="seconds between progress lines on stderr"
    )
    args = p.parse_args(argv)
    if args.output == "file" and args.path is None:
        p.error("--output file needs --path")
    if args.output == "file" and args.duration_s is None:
        p.error("--output file needs --duration-s (a file cannot take an endless stream)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = SimulatorConfig(
        devices=args.devices,
        interval_ms=args.interval_ms,
        anomaly_rate=args.anomaly_rate,
        anomaly_samples=args.anomaly_samples,
        seed=args.seed,
        fleet_seed=args.fleet_seed,
    )
    ticks = (
        None if args.duration_s is None else max(1, int(args.duration_s * 1000 / args.interval_ms))
    )
    now_ms = int(time.time() * 1000)
    if args.start_ms is not None:
        start_ms = args.start_ms
    elif args.realtime or ticks is None:
        start_ms = now_ms
    else:
        start_ms = now_ms - ticks * args.interval_ms

    sink = FileSink(args.path) if args.output == "file" else KafkaSink(args.bootstrap, args.topic)
    target = (
        f"{args.path}" if args.output == "file" else f"Kafka {args.bootstrap} topic {args.topic}"
    )
    print(
        f"simulator: {config.devices} devices, {config.events_per_second:,.0f} events/s of "
        f"event time, {'endless' if ticks is None else f'{ticks} ticks'}, "
        f"{'real time' if args.realtime else 'as fast as possible'} -> {target}",
        file=sys.stderr,
        flush=True,
    )
    generator = TelemetryGenerator(config)
    began = time.monotonic()
    last_report = began
    sent = anomalies = 0
    try:
        for k, events in enumerate(generator.events(start_ms, ticks)):
            if args.realtime:
                due = began + k * args.interval_ms / 1000.0
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            sink.send_many(events)
            sent += len(events)
            anomalies += sum(1 for e in events if e["is_anomaly"])
            now = time.monotonic()
            if now - last_report >= args.progress_s:
                last_report = now
                print(
                    f"simulator: {sent:,} events sent ({anomalies:,} anomalous), "
                    f"{sent / (now - began):,.0f} events/s, {sink.errors} delivery errors",
                    file=sys.stderr,
                    flush=True,
                )
    except KeyboardInterrupt:
        print("simulator: interrupted, flushing", file=sys.stderr)
    finally:
        sink.close()
    elapsed = time.monotonic() - began
    summary = {
        "events": sent,
        "anomalous_events": anomalies,
        "delivery_errors": sink.errors,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(sent / elapsed) if elapsed > 0 else None,
        "first_ts_ms": start_ms,
    }
    print(f"simulator: done {json.dumps(summary)}", file=sys.stderr, flush=True)
    if sink.errors:
        print(
            f"simulator: {sink.errors} events were NOT delivered: {sink.first_error}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
