"""Honest accuracy: our models beside baselines, on SKAB (its protocol) and on simulator data.

  python -m training.evaluate                       # SKAB at ../shared/datasets/skab/data
  python -m training.evaluate skab --data DIR --json-out results.json
  python -m training.evaluate simulator             # labelled simulator data, window-wise
  python -m training.evaluate simulator --model current   # the CURRENT model; figures -> card
  python -m training.evaluate csv DATA --label-column label --train-fraction 0.15   # your data
  python -m training.evaluate topic TOPIC --train-fraction 0.15    # your topic (is_anomaly)
  python -m training.evaluate all [--csv DIR ...]   # every dataset at once, one table

SKAB protocol: for every labelled file, the first 400 rows (anomaly-free) train, the rest are
scored; metrics are pooled over all files. Our models run as the stream runs them: window
features of the last 10 rows (SKAB has 1 row per second: the job's 10 s window, sliding by one
row so that every row gets a causal score; one variant adds the context horizons no longer
than the training rows, 1m by default), normalised per file (a file is a
device), ONE model for all files fitted on the union of their training rows, exported to ONNX
and scored by the UDF's runtime. Baselines are fitted per file on raw rows. Every method is
causal: a row's flag depends only on training rows and on rows up to itself.

Simulator: a training dump and a labelled test dump of the same fleet (other noise, more
failures); windows are the job's tumbling windows, computed by its Flink SQL; a window is
anomalous when any of its events is labelled so; an event is a run of anomalous windows of one
device.

Point-wise: precision, recall, F1, FAR (false alarms / normal rows, %) and MAR (missed /
anomalous rows, %). Per event (a run of consecutive anomalous rows): detected if any row inside
it is flagged, and the detection delay in rows (seconds at SKAB's 1 Hz) to the first flag.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def classic_isolation_forest():
    """scikit-learn's IsolationForest with the classic settings (training.detectors' defaults)."""
    from sklearn.ensemble import IsolationForest

    from training.detectors import DetectorParams

    p = DetectorParams(model="isolation-forest")
    return IsolationForest(
        n_estimators=p.n_estimators, contamination=p.contamination, random_state=p.random_state
    )


class IsolationForestRaw:
    """IsolationForest with the classic settings on the raw sensor values."""

    name = "IsolationForest raw (baseline)"
    threshold, log_scale = 0.0, False  # score: negated decision_function

    def fit(self, x: np.ndarray) -> IsolationForestRaw:
        self.model = classic_isolation_forest().fit(x)
        return self

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = -self.model.decision_function(x)
        return s, s > 0


class PcaT2Q:
    """PCA on standardised training data: Hotelling's T-squared on the kept components and Q
    (squared prediction error) on the rest, each against its training quantile."""

    name = "PCA T-squared + Q raw rows (baseline)"
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


class PerFile:
    """A baseline fitted on each file's own training rows, scoring the rest of that file."""

    def __init__(self, detector_type):
        self.detector_type = detector_type
        self.name = detector_type.name
        self.threshold, self.log_scale = detector_type.threshold, detector_type.log_scale

    def run(self, files) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.detector_type().fit(x[:TRAIN_ROWS]).score(x[TRAIN_ROWS:]) for _, x, _ in files]


def rolling_window_features(x: np.ndarray, metric_names, window_rows: int, horizon_list=()):
    """(feature names, matrix): the job's modelled features (common.features) at every row of
    1 Hz data, in the job's order: the window aggregates over the last ``window_rows`` rows
    (fewer at the start), and each horizon's context over the windows before that one, aligned
    with it (see rolling_context)."""
    import pandas as pd

    from common.features import features_of

    r = pd.DataFrame(np.asarray(x, dtype=np.float64)).rolling(window_rows, min_periods=1)
    lo, hi = r.min().to_numpy(), r.max().to_numpy()
    means = r.mean().to_numpy()
    # Population std, exactly 0 on a flat window: the definition in common.features.
    by_suffix = {
        "mean": lambda: means,
        "std": lambda: np.where(lo == hi, 0.0, r.std(ddof=0).to_numpy()),
        "min": lambda: lo,
        "max": lambda: hi,
    }
    features = [f for f in features_of(metric_names, horizon_list) if f.modelled]
    unknown = sorted({f.aggregate.suffix for f in features if f.aggregate} - set(by_suffix))
    if unknown:
        raise EvaluationError(f"no rolling implementation of aggregate(s) {unknown}")
    values = {a: compute() for a, compute in by_suffix.items()}
    context = {h.name: rolling_context(means, window_rows, h) for h in horizon_list}
    index = {m: j for j, m in enumerate(metric_names)}
    columns = []
    for f in features:
        j = index[f.metric]
        if f.aggregate is not None:
            columns.append(values[f.aggregate.suffix][:, j])
        else:
            columns.append(context[f.horizon.name][f.stat][:, j])
    return tuple(f.name for f in features), np.column_stack(columns)


def rolling_context(means: np.ndarray, window_rows: int, horizon) -> dict[str, np.ndarray]:
    """A horizon's context (common.features.CONTEXT_STATS) at every row, as
    sql/flink/window_context.sql defines it for tumbling windows, with the windows aligned
    with each row's own: statistics of the means of the windows in the horizon before the
    row's window. Rows are seconds (1 Hz data)."""
    n, w = len(means), window_rows
    avg = np.full(means.shape, np.nan)
    sd = np.full(means.shape, np.nan)
    for i in range(n):
        last_rows = i - w * np.arange(1, horizon.seconds // w + 1)  # the window means' rows
        inside = means[last_rows[last_rows >= 0]]
        if not len(inside):
            continue
        seen = ~np.isnan(inside)
        for j in range(means.shape[1]):
            v = inside[seen[:, j], j]
            if len(v):
                avg[i, j] = v.mean()
                sd[i, j] = 0.0 if v.min() == v.max() else v.std(ddof=0)
    return {"avg": avg, "sd": sd, "dev": means - np.where(np.isnan(avg), means, avg)}


class StreamModel:
    """Our model as the stream runs it (see the module docstring), on SKAB."""

    def __init__(self, model: str, window_rows: int, *, context: bool = False):
        from common.features import HORIZONS

        self.model, self.window_rows = model, window_rows
        # The job's context horizons that fit SKAB: one longer than the 400 training rows
        # never fills in training, so the model would learn a context it never sees later.
        self.horizons = (
            tuple(
                dataclasses.replace(h, modelled=True) for h in HORIZONS if h.seconds <= TRAIN_ROWS
            )
            if context
            else ()
        )
        extra = f" + {'/'.join(h.name for h in self.horizons)} context" if self.horizons else ""
        self.name = f"{model}, {window_rows} s windows{extra} (ours)"
        self.log_scale = model == "pca-t2q"
        self.threshold = None

    def run(self, files) -> list[tuple[np.ndarray, np.ndarray]]:
        import tempfile

        from common.catalogue import load as load_catalogue
        from training.detectors import DetectorParams
        from training.train import fit_model
        from udfs.onnx_scorer import OnnxModel

        metrics = load_catalogue("skab").metric_names
        feats = []
        for _, x, _ in files:
            names, f = rolling_window_features(x, metrics, self.window_rows, self.horizons)
            feats.append(f)
        ids = np.concatenate([np.full(TRAIN_ROWS, name, dtype=object) for name, _, _ in files])
        train_x = np.concatenate([f[:TRAIN_ROWS] for f in feats])
        out = []
        with tempfile.TemporaryDirectory(prefix="eval-skab-") as tmp:
            result = fit_model(
                ids,
                train_x,
                feature_names=names,
                window_seconds=self.window_rows,
                params=DetectorParams(model=self.model),
                models_dir=Path(tmp),
                training={"source": f"SKAB, first {TRAIN_ROWS} rows of each file"},
                log=lambda m: None,
            )
            model = OnnxModel.load(result.model_dir, names)
            self.threshold = model.threshold
            for (name, _, _), f in zip(files, feats, strict=True):
                s = model.score(np.full(len(f) - TRAIN_ROWS, name, dtype=object), f[TRAIN_ROWS:])
                out.append((s.score, s.flag.astype(bool)))
        return out


def skab_methods(window_rows: int) -> list:
    return [
        *(PerFile(d) for d in DETECTORS),
        StreamModel("isolation-forest", window_rows),
        StreamModel("pca-t2q", window_rows),
        StreamModel("pca-t2q", window_rows, context=True),
    ]


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
    from common.datasets import DatasetError, read_dataset

    files = sorted(p for p in data_dir.rglob("*.csv") if "anomaly-free" not in p.parts)
    if not files:
        raise EvaluationError(f"no SKAB CSV files under {data_dir}: pass --data")
    columns = load_catalogue("skab").source_columns
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


def summarise(name: str, labels, flags, events: tuple[int, int, list[int]], seconds) -> dict:
    m = point_metrics(np.concatenate(labels), np.concatenate(flags))
    n_events, n_detected, delays = events
    return {
        "method": name,
        "f1": round(m.f1, 3),
        "far_pct": round(m.far_pct, 2),
        "mar_pct": round(m.mar_pct, 2),
        "precision": round(m.precision, 3),
        "recall": round(m.recall, 3),
        "events": n_events,
        "events_detected": n_detected,
        "median_delay_s": float(np.median(delays)) if delays else None,
        "seconds": round(seconds, 1),
    }


def evaluate(files, methods) -> tuple[list[dict], dict[str, list]]:
    """(pooled metrics per method, each method's (scores, flags) per file)."""
    results, outputs = [], {}
    for method in methods:
        began = time.perf_counter()
        per_file = method.run(files)
        outputs[method.name] = per_file
        labels = [y[TRAIN_ROWS:] for _, _, y in files]
        flags = [f for _, f in per_file]
        n_events = n_detected = 0
        delays: list[int] = []
        for y, f in zip(labels, flags, strict=True):
            e, d, dl = event_metrics(y, f)
            n_events, n_detected, delays = n_events + e, n_detected + d, delays + dl
        results.append(
            summarise(
                method.name,
                labels,
                flags,
                (n_events, n_detected, delays),
                time.perf_counter() - began,
            )
        )
        print(f"evaluate: {method.name}: done", file=sys.stderr, flush=True)
    return results, outputs


def plot_file(files, name: str, path: Path, methods, outputs) -> Path:
    """PNG of each method's score and threshold against the labels of one file's scored rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = [i for i, f in enumerate(files) if f[0] == name]
    if not index:
        raise EvaluationError(f"no file {name!r}; files are named like {files[0][0]!r}")
    _, x, y = files[index[0]]
    labels = y[TRAIN_ROWS:]
    fig, axes = plt.subplots(
        len(methods), 1, figsize=(12, 2.6 * len(methods)), sharex=True, squeeze=False
    )
    rows = np.arange(TRAIN_ROWS, len(x))
    for ax, method in zip(axes[:, 0], methods, strict=True):
        score, flags = outputs[method.name][index[0]]
        for start, end in anomaly_events(labels):
            ax.axvspan(rows[start], rows[end - 1], color="tab:red", alpha=0.15, lw=0)
        ax.plot(rows, score, lw=0.8, color="tab:blue", label="score")
        ax.axhline(method.threshold, color="black", lw=0.8, ls="--", label="threshold")
        if method.log_scale:
            ax.set_yscale("log")
        m = point_metrics(labels, flags)
        ax.set_title(
            f"{method.name}: F1 {m.f1:.2f}, FAR {m.far_pct:.1f} %, MAR {m.mar_pct:.1f} %",
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


# --- simulator data ---------------------------------------------------------------------------


# Fixed event times, so that window boundaries, and so the figures, are the same in every run.
EVALUATION_START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class SimulatorRun:
    devices: int = 100
    train_s: int = 1800
    test_s: int = 1800
    fleet_seed: int = 0
    train_seed: int = 1
    test_seed: int = 11
    train_anomaly_rate: float = 0.0002
    test_anomaly_rate: float = 0.001

    def describe(self) -> str:
        return (
            f"simulator, {self.devices} devices (fleet seed {self.fleet_seed}): train "
            f"{self.train_s} s seed {self.train_seed} anomaly rate {self.train_anomaly_rate}; "
            f"test {self.test_s} s seed {self.test_seed} anomaly rate {self.test_anomaly_rate}"
        )


def simulator_dump(path: Path, run: SimulatorRun, *, test: bool) -> Path:
    """A labelled event dump of the run's fleet, written by the simulator's command line."""
    import subprocess

    args = [
        sys.executable, "-m", "simulator",
        "--devices", str(run.devices),
        "--fleet-seed", str(run.fleet_seed),
        "--seed", str(run.test_seed if test else run.train_seed),
        "--anomaly-rate", str(run.test_anomaly_rate if test else run.train_anomaly_rate),
        "--duration-s", str(run.test_s if test else run.train_s),
        "--start-ms", str(EVALUATION_START_MS),
        "--output", "file", "--path", str(path),
    ]  # fmt: skip
    done = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise EvaluationError(f"simulator failed: {done.stderr.strip()[-500:]}")
    return path


def window_event_metrics(device_ids, labels, flags) -> tuple[int, int, list[int]]:
    """Events are runs of anomalous windows of one device (rows sorted by device, time)."""
    n_events = n_detected = 0
    delays: list[int] = []
    device_ids = np.asarray(device_ids)
    boundaries = np.flatnonzero(device_ids[1:] != device_ids[:-1]) + 1
    for y, f in zip(np.split(labels, boundaries), np.split(flags, boundaries), strict=True):
        e, d, dl = event_metrics(y, f)
        n_events, n_detected, delays = n_events + e, n_detected + d, delays + dl
    return n_events, n_detected, delays


def evaluate_windows(name, test, flags, window_seconds, began) -> dict:
    labels = test["labelled_events"].to_numpy() > 0
    n, found, delays = window_event_metrics(test["device_id"].to_numpy(), labels, flags)
    result = summarise(name, [labels], [flags], (n, found, delays), time.perf_counter() - began)
    if result["median_delay_s"] is not None:
        result["median_delay_s"] *= window_seconds  # delays were counted in windows
    return result


def complete_windows(features):
    from common.features import MODEL_FEATURE_NAMES

    x = features[list(MODEL_FEATURE_NAMES)].to_numpy(dtype=np.float64)
    keep = np.isfinite(x).all(axis=1)
    return features[keep].reset_index(drop=True), x[keep]


def evaluate_simulator(settings: Settings, run: SimulatorRun, model_dir: Path | None, workdir):
    """Window-wise metrics on a labelled test dump: of ``model_dir`` alone, or of both our
    models (trained on a training dump) beside the baselines."""
    from common.features import MODEL_FEATURE_NAMES
    from training.detectors import DetectorParams
    from training.train import TrainingData, train, usable_windows, window_features_from_files
    from udfs.calibration import DeviceNormaliser
    from udfs.onnx_scorer import OnnxModel

    def log(message):
        print(f"evaluate: {message}", file=sys.stderr, flush=True)

    log(f"{run.describe()}: simulating and computing window features with Flink")
    test_dump = simulator_dump(workdir / "test.jsonl", run, test=True)
    test, test_x = complete_windows(window_features_from_files(settings, test_dump))
    ids = test["device_id"].astype(str).to_numpy(dtype=object)

    def score_with(name, path):
        began = time.perf_counter()
        model = OnnxModel.load(path, MODEL_FEATURE_NAMES, settings.window_seconds)
        flags = model.score(ids, test_x).flag.astype(bool)
        return evaluate_windows(name, test, flags, settings.window_seconds, began)

    if model_dir is not None:
        return [score_with(f"model {model_dir.name}", model_dir)]
    train_dump = simulator_dump(workdir / "train.jsonl", run, test=False)
    train_features = window_features_from_files(settings, train_dump)
    # The windows our models fit on: complete and without labelled events.
    fit_rows = usable_windows(train_features, str(train_dump), log=lambda m: None)
    fit_x = fit_rows[list(MODEL_FEATURE_NAMES)].to_numpy(dtype=np.float64)
    fit_ids = fit_rows["device_id"].astype(str).to_numpy(dtype=object)
    results = []
    began = time.perf_counter()
    z = DeviceNormaliser.fit(fit_ids, fit_x).transform(ids, test_x)
    flags = (np.abs(z) > 3.0).any(axis=1)
    results.append(
        evaluate_windows(
            "3-sigma per device and feature (baseline)",
            test,
            flags,
            settings.window_seconds,
            began,
        )
    )
    began = time.perf_counter()
    flags = classic_isolation_forest().fit(fit_x).predict(test_x) == -1
    results.append(
        evaluate_windows(
            "IsolationForest raw features (baseline)",
            test,
            flags,
            settings.window_seconds,
            began,
        )
    )
    models = settings.replace(models_dir=workdir / "models")
    data = TrainingData(train_features, str(train_dump))
    for model in ("isolation-forest", "pca-t2q"):
        trained = train(
            models, data, DetectorParams(model=model), make_current=False, log=lambda m: None
        )
        results.append(score_with(f"{model} (ours)", trained.model_dir))
    return results


def record_in_card(model_dir: Path, key: str, value: dict) -> None:
    """Evaluation figures go into the card beside the model (not part of its version)."""
    from udfs.onnx_scorer import CARD_FILE

    card_path = model_dir / CARD_FILE
    card = json.loads(card_path.read_text())
    card.setdefault("evaluation", {})[key] = value
    card_path.write_text(json.dumps(card, indent=2) + "\n")


# --- command line -----------------------------------------------------------------------------


def print_table(results: list[dict], leaderboard=()) -> None:
    print(
        f"{'method':<42} {'F1':>5} {'FAR %':>7} {'MAR %':>7} {'events found':>13} "
        f"{'median delay s':>15} {'causal':>7}"
    )
    for r in results:
        delay = "" if r["median_delay_s"] is None else f"{r['median_delay_s']:.0f}"
        print(
            f"{r['method']:<42} {r['f1']:>5.2f} {r['far_pct']:>7.2f} {r['mar_pct']:>7.2f} "
            f"{r['events_detected']:>6}/{r['events']:<6} {delay:>15} {'yes':>7}"
        )
    for name, f1, far, mar, causal in leaderboard:
        print(
            f"{'published: ' + name:<42} {f1:>5.2f} {far:>7.2f} {mar:>7.2f} {'':>13} {'':>15} "
            f"{'yes' if causal else 'no':>7}"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["csv"], ["topic"]):
        from training import evaluate_csv

        return evaluate_csv.main(argv[1:], source=argv[0])
    if argv[:1] == ["all"]:
        from training import evaluate_all

        return evaluate_all.main(argv[1:])
    settings = Settings.from_env()
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "dataset",
        nargs="?",
        choices=("skab", "simulator", "csv", "topic", "all"),
        default="skab",
        help="csv / topic: your own labelled CSVs or Kafka topic "
        "(python -m training.evaluate csv --help); all: every dataset at once, one table "
        "(python -m training.evaluate all --help)",
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="skab: the data folder")
    p.add_argument(
        "--plot",
        metavar="FILE",
        default="valve1/1.csv",
        help="skab: also save a PNG of score vs label for this file (default: %(default)s; "
        "'' for none)",
    )
    p.add_argument(
        "--model",
        metavar="DIR|current",
        help="simulator: evaluate only this model version folder (or the CURRENT one) and "
        "record the figures in its card",
    )
    p.add_argument("--devices", type=int, default=SimulatorRun.devices, help="simulator: fleet")
    p.add_argument("--json-out", type=Path, help="(default: .state/eval/<dataset>.json)")
    a = p.parse_args(argv)
    json_out = a.json_out or settings.state_dir / "eval" / f"{a.dataset}.json"
    try:
        if a.dataset == "skab":
            report = run_skab(settings, a.data, a.plot, json_out)
        else:
            report = run_simulator(settings, a.model, a.devices)
    except (EvaluationError, FileNotFoundError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nevaluate: results in {json_out}", file=sys.stderr)
    return 0


def run_skab(settings: Settings, data: Path, plot: str, json_out: Path) -> dict:
    files = load_skab(data)
    rows = sum(len(x) - TRAIN_ROWS for _, x, _ in files)
    print(
        f"evaluate: {len(files)} SKAB files, {rows:,} rows scored "
        f"(first {TRAIN_ROWS} of each file train)",
        file=sys.stderr,
        flush=True,
    )
    methods = skab_methods(settings.window_seconds)
    results, outputs = evaluate(files, methods)
    print_table(results, LEADERBOARD)
    if plot:
        out = json_out.with_name(f"skab-{plot.replace('/', '-').removesuffix('.csv')}.png")
        plot_file(files, plot, out, methods, outputs)
        print(f"evaluate: plot in {out}", file=sys.stderr)
    return {"dataset": str(data), "files": len(files), "rows_scored": rows, "results": results}


def run_simulator(settings: Settings, model: str | None, devices: int) -> dict:
    import tempfile

    from common.models import resolve_model_dir

    model_dir = None
    if model is not None:
        model_dir = resolve_model_dir(settings, None if model == "current" else Path(model))
    run = SimulatorRun(devices=devices)
    with tempfile.TemporaryDirectory(prefix="eval-sim-") as tmp:
        results = evaluate_simulator(settings, run, model_dir, Path(tmp))
    print_table(results)
    report = {"dataset": run.describe(), "unit": "window", "results": results}
    if model_dir is not None:
        record_in_card(model_dir, "simulator", {"data": run.describe(), **results[0]})
        print(f"evaluate: figures recorded in {model_dir / 'card.json'}", file=sys.stderr)
    return report


if __name__ == "__main__":
    sys.exit(main())
