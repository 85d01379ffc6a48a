"""Every dataset at once: our default model and the baselines on each, in one table.

  python -m training.evaluate all                        # SKAB, the simulator, the ops simulator
  python -m training.evaluate all --csv data/smd --csv data/asd   # and labelled CSV folders
  python -m training.evaluate all --only ops --csv data/smd
  python -m training.evaluate all --against before.json   # and what moved since that run

Each dataset is evaluated by its own command, as a user runs it, each in its own process (a
process reads one catalogue and one window):

  skab       python -m training.evaluate skab (SKAB's protocol)
  simulator  python -m training.evaluate simulator (the network catalogue, window-wise)
  ops        the ops catalogue's fleet (one metric per device in mixed units, 5-minute samples,
             daily and weekly seasons, holidays, benign level shifts), simulated with fixed
             seeds, written as one CSV per device, onboarded (python -m training.onboard: its
             proposed window) and evaluated as CSVs
  ops_hourly the same fleet as slow series: one sample an hour for 180 days
  --csv DIR  a folder of labelled CSVs (one per device), onboarded and evaluated the same way;
             the folder's name names it

CSV datasets train on the first --train-fraction of each device's rows; with --workdir DIR they
also write their scored windows, with each reading over its bar, beside their report
(DIR/<name>.windows.csv: python -m training.evaluate csv --windows-out). One-metric datasets
also show our model without its context check (the model before it). A change to detection is
measured with this command: every dataset moves at once, in one run. --against a JSON that an
earlier run wrote prints, after the table, each row that moved (before -> after) and how many
did not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common.settings import REPO_ROOT, Settings, read_env_file
from training.onboard import DEPLOYMENT_KEYS

# The ops fleet of the README's Accuracy section: 40 devices, 42 days of 5-minute samples from
# 2026-11-20; and the same fleet as a slow series, one sample an hour for 180 days.
OPS_FLEET = {
    "--catalogue": "ops",
    "--devices": "40",
    "--seed": "7",
    "--fleet-seed": "3",
    "--anomaly-rate": "0.001",
    "--start-ms": "1795132800000",
    "--duration-s": str(42 * 86_400),
}
OPS_FLEETS = {
    "ops": OPS_FLEET,
    "ops_hourly": {**OPS_FLEET, "--interval-ms": "3600000", "--duration-s": str(180 * 86_400)},
}
BUILT_IN = ("skab", "simulator", *OPS_FLEETS)
COLUMNS = ("F1", "FAR %", "MAR %", "events found", "FA/day", "normal alarmed %", "noisy", "silent")


class EvaluateAllError(RuntimeError):
    pass


def events_to_csvs(jsonl: Path, out_dir: Path) -> int:
    """The simulator's JSONL events as one CSV per device: ts_ms, each metric, label. Returns
    the number of devices."""
    import pandas as pd

    events = pd.read_json(jsonl, lines=True)
    metrics = [
        c for c in events.columns if c not in ("device_id", "ts_ms", "is_anomaly", "scenario")
    ]
    events["label"] = events["is_anomaly"].astype(int)
    out_dir.mkdir(parents=True, exist_ok=True)
    for device, rows in events.groupby("device_id", sort=True):
        rows.sort_values("ts_ms")[["ts_ms", *metrics, "label"]].to_csv(
            out_dir / f"{device}.csv", index=False
        )
    return int(events["device_id"].nunique())


def base_env() -> dict[str, str]:
    """This process's environment without a deployment's own settings (those a loaded
    `<name>.env` sets), so that each dataset reads its own catalogue and window."""
    return {k: v for k, v in os.environ.items() if k not in DEPLOYMENT_KEYS}


class Runner:
    def __init__(self, workdir: Path, log, windows: bool = False):
        """``windows``: CSV datasets also write their scored windows (the workdir is kept)."""
        self.workdir, self.log, self.windows = workdir, log, windows

    def command(self, name: str, args: list[str], env: dict[str, str]) -> None:
        """Runs ``python -m <args>``; its progress lines go to our stderr under the dataset's
        name, its own table to <workdir>/<name>.out."""
        out = self.workdir / f"{name}.out"
        with out.open("a") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=REPO_ROOT,
                env=env,
                stdout=sink,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert proc.stderr is not None
            tail: list[str] = []
            for line in proc.stderr:
                tail = [*tail[-19:], line.rstrip()]
                if line.startswith(("evaluate:", "onboard:", "simulator:")):
                    self.log(f"[{name}] {line.rstrip()}")
            if proc.wait() != 0:
                raise EvaluateAllError(
                    f"{name}: `python -m {' '.join(args)}` ended with exit {proc.returncode}; "
                    f"its last lines:\n  " + "\n  ".join(tail) + f"\n(its output: {out})"
                )

    def built_in(self, name: str) -> dict:
        report = self.workdir / f"{name}.json"
        self.command(name, ["training.evaluate", name, "--json-out", str(report)], base_env())
        return json.loads(report.read_text())

    def csv_folder(self, name: str, folder: Path, label: str, train_fraction: float) -> dict:
        from common.catalogue import load as load_catalogue

        tag = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") or "data"
        tag = f"eval_{tag}"
        self.command(
            name,
            [
                "training.onboard", str(folder), "--name", tag, "--label-column", label,
                "--catalogue-dir", str(self.workdir), "--env-dir", str(self.workdir), "--force",
            ],
            base_env(),
        )  # fmt: skip
        deployment = read_env_file(self.workdir / f"{tag}.env")
        catalogue = load_catalogue(Path(deployment["ANOMALY_CATALOGUE"]))
        # One-metric fleets get the context check by default: show the model without it too.
        checks = ["auto", "off"] if len(catalogue.metric_names) == 1 else ["auto"]
        report = self.workdir / f"{name}.json"
        args = ["training.evaluate", "csv", str(folder), "--label-column", label]
        args += ["--train-fraction", str(train_fraction), "--json-out", str(report)]
        if self.windows:
            args += ["--windows-out", str(self.workdir / f"{name}.windows.csv")]
        for check in checks:
            args += ["--context-check", check]
        self.command(name, args, {**base_env(), **deployment})
        return json.loads(report.read_text())

    def simulated(self, name: str, train_fraction: float, fleet: dict[str, str]) -> dict:
        dump = self.workdir / f"{name}.jsonl"
        args = ["simulator", *(x for kv in fleet.items() for x in kv)]
        self.command(name, [*args, "--output", "file", "--path", str(dump)], base_env())
        devices = events_to_csvs(dump, self.workdir / name)
        dump.unlink()
        self.log(f"[{name}] {devices} devices written as CSVs to {self.workdir / name}")
        return self.csv_folder(name, self.workdir / name, "label", train_fraction)


def rows_of(dataset: str, report: dict) -> list[dict]:
    """One table row per method of a dataset's report; event-wise columns only where the
    evaluation computes them (CSV datasets)."""
    out = []
    for r in report["results"]:
        row = {
            "dataset": dataset,
            "method": r["method"],
            "F1": f"{r['f1']:.2f}",
            "FAR %": f"{r['far_pct']:.2f}",
            "MAR %": f"{r['mar_pct']:.2f}",
            "events found": f"{r['events_detected']}/{r['events']}",
        }
        if "false_alarms_per_day" in r:
            row["FA/day"] = f"{r['false_alarms_per_day']:.3f}"  # the goal is 0.10
            row["normal alarmed %"] = (
                f"{r['normal_alarmed_median_pct']:.1f} / {r['normal_alarmed_worst_pct']:.1f}"
            )
            row["noisy"] = f"{r['devices_noisy']}/{r['devices']}"
            row["silent"] = f"{r['devices_never_alarm']}/{r['devices_labelled']}"
        out.append(row)
    return out


def table_rows(datasets: list[str], reports: dict[str, dict]) -> list[dict]:
    """The table's rows of a run: each dataset's, in its order."""
    return [row for name in datasets for row in rows_of(name, reports[name])]


def print_table(rows: list[dict]) -> None:
    width = {c: max([len(c), *(len(r.get(c, "")) for r in rows)]) for c in COLUMNS}
    name = max([7, *(len(r["method"]) for r in rows)])
    data = max([7, *(len(r["dataset"]) for r in rows)])
    print(
        f"\n{'dataset':<{data}}  {'method':<{name}}  "
        + "  ".join(f"{c:>{width[c]}}" for c in COLUMNS)
    )
    shown = None
    for r in rows:
        label = r["dataset"] if r["dataset"] != shown else ""
        shown = r["dataset"]
        print(
            f"{label:<{data}}  {r['method']:<{name}}  "
            + "  ".join(f"{r.get(c, ''):>{width[c]}}" for c in COLUMNS)
        )
    print(
        "\nF1 / FAR / MAR: each evaluation's own unit (SKAB rows, simulator and CSV windows); "
        "events found: labelled events with a flag inside;\nFA/day, normal alarmed, noisy, silent "
        "(CSV datasets): false-alarm episodes per device-day, the share of each device's normal "
        "windows alarmed (median / worst),\ndevices alarmed on more than 5 % of their normal "
        "windows, devices with labelled anomalies that never alarm"
    )


def compare_rows(before: list[dict], after: list[dict]) -> list[str]:
    """What moved between two runs' rows (each dataset and method, as printed): a line per row
    with a changed column (before -> after), then a line of the rows that did not change and
    one of the rows that only one run has."""
    old = {(r["dataset"], r["method"]): r for r in before}
    kept = {(r["dataset"], r["method"]) for r in after}
    lines, same, new = [], 0, []
    for r in after:
        key = (r["dataset"], r["method"])
        if key not in old:
            new.append(key)
            continue
        moved = [f"{c} {old[key].get(c, '')} -> {r.get(c, '')}" for c in COLUMNS
                 if old[key].get(c, "") != r.get(c, "")]  # fmt: skip
        if moved:
            lines.append(f"  {r['dataset']} {r['method']}: " + ", ".join(moved))
        else:
            same += 1
    lines.append(f"  {same} of {len(after)} rows unchanged")
    gone = [key for key in old if key not in kept]
    for which, keys in (("this run", new), ("the run before", gone)):
        counts = Counter(dataset for dataset, _ in keys)
        named = [f"{d} ({n} row{'s' * (n > 1)})" for d, n in counts.items()]
        if named:
            lines.append(f"  only in {which}: " + ", ".join(named))
    return lines


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate all",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--csv", type=Path, action="append", default=[], metavar="DIR",
                   help="a folder of labelled CSVs, one per device (repeatable)")  # fmt: skip
    p.add_argument("--label-column", default="label", help="the CSVs' label (%(default)s)")
    p.add_argument("--train-fraction", type=float, default=0.15, help="CSVs: (%(default)s)")
    p.add_argument(
        "--only",
        help=f"comma-separated: of {', '.join(BUILT_IN)} and the --csv folders' names "
        "(default: all of them)",
    )
    p.add_argument("--ops-devices", type=int, help="ops fleets: fewer devices (default: 40)")
    p.add_argument("--ops-days", type=float, help="ops fleets: another span (default: 42, 180)")
    p.add_argument("--workdir", type=Path, help="keep each dataset's files and output here")
    p.add_argument("--json-out", type=Path, help="(default: .state/eval/all.json)")
    p.add_argument("--against", type=Path, metavar="JSON",
                   help="an earlier run's JSON: print what moved since it")  # fmt: skip
    a = p.parse_args(argv)
    before = None
    if a.against:
        try:
            earlier = json.loads(a.against.read_text())
            # Its reports, in this version's table (its rows may be of another format).
            before = table_rows(earlier["datasets"], earlier["reports"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            p.error(f"--against {a.against}: not a JSON this command wrote ({exc})")
    folders = {folder.resolve().name: folder for folder in a.csv}
    for folder in a.csv:
        if not folder.is_dir():
            p.error(f"--csv {folder}: not a folder")
    if len(folders) != len(a.csv) or set(folders) & set(BUILT_IN):
        p.error("--csv folders need distinct names, none of " + ", ".join(BUILT_IN))
    names = [*BUILT_IN, *folders]
    if a.only:
        wanted = [n.strip() for n in a.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            p.error(f"--only: no dataset {', '.join(unknown)} (there are: {', '.join(names)})")
        names = [n for n in names if n in wanted]
    fleets = {name: dict(fleet) for name, fleet in OPS_FLEETS.items()}
    for fleet in fleets.values():
        if a.ops_devices:
            fleet["--devices"] = str(a.ops_devices)
        if a.ops_days:
            fleet["--duration-s"] = str(int(a.ops_days * 86_400))
    json_out = a.json_out or settings.state_dir / "eval" / "all.json"

    def log(message: str) -> None:
        print(f"evaluate all: {message}", file=sys.stderr, flush=True)

    began = time.monotonic()
    reports: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="eval-all-") as tmp:
        workdir = a.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        runner = Runner(workdir, log, windows=a.workdir is not None)
        for k, name in enumerate(names, 1):
            log(f"({k}/{len(names)}) {name} ...")
            started = time.monotonic()
            try:
                if name in ("skab", "simulator"):
                    reports[name] = runner.built_in(name)
                elif name in fleets:
                    reports[name] = runner.simulated(name, a.train_fraction, fleets[name])
                else:
                    reports[name] = runner.csv_folder(
                        name, folders[name].resolve(), a.label_column, a.train_fraction
                    )
            except EvaluateAllError as exc:
                print(f"evaluate all: {exc}", file=sys.stderr)
                return 2
            seconds[name] = round(time.monotonic() - started, 1)
            log(f"({k}/{len(names)}) {name} done in {seconds[name]:.0f} s")
    rows = table_rows(names, reports)
    print_table(rows)
    if before is not None:
        print(f"\nagainst {a.against}:")
        print("\n".join(compare_rows(before, rows)))
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(
        json.dumps(
            {"datasets": names, "seconds": seconds, "rows": rows, "reports": reports}, indent=2
        )
        + "\n"
    )
    log(f"{len(names)} datasets in {time.monotonic() - began:.0f} s; results in {json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
