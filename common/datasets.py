"""Reading users' CSV datasets: one set of rules for onboarding, replay, training and evaluation.

The rules, stated once (`python -m common.datasets` prints them; the `--help` of every command
that reads CSVs points here):

- **Files.** Each path is a CSV file or a folder searched for ``*.csv``; the separator is
  detected unless ``--sep`` is given.
- **Time.** ``--timestamp-column`` names the row's time; by default the first column called
  timestamp, datetime, time, date, ts or ts_ms (any case). Text is read as ISO 8601 (UTC unless
  it carries an offset); numbers as Unix epoch seconds, or milliseconds when above 10^11.
- **Devices.** With ``--device-column``, that column holds the device id (a file may hold many
  devices). Without it, each file is one device named ``<folder>-<file stem>``
  (``data/pumps/p1.csv`` -> ``pumps-p1``), so the same files give the same ids in every command.
- **Metrics.** The columns of the catalogue's metrics (their ``source_column``, else their
  name). Empty cells are left out of the events.
- **Labels.** ``--label-column`` (optional): non-zero numbers mark anomalous rows.
- **Time ranges.** ``--since`` / ``--until`` keep rows in [since, until) (ISO times);
  ``--fraction F`` keeps the first F (0-1) of each device's rows (training on the start of a
  history without copying files).
"""

from __future__ import annotations

import argparse
import csv
import re
import warnings
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

# Column names taken as the time column when --timestamp-column is not given, in this order.
TIMESTAMP_COLUMNS = ("timestamp", "datetime", "time", "date", "ts", "ts_ms")
# Numeric times above this are epoch milliseconds, below it epoch seconds (10^11 s is the
# year 5138; 10^11 ms is 1973).
EPOCH_MS_ABOVE = 1e11


# The last message of a replay into Kafka, one to each partition of the topic (simulator.replay):
# the replay's newest event time and no metric. The job takes it as a dead letter (the first
# metric "missing or null"), but its time still moves that partition's watermark: a replay
# sends everything in a burst, so every partition goes idle at once, and without it the
# watermark would stay at the partition that ended first, leaving the later devices' windows
# open for good. Readers of a topic's events (training.evaluate topic) leave it out.
REPLAY_END_DEVICE = "replay-end"
REPLAY_END_FIELD = "replay_end"


def replay_end_event(ts_ms: int) -> dict:
    return {"device_id": REPLAY_END_DEVICE, "ts_ms": int(ts_ms), REPLAY_END_FIELD: True}


def is_replay_end(event: dict) -> bool:
    return event.get(REPLAY_END_FIELD) is True and event.get("device_id") == REPLAY_END_DEVICE


class DatasetError(ValueError):
    pass


def metric_name(column: str) -> str:
    """A column name as a metric name: lower case, non-alphanumerics as "_"."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", column).strip("_").lower()
    return name if name and not name[0].isdigit() else f"m_{name}"


def device_id_of(path: Path) -> str:
    """The device id of a one-device file: ``<folder>-<file stem>``."""
    return f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem


@dataclass(frozen=True)
class Dataset:
    device_id: str
    ts_ms: np.ndarray
    metrics: dict[str, np.ndarray]
    labels: np.ndarray | None

    def rows(self, keep: np.ndarray) -> Dataset:
        return replace(
            self,
            ts_ms=self.ts_ms[keep],
            metrics={k: v[keep] for k, v in self.metrics.items()},
            labels=None if self.labels is None else self.labels[keep],
        )


@dataclass(frozen=True)
class CsvOptions:
    """How CSV files are read (see the module docstring); None: the rule's default."""

    timestamp_column: str | None = None
    label_column: str | None = None
    device_column: str | None = None
    sep: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    fraction: float | None = None

    def describe_range(self) -> str:
        parts = []
        if self.since:
            parts.append(f"from {self.since.isoformat()}")
        if self.until:
            parts.append(f"before {self.until.isoformat()}")
        if self.fraction is not None:
            parts.append(f"first {self.fraction:.0%} of each device's rows")
        return ", ".join(parts) or "all rows"


def parse_time(text: str) -> datetime:
    """An ISO time (UTC unless it says otherwise), for --since/--until."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO time such as 2026-11-20T00:00:00+00:00"
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a share of the rows in (0, 1], e.g. 0.15")
    return value


def add_csv_arguments(
    parser: argparse.ArgumentParser, *, ranges: bool = True, description: str | None = None
):
    """The CSV options every command shares (module docstring); with ``ranges``, also
    --since/--until/--fraction."""
    g = parser.add_argument_group(
        "reading CSV files (one set of rules for every command: python -m common.datasets)",
        description,
    )
    g.add_argument(
        "--timestamp-column",
        help=f"the rows' time (default: the first of {', '.join(TIMESTAMP_COLUMNS)})",
    )
    g.add_argument("--label-column", help="0/1 anomaly labels (optional)")
    g.add_argument(
        "--device-column",
        help="the device id (default: one device per file, named <folder>-<file stem>)",
    )
    g.add_argument("--sep", help="field separator (default: detected)")
    if ranges:
        g.add_argument("--since", type=parse_time, help="keep rows from this ISO time")
        g.add_argument("--until", type=parse_time, help="keep rows before this ISO time")
        g.add_argument(
            "--fraction",
            type=fraction,
            help="keep the first share (0-1) of each device's rows, e.g. 0.15",
        )
    return g


def options_from_args(a: argparse.Namespace) -> CsvOptions:
    """The CSV options of parsed arguments (a command without range options reads all rows)."""
    return CsvOptions(
        timestamp_column=a.timestamp_column,
        label_column=a.label_column,
        device_column=a.device_column,
        sep=a.sep,
        since=getattr(a, "since", None),
        until=getattr(a, "until", None),
        fraction=getattr(a, "fraction", None),
    )


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


def read_frame(path: Path, sep: str | None) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, sep=sep, engine="python" if sep is None else "c")
    except (OSError, ValueError, csv.Error) as exc:  # ParserError, EmptyDataError, decoding
        raise DatasetError(f"{path}: cannot read as CSV: {exc}") from exc
    if frame.empty:
        raise DatasetError(f"{path}: no rows")
    return frame


def timestamp_column_of(path: Path, frame: pd.DataFrame, given: str | None) -> str:
    if given is not None:
        if given not in frame.columns:
            raise DatasetError(
                f"{path}: no timestamp column {given!r} (columns: {list(frame.columns)}); "
                "pass --timestamp-column"
            )
        return given
    by_lower = {str(c).lower(): c for c in frame.columns}
    for name in TIMESTAMP_COLUMNS:
        if name in by_lower:
            return by_lower[name]
    raise DatasetError(
        f"{path}: no time column (none of {', '.join(TIMESTAMP_COLUMNS)}; columns: "
        f"{list(frame.columns)}); pass --timestamp-column"
    )


def epoch_ms(path: Path, column: pd.Series, name: str) -> np.ndarray:
    """Event times in ms since the epoch (module docstring: text as ISO, numbers as epoch s or
    ms)."""
    try:
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            numbers = column.to_numpy(dtype=float)
            scale = 1.0 if np.nanmax(np.abs(numbers), initial=0) > EPOCH_MS_ABOVE else 1000.0
            ts = pd.to_datetime(numbers * scale, unit="ms", errors="coerce", utc=True)
        else:
            with warnings.catch_warnings():
                # Text pandas cannot infer one format for: read row by row below.
                warnings.simplefilter("ignore", UserWarning)
                ts = pd.to_datetime(column, errors="coerce", utc=True)
            if ts.isna().any():  # formats or offsets that differ between rows
                ts = pd.to_datetime(column, errors="coerce", utc=True, format="mixed")
    except (ValueError, TypeError, OverflowError) as exc:
        raise DatasetError(f"{path}: {name!r} is not a time column: {exc}") from exc
    ts = pd.Series(ts)
    if ts.isna().any():
        raise DatasetError(f"{path}: {int(ts.isna().sum())} rows have an unparseable {name!r}")
    return ts.astype("int64").to_numpy() // 1_000_000


def numeric_columns(frame: pd.DataFrame, options: CsvOptions, time_column: str) -> list[str]:
    """The columns that can be metrics: numeric, and not the time, label or device column."""
    skip = {time_column, options.label_column, options.device_column}
    return [
        str(c) for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])
    ]


def read_file(path: Path, options: CsvOptions, columns: dict[str, str] | None) -> list[Dataset]:
    """The devices of one CSV, their rows in time order and within the options' time range;
    ``columns`` maps source column -> metric name (None: every numeric column)."""
    frame = read_frame(path, options.sep)
    time_column = timestamp_column_of(path, frame, options.timestamp_column)
    ts_ms = epoch_ms(path, frame[time_column], time_column)
    label_column = options.label_column
    labels = None
    if label_column is not None:
        if label_column not in frame.columns:
            raise DatasetError(f"{path}: no label column {label_column!r}")
        numbers = pd.to_numeric(frame[label_column], errors="coerce")
        bad = int((numbers.isna() & frame[label_column].notna()).sum())
        if bad:
            raise DatasetError(f"{path}: {bad} rows have a label that is not a number")
        labels = numbers.fillna(0).to_numpy(dtype=float) > 0
    device_column = options.device_column
    if device_column is not None and device_column not in frame.columns:
        raise DatasetError(f"{path}: no device column {device_column!r}")
    if columns is None:
        columns = {c: metric_name(str(c)) for c in numeric_columns(frame, options, time_column)}
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{path}: columns {missing} missing (has {list(frame.columns)}); are these the "
            "catalogue's metrics? `python -m training.onboard` writes a catalogue for a folder "
            "of CSVs"
        )
    if not columns:
        raise DatasetError(f"{path}: no numeric columns besides the timestamp and label")
    metrics = {
        name: pd.to_numeric(frame[source], errors="coerce").to_numpy(dtype=float)
        for source, name in columns.items()
    }
    whole = Dataset(device_id_of(path), ts_ms, metrics, labels)
    if device_column is None:
        parts = [whole]
    else:
        ids = frame[device_column].astype(str).to_numpy()
        parts = [
            replace(whole.rows(ids == device), device_id=str(device)) for device in np.unique(ids)
        ]
    return [select(part, options) for part in parts]


def select(dataset: Dataset, options: CsvOptions) -> Dataset:
    """Rows in time order, within [since, until), then the first ``fraction`` of them."""
    data = dataset.rows(np.argsort(dataset.ts_ms, kind="stable"))
    keep = np.ones(len(data.ts_ms), dtype=bool)
    if options.since is not None:
        keep &= data.ts_ms >= int(options.since.timestamp() * 1000)
    if options.until is not None:
        keep &= data.ts_ms < int(options.until.timestamp() * 1000)
    data = data.rows(keep)
    if options.fraction is not None:
        data = data.rows(np.arange(len(data.ts_ms)) < round(options.fraction * len(data.ts_ms)))
    return data


def read_datasets(
    paths: list[Path], options: CsvOptions, columns: dict[str, str] | None
) -> list[Dataset]:
    """Every device of every CSV under ``paths``; devices left without rows by the time range
    are dropped, and an empty result or a device id given by two files is an error."""
    out: dict[str, Dataset] = {}
    origin: dict[str, Path] = {}
    for path in csv_files(paths):
        for data in read_file(path, options, columns):
            if data.device_id in out:
                raise DatasetError(
                    f"{path} and {origin[data.device_id]} both give device "
                    f"{data.device_id!r}: rename one, or use --device-column"
                )
            origin[data.device_id] = path
            if len(data.ts_ms):
                out[data.device_id] = data
    if not out:
        raise DatasetError(
            f"no rows of {[str(p) for p in paths]} within the time range "
            f"({options.describe_range()})"
        )
    return list(out.values())


def read_dataset(
    path: Path,
    *,
    timestamp_column: str | None,
    label_column: str | None,
    sep: str | None,
    columns: dict[str, str] | None,
) -> Dataset:
    """One CSV that holds one device (its id: ``<folder>-<file stem>``)."""
    options = CsvOptions(timestamp_column=timestamp_column, label_column=label_column, sep=sep)
    (dataset,) = read_file(path, options, columns)
    return dataset


if __name__ == "__main__":
    print(__doc__)
