"""Train the anomaly model from historical events and export it to ONNX.

  python -m training.train --events dump.jsonl

Window features are computed by the very Flink SQL the streaming job runs (batch mode over the
file), so training sees exactly the features the stream scores. The exported ONNX model must
reproduce scikit-learn's scores within 1e-5 on the training windows, or nothing is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from common.features import FEATURE_NAMES, MODEL_FEATURE_NAMES
from common.models import set_current
from common.settings import Settings
from common.sql import render, strip_comments
from training.onnx_export import ML_OPSET, ONNX_OPSET
from udfs.onnx_scorer import CARD_FILE, MODEL_FILE, OnnxModel

PARITY_TOLERANCE = 1e-5
ONNX_OPSETS = {"": ONNX_OPSET, "ai.onnx.ml": ML_OPSET}


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    model: IsolationForest
    features: pd.DataFrame


@dataclass(frozen=True)
class TrainParams:
    n_estimators: int = 100
    contamination: float = 0.005
    max_samples: int = 256
    random_state: int = 42


def window_features_from_files(settings: Settings, path: Path) -> pd.DataFrame:
    """Window features of a JSONL event file (or folder), by the job's own Flink SQL."""
    from common.flink_env import create_table_env

    if not path.exists():
        raise FileNotFoundError(f"no events at {path}: make a dump with `python -m simulator`")
    t_env = create_table_env(settings, streaming=False)
    t_env.execute_sql(
        strip_comments(render("flink/events_file.sql", settings, path=path.resolve().as_posix()))
    )
    t_env.execute_sql(strip_comments(render("flink/window_features.sql", settings)))
    frame = t_env.sql_query(
        "SELECT * FROM window_features ORDER BY device_id, window_start"
    ).to_pandas()
    return frame


def fit(features: pd.DataFrame, params: TrainParams) -> IsolationForest:
    x = model_matrix(features)
    model = IsolationForest(
        n_estimators=params.n_estimators,
        contamination=params.contamination,
        max_samples=min(params.max_samples, len(x)),
        max_features=1.0,  # skl2onnx exports IsolationForest only with all features per tree
        random_state=params.random_state,
    )
    return model.fit(x)


def model_matrix(features: pd.DataFrame) -> np.ndarray:
    missing = [c for c in MODEL_FEATURE_NAMES if c not in features.columns]
    if missing:
        raise ValueError(f"feature columns missing from the training data: {missing}")
    x = features[list(MODEL_FEATURE_NAMES)].to_numpy(dtype=np.float64)
    complete = np.isfinite(x).all(axis=1)
    return x[complete].astype(np.float32)


def export_onnx(model: IsolationForest) -> bytes:
    """The forest as one ONNX tree-ensemble node (training/onnx_export.py): exports in well
    under a second and scores far faster than skl2onnx's per-tree graph."""
    from training.onnx_export import isolation_forest_to_onnx

    return isolation_forest_to_onnx(model, len(MODEL_FEATURE_NAMES)).SerializeToString()


def check_parity(model: IsolationForest, model_dir: Path, x: np.ndarray) -> float:
    """Largest |ONNX score - scikit-learn score|; raises when above the tolerance."""
    onnx_model = OnnxModel.load(model_dir, MODEL_FEATURE_NAMES)
    onnx_scores, onnx_flags = onnx_model.score(x)
    expected = -model.decision_function(x)
    diff = float(np.max(np.abs(onnx_scores - expected))) if len(x) else 0.0
    flags_agree = np.array_equal(onnx_flags.astype(bool), model.predict(x) == -1)
    if diff > PARITY_TOLERANCE or not flags_agree:
        raise RuntimeError(
            f"exported ONNX model disagrees with scikit-learn (max score difference {diff:.3g}, "
            f"flags agree: {flags_agree}); the model was not installed"
        )
    return diff


def train(
    settings: Settings,
    events: Path,
    params: TrainParams,
    *,
    make_current: bool = True,
    log=print,
) -> TrainResult:
    began = time.monotonic()
    log(f"training: computing {settings.window_seconds} s window features of {events} with Flink")
    features = window_features_from_files(settings, events)
    x = model_matrix(features)
    if len(x) < 10:
        raise ValueError(
            f"only {len(x)} complete windows in {events}: training needs at least 10 "
            "(generate a longer dump)"
        )
    log(f"training: {len(x):,} windows x {x.shape[1]} features; fitting IsolationForest {params}")
    model = fit(features, params)
    onnx_bytes = export_onnx(model)
    version = hashlib.sha256(onnx_bytes).hexdigest()[:12]
    model_dir = settings.models_dir / version
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / MODEL_FILE).write_bytes(onnx_bytes)
    card = build_card(settings, version, features, x, model, params, events)
    (model_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    diff = check_parity(model, model_dir, x)
    card["parity_max_abs_diff"] = diff
    (model_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    if make_current:
        set_current(settings, version)
    log(
        f"training: model {version} written to {model_dir} (parity {diff:.2g}, "
        f"{'now CURRENT' if make_current else 'not made current'}) "
        f"in {time.monotonic() - began:.1f} s"
    )
    return TrainResult(model_dir, model, features)


def build_card(
    settings: Settings,
    version: str,
    features: pd.DataFrame,
    x: np.ndarray,
    model: IsolationForest,
    params: TrainParams,
    events: Path,
) -> dict:
    import onnx
    import onnxruntime
    import sklearn

    train_scores = -model.decision_function(x)
    return {
        "version": version,
        "model": "IsolationForest",
        "params": params.__dict__,
        "feature_names": list(MODEL_FEATURE_NAMES),
        "all_window_features": list(FEATURE_NAMES),
        "window_seconds": settings.window_seconds,
        "score": "negated IsolationForest decision_function; > 0 is flagged",
        "training": {
            "source": str(events),
            "windows": len(x),
            "devices": int(features["device_id"].nunique()),
            "first_window_start": str(features["window_start"].min()),
            "last_window_start": str(features["window_start"].max()),
            "flagged_share": float(np.mean(train_scores > 0)),
            "score_quantiles": {
                q: float(np.quantile(train_scores, float(q))) for q in ("0.5", "0.9", "0.99")
            },
        },
        "onnx_opsets": ONNX_OPSETS,
        "onnx_exporter": "one TreeEnsembleRegressor node (training/onnx_export.py)",
        "libraries": {
            "scikit-learn": sklearn.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    defaults = TrainParams()
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__.splitlines()[1].strip(),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--events", type=Path, required=True, help="JSONL event dump (file or folder)")
    p.add_argument("--n-estimators", type=int, default=defaults.n_estimators)
    p.add_argument("--contamination", type=float, default=defaults.contamination)
    p.add_argument("--seed", type=int, default=defaults.random_state)
    p.add_argument(
        "--no-current", action="store_true", help="write the version but do not make it CURRENT"
    )
    args = p.parse_args(argv)
    params = TrainParams(args.n_estimators, args.contamination, defaults.max_samples, args.seed)
    try:
        train(Settings.from_env(), args.events, params, make_current=not args.no_current)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"training: failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
