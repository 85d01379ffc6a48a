"""Onboard your own metrics: write a catalogue and a settings file from a folder of CSVs.

  python -m training.onboard data/ --name shop --label-column label

Reads the CSVs by the rules every command shares (python -m common.datasets) and writes:

  catalogues/<name>.yaml   one metric per numeric column (name, source column, unit when the
                           header carries one, e.g. "Temp (C)" or "latency[ms]"), a plausible
                           range (min 0 for a metric never negative, max 100 for a percentage),
                           the sampling interval; constant columns are left out (nothing to
                           learn); no simulation section
  <name>.env               the settings of a deployment of its own: ANOMALY_CATALOGUE, the
                           proposed ANOMALY_WINDOW_SECONDS (the shortest usual window holding at
                           least --samples-per-window samples, at most 1 h unless one sample
                           takes longer), and a topic, consumer group, job
                           name, database and models folder for this data alone, so that nothing
                           mixes with the demo's, and a retention that keeps results of the
                           data's whole history. Load it with `set -a; . ./<name>.env; set +a`.

Then: train, evaluate, replay (README, "Your own data").
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.catalogue import CATALOGUE_DIR, CatalogueError
from common.catalogue import load as load_catalogue
from common.datasets import (
    DatasetError,
    add_csv_arguments,
    csv_files,
    metric_name,
    numeric_columns,
    options_from_args,
    read_datasets,
    read_frame,
    timestamp_column_of,
)
from common.settings import REPO_ROOT, Settings, SettingsError, duration_name

# Windows proposed, shortest first: each divides the day.
WINDOW_LADDER = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400)
SAMPLES_PER_WINDOW = 10
# ... but no longer than this, unless one sample takes longer: at slow sampling a window of 10
# samples is a half day (hourly samples) before a flag can come, and it was also the less
# accurate choice where measured (README, Accuracy: hourly series at 1 h against 12 h windows).
LONGEST_PROPOSED_WINDOW = 3600
_UNIT = re.compile(r"^(.*?)\s*[\(\[]\s*([^()\[\]]{1,16})\s*[\)\]]\s*$")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")


@dataclass(frozen=True)
class MetricFacts:
    column: str
    name: str
    unit: str
    low: float
    high: float
    missing_share: float


def split_unit(column: str) -> tuple[str, str]:
    """("Temp (C)") -> ("Temp", "C"); no unit: (column, "")."""
    match = _UNIT.match(column)
    return (match.group(1), match.group(2)) if match and match.group(1) else (column, "")


def metric_facts(datasets, columns: list[str]) -> tuple[list[MetricFacts], list[str]]:
    """Facts per column over every device; and the columns left out (constant or empty)."""
    facts, left_out = [], []
    for column in columns:
        values = np.concatenate([d.metrics[column] for d in datasets])
        finite = values[np.isfinite(values)]
        if len(finite) == 0 or finite.min() == finite.max():
            left_out.append(column)
            continue
        base, unit = split_unit(column)
        facts.append(
            MetricFacts(
                column=column,
                name=metric_name(base),
                unit=unit,
                low=float(finite.min()),
                high=float(finite.max()),
                missing_share=1 - len(finite) / len(values),
            )
        )
    return facts, left_out


def sampling_interval_ms(datasets) -> int:
    """The median step between a device's consecutive rows, over every device."""
    steps = np.concatenate([np.diff(d.ts_ms) for d in datasets if len(d.ts_ms) > 1])
    steps = steps[steps > 0]
    if not len(steps):
        raise DatasetError("every device has a single timestamp: no sampling interval")
    return int(np.median(steps))


def propose_window(interval_ms: int, samples: int = SAMPLES_PER_WINDOW) -> int:
    """The shortest window of the ladder holding at least ``samples`` samples, at most
    LONGEST_PROPOSED_WINDOW unless a single sample needs a longer one."""
    for seconds in WINDOW_LADDER:
        if seconds * 1000 >= samples * interval_ms or (
            seconds >= LONGEST_PROPOSED_WINDOW and seconds * 1000 >= interval_ms
        ):
            return seconds
    return WINDOW_LADDER[-1]


def catalogue_yaml(name: str, description: str, interval_ms: int, facts, left_out) -> str:
    def number(x: float) -> str:
        return repr(round(x, 6))

    lines = [
        f"# Written by `python -m training.onboard` from {description}.",
        "# Observed range per metric in the comment after it; min/max are plausible bounds",
        "# (values outside them are dead letters): edit them to your metrics' real limits.",
    ]
    if left_out:
        lines.append(f"# Left out (constant or empty in every file): {', '.join(left_out)}")
    lines += [
        f"name: {name}",
        f"description: {_quoted(description)}",
        f"interval_ms: {interval_ms}",
        "metrics:",
    ]
    for f in facts:
        fields = [f"name: {f.name}"]
        if f.unit:
            fields.append(f"unit: {_quoted(f.unit)}")
        if f.column != f.name:
            fields.append(f"source_column: {_quoted(f.column)}")
        if f.low >= 0:
            fields.append("min: 0")
        if f.unit == "%" and f.low >= 0 and f.high <= 100:
            fields.append("max: 100")
        seen = f"observed {number(f.low)} .. {number(f.high)}"
        if f.missing_share:
            seen += f", {f.missing_share:.1%} empty"
        lines.append(f"  - {{{', '.join(fields)}}}  # {seen}")
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# The settings a deployment's file sets (settings_env); a command that evaluates several
# datasets at once leaves them out of the environment it gives each (training.evaluate_all).
DEPLOYMENT_KEYS = (
    "ANOMALY_CATALOGUE",
    "ANOMALY_WINDOW_SECONDS",
    "ANOMALY_EVENTS_TOPIC",
    "ANOMALY_KAFKA_GROUP_ID",
    "ANOMALY_JOB_NAME",
    "ANOMALY_PG_DATABASE",
    "ANOMALY_MODELS_DIR",
    "ANOMALY_REFERENCE_SEGMENT_SECONDS",
    "ANOMALY_RETENTION_DAYS",
)


def job_name(name: str) -> str:
    """The Flink job (and its Kafka consumer group) of dataset ``name``."""
    return f"anomaly-scoring-{name.replace('_', '-')}"


def settings_env(
    name: str, catalogue_path: Path, window_seconds: int, oldest_ms: int
) -> tuple[str, Settings]:
    """The settings file's text, and the settings it gives."""
    values = {
        "ANOMALY_CATALOGUE": str(catalogue_path),
        "ANOMALY_WINDOW_SECONDS": str(window_seconds),
        "ANOMALY_EVENTS_TOPIC": f"{name.replace('_', '-')}-events",
        "ANOMALY_KAFKA_GROUP_ID": job_name(name),
        "ANOMALY_JOB_NAME": job_name(name),
        "ANOMALY_PG_DATABASE": f"anomaly_{name}",
        # Its model versions and CURRENT pointer apart from the demo's (whose job follows
        # models/CURRENT).
        "ANOMALY_MODELS_DIR": str(REPO_ROOT / "models" / name),
    }
    if window_seconds > 3600:
        values["ANOMALY_REFERENCE_SEGMENT_SECONDS"] = str(window_seconds)
    # Results of replayed history are kept: retention (TimescaleDB drops older chunks,
    # prune_expired() older rows) reaches back to the data's first row, and 30 days beyond.
    age_days = math.ceil((time.time() * 1000 - oldest_ms) / 86_400_000)
    if age_days + 30 > Settings().retention_days:
        values["ANOMALY_RETENTION_DAYS"] = str(age_days + 30)
    # They must make sense together: the same check every command makes.
    settings = Settings.from_env(values)
    text = (
        f"# Settings of the {name!r} deployment (python -m training.onboard). Load them into the\n"
        f"# shell before every command: set -a; . ./{name}.env; set +a\n"
        + "".join(f"{k}={v}\n" for k, v in values.items())
    )
    return text, settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.onboard",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", type=Path, help="CSV files or folders")
    p.add_argument(
        "--name", required=True, help="the dataset's name: lower case, digits, _ (e.g. shop)"
    )
    add_csv_arguments(p, ranges=False)
    p.add_argument(
        "--samples-per-window",
        type=int,
        default=SAMPLES_PER_WINDOW,
        help=(
            "propose the shortest window holding this many samples, at most 1 h unless a "
            "sample takes longer (default: %(default)s)"
        ),
    )
    p.add_argument("--window-seconds", type=int, help="use this window instead of proposing one")
    p.add_argument(
        "--catalogue-dir", type=Path, default=CATALOGUE_DIR, help="(default: catalogues/)"
    )
    p.add_argument("--env-dir", type=Path, default=Path("."), help="(default: the current folder)")
    p.add_argument("--force", action="store_true", help="overwrite an existing catalogue")
    a = p.parse_args(argv)
    if not _NAME.fullmatch(a.name):
        p.error(f"--name {a.name!r}: use lower-case letters, digits and _, starting with a letter")
    catalogue_path = (a.catalogue_dir / f"{a.name}.yaml").resolve()
    env_path = a.env_dir / f"{a.name}.env"
    if catalogue_path.exists() and not a.force:
        print(f"onboard: {catalogue_path} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    try:
        options = options_from_args(a)
        first = csv_files(a.paths)[0]
        frame = read_frame(first, options.sep)
        columns = numeric_columns(
            frame, options, timestamp_column_of(first, frame, options.timestamp_column)
        )
        if not columns:
            raise DatasetError(f"{first}: no numeric columns besides the time and label")
        # Every file must hold the first one's columns (read_datasets says which lacks one).
        datasets = read_datasets(a.paths, options, {c: c for c in columns})
        facts, left_out = metric_facts(datasets, columns)
        if not facts:
            raise DatasetError(f"every numeric column is constant or empty: {left_out}")
        names = [f.name for f in facts]
        if len(set(names)) != len(names):
            raise DatasetError(f"two columns give the same metric name: {names}")
        interval = sampling_interval_ms(datasets)
        window = a.window_seconds or propose_window(interval, a.samples_per_window)
        rows = sum(len(d.ts_ms) for d in datasets)
        source = f"{len(datasets)} devices, {rows:,} rows of {' '.join(map(str, a.paths))}"
        catalogue_path.parent.mkdir(parents=True, exist_ok=True)
        catalogue_path.write_text(catalogue_yaml(a.name, source, interval, facts, left_out))
        load_catalogue(catalogue_path)  # what is written must load
        oldest = min(int(d.ts_ms[0]) for d in datasets)
        env_text, settings = settings_env(a.name, catalogue_path, window, oldest)
    except (DatasetError, CatalogueError, SettingsError) as exc:
        print(f"onboard: {exc}", file=sys.stderr)
        return 2
    env_path.write_text(env_text)
    per_window = window * 1000 / interval
    print(f"onboard: {source}")
    print(
        f"onboard: {len(facts)} metrics ({', '.join(names)})"
        + (f"; left out as constant or empty: {', '.join(left_out)}" if left_out else "")
    )
    horizons = ",".join(n for n, _ in settings.context_horizon_seconds)
    print(
        f"onboard: one sample every {interval / 1000:g} s -> window {duration_name(window)} "
        f"({per_window:.0f} samples per window; context horizons {horizons})"
    )
    print(f"onboard: wrote {catalogue_path}")
    shown = env_path if env_path.is_absolute() else f"./{env_path}"
    print(f"onboard: wrote {env_path}; load it with: set -a; . {shown}; set +a")
    return 0


if __name__ == "__main__":
    sys.exit(main())
