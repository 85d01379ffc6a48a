"""Retraining on request (POST /retrain): fit a new model version on the windows the job stored
recently, and make it CURRENT only if it passes its checks. The running job then switches to it
within seconds (hot reload).

The checks, in order:
1. export parity (training itself: the ONNX graph reproduces the reference scores within
   1e-5, or the version is deleted);
2. the card's self-check when the version loads (checksum, reference rows);
3. evaluation on the most recent windows, held out of the fit: the candidate flags at most
   ``MAX_FLAGGED_FACTOR`` times its training contamination (at least 1 %) of them, and their
   scores do not drift from its training scores (PSI at most ANOMALY_DRIFT_PSI_RETRAIN).
A candidate that fails stays on disk, not current, and the answer says which check failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from common.features import MODEL_FEATURE_NAMES
from common.settings import Settings
from query.drift import psi

MAX_FLAGGED_FACTOR = 5.0


@dataclass
class RetrainOutcome:
    state: str  # promoted, refused, failed
    message: str
    version: str | None = None
    checks: dict = field(default_factory=dict)


def retrain(
    settings: Settings, since: timedelta, holdout_share: float = 0.2, log=print
) -> RetrainOutcome:
    """Train on the windows of the last ``since`` (the newest ``holdout_share`` of that span
    held out for the evaluation), then promote or refuse."""
    from common.models import register, set_current
    from training.detectors import DetectorParams
    from training.train import TrainingData, train, window_features_from_postgres
    from udfs.onnx_scorer import OnnxModel

    until = datetime.now(UTC)
    start = until - since
    holdout_start = until - since * holdout_share
    windows = window_features_from_postgres(settings, start, until)
    source = (
        f"PostgreSQL {settings.scores_table} window_start in "
        f"[{start.isoformat()}, {until.isoformat()})"
    )
    fit = windows[windows["window_start"] < holdout_start]
    # Every complete held-out window, also those the current model flagged: the candidate is
    # judged on what it will see.
    held = windows[windows["window_start"] >= holdout_start]
    held = held[np.isfinite(held[list(MODEL_FEATURE_NAMES)].to_numpy(np.float64)).all(axis=1)]
    if len(held) < settings.drift_min_windows:
        return RetrainOutcome(
            "refused",
            f"only {len(held)} complete windows in the held-out part (at least "
            f"{settings.drift_min_windows}): retrain over a longer span",
        )
    params = DetectorParams()
    result = train(
        settings,
        TrainingData(fit.reset_index(drop=True), source),
        params,
        make_current=False,
        log=log,
    )
    checks: dict = {"parity": "passed"}
    model = OnnxModel.load(result.model_dir, MODEL_FEATURE_NAMES, settings.window_seconds)
    checks["self_check"] = "passed"
    scores = model.score(
        held["device_id"].astype(str).tolist(), held[list(MODEL_FEATURE_NAMES)].to_numpy(np.float64)
    )
    flagged = float(np.mean(scores.flag == True))  # noqa: E712 (object array)
    allowed = max(MAX_FLAGGED_FACTOR * params.contamination, 0.01)
    quantiles = _card_quantiles(result.model_dir)
    drift = psi(scores.score, quantiles)
    checks.update(
        held_out_windows=len(held),
        held_out_flagged_share=flagged,
        held_out_flagged_allowed=allowed,
        held_out_psi=drift,
        held_out_psi_allowed=settings.drift_psi_retrain,
    )
    problems = []
    if flagged > allowed:
        problems.append(f"flags {flagged:.2%} of the held-out windows (at most {allowed:.2%})")
    if drift > settings.drift_psi_retrain:
        problems.append(
            f"held-out scores drift from its training scores (PSI {drift:.3f} > "
            f"{settings.drift_psi_retrain})"
        )
    if problems:
        return RetrainOutcome("refused", "; ".join(problems), result.version, checks)
    set_current(settings, result.version)
    register(settings, [result.version], current=result.version)
    return RetrainOutcome(
        "promoted",
        f"{result.version} is CURRENT: the running job switches to it within "
        f"{settings.model_reload_seconds} s",
        result.version,
        checks,
    )


def _card_quantiles(model_dir) -> dict[str, float]:
    import json

    card = json.loads((model_dir / "card.json").read_text())
    return {q: float(v) for q, v in card["training"]["score_quantiles"].items()}
