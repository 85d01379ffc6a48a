"""Benchmark: scoring with IsolationForest as scikit-learn, skl2onnx's ONNX and our one-node ONNX.

  python -m bench.onnx_scoring                      # 1000 trees, the classic setting
  python -m bench.onnx_scoring --trees 100 --skip-skl2onnx

Measures, in one run on the same inputs: export time, graph size, session load time, rows/s at
batch 1 / 1,000 / 10,000 and single-row latency; checks parity. onnxruntime uses one intra-op
thread, as in the Flink UDF. Writes JSON to .state/bench/onnx_scoring.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from common.settings import Settings


def session(model_bytes: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def rows_per_second(fn, x: np.ndarray, batch: int, budget_s: float) -> float:
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < budget_s:
        for start in range(0, len(x) - batch + 1, batch):
            fn(x[start : start + batch])
            done += batch
            if time.perf_counter() - began >= budget_s:
                break
    return done / (time.perf_counter() - began)


def single_row_ms(fn, x: np.ndarray, repeats: int = 300) -> float:
    times = []
    for i in range(repeats):
        row = x[i % len(x) : i % len(x) + 1]
        t = time.perf_counter()
        fn(row)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def main(argv: list[str] | None = None) -> int:
    from sklearn.ensemble import IsolationForest

    from training.onnx_export import isolation_forest_to_onnx

    settings = Settings.from_env()
    p = argparse.ArgumentParser(prog="python -m bench.onnx_scoring", description=__doc__)
    p.add_argument("--trees", type=int, default=1000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--seconds", type=float, default=2.0, help="time budget per measurement")
    p.add_argument(
        "--skip-skl2onnx", action="store_true", help="skl2onnx needs minutes at 1000 trees"
    )
    p.add_argument(
        "--json-out", type=Path, default=settings.state_dir / "bench" / "onnx_scoring.json"
    )
    a = p.parse_args(argv)

    rng = np.random.default_rng(0)
    train = rng.normal(size=(20_000, a.features)).astype(np.float32)
    test = rng.normal(size=(20_000, a.features)).astype(np.float32)
    test[::100] *= 4
    model = IsolationForest(n_estimators=a.trees, contamination=0.00125, random_state=42).fit(train)

    variants: dict[str, dict] = {}
    t = time.perf_counter()
    fast = isolation_forest_to_onnx(model, a.features)
    fast_bytes = fast.SerializeToString()
    variants["onnx one-node (ours)"] = {
        "export_s": time.perf_counter() - t,
        "nodes": len(fast.graph.node),
        "bytes": fast_bytes,
    }
    if not a.skip_skl2onnx:
        print(
            f"bench: converting {a.trees} trees with skl2onnx (slow) ...",
            file=sys.stderr,
            flush=True,
        )
        t = time.perf_counter()
        ref_bytes = skl2onnx_export_any(model, a.features)
        import onnx

        variants["onnx skl2onnx"] = {
            "export_s": time.perf_counter() - t,
            "nodes": len(onnx.load_from_string(ref_bytes).graph.node),
            "bytes": ref_bytes,
        }

    expected = model.decision_function(test)
    results = []
    sk = {
        "name": "scikit-learn",
        "export_s": None,
        "nodes": None,
        "load_s": None,
        "max_abs_diff": 0.0,
    }
    fns = [(sk, model.decision_function)]
    for name, v in variants.items():
        t = time.perf_counter()
        s = session(v["bytes"])
        load_s = time.perf_counter() - t
        scores = s.run(["scores"], {"X": test})[0].ravel()
        row = {
            "name": name,
            "export_s": round(v["export_s"], 3),
            "nodes": v["nodes"],
            "load_s": round(load_s, 3),
            "max_abs_diff": float(np.max(np.abs(scores - expected))),
        }
        fns.append((row, lambda x, s=s: s.run(["scores"], {"X": x})))
    for row, fn in fns:
        for batch in (1, 1000, 10_000):
            row[f"rows_per_s_batch_{batch}"] = round(
                rows_per_second(fn, test, batch, a.seconds if batch > 1 else a.seconds / 2)
            )
        row["single_row_ms"] = round(single_row_ms(fn, test), 4)
        results.append(row)
        print(f"bench: {row['name']}: done", file=sys.stderr, flush=True)

    print(
        f"\nIsolationForest({a.trees} trees, {a.features} features), onnxruntime 1 thread, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'variant':<22} {'export s':>9} {'nodes':>7} {'load s':>7} {'rows/s b=1':>11} "
        f"{'b=1,000':>10} {'b=10,000':>10} {'1 row ms':>9} {'max |diff|':>11}"
    )
    for r in results:
        print(
            f"{r['name']:<22} {r['export_s'] if r['export_s'] is not None else '':>9} "
            f"{r['nodes'] if r['nodes'] is not None else '':>7} "
            f"{r['load_s'] if r['load_s'] is not None else '':>7} "
            f"{r['rows_per_s_batch_1']:>11,} {r['rows_per_s_batch_1000']:>10,} "
            f"{r['rows_per_s_batch_10000']:>10,} {r['single_row_ms']:>9.3f} "
            f"{r['max_abs_diff']:>11.2g}"
        )
    ours = next(r for r in results if r["name"].startswith("onnx one-node"))
    ratio = ours["rows_per_s_batch_1000"] / results[0]["rows_per_s_batch_1000"]
    print(
        f"\nbench: one-node ONNX vs scikit-learn at batch 1,000: {ratio:.1f}x rows/s; "
        f"single row {ours['single_row_ms']:.3f} ms"
    )
    a.json_out.parent.mkdir(parents=True, exist_ok=True)
    a.json_out.write_text(
        json.dumps(
            {
                "benchmark": "onnx_scoring",
                "trees": a.trees,
                "features": a.features,
                "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
                "results": results,
                "ratio_vs_sklearn_batch_1000": ratio,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
        + "\n"
    )
    return 0


def skl2onnx_export_any(model, n_features: int) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(
        model,
        initial_types=[("X", FloatTensorType([None, n_features]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    return onx.SerializeToString()


if __name__ == "__main__":
    sys.exit(main())
