"""Retraining on request (POST /retrain): fit a new model version on the windows the job stored
recently, and make it CURRENT only if it passes its checks. The running job then switches to it
within seconds (hot reload).

The checks, in order:
1. export parity (training itself: the ONNX graph reproduces the reference scores within
   1e-5, or the version is deleted);
2. the card's self-check when the version loads (checksum, reference rows);
3. evaluation on the most recent windows, held out of the fit and scored as the job scores
   them (with their context): the candidate flags at most ``MAX_FLAGGED_FACTOR`` times its
   training contamination (at least 1 %) of them, or no more than the model in force flagged
   there, and their scores do not drift from its training scores (PSI at most
   ANOMALY_DRIFT_PSI_RETRAIN).
A candidate that fails stays on disk, not current, and the answer says which check failed.

The same from the command line, for a scheduler (cron, the Kubernetes CronJob
deploy/k8s/retrain-cronjob.yaml):
  python -m query.retrain [--since 14d] [--holdout-share 0.2]
It prints the outcome and its checks; exit status 0 promoted, 3 refused, 1 failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from common.features import MODEL_FEATURE_NAMES, SCORER_CONTEXT_NAMES
from common.settings import Settings
from query.drift import psi

MAX_FLAGGED_FACTOR = 5.0
# The newest share of a retraining's span held out of the fit for its evaluation, and the
# shares a request may ask for.
HOLDOUT_SHARE = 0.2
HOLDOUT_SHARE_RANGE = (0.05, 0.5)
# The span a scheduled retraining fits by default (the command line's --since): recent
# history follows a new regime better than all of it (README, Accuracy).
SCHEDULED_SINCE = "14d"


@dataclass
class RetrainOutcome:
    state: str  # promoted, refused, failed
    message: str
    version: str | None = None
    checks: dict = field(default_factory=dict)


def retrain(
    settings: Settings, since: timedelta, holdout_share: float = HOLDOUT_SHARE, log=print
) -> RetrainOutcome:
    """Train on the windows of the last ``since`` (the newest ``holdout_share`` of that span
    held out for the evaluation), then promote or refuse."""
    from common.models import register, set_current
    from training.detectors import DetectorParams
    from training.train import TrainingData, train, window_features_from_postgres

    until = datetime.now(UTC)
    start = until - since
    holdout_start = until - since * holdout_share
    windows = window_features_from_postgres(settings, start, until)
    # What the candidate fits: the span before its held-out part.
    source = (
        f"PostgreSQL {settings.scores_table} window_start in "
        f"[{start.isoformat()}, {holdout_start.isoformat()})"
    )
    fit = windows[windows["window_start"] < holdout_start]
    # Every complete held-out window, also those the current model flagged: the candidate is
    # judged on what it will see.
    held = complete(windows[windows["window_start"] >= holdout_start])
    if len(held) < settings.drift_min_windows:
        return RetrainOutcome(
            "refused",
            f"only {len(held)} complete windows in the held-out part (at least "
            f"{settings.drift_min_windows}): retrain over a longer span",
        )
    if fit.empty:
        return RetrainOutcome(
            "refused",
            f"no stored window before {holdout_start.isoformat()}: the newest "
            f"{holdout_share:.0%} of the span is held out for the checks and the candidate "
            f"fits the rest; retrain over a span that reaches further back (the job has "
            f"stored windows since {windows['window_start'].min()})",
        )
    params = DetectorParams()
    result = train(
        settings,
        TrainingData(fit.reset_index(drop=True), source),
        params,
        make_current=False,
        log=log,
    )
    checks, problems = judge(settings, result.model_dir, held, params)
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


def complete(windows):
    """The windows of a frame whose every model feature is present."""
    return windows[np.isfinite(windows[list(MODEL_FEATURE_NAMES)].to_numpy(np.float64)).all(axis=1)]


def judge(
    settings: Settings,
    model_dir,
    held,
    params,
    features=MODEL_FEATURE_NAMES,
    context=SCORER_CONTEXT_NAMES,
) -> tuple[dict, list[str]]:
    """The checks of a candidate trained with ``params`` into ``model_dir`` that come after
    training (its export parity passed there): its card's self-check as it loads, then the
    held-out windows ``held`` (complete ones: device_id, the model features, the job's context
    columns ``context`` where the catalogue has them, and labelled_events, 1 where the job
    flagged the window). It may flag at most MAX_FLAGGED_FACTOR times its contamination of
    them (at least 1 %), or as many as the model in force did, if more: a fleet whose recent
    windows hold more anomalies than that can still retrain, onto a model no noisier than the
    one it has. Their scores' PSI against its training scores must stay at most
    ``settings.drift_psi_retrain``. Returns the checks' figures and what failed (empty:
    promote it)."""
    from udfs.onnx_scorer import OnnxModel

    model = OnnxModel.load(model_dir, features, settings.window_seconds, context)
    checks: dict = {"parity": "passed", "self_check": "passed"}
    # Scored as the job scores them: with their context where the model reads it (its
    # training scores, which the PSI compares them with, were).
    scores = model.score(
        held["device_id"].astype(str).tolist(),
        held[list(features)].to_numpy(np.float64),
        held[list(context)].to_numpy(np.float64) if context else None,
    )
    flagged = float(np.mean(scores.flag == True))  # noqa: E712 (object array)
    in_force = float(np.mean(held["labelled_events"].fillna(0).to_numpy() > 0))
    allowed = max(MAX_FLAGGED_FACTOR * params.contamination, 0.01, in_force)
    drift = psi(scores.score, _card_quantiles(model_dir))
    checks.update(
        held_out_windows=len(held),
        held_out_flagged_share=flagged,
        held_out_flagged_in_force=in_force,
        held_out_flagged_allowed=allowed,
        held_out_psi=drift,
        held_out_psi_allowed=settings.drift_psi_retrain,
    )
    problems = []
    if flagged > allowed:
        problems.append(
            f"flags {flagged:.2%} of the held-out windows (at most {allowed:.2%}; the model "
            f"in force flagged {in_force:.2%})"
        )
    if drift > settings.drift_psi_retrain:
        problems.append(
            f"held-out scores drift from its training scores (PSI {drift:.3f} > "
            f"{settings.drift_psi_retrain})"
        )
    return checks, problems


def _card_quantiles(model_dir) -> dict[str, float]:
    card = json.loads((model_dir / "card.json").read_text())
    return {q: float(v) for q, v in card["training"]["score_quantiles"].items()}


# Exit status of the command line: promoted, failed, refused.
EXIT = {"promoted": 0, "failed": 1, "refused": 3}


def add_since_argument(parser: argparse.ArgumentParser, flag: str, what: str) -> None:
    """A command line's option for the span a scheduled retraining fits (SCHEDULED_SINCE by
    default); ``what`` says what it does."""
    from common.settings import duration_seconds

    parser.add_argument(
        flag,
        type=duration_seconds,
        default=duration_seconds(SCHEDULED_SINCE),
        metavar="DURATION",
        help=f"{what} (default: {SCHEDULED_SINCE})",
    )


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    """The command line; ``settings`` default to the environment's."""
    from common.settings import duration_name

    p = argparse.ArgumentParser(
        prog="python -m query.retrain",
        description="Retrain on the windows the job stored and promote the candidate only if "
        "it passes the checks of POST /retrain (exit 0 promoted, 3 refused, 1 failed).",
    )
    add_since_argument(p, "--since", "train on the stored windows of this span")
    p.add_argument(
        "--holdout-share",
        type=float,
        default=HOLDOUT_SHARE,
        help="the newest share of the span held out for the checks (default: %(default)s)",
    )
    a = p.parse_args(argv)
    low, high = HOLDOUT_SHARE_RANGE
    if not low <= a.holdout_share <= high:
        p.error(f"--holdout-share must be between {low:g} and {high:g}")
    settings = settings or Settings.from_env()

    def log(message: str) -> None:
        print(f"retrain: {message}", file=sys.stderr, flush=True)

    log(f"training on the last {duration_name(a.since)} of windows in {settings.scores_table}")
    try:
        outcome = retrain(settings, timedelta(seconds=a.since), a.holdout_share, log=log)
    except Exception as exc:  # the command's whole answer: what went wrong
        outcome = RetrainOutcome("failed", f"{type(exc).__name__}: {exc}")
    print(json.dumps({"state": outcome.state, "message": outcome.message,
                      "version": outcome.version, "checks": outcome.checks}))  # fmt: skip
    log(f"{outcome.state}: {outcome.message}")
    return EXIT[outcome.state]


if __name__ == "__main__":
    sys.exit(main())
