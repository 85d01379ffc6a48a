"""Public labelled server metrics as CSVs that `make onboard` and `evaluate csv` read.

  python -m training.public_sets PROCESSED_DIR OUT_DIR
  python -m training.public_sets A1BENCHMARK_DIR OUT_DIR
  python -m training.public_sets KPI_DIR OUT_DIR

PROCESSED_DIR is `data/processed` of a clone of https://github.com/zhhlee/InterFusion: per
server, `<server>_train.pkl` (unlabelled, normal) and `<server>_test.pkl` with
`<server>_test_label.pkl`, values scaled to [0, 1] per metric. Servers called `machine-*` are
SMD (the Server Machine Dataset of NetManAIOps/OmniAnomaly, one sample a minute), `omi-*` are
ASD (the Application Server Dataset, one sample every 5 minutes). Written, per server, the
training part followed by the test part, timed from 2026-01-05 00:00 UTC (a Monday):

  OUT_DIR/smd/<server>.csv     timestamp, m00 … m37, label
  OUT_DIR/asd/<server>.csv     timestamp, m00 … m18, label
  OUT_DIR/mixed/<server>.csv   timestamp, value, label: one metric of each server, the one whose
                               mean moves most (in its own spread) between the labelled rows
                               and the other rows from the first labelled one on, multiplied
                               by 10^k (k = -2 … 3 in turn) so that one fleet holds values of
                               very different scales.
  OUT_DIR/mixed5/<server>.csv  the same fleet at one sample every 5 minutes (SMD's minutes
                               averaged in 5-minute bins, labelled where any minute is): the
                               sampling of the held-out set, onboarded to 1 h windows.

A server whose files are missing or empty is skipped with a line saying so.

A1BENCHMARK_DIR is the `A1Benchmark` folder of Yahoo Webscope's S5 labelled anomaly dataset:
67 series of real traffic of Yahoo services (`real_<n>.csv`: timestamp 1, 2, ..., value,
is_anomaly), one sample an hour, about two months each, in units from 0.03 to millions.
Written, per series, timed hourly from the same Monday:

  OUT_DIR/yahoo/real_<n>.csv   timestamp, value, label

KPI_DIR holds the AIOps Challenge 2018 KPI dataset (NetManAIOps/KPI-Anomaly-Detection, its
finals' `phase2_train.csv`) split into one file per KPI, `<KPI ID>.csv`, each line `unix
seconds,value,label` without a header (a copy: `dataset/dataset2_split/` of the public
repository XHJ-TS9527/KPI-Anomaly-Detection): 29 KPIs of web services of large Internet
companies, 1 to 3 months each, labelled by their operators. Written with their own times, by
their sampling:

  OUT_DIR/kpi5/<KPI ID>.csv    timestamp, value, label: the KPIs sampled every 5 minutes
  OUT_DIR/kpi1/<KPI ID>.csv    the same of those sampled every minute
  OUT_DIR/kpi14/<KPI ID>-<k>.csv  every KPI at 5 minutes (a minute KPI's minutes averaged in
                               5-minute bins, labelled where any minute is), cut into pieces of
                               14 days from its first row (the k-th piece; a last piece of
                               under 10 days is left out): the held-out set's shape, series of
                               about two weeks whose first 15 % (two days) is all the training
  OUT_DIR/kpi30/, kpi60/       the same pieces at one sample every 30 and 60 minutes (5-minute
                               samples averaged in bins, labelled where any is): slower series
                               in onboarding's 1 h windows, two samples or one to a window
  OUT_DIR/kpi14gap/            the same pieces as an agent that misses some delivers them: 10 %
                               of the samples left out at random, one 3 h outage in the scored
                               part, each time moved by up to a minute (seeded per piece)
"""

from __future__ import annotations

import argparse
import pickle
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

START = pd.Timestamp("2026-01-05T00:00:00Z")
SETS = {"machine-": ("smd", "1min"), "omi-": ("asd", "5min")}
SCALES = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0]
PIECE = pd.Timedelta(days=14)
SHORTEST_PIECE = pd.Timedelta(days=10)
# How every CSV written here spells a time (UTC).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# The two-week pieces at slower sampling (folder: bin), and with an agent's gaps (with_gaps).
SLOWER_PIECES = {"kpi30": "30min", "kpi60": "60min"}
GAP_SHARE = 0.10
GAP_OUTAGE_ROWS = 36  # 3 h at 5 minutes
GAP_JITTER_S = 60


def _load(path: Path) -> np.ndarray | None:
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with path.open("rb") as f:
        return np.asarray(pickle.load(f), dtype=np.float64)


def server_frame(processed: Path, server: str, step: str) -> pd.DataFrame | None:
    train = _load(processed / f"{server}_train.pkl")
    test = _load(processed / f"{server}_test.pkl")
    labels = _load(processed / f"{server}_test_label.pkl")
    if train is None or test is None or labels is None or len(labels) != len(test):
        return None
    values = np.vstack([train, test])
    frame = pd.DataFrame(values, columns=[f"m{i:02d}" for i in range(values.shape[1])])
    frame.insert(0, "timestamp", pd.date_range(START, periods=len(frame), freq=step))
    frame["timestamp"] = frame["timestamp"].dt.strftime(TIME_FORMAT)
    frame["label"] = np.concatenate([np.zeros(len(train)), labels]).astype(int)
    return frame


def binned(frame: pd.DataFrame, every: str = "5min") -> pd.DataFrame:
    """One metric's rows (timestamp, value, label) at one sample every ``every`` (5 minutes):
    the mean of each bin's values, labelled where any of its rows is (rows already that far
    apart are kept as they are)."""
    times = pd.to_datetime(frame["timestamp"])
    bins = frame.assign(timestamp=times.dt.floor(every)).groupby("timestamp", sort=True)
    out = bins.agg(value=("value", "mean"), label=("label", "max")).reset_index()
    out["timestamp"] = out["timestamp"].dt.strftime(TIME_FORMAT)
    return out


def with_gaps(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """One metric's rows as an agent that misses some delivers them: GAP_SHARE of the rows
    left out at random, one outage of GAP_OUTAGE_ROWS rows in a row somewhere in the 30 to 90 %
    of the series (the scored part), and each time moved by up to GAP_JITTER_S seconds either
    way (in time order again)."""
    rng = np.random.default_rng(seed)
    keep = rng.random(len(frame)) > GAP_SHARE
    low = int(len(frame) * 0.3)
    start = rng.integers(low, max(int(len(frame) * 0.9), low + 1))
    keep[start : start + GAP_OUTAGE_ROWS] = False
    out = frame[keep].copy()
    times = pd.to_datetime(out["timestamp"])
    jitter = rng.uniform(-GAP_JITTER_S, GAP_JITTER_S, len(out)).round()
    out["timestamp"] = times + pd.to_timedelta(jitter, unit="s")
    out = out.sort_values("timestamp", kind="stable")
    out["timestamp"] = out["timestamp"].dt.strftime(TIME_FORMAT)
    return out


def moving_metric(frame: pd.DataFrame) -> str:
    """The metric whose mean differs most between the labelled rows and the other rows from the
    first labelled row on, in units of its spread over those rows."""
    test = frame[frame.index >= frame["label"].to_numpy().argmax()]
    metrics = [c for c in frame.columns if c.startswith("m")]
    bad, good = test[test["label"] == 1][metrics], test[test["label"] == 0][metrics]
    spread = test[metrics].std(ddof=0).replace(0, np.nan)
    return ((bad.mean() - good.mean()).abs() / spread).fillna(0).idxmax()


def yahoo_frames(folder: Path):
    """(name, frame) of each readable `real_<n>.csv` of Yahoo's A1Benchmark folder."""
    # real_2 before real_10
    for path in sorted(folder.glob("real_*.csv"), key=lambda p: (len(p.stem), p.stem)):
        frame = pd.read_csv(path)
        if not {"value", "is_anomaly"} <= set(frame.columns) or frame.empty:
            print(f"{path.name}: skipped (no value and is_anomaly columns)")
            continue
        times = pd.date_range(START, periods=len(frame), freq="1h")
        yield (
            path.stem,
            pd.DataFrame(
                {
                    "timestamp": times.strftime(TIME_FORMAT),
                    "value": frame["value"].astype(np.float64),
                    "label": frame["is_anomaly"].astype(int),
                }
            ),
        )


def kpi_frame(path: Path) -> tuple[pd.DataFrame, int] | None:
    """One KPI's file (`unix seconds,value,label` lines, no header) as timestamp, value, label
    in time order, and its usual sampling step in whole minutes (the median gap between its
    rows); None where it is not such a file."""
    try:
        frame = pd.read_csv(path, header=None, names=["seconds", "value", "label"])
    except (ValueError, pd.errors.ParserError):
        return None
    if frame.empty or not all(pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns):
        return None
    frame = frame.dropna().sort_values("seconds")
    seconds = frame["seconds"].astype(np.int64)
    step = (
        max(1, round(float(np.median(np.diff(seconds.to_numpy()))) / 60)) if len(frame) > 1 else 1
    )
    times = pd.to_datetime(seconds, unit="s", utc=True)
    return pd.DataFrame(
        {
            "timestamp": times.dt.strftime(TIME_FORMAT).to_numpy(),
            "value": frame["value"].astype(np.float64).to_numpy(),
            "label": frame["label"].astype(int).to_numpy(),
        }
    ), step


def two_week_pieces(frame: pd.DataFrame):
    """(k, rows) of one series cut into PIECE-long spans from its first row, the last one left
    out where it spans under SHORTEST_PIECE."""
    times = pd.to_datetime(frame["timestamp"])
    piece = ((times - times.iloc[0]) // PIECE).to_numpy()
    for k in np.unique(piece):
        mine = piece == k
        part = times[mine]
        if part.iloc[-1] - part.iloc[0] >= SHORTEST_PIECE:
            yield int(k), frame[mine]


def write_kpis(folder: Path, out: Path) -> int:
    written = 0
    for name in ("kpi14", "kpi14gap", *SLOWER_PIECES):
        (out / name).mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.glob("*.csv")):
        read = kpi_frame(path)
        if read is None or not read[0]["label"].any():
            print(f"{path.name}: skipped (not unix seconds,value,label rows, or none labelled)")
            continue
        frame, step = read
        name = f"kpi{step}"
        (out / name).mkdir(parents=True, exist_ok=True)
        frame.to_csv(out / name / path.name, index=False)
        pieces = 0
        for k, rows in two_week_pieces(binned(frame) if step < 5 else frame):
            piece = f"{path.stem}-{k}.csv"
            rows.to_csv(out / "kpi14" / piece, index=False)
            for slower, every in SLOWER_PIECES.items():
                binned(rows, every).to_csv(out / slower / piece, index=False)
            with_gaps(rows, seed=zlib.crc32(piece.encode())).to_csv(
                out / "kpi14gap" / piece, index=False
            )
            pieces += 1
        print(
            f"{path.stem}: {len(frame)} rows, {int(frame['label'].sum())} labelled -> {name}/, "
            f"{pieces} pieces of 14 days at 5 min -> kpi14/ (and kpi14gap/, kpi30/, kpi60/)"
        )
        written += 1
    return written


def write_yahoo(folder: Path, out: Path) -> int:
    (out / "yahoo").mkdir(parents=True, exist_ok=True)
    written = 0
    for name, frame in yahoo_frames(folder):
        frame.to_csv(out / "yahoo" / f"{name}.csv", index=False, float_format="%.10g")
        print(f"{name}: {len(frame)} rows, {int(frame['label'].sum())} labelled -> yahoo/")
        written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "processed",
        type=Path,
        help="data/processed of a zhhlee/InterFusion clone, Yahoo S5's A1Benchmark folder, or "
        "the AIOps KPIs, one <KPI ID>.csv each",
    )
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if any(args.processed.glob("real_*.csv")):
        if not write_yahoo(args.processed, args.out):
            print(f"no readable real_<n>.csv in {args.processed}", file=sys.stderr)
            return 2
        return 0
    if not any(args.processed.glob("*_test_label.pkl")) and any(args.processed.glob("*.csv")):
        if not write_kpis(args.processed, args.out):
            print(f"no KPI file (seconds,value,label rows) in {args.processed}", file=sys.stderr)
            return 2
        return 0
    servers = sorted(
        {p.name.removesuffix("_test_label.pkl") for p in args.processed.glob("*_test_label.pkl")},
        key=lambda s: (s.split("-")[0], [int(x) for x in s.split("-")[1:] if x.isdigit()]),
    )
    if not servers:
        print(
            f"no <server>_test_label.pkl (InterFusion) nor real_<n>.csv (Yahoo A1Benchmark) "
            f"in {args.processed}",
            file=sys.stderr,
        )
        return 2
    mixed = 0
    for server in servers:
        prefix = next((p for p in SETS if server.startswith(p)), None)
        if prefix is None:
            continue
        name, step = SETS[prefix]
        frame = server_frame(args.processed, server, step)
        if frame is None:
            print(f"{server}: skipped (missing or empty files)")
            continue
        for folder in (name, "mixed", "mixed5"):
            (args.out / folder).mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out / name / f"{server}.csv", index=False, float_format="%.6g")
        metric = moving_metric(frame)
        scale = SCALES[mixed % len(SCALES)]
        mixed += 1
        one = frame[["timestamp", metric, "label"]].rename(columns={metric: "value"})
        one["value"] = one["value"] * scale
        one.to_csv(args.out / "mixed" / f"{name}-{server}.csv", index=False, float_format="%.6g")
        five = binned(one)
        five.to_csv(args.out / "mixed5" / f"{name}-{server}.csv", index=False, float_format="%.6g")
        print(
            f"{server}: {len(frame)} rows, {int(frame['label'].sum())} labelled -> {name}/; "
            f"mixed: {metric} x {scale:g}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
