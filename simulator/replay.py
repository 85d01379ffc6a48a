"""Replay CSV datasets into Kafka (or a file) as telemetry events, at a chosen speed.

  python -m simulator.replay --catalogue skab --label-column anomaly \\
      ../shared/datasets/skab/data/valve1 --speed 10

Files, times, device ids, labels and time ranges follow the rules of common/datasets.py
(`python -m common.datasets` prints them): by default each CSV file is one device,
"<folder>-<file stem>". The metrics are the catalogue's (ANOMALY_CATALOGUE, or --catalogue),
read from their `source_column`s; --all-columns sends every numeric column instead (names
lower-cased, non-alphanumerics as "_"). A label column becomes the events' ground truth
(`is_anomaly`). Rows of all files are merged in event-time order. Into Kafka, the replay ends
with one message to each partition at the newest event time and without metrics (a dead letter
to the job, see common.datasets.REPLAY_END_DEVICE): its time closes every device's windows up
to the replay's end, also where files end at different times. --no-end-marker leaves it out.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from common.catalogue import CatalogueError
from common.catalogue import load as load_catalogue
from common.datasets import (
    Dataset,
    DatasetError,
    add_csv_arguments,
    options_from_args,
    read_datasets,
    replay_end_event,
)
from common.settings import Settings
from simulator.sinks import KafkaSink, encode, open_sink


def events(dataset: Dataset, shift_ms: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
    """(ts_ms, key, JSON value) per row; NaN cells are left out of the event."""
    key = dataset.device_id.encode()
    names = list(dataset.metrics)
    cols = [dataset.metrics[n].tolist() for n in names]
    for i, ts in enumerate(dataset.ts_ms.tolist()):
        event: dict = {"device_id": dataset.device_id, "ts_ms": ts + shift_ms}
        for name, col in zip(names, cols, strict=True):
            v = col[i]
            if not math.isnan(v):
                event[name] = v
        if dataset.labels is not None:
            event["is_anomaly"] = bool(dataset.labels[i])
            event["scenario"] = "dataset_label" if dataset.labels[i] else None
        yield ts + shift_ms, key, json.dumps(event, separators=(",", ":")).encode()


def warn_if_topic_holds_data(bootstrap: str, topic: str) -> None:
    """The job reads its topic from the earliest offset: what the topic already holds (the
    demo's events, an earlier dataset) is scored beside the replayed rows."""
    from kafka.errors import KafkaError

    from common.kafka_admin import messages_in

    try:
        held = messages_in(bootstrap, topic)
    except KafkaError:
        return  # the sink reports an unreachable broker
    if held:
        print(
            f"replay: warning: topic {topic} already holds {held:,} messages; a job reading it "
            "scores them beside these rows. For a dataset of its own, give it a topic of its "
            "own (ANOMALY_EVENTS_TOPIC, or --topic; python -m training.onboard sets one)",
            file=sys.stderr,
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    p = argparse.ArgumentParser(
        prog="python -m simulator.replay",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", type=Path, help="CSV files or folders (searched for *.csv)")
    add_csv_arguments(p)
    metrics = p.add_mutually_exclusive_group()
    metrics.add_argument(
        "--catalogue",
        default=settings.catalogue,
        help="send this catalogue's metrics, read from their source_column (default: "
        "ANOMALY_CATALOGUE, %(default)s)",
    )
    metrics.add_argument(
        "--all-columns",
        action="store_true",
        help="send every numeric column as a metric of its own name",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="event time runs this many times faster than wall time; 0: as fast as "
        "possible (default)",
    )
    p.add_argument(
        "--shift-to-now",
        action="store_true",
        help="move every file's timestamps so that it starts now",
    )
    p.add_argument(
        "--no-end-marker",
        action="store_true",
        help="Kafka: do not end with a message at the newest event time to each partition "
        "(then a device's windows stay open from where the first partition's events end)",
    )
    p.add_argument("--output", choices=("kafka", "file", "null"), default="kafka")
    p.add_argument("--path", type=Path, help="JSONL file for --output file")
    p.add_argument("--bootstrap", default=settings.kafka_bootstrap)
    p.add_argument("--topic", default=settings.events_topic)
    a = p.parse_args(argv)
    if a.output == "file" and a.path is None:
        p.error("--output file needs --path")
    if a.speed < 0:
        p.error("--speed must be >= 0")

    began = time.monotonic()
    try:
        columns = None if a.all_columns else load_catalogue(a.catalogue).source_columns
        datasets = read_datasets(a.paths, options_from_args(a), columns)
    except (DatasetError, CatalogueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    now_ms = int(time.time() * 1000)
    streams = [events(d, (now_ms - int(d.ts_ms[0])) if a.shift_to_now else 0) for d in datasets]
    rows = sum(len(d.ts_ms) for d in datasets)
    print(
        f"replay: {len(datasets)} devices, {rows:,} rows -> {a.output}",
        file=sys.stderr,
        flush=True,
    )

    if a.output == "kafka":
        warn_if_topic_holds_data(a.bootstrap, a.topic)
    sink = open_sink(a.output, a.path, a.bootstrap, a.topic)
    sent = markers = 0
    first_ts = last_ts = None
    batch: list[tuple[bytes, bytes]] = []
    last_print = time.monotonic()
    try:
        for ts, key, value in heapq.merge(*streams, key=lambda r: r[0]):
            if first_ts is None:
                first_ts = ts
            if a.speed > 0:
                delay = began + (ts - first_ts) / 1000.0 / a.speed - time.monotonic()
                if delay > 0:
                    sink.send(batch)
                    sent += len(batch)
                    batch = []
                    time.sleep(delay)
            last_ts = ts
            batch.append((key, value))
            if len(batch) >= 5000:
                sink.send(batch)
                sent += len(batch)
                batch = []
            if time.monotonic() - last_print > 5:
                last_print = time.monotonic()
                print(f"replay: {sent:,} of {rows:,} rows sent", file=sys.stderr, flush=True)
        sink.send(batch)
        sent += len(batch)
        if isinstance(sink, KafkaSink) and last_ts is not None and not a.no_end_marker:
            marker = replay_end_event(last_ts)
            markers = sink.send_to_every_partition(marker["device_id"].encode(), encode(marker))
    except KeyboardInterrupt:
        print("replay: interrupted", file=sys.stderr)
    finally:
        sink.close()
    elapsed = time.monotonic() - began
    summary = {
        "devices": len(datasets),
        "events": sent,
        "end_markers": markers,
        "delivery_errors": sink.errors,
        "elapsed_s": round(elapsed, 3),
    }
    print(f"replay: done {json.dumps(summary)}", file=sys.stderr, flush=True)
    if sink.errors:
        print(f"replay: {sink.errors} events NOT delivered: {sink.first_error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
