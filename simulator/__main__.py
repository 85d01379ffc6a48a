"""Telemetry simulator: labelled device metrics from a catalogue into Kafka or a JSONL file.

Examples:
  python -m simulator --devices 100 --realtime                       # endless, live, into Kafka
  python -m simulator --devices 200 --duration-s 3600 --output file --path dump.jsonl
  python -m simulator --devices 10000 --count 2000000 --processes 2  # load test, full speed
  python -m simulator --catalogue iot --speed 60 --duration-s 86400  # a day of sensors in 24 min
  python -m simulator --bad malformed=0.001 --bad late=0.01 --truth-path truth.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import queue
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.catalogue import CatalogueError, available
from common.catalogue import load as load_catalogue
from common.settings import Settings
from simulator.badinput import KINDS, BadInput, BadInputConfig, parse_rates
from simulator.generator import SimulatorConfig, TelemetryGenerator
from simulator.sinks import open_sink

_ANOMALOUS = b'"is_anomaly":true'


@dataclass(frozen=True)
class Plan:
    """Everything a producer process needs (picklable)."""

    config: SimulatorConfig
    ticks: int | None
    count: int | None
    start_ms: int
    speed: float  # event-time seconds per wall second; inf: as fast as possible
    rate: float | None  # cap on events/s, all processes together
    output: str
    path: Path | None
    bootstrap: str
    topic: str
    bad: BadInputConfig | None
    processes: int
    progress_s: float


@dataclass(frozen=True)
class ShardResult:
    """What one producer process reports when it ends."""

    sent: int
    anomalous: int
    errors: int
    first_error: str | None
    bad_counts: dict[str, int]


def produce_shard(plan: Plan, shard: int, report: Callable[[tuple], None]) -> None:
    """Generate the whole fleet, send this shard's devices (index % processes == shard)."""
    gen = TelemetryGenerator(plan.config)
    n = plan.config.devices
    devices = np.arange(n)[shard :: plan.processes]
    quota = None
    if plan.count is not None:
        quota = plan.count // plan.processes + (1 if shard < plan.count % plan.processes else 0)
    bad = None
    if plan.bad is not None:
        bad = BadInput(plan.bad, gen.catalogue.metric_names, seed=plan.config.seed * 1000 + shard)
    shard_rate = plan.rate / plan.processes if plan.rate else None
    sink = open_sink(plan.output, plan.path, plan.bootstrap, plan.topic)
    began = time.monotonic()
    if plan.speed < math.inf:  # paced: the first sample goes when its event time comes
        began += max(0.0, plan.start_ms / 1000.0 - time.time())
    last_report = began
    sent = anomalous = 0
    try:
        k = 0
        while (plan.ticks is None or k < plan.ticks) and (quota is None or sent < quota):
            ts_ms = plan.start_ms + k * gen.interval_ms
            values, present, label, episodes = gen.tick(ts_ms)
            if shard == 0 and episodes:
                report(("truth", episodes))
            messages = gen.encode(ts_ms, values, present, label, devices)
            labelled = int(np.count_nonzero(label[devices][present[devices]] >= 0))
            changed = False  # by bad input or by the count: then count on the messages
            if bad is not None:
                messages, records = bad.apply(messages)
                changed = bool(records)
                if records:
                    report(("truth", records))
            if quota is not None and len(messages) > quota - sent:
                messages = messages[: quota - sent]
                changed = True
            # Pace: event time at `speed` x wall time, and at most `rate` events/s.
            due = began + k * gen.interval_ms / 1000.0 / plan.speed if plan.speed < math.inf else 0
            if shard_rate:
                due = max(due, began + sent / shard_rate)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sink.send(messages)
            sent += len(messages)
            # The labels count every untouched batch exactly; a batch with duplicates or cut
            # short by the count is counted on what was sent (slower, and rare).
            if changed:
                anomalous += sum(1 for _, value in messages if _ANOMALOUS in value)
            else:
                anomalous += labelled
            k += 1
            now = time.monotonic()
            if now - last_report >= min(plan.progress_s, 1.0):
                last_report = now
                report(("progress", shard, sent, anomalous, sink.errors))
    except KeyboardInterrupt:
        pass  # stop producing; what was sent is flushed and reported below
    finally:
        sink.close()
    result = ShardResult(
        sent, anomalous, sink.errors, sink.first_error, dict(bad.counts) if bad else {}
    )
    report(("done", shard, result))


def _child(plan: Plan, shard: int, q) -> None:
    try:
        produce_shard(plan, shard, q.put)
    except Exception as exc:  # reported to the parent, which fails the run
        q.put(("failed", shard, f"{type(exc).__name__}: {exc}"))


class Reporter:
    """Collects progress, ground truth and results from the producer(s); prints progress."""

    def __init__(self, plan: Plan, truth_path: Path | None):
        self.plan = plan
        self.began = time.monotonic()
        self.last_print = self.began
        self.progress: dict[int, tuple[int, int, int]] = {}
        self.done: dict[int, ShardResult] = {}
        self.failures: list[str] = []
        self.episodes = 0
        self.truth = truth_path.open("w") if truth_path else None

    def handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "truth":
            for record in msg[1]:
                self.episodes += record["type"] == "episode"
                if self.truth:
                    self.truth.write(json.dumps(record) + "\n")
        elif kind == "progress":
            self.progress[msg[1]] = msg[2:5]
        elif kind == "done":
            result: ShardResult = msg[2]
            self.done[msg[1]] = result
            self.progress[msg[1]] = (result.sent, result.anomalous, result.errors)
        elif kind == "failed":
            self.failures.append(f"producer {msg[1]}: {msg[2]}")
        now = time.monotonic()
        if now - self.last_print >= self.plan.progress_s:
            self.last_print = now
            sent = sum(p[0] for p in self.progress.values())
            errors = sum(p[2] for p in self.progress.values())
            log(
                f"{sent:,} events sent, {sent / (now - self.began):,.0f} events/s, "
                f"{self.episodes:,} episodes, {errors} delivery errors"
            )

    def summary(self) -> dict:
        elapsed = time.monotonic() - self.began
        sent = sum(d.sent for d in self.done.values())
        bad: dict[str, int] = {}
        for d in self.done.values():
            for k, v in d.bad_counts.items():
                if v:
                    bad[k] = bad.get(k, 0) + v
        if self.truth:
            self.truth.close()
        return {
            "events": sent,
            "anomalous_events": sum(d.anomalous for d in self.done.values()),
            "episodes": self.episodes,
            "bad_input": bad,
            "delivery_errors": sum(d.errors for d in self.done.values()),
            "processes": self.plan.processes,
            "elapsed_s": round(elapsed, 3),
            "events_per_s": round(sent / elapsed) if elapsed > 0 else None,
            "first_ts_ms": self.plan.start_ms,
        }

    def first_error(self) -> str | None:
        return next((d.first_error for d in self.done.values() if d.first_error), None)


def log(message: str) -> None:
    print(f"simulator: {message}", file=sys.stderr, flush=True)


def run(plan: Plan, truth_path: Path | None) -> int:
    reporter = Reporter(plan, truth_path)
    if plan.processes == 1:
        try:
            produce_shard(plan, 0, reporter.handle)
        except KeyboardInterrupt:
            pass
    else:
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        procs = [
            ctx.Process(target=_child, args=(plan, s, q), daemon=True)
            for s in range(plan.processes)
        ]
        for p in procs:
            p.start()
        try:
            while len(reporter.done) + len(reporter.failures) < plan.processes:
                try:
                    reporter.handle(q.get(timeout=0.5))
                except queue.Empty:
                    if not any(p.is_alive() for p in procs) and q.empty():
                        break
        except KeyboardInterrupt:
            log("interrupted: waiting for the producers to flush")
            deadline = time.monotonic() + 70
            while len(reporter.done) < plan.processes and time.monotonic() < deadline:
                try:
                    reporter.handle(q.get(timeout=0.5))
                except queue.Empty:
                    continue
        for p in procs:
            p.join(timeout=5)
    summary = reporter.summary()
    log(f"done {json.dumps(summary)}")
    missing = plan.processes - len(reporter.done)
    if reporter.failures or missing:
        for failure in reporter.failures:
            log(f"FAILED {failure}")
        if missing and not reporter.failures:
            log(f"FAILED {missing} producer process(es) ended without a result")
        return 1
    if summary["delivery_errors"]:
        log(f"{summary['delivery_errors']} events were NOT delivered: {reporter.first_error()}")
        return 1
    return 0


def parse_args(argv: list[str] | None = None) -> tuple[Plan, Path | None]:
    settings = Settings.from_env()
    p = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Generate labelled device telemetry (JSON events keyed by device id) from a "
        "metric catalogue, into Kafka or a JSONL file.",
        epilog=__doc__.split("Examples:", 1)[1]
        + "\nbad-input kinds:\n"
        + "\n".join(f"  {k:<15} {v}" for k, v in KINDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("fleet")
    g.add_argument(
        "--catalogue",
        default=settings.catalogue,
        help=f"catalogue name ({', '.join(available())}) or YAML path (default: %(default)s)",
    )
    g.add_argument("--devices", type=int, default=50, help="number of devices (default: 50)")
    g.add_argument(
        "--interval-ms",
        type=int,
        default=None,
        help="each device sends one event per interval (default: the catalogue's)",
    )
    g.add_argument(
        "--fleet-seed",
        type=int,
        default=0,
        help="seed of the fleet: kinds, baselines, links (default: 0)",
    )
    g = p.add_argument_group("failures")
    g.add_argument(
        "--anomaly-rate",
        type=float,
        default=0.002,
        help="chance per device and sample that a failure episode starts (default: 0.002)",
    )
    g.add_argument(
        "--scenarios",
        default=None,
        help="comma-separated scenario names to use (default: all of the catalogue's)",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=42,
        help="seed of noise, failures and bad input; same seed, same events (default: 42)",
    )
    g.add_argument(
        "--truth-path",
        type=Path,
        default=None,
        help="write ground truth (failure episodes, bad-input events) as JSONL here",
    )
    g.add_argument(
        "--bad",
        action="append",
        default=[],
        metavar="KIND=RATE",
        help="corrupt this share of events in this way; repeatable (kinds below)",
    )
    g = p.add_argument_group("time and volume")
    g.add_argument(
        "--duration-s", type=float, default=None, help="event-time span to generate, in seconds"
    )
    g.add_argument("--count", type=int, default=None, help="number of events to send")
    g.add_argument(
        "--start-ms",
        type=int,
        default=None,
        help="event time of the first sample (epoch ms); default: the next window start when "
        "pacing (the first sample waits for it), else now minus the span (a backfill that "
        "ends now)",
    )
    g.add_argument(
        "--realtime",
        action="store_true",
        help="pace event time to the wall clock (same as --speed 1)",
    )
    g.add_argument(
        "--speed",
        type=float,
        default=None,
        help="event time runs this many times faster than wall time (default: as "
        "fast as possible, or 1 with --realtime)",
    )
    g.add_argument(
        "--rate",
        type=float,
        default=None,
        help="at most this many events/s, all processes together",
    )
    g.add_argument(
        "--processes",
        type=int,
        default=1,
        help="producer processes; each sends a shard of the devices (default: 1)",
    )
    g = p.add_argument_group("output")
    g.add_argument(
        "--output",
        choices=("kafka", "file", "null"),
        default="kafka",
        help="kafka, a JSONL file, or null (generate and encode only; for benchmarks)",
    )
    g.add_argument("--path", type=Path, help="JSONL file for --output file")
    g.add_argument(
        "--bootstrap",
        default=settings.kafka_bootstrap,
        help="Kafka bootstrap servers (default: %(default)s)",
    )
    g.add_argument(
        "--topic", default=settings.events_topic, help="Kafka topic (default: %(default)s)"
    )
    g.add_argument(
        "--progress-s",
        type=float,
        default=5.0,
        help="seconds between progress lines on stderr (default: 5)",
    )
    a = p.parse_args(argv)

    if a.output == "file" and a.path is None:
        p.error("--output file needs --path")
    endless = a.duration_s is None and a.count is None
    if a.output == "file" and endless:
        p.error(
            "--output file needs --duration-s or --count (a file cannot take an endless stream)"
        )
    if a.output == "file" and a.processes != 1:
        p.error("--output file works with one process; use Kafka for --processes > 1")
    if a.processes < 1:
        p.error("--processes must be at least 1")
    if a.rate is not None and a.rate <= 0:
        p.error("--rate must be positive")
    speed = a.speed if a.speed is not None else (1.0 if a.realtime else math.inf)
    if speed <= 0:
        p.error("--speed must be positive")
    try:
        config = SimulatorConfig(
            catalogue=a.catalogue,
            devices=a.devices,
            interval_ms=a.interval_ms,
            anomaly_rate=a.anomaly_rate,
            seed=a.seed,
            fleet_seed=a.fleet_seed,
            scenarios=tuple(s.strip() for s in a.scenarios.split(",")) if a.scenarios else None,
        )
        catalogue = load_catalogue(config.catalogue)
        catalogue.require_simulation()
        for name in config.scenarios or ():
            catalogue.scenario(name)
        bad = None
        if a.bad:
            bad = BadInputConfig(
                parse_rates(a.bad),
                lateness_ms=settings.watermark_delay_seconds * 1000,
                window_ms=settings.window_seconds * 1000,
            )
    except (ValueError, CatalogueError) as exc:
        p.error(str(exc))
    interval = config.interval_ms or catalogue.interval_ms
    ticks = None
    if a.duration_s is not None:
        ticks = max(1, int(a.duration_s * 1000 / interval))
    now_ms = int(time.time() * 1000)
    if a.start_ms is not None:
        start_ms = a.start_ms
    elif speed < math.inf or endless:
        # At the next window start (the producers wait for it): every device's first window
        # then holds a window's samples. Started mid-window, it held the few samples sent
        # before the window closed, every spread near 0: a first window flagged on most
        # devices (the demo's: 97 of 100).
        window_ms = settings.window_seconds * 1000
        start_ms = -(-now_ms // window_ms) * window_ms
    else:
        start_ms = now_ms - (
            a.duration_s * 1000
            if a.duration_s
            else math.ceil((a.count or 0) / config.devices) * interval
        )
    plan = Plan(
        config=config,
        ticks=ticks,
        count=a.count,
        start_ms=int(start_ms),
        speed=speed,
        rate=a.rate,
        output=a.output,
        path=a.path,
        bootstrap=a.bootstrap,
        topic=a.topic,
        bad=bad,
        processes=a.processes,
        progress_s=a.progress_s,
    )
    return plan, a.truth_path


def main(argv: list[str] | None = None) -> int:
    plan, truth_path = parse_args(argv)
    c = plan.config
    target = {"file": str(plan.path), "null": "nowhere (null sink)"}.get(
        plan.output, f"Kafka {plan.bootstrap} topic {plan.topic}"
    )
    pace = "as fast as possible" if plan.speed == math.inf else f"event time at {plan.speed:g}x"
    volume = (
        "endless"
        if plan.ticks is None and plan.count is None
        else f"{plan.count:,} events"
        if plan.count
        else f"{plan.ticks:,} samples per device"
    )
    log(
        f"catalogue {c.catalogue}, {c.devices:,} devices, {volume}, {pace}"
        f"{f', at most {plan.rate:,.0f} events/s' if plan.rate else ''}, "
        f"{plan.processes} process(es) -> {target}"
    )
    try:
        return run(plan, truth_path)
    except RuntimeError as exc:  # e.g. no broker: the message says what to do
        log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
