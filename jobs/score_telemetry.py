"""The streaming job: Kafka telemetry -> window features (Flink SQL) -> ONNX score -> PostgreSQL.

Submit to a cluster:   flink run -pyexec .venv/bin/python -py jobs/score_telemetry.py
Run in-process:        python -m jobs.score_telemetry --bounded --wait

Settings come from ANOMALY_* environment variables (common/settings.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# `flink run -py jobs/score_telemetry.py` runs this file as a script; make the project's
# packages importable even where it is not pip-installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyflink.table import TableEnvironment, TableResult

from common.features import MODEL_FEATURE_NAMES
from common.models import resolve_model_dir
from common.settings import Settings
from common.sql import render, strip_comments
from udfs.onnx_scorer import ModelCardError, OnnxModel, score_window_udf


def register_features(t_env: TableEnvironment, settings: Settings, *, bounded: bool) -> None:
    """Declare the Kafka source and the window-feature view."""
    bounded_option = "'scan.bounded.mode' = 'latest-offset'," if bounded else ""
    t_env.execute_sql(
        strip_comments(render("flink/events_kafka.sql", settings, bounded_option=bounded_option))
    )
    t_env.execute_sql(strip_comments(render("flink/window_features.sql", settings)))


def register_scoring(t_env: TableEnvironment, settings: Settings, model_dir: Path) -> None:
    """Register the scoring UDF (model loads in the worker's open()) and the JDBC sink."""
    # Load the model here too, before submitting: a model that does not fit this job (other
    # features or window) is refused at `flink run` time with the reason, instead of failing
    # in every TaskManager restart.
    OnnxModel.load(model_dir, MODEL_FEATURE_NAMES, settings.window_seconds)
    t_env.create_temporary_function(
        "score_window",
        score_window_udf(model_dir, MODEL_FEATURE_NAMES, settings.window_seconds),
    )
    t_env.execute_sql(
        strip_comments(
            render(
                "flink/scores_jdbc.sql",
                settings,
                pg_user=settings.pg_user,
                pg_password=settings.pg_password,
            )
        )
    )


def run(settings: Settings, *, bounded: bool, model_dir: Path | None = None) -> TableResult:
    from common.flink_env import create_table_env

    model_dir = resolve_model_dir(settings, model_dir)
    t_env = create_table_env(settings, streaming=True)
    config = t_env.get_config()
    if bounded:
        # Replays and tests: fail at once with the real exception.
        config.set("restart-strategy.type", "none")
    else:
        # The endless job rides out transient failures (a database restart, a broker blip),
        # backing off up to a minute between attempts; the web UI counts the restarts.
        config.set("restart-strategy.type", "exponential-delay")
        config.set("restart-strategy.exponential-delay.max-backoff", "60 s")
    register_features(t_env, settings, bounded=bounded)
    register_scoring(t_env, settings, model_dir)
    return t_env.execute_sql(strip_comments(render("flink/insert_scores.sql", settings)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bounded",
        action="store_true",
        help="stop at the Kafka offsets that are latest at start (tests, replays)",
    )
    parser.add_argument("--model-dir", type=Path, help="model version folder (default: CURRENT)")
    parser.add_argument(
        "--wait", action="store_true", help="block until the job ends (in-process runs)"
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    try:
        result = run(settings, bounded=args.bounded, model_dir=args.model_dir)
    except (ModelCardError, FileNotFoundError) as exc:
        print(f"score_telemetry: not submitted: {exc}", file=sys.stderr)
        return 2
    client = result.get_job_client()
    if client is not None:
        print(f"submitted job {client.get_job_id()} ({settings.job_name})", flush=True)
    if args.wait:
        result.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
