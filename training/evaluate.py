"""Honest accuracy on SKAB: our detectors under the benchmark's protocol, beside its leaderboard.

  python -m training.evaluate                       # ../shared/datasets/skab/data
  python -m training.evaluate --data DIR --json-out results.json

Protocol (SKAB's): for every labelled file, the first 400 rows (anomaly-free) train the
detector, which then scores the remaining rows; metrics are pooled over all files. Every
detector here is causal: a row's flag depends only on the training rows and the row itself.

Point-wise: precision, recall, F1, FAR (false alarms / normal rows, %) and MAR (missed /
anomalous rows, %). Per event (a run of consecutive anomalous rows): detected if any row inside
it is flagged, and the detection delay in rows (seconds at SKAB's 1 Hz) to the first flag.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.settings import REPO_ROOT, Settings

TRAIN_ROWS = 400
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "datasets" / "skab" / "data"

# Published outlier-detection leaderboard (F1, FAR %, MAR %, causal), copied from
# shared/datasets/skab/ABOUT.md.
LEADERBOARD = (
    ("Conv-AE", 0.78, 13.55, 28.02, False),
    ("MSET", 0.78, 39.73, 14.13, False),
    ("T-squared + Q (PCA)", 0.76, 26.62, 24.92, True),
    ("LSTM-AE", 0.74, 29.96, 25.92, False),
    ("T-squared", 0.66, 19.21, 42.60, True),
    ("LSTM-VAE", 0.56, 9.13, 55.03, False),
    ("Vanilla LSTM", 0.54, 12.54, 59.53, False),
    ("Isolation forest", 0.29, 2.56, 82.89, True),
)


class EvaluationError(ValueError):
    pass


# --- detectors --------------------------------------------------------------------------------


def column_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation of training rows (a constant column: sd 1e-12)."""
    return x.mean(axis=0), np.maximum(x.std(axis=0), 1e-12)


class ThreeSigma:
    """Per-metric static band: flag a row when any metric leaves mean +/- 3 sd of training."""

    name = "3-sigma per metric (baseline)"
    threshold, log_scale = 3.0, True  # score: largest |z| over the metrics

    def fit(self, x: np.ndarray) -> ThreeSigma:
        self.mean, self.sd = column_scale(x)
        return self

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = np.abs((x - self.mean) / self.sd).max(axis=1)
        return z, z > 3.0


class IsolationForestRaw:
    """IsolationForest with the classic settings on the raw sensor values."""

    name = "IsolationForest raw (baseline)"
    threshold, log_scale = 0.0, False  # score: negated decision_function

    def fit(self, x: np.ndarray) -> IsolationForestRaw:
        from sklearn.ensemble import IsolationForest

        self.model = IsolationForest(n_estimators=1000, contamination=0.00125, random_state=42).fit(
            x
        )
        return self

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = -self.model.decision_function(x)
        return s, s > 0


class PcaT2Q:
    """PCA on standardised training data: Hotelling's T-squared on the kept components and Q
    (squared prediction error) on the rest, each against its training quantile."""

    name = "PCA T-squared + Q (ours)"
    threshold, log_scale = 1.0, True  # score: the larger of T2 and Q over their limits

    def __init__(self, variance: float = 0.95, quantile: float = 0.99):
        self.variance, self.quantile = variance, quantile

    def fit(self, x: np.ndarray) -> PcaT2Q:
        from sklearn.decomposition import PCA

        self.mean, self.sd = column_scale(x)
        z = (x - self.mean) / self.sd
        self.pca = PCA(n_components=self.variance, svd_solver="full").fit(z)
        t2, q = self._stats(z)
        self.t2_limit = max(np.quantile(t2, self.quantile), 1e-12)
        self.q_limit = max(np.quantile(q, self.quantile), 1e-12)
        return self

    def _stats(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores = self.pca.transform(z)
        t2 = (scores**2 / np.maximum(self.pca.explained_variance_, 1e-12)).sum(axis=1)
        residual = z - self.pca.inverse_transform(scores)
        return t2, (residual**2).sum(axis=1)

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t2, q = self._stats((x - self.mean) / self.sd)
        s = np.maximum(t2 / self.t2_limit, q / self.q_limit)
        return s, s > 1.0


DETECTORS = (ThreeSigma, IsolationForestRaw, PcaT2Q)


# --- metrics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointMetrics:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def far_pct(self) -> float:
        return 100.0 * self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def mar_pct(self) -> float:
        return 100.0 * self.fn / (self.fn + self.tp) if self.fn + self.tp else 0.0


def point_metrics(labels: np.ndarray, flags: np.ndarray) -> PointMetrics:
    labels, flags = np.asarray(labels, bool), np.asarray(flags, bool)
    return PointMetrics(
        tp=int((labels & flags).sum()),
        fp=int((~labels & flags).sum()),
        fn=int((labels & ~flags).sum()),
        tn=int((~labels & ~flags).sum()),
    )


def anomaly_events(labels: np.ndarray) -> list[tuple[int, int]]:
    """(start, end exclusive) of each run of consecutive anomalous rows."""
    padded = np.concatenate([[False], np.asarray(labels, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def event_metrics(labels: np.ndarray, flags: np.ndarray) -> tuple[int, int, list[int]]:
    """(events, events detected, detection delays in rows)."""
    flags = np.asarray(flags, bool)
    events = anomaly_events(labels)
    delays = []
    for start, end in events:
        hits = np.flatnonzero(flags[start:end])
        if len(hits):
            delays.append(int(hits[0]))
    return len(events), len(delays), delays


# --- the protocol -----------------------------------------------------------------------------


def load_skab(data_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(file name, sensor matrix, labels) for every labelled SKAB file, in a stable order."""
    from common.catalogue import load as load_catalogue
    from simulator.replay import DatasetError, read_dataset

    files = sorted(p for p in data_dir.rglob("*.csv") if "anomaly-free" not in p.parts)
    if not files:
        raise EvaluationError(f"no SKAB CSV files under {data_dir}: pass --data")
    columns = {m.source_column or m.name: m.name for m in load_catalogue("skab").metrics}
    out = []
    for path in files:
        try:
            ds = read_dataset(
                path, timestamp_column="datetime", label_column="anomaly", sep=";", columns=columns
            )
        except DatasetError as exc:
            raise EvaluationError(str(exc)) from exc
        x = np.column_stack([ds.metrics[name] for name in columns.values()])
        if len(x) <= TRAIN_ROWS:
            raise EvaluationError(
                f"{path}: {len(x)} rows; the protocol needs more than {TRAIN_ROWS} "
                "(training rows first, then rows to score)"
            )
        if not np.isfinite(x).all():
            raise EvaluationError(f"{path}: missing or non-numeric sensor values")
        out.append((str(path.relative_to(data_dir)), x, ds.labels))
    return out


def evaluate(files, detector_types=DETECTORS) -> list[dict]:
    results = []
    for detector_type in detector_types:
        began = time.perf_counter()
        labels, flags, delays = [], [], []
        n_events = n_detected = 0
        for _, x, y in files:
            detector = detector_type().fit(x[:TRAIN_ROWS])
            _, f = detector.score(x[TRAIN_ROWS:])
            labels.append(y[TRAIN_ROWS:])
            flags.append(f)
            e, d, dl = event_metrics(y[TRAIN_ROWS:], f)
            n_events, n_detected = n_events + e, n_detected + d
            delays += dl
        m = point_metrics(np.concatenate(labels), np.concatenate(flags))
        results.append(
            {
                "method": detector_type.name,
                "f1": round(m.f1, 3),
                "far_pct": round(m.far_pct, 2),
                "mar_pct": round(m.mar_pct, 2),
                "precision": round(m.precision, 3),
                "recall": round(m.recall, 3),
                "events": n_events,
                "events_detected": n_detected,
                "median_delay_rows": float(np.median(delays)) if delays else None,
                "seconds": round(time.perf_counter() - began, 1),
            }
        )
    return results


def plot_file(files, name: str, path: Path, detector_types=DETECTORS) -> Path:
    """PNG of each detector's score and threshold against the labels of one file's scored rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    match = [f for f in files if f[0] == name]
    if not match:
        raise EvaluationError(f"no file {name!r}; files are named like {files[0][0]!r}")
    _, x, y = match[0]
    labels = y[TRAIN_ROWS:]
    fig, axes = plt.subplots(
        len(detector_types), 1, figsize=(12, 2.6 * len(detector_types)), sharex=True, squeeze=False
    )
    rows = np.arange(TRAIN_ROWS, len(x))
    for ax, detector_type in zip(axes[:, 0], detector_types, strict=True):
        detector = detector_type().fit(x[:TRAIN_ROWS])
        score, flags = detector.score(x[TRAIN_ROWS:])
        for start, end in anomaly_events(labels):
            ax.axvspan(rows[start], rows[end - 1], color="tab:red", alpha=0.15, lw=0)
        ax.plot(rows, score, lw=0.8, color="tab:blue", label="score")
        ax.axhline(detector.threshold, color="black", lw=0.8, ls="--", label="threshold")
        if detector.log_scale:
            ax.set_yscale("log")
        m = point_metrics(labels, flags)
        ax.set_title(
            f"{detector_type.name}: F1 {m.f1:.2f}, FAR {m.far_pct:.1f} %, MAR {m.mar_pct:.1f} %",
            fontsize=9,
            loc="left",
        )
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel(f"row of {name} (1 row = 1 s; red: labelled anomaly)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def print_table(results: list[dict]) -> None:
    print(
        f"{'method':<34} {'F1':>5} {'FAR %':>7} {'MAR %':>7} {'events found':>13} "
        f"{'median delay s':>15} {'causal':>7}"
    )
    for r in results:
        delay = "" if r["median_delay_rows"] is None else f"{r['median_delay_rows']:.0f}"
        print(
            f"{r['method']:<34} {r['f1']:>5.2f} {r['far_pct']:>7.2f} {r['mar_pct']:>7.2f} "
            f"{r['events_detected']:>6}/{r['events']:<6} {delay:>15} {'yes':>7}"
        )
    for name, f1, far, mar, causal in LEADERBOARD:
        print(
            f"{'published: ' + name:<34} {f1:>5.2f} {far:>7.2f} {mar:>7.2f} {'':>13} {'':>15} "
            f"{'yes' if causal else 'no':>7}"
        )


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SKAB data folder")
    p.add_argument("--json-out", type=Path, default=settings.state_dir / "eval" / "skab.json")
    p.add_argument(
        "--plot",
        metavar="FILE",
        default="valve1/1.csv",
        help="also save a PNG of score vs label for this file (default: %(default)s; '' for none)",
    )
    a = p.parse_args(argv)
    try:
        files = load_skab(a.data)
    except EvaluationError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    rows = sum(len(x) - TRAIN_ROWS for _, x, _ in files)
    print(
        f"evaluate: {len(files)} SKAB files, {rows:,} rows scored "
        f"(first {TRAIN_ROWS} of each file train)",
        file=sys.stderr,
        flush=True,
    )
    results = evaluate(files)
    print_table(results)
    a.json_out.parent.mkdir(parents=True, exist_ok=True)
    a.json_out.write_text(
        json.dumps(
            {"dataset": str(a.data), "files": len(files), "rows_scored": rows, "results": results},
            indent=2,
        )
        + "\n"
    )
    print(f"\nevaluate: results in {a.json_out}", file=sys.stderr)
    if a.plot:
        out = a.json_out.with_name(f"skab-{a.plot.replace('/', '-').removesuffix('.csv')}.png")
        try:
            plot_file(files, a.plot, out)
        except EvaluationError as exc:
            print(f"evaluate: {exc}", file=sys.stderr)
            return 2
        print(f"evaluate: plot in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
