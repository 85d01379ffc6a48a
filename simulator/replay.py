"""Replay CSV datasets into Kafka (or a file) as telemetry events, at a chosen speed.

  python -m simulator.replay --catalogue skab --label-column anomaly \\
      ../shared/datasets/skab/data/valve1 --speed 10

Each CSV file becomes one device (id: "<folder>-<file stem>"). A file needs a timestamp column
and numeric columns; with --catalogue, the catalogue's metrics are read from their
`source_column`s (SKAB's column names), otherwise every numeric column becomes a metric of its
own (names lower-cased, non-alphanumerics as "_"). An optional label column becomes the events'
ground truth (`is_anomaly`). Rows of all files are merged in event-time order.
"""

from __future__ import annotations

import argparse
import csv
import heapq
import json
import math
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from common.catalogue import CatalogueError
from common.catalogue import load as load_catalogue
from common.settings import Settings
from simulator.sinks import open_sink


class DatasetError(ValueError):
    pass


def metric_name(column: str) -> str:
    name = re.sub(r"[^0-9a-zA-Z]+", "_", column).strip("_").lower()
    return name if name and not name[0].isdigit() else f"m_{name}"


@dataclass(frozen=True)
class Dataset:
    device_id: str
    ts_ms: np.ndarray
    metrics: dict[str, np.ndarray]
    labels: np.ndarray | None


def read_dataset(
    path: Path,
    *,
    timestamp_column: str,
    label_column: str | None,
    sep: str | None,
    columns: dict[str, str] | None,
) -> Dataset:
    """Read one CSV; ``columns`` maps source column -> metric name (None: all numeric)."""
    try:
        frame = pd.read_csv(path, sep=sep, engine="python" if sep is None else "c")
    except (OSError, ValueError, csv.Error) as exc:  # ParserError, EmptyDataError, decoding
        raise DatasetError(f"{path}: cannot read as CSV: {exc}") from exc
    if frame.empty:
        raise DatasetError(f"{path}: no rows")
    if timestamp_column not in frame.columns:
        raise DatasetError(
            f"{path}: no timestamp column {timestamp_column!r} (columns: {list(frame.columns)}); "
            "pass --timestamp-column"
        )
    try:
        ts = pd.to_datetime(frame[timestamp_column], errors="coerce", utc=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise DatasetError(f"{path}: {timestamp_column!r} is not a time column: {exc}") from exc
    if ts.isna().any():
        bad = int(ts.isna().sum())
        raise DatasetError(f"{path}: {bad} rows have an unparseable {timestamp_column!r}")
    labels = None
    if label_column is not None:
        if label_column not in frame.columns:
            raise DatasetError(f"{path}: no label column {label_column!r}")
        numbers = pd.to_numeric(frame[label_column], errors="coerce")
        bad = int((numbers.isna() & frame[label_column].notna()).sum())
        if bad:
            raise DatasetError(f"{path}: {bad} rows have a label that is not a number")
        labels = numbers.fillna(0).to_numpy(dtype=float) > 0
    skip = {timestamp_column, label_column}
    if columns is None:
        numeric = [
            c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])
        ]
        columns = {c: metric_name(c) for c in numeric}
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: columns {missing} missing (has {list(frame.columns)})")
    if not columns:
        raise DatasetError(f"{path}: no numeric columns besides the timestamp and label")
    metrics = {}
    for source, name in columns.items():
        values = pd.to_numeric(frame[source], errors="coerce").to_numpy(dtype=float)
        metrics[name] = values
    device = f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem
    order = np.argsort(ts.astype("int64").to_numpy() // 1_000_000, kind="stable")
    ts_ms = (ts.astype("int64").to_numpy() // 1_000_000)[order]
    return Dataset(
        device,
        ts_ms,
        {k: v[order] for k, v in metrics.items()},
        None if labels is None else labels[order],
    )


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


def csv_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(p.rglob("*.csv")))
        elif p.is_file():
            files.append(p)
        else:
            raise DatasetError(f"{p}: no such file or folder")
    if not files:
        raise DatasetError(f"no CSV files in {[str(p) for p in paths]}")
    return files


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    p = argparse.ArgumentParser(
        prog="python -m simulator.replay",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", type=Path, help="CSV files or folders (searched for *.csv)")
    p.add_argument(
        "--timestamp-column",
        default="datetime",
        help="column with the row's time (default: %(default)s)",
    )
    p.add_argument("--label-column", default=None, help="column with 0/1 anomaly labels, if any")
    p.add_argument("--sep", default=None, help="field separator (default: detected)")
    p.add_argument(
        "--catalogue",
        default=None,
        help="map columns to this catalogue's metrics via their source_column",
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
        columns = None
        if a.catalogue:
            cat = load_catalogue(a.catalogue)
            columns = {m.source_column or m.name: m.name for m in cat.metrics}
        datasets = [
            read_dataset(
                f,
                timestamp_column=a.timestamp_column,
                label_column=a.label_column,
                sep=a.sep,
                columns=columns,
            )
            for f in csv_files(a.paths)
        ]
    except (DatasetError, CatalogueError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    now_ms = int(time.time() * 1000)
    streams = [events(d, (now_ms - int(d.ts_ms[0])) if a.shift_to_now else 0) for d in datasets]
    rows = sum(len(d.ts_ms) for d in datasets)
    print(
        f"replay: {len(datasets)} files, {rows:,} rows -> {a.output}", file=sys.stderr, flush=True
    )

    sink = open_sink(a.output, a.path, a.bootstrap, a.topic)
    sent = 0
    first_ts = None
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
    except KeyboardInterrupt:
        print("replay: interrupted", file=sys.stderr)
    finally:
        sink.close()
    elapsed = time.monotonic() - began
    summary = {
        "files": len(datasets),
        "events": sent,
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
