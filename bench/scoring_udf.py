"""Benchmark: the scoring UDF alone, vectorized against per-row, on the same windows.

  python -m bench.scoring_udf                         # default model (pca-t2q), 1,000 devices
  python -m bench.scoring_udf --model isolation-forest --seconds 5
  ANOMALY_CATALOGUE=ops python -m bench.scoring_udf   # a one-metric fleet: the context check

Fits a model on a synthetic fleet (per-device baselines, 1 % of the scored windows pushed far
out so that explanations run too), then measures windows/s, in one run on the same inputs:

  vectorized ONNX    ScoreWindow.eval on Arrow-sized pandas batches, as Flink calls it
                     (normalisation, onnxruntime, severity, explanations of flagged windows)
  per-row ONNX       the same model, one window per call (what a non-pandas UDF does)
  per-row sklearn    the training-side reference (scikit-learn / numpy), one window per call,
                     like a consumer loop with a pickled model
  batch sklearn      the reference on whole batches, for scale

In a one-metric catalogue the default model is context-checked: each window is scored with its
context columns (SCORER_CONTEXT_NAMES, synthetic: a steady device's), and one more variant
scores the same batches with the context check's own readings (spread, seasonal, level, stuck,
spike, step, change) taken out, so that their cost shows beside the rest.

Checks that every variant gives the same scores. Writes JSON to .state/bench/scoring_udf.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common.features import CATALOGUE, MODEL_FEATURE_NAMES, SCORER_CONTEXT_NAMES
from common.settings import Settings

SAMPLES = 12  # samples per window of the one-metric fleet


def fleet(rng, devices: int, per_device: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.repeat([f"dev-{d:05d}" for d in range(devices)], per_device).astype(object)
    level = np.repeat(rng.uniform(0, 1000, size=(devices, 1)), per_device, axis=0)
    spread = np.repeat(rng.uniform(1, 5, size=(devices, 1)), per_device, axis=0)
    x = level + spread * rng.normal(size=(len(ids), len(MODEL_FEATURE_NAMES)))
    return ids, x


def one_metric_fleet(rng, devices: int, per_device: int):
    """(ids, features, context) of a one-metric fleet: windows of SAMPLES samples around each
    device's level, and the context a steady device's recent windows give (by statistic)."""
    from udfs.calibration import context_columns

    ids = np.repeat([f"dev-{d:05d}" for d in range(devices)], per_device).astype(object)
    level = np.repeat(rng.uniform(1, 1000, size=devices), per_device)
    spread = level * np.repeat(rng.uniform(0.01, 0.1, size=devices), per_device)
    samples = level[:, None] + spread[:, None] * rng.normal(size=(len(ids), SAMPLES))
    steps = np.abs(np.diff(samples, axis=1))
    of_window = {
        "mean": samples.mean(1),
        "std": samples.std(1),
        "min": samples.min(1),
        "max": samples.max(1),
        "count": np.full(len(ids), float(SAMPLES)),
        "step": steps.max(1),
        # From the window before: the difference of two window means.
        "change": np.abs(rng.normal(size=len(ids))) * np.sqrt(2.0 / SAMPLES) * spread,
    }
    # Per context statistic: its value for a steady device (the means of SAMPLES samples
    # spread by spread / sqrt(SAMPLES); a horizon full of windows).
    mean_sd = spread / np.sqrt(SAMPLES)
    of_context = {
        "avg": level,
        "sd": mean_sd,
        "stdavg": 0.93 * spread,
        "stdsd": 0.2 * spread,
        "windows": np.full(len(ids), 360.0),
        "seasres": mean_sd * rng.normal(size=len(ids)),
        "seassd": mean_sd,
        "stepavg": np.sqrt(2.0) * spread,
        "changerms": np.sqrt(2.0) * mean_sd,
    }

    horizon_stats = {c: stat for (_, stat, _), c in context_columns(SCORER_CONTEXT_NAMES).items()}

    def column(name: str, stat: str | None, values: dict) -> np.ndarray:
        stat = stat or name.rpartition("_")[2]  # a window's own: <metric>_<aggregate>
        if stat not in values:
            raise SystemExit(f"bench: no synthetic values for the column {name}")
        return values[stat]

    x = np.column_stack([column(n, None, of_window) for n in MODEL_FEATURE_NAMES])
    context = np.column_stack(
        [
            column(n, horizon_stats.get(c), of_context if c in horizon_stats else of_window)
            for c, n in enumerate(SCORER_CONTEXT_NAMES)
        ]
    )
    return ids, x, context


def windows_per_second(fn, n_rows: int, budget_s: float) -> tuple[float, int]:
    """Calls ``fn(start, stop)`` over consecutive slices until the budget is spent."""
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < budget_s:
        done += fn(done % n_rows)
    elapsed = time.perf_counter() - began
    return done / elapsed, done


def main(argv: list[str] | None = None) -> int:
    from training.detectors import DetectorParams
    from training.train import fit_model
    from udfs.onnx_scorer import ScoreWindow

    settings = Settings.from_env()
    p = argparse.ArgumentParser(prog="python -m bench.scoring_udf", description=__doc__)
    p.add_argument("--model", default=DetectorParams().model)
    p.add_argument("--devices", type=int, default=1000)
    p.add_argument("--rows", type=int, default=50_000, help="windows to score")
    p.add_argument("--batch", type=int, default=settings.arrow_batch_size)
    p.add_argument("--seconds", type=float, default=3.0, help="time budget per variant")
    p.add_argument(
        "--json-out", type=Path, default=settings.state_dir / "bench" / "scoring_udf.json"
    )
    a = p.parse_args(argv)

    # A one-metric catalogue's windows come with their context (the context check reads it).
    one_metric = len(CATALOGUE.metric_names) == 1 and bool(SCORER_CONTEXT_NAMES)

    def windows(rng, per_device: int):
        if one_metric:
            return one_metric_fleet(rng, a.devices, per_device)
        ids, x = fleet(rng, a.devices, per_device)
        count = f"{CATALOGUE.metric_names[0]}_count"
        if count not in SCORER_CONTEXT_NAMES:  # no horizons: no context
            return ids, x, None
        # The job's context: of it, such a model reads the window's sample count (its
        # PartialWindows; one window in a hundred of one sample, a device's first), the rest
        # NULL here.
        context = np.full((len(x), len(SCORER_CONTEXT_NAMES)), np.nan)
        context[:, SCORER_CONTEXT_NAMES.index(count)] = np.where(
            rng.random(len(x)) < 0.01, 1.0, 10.0
        )
        return ids, x, context

    train_ids, train_x, train_context = windows(np.random.default_rng(0), 40)
    print(f"bench: fitting {a.model} on {len(train_x):,} windows ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-udf-") as tmp:
        result = fit_model(
            train_ids,
            train_x,
            feature_names=MODEL_FEATURE_NAMES,
            window_seconds=settings.window_seconds,
            params=DetectorParams(model=a.model),
            models_dir=Path(tmp),
            training={"source": "bench"},
            context=train_context,
            context_names=SCORER_CONTEXT_NAMES,
            log=lambda m: None,
        )
        fn = ScoreWindow(
            str(result.model_dir),
            MODEL_FEATURE_NAMES,
            settings.window_seconds,
            context_names=SCORER_CONTEXT_NAMES,
        )
        fn.open(None)
    model = fn.model

    ids, x, context = windows(np.random.default_rng(0), -(-a.rows // a.devices))
    ids, x = ids[: a.rows], x[: a.rows].copy()
    far = np.random.default_rng(1).random(len(x)) < 0.01
    x[far] += 2.0 * x[far, :1] if one_metric else 200.0  # far out: flagged and explained
    if context is None:  # the job passes the context columns whatever the model (NULL here)
        context = np.full((len(x), len(SCORER_CONTEXT_NAMES)), np.nan)
    context = context[: a.rows]
    columns = [
        pd.Series(ids),
        *(pd.Series(x[:, j]) for j in range(x.shape[1])),
        *(pd.Series(context[:, j]) for j in range(context.shape[1])),
    ]
    batch = max(1, min(a.batch, len(x)))
    ctx = context if model.reads_context else None

    def vectorized(start: int) -> int:
        stop = min(start + batch, len(x))
        fn.eval(*(c.iloc[start:stop].reset_index(drop=True) for c in columns))
        return stop - start

    def part(start: int, stop: int):
        return ids[start:stop], x[start:stop], None if ctx is None else ctx[start:stop]

    def onnx_row(start: int) -> int:
        model.score(*part(start, start + 1))
        return 1

    def sklearn_row(start: int) -> int:
        result.reference_scores(*part(start, start + 1))
        return 1

    def sklearn_batch(start: int) -> int:
        result.reference_scores(*part(start, min(start + batch, len(x))))
        return min(start + batch, len(x)) - start

    # Same scores from every variant (on the first 500 windows, one by one for the per-row).
    full = fn.eval(*columns)
    reference, _ = result.reference_scores(ids, x, ctx)
    per_row = np.array([model.score(*part(i, i + 1)).score[0] for i in range(500)])
    diff = max(
        float(np.max(np.abs(full["anomaly_score"].to_numpy(float) - reference))),
        float(np.max(np.abs(per_row - reference[:500]))),
    )

    variants = [
        ("vectorized ONNX (the UDF)", vectorized),
        ("per-row ONNX", onnx_row),
        ("per-row scikit-learn", sklearn_row),
        (f"batch scikit-learn ({batch:,})", sklearn_batch),
    ]
    if model.check is not None:  # the same batches without the context check's own readings
        bare = dataclasses.replace(model, check=model.check.without_readings())

        def batches(scorer):
            def score(start: int) -> int:
                stop = min(start + batch, len(x))
                scorer.score(*part(start, stop))
                return stop - start

            return score

        variants += [
            ("vectorized ONNX, scoring alone", batches(model)),
            ("  the same without the readings", batches(bare)),
        ]
    rows = []
    for name, f in variants:
        f(0)  # warm up
        rate, done = windows_per_second(f, len(x), a.seconds)
        rows.append({"variant": name, "windows_per_s": round(rate, 1), "windows": done})
        print(f"bench: {name}: {rate:,.0f} windows/s", file=sys.stderr, flush=True)
    base = rows[0]["windows_per_s"]
    for r in rows:
        r["vectorized_over_this"] = round(base / r["windows_per_s"], 2)

    flagged = int((full["is_anomaly"] == True).sum())  # noqa: E712
    print(
        f"\nscoring UDF alone: {a.model}"
        + (" with the context check" if model.check is not None else "")
        + f", catalogue {CATALOGUE.name}, {len(MODEL_FEATURE_NAMES)} features, {a.devices:,} "
        f"devices, {len(x):,} windows ({flagged:,} flagged and explained), Arrow batch "
        f"{batch:,}, onnxruntime 1 thread, {os.cpu_count()} cores"
    )
    print(f"{'variant':<32} {'windows/s':>12} {'vectorized is x faster':>24}")
    for r in rows:
        print(f"{r['variant']:<32} {r['windows_per_s']:>12,.0f} {r['vectorized_over_this']:>23}x")
    print(f"largest score difference between variants: {diff:.2g}")

    out = {
        "model": a.model,
        "catalogue": CATALOGUE.name,
        "context_check": model.check is not None,
        "features": len(MODEL_FEATURE_NAMES),
        "devices": a.devices,
        "windows": len(x),
        "flagged": flagged,
        "batch": batch,
        "max_abs_score_diff": diff,
        "results": rows,
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    a.json_out.parent.mkdir(parents=True, exist_ok=True)
    a.json_out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {a.json_out}")
    return 0 if diff < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
