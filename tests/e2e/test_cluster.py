"""Cluster deployment on the real local stack: the remote submission script shipping code and
model, the one-shot init of a fresh database and topic, and every query of the job-health
dashboard on a real Prometheus scraping Flink's reporters."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import uuid

import pytest

from common.settings import REPO_ROOT
from tests.conftest import FIGURES
from tests.e2e.test_pipeline import assert_rows_exact, produce_events
from tests.pipeline import count_rows, fetch_scores, job_env, wait_for_state
from tests.prometheus import empty_queries, instant_query, prometheus, scrape_ok, unanswered

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def run_module(module: str, args: list[str], env: dict[str, str], timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_remote_submission_ships_code_and_model(stack, fresh_topic, fresh_db, trained, tmp_path):
    """`python -m deploy.flink_run --ship` as against a remote cluster: the project's code goes
    with -pyfs, the model version with -pyarch, and the workers load the model from the
    archive (a path relative to their working directory, which exists nowhere else)."""
    from deploy.local.stack import Flink

    events = produce_events(stack, fresh_topic, ticks=120, seed=21)
    model = shutil.copytree(trained[0].model_dir, tmp_path / "elsewhere" / trained[2]["version"])
    env = job_env(fresh_db, fresh_topic)
    jobmanager = stack.flink_rest_url.removeprefix("http://")
    proc = run_module(
        "deploy.flink_run",
        [
            *("--jobmanager", jobmanager, "--parallelism", "2"),
            *("--ship", "--model-dir", str(model), "--", "--bounded"),
        ],
        env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = re.search(r"job ([0-9a-f]{32}) submitted", proc.stdout).group(1)
    shutil.rmtree(model)  # the workers must not need the client's copy
    flink = Flink(stack)
    job = wait_for_state(flink, job_id, ("FINISHED", "FAILED", "CANCELED"), 240)
    assert job["state"] == "FINISHED", flink.rest(f"/jobs/{job_id}/exceptions")
    parallelism = {v["name"]: v["parallelism"] for v in job["vertices"]}
    scoring = [name for name in parallelism if "PythonCalc" in name]
    assert scoring and all(parallelism[name] == 2 for name in scoring), parallelism
    rows = fetch_scores(fresh_db)
    assert set(rows["model_version"]) == {trained[2]["version"]}
    assert_rows_exact(rows, events, trained)
    FIGURES["e2e flink_run --ship (parallelism 2)"] = (
        f"{len(events):,} events -> {len(rows):,} rows in {job['duration'] / 1000:.1f} s job time"
    )


def test_init_prepares_roles_schema_topic_and_fleet_idempotently(stack, trained):
    from confluent_kafka.admin import AdminClient
    from psycopg2 import sql

    from common.db import applied_versions, connect, pending
    from deploy.local.stack import Postgres

    tag = uuid.uuid4().hex[:8]
    owner, database = f"init_owner_{tag}", f"init_{tag}"
    settings = stack.replace(
        pg_user=owner,
        pg_password=secrets.token_urlsafe(16),
        pg_database=database,
        pg_writer_user=f"init_writer_{tag}",
        pg_writer_password=secrets.token_urlsafe(16),
        pg_reader_user=f"init_reader_{tag}",
        pg_reader_password=secrets.token_urlsafe(16),
        events_topic=f"init-{tag}",
        models_dir=trained[1].models_dir,
    )
    postgres = Postgres(stack)
    admin = postgres.admin_connection()
    admin.autocommit = True
    with admin.cursor() as cur:  # as a database image's owner: may create roles
        cur.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD %s").format(sql.Identifier(owner)),
            (settings.pg_password,),
        )
        cur.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(database), sql.Identifier(owner)
            )
        )
    env = {
        f"ANOMALY_{name.upper()}": str(getattr(settings, name))
        for name in (
            "pg_user",
            "pg_password",
            "pg_database",
            "pg_writer_user",
            "pg_writer_password",
            "pg_reader_user",
            "pg_reader_password",
            "events_topic",
            "models_dir",
            "retention_days",  # the session's (the policies' text depends on them)
            "raw_events_retention_days",
        )
    }
    try:
        first = run_module("deploy.init", ["--fleet", "7", "--train-if-missing"], env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"topic {settings.events_topic}: created" in first.stdout
        assert "model ready" in first.stdout and "applied migration" in first.stdout
        assert pending(settings) == [] and len(applied_versions(settings)) >= 10
        assert count_rows(settings, settings.devices_table) == 7
        topics = AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(timeout=10)
        partitions = topics.topics[settings.events_topic].partitions
        assert len(partitions) == settings.events_topic_partitions
        # The roles log in with their passwords and may do what the grants say.
        for role in ("writer", "reader"):
            conn = connect(settings, role=role)
            with conn, conn.cursor() as cur:
                cur.execute(f"SELECT count(*) FROM {settings.devices_table}")  # noqa: S608
                assert cur.fetchone()[0] == 7
            conn.close()
        again = run_module("deploy.init", ["--fleet", "7"], env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"topic {settings.events_topic}: exists" in again.stdout
        assert "applied migration" not in again.stdout
        assert count_rows(settings, settings.devices_table) == 7
        # Without the right to create roles, init says what is wrong and what to do.
        denied = run_module(
            "deploy.init", [], {**env, "ANOMALY_PG_USER": stack.pg_user,
                                "ANOMALY_PG_PASSWORD": stack.pg_password},
        )  # fmt: skip
        assert denied.returncode == 1
        assert "may not create the roles" in denied.stderr and "CREATEROLE" in denied.stderr
    finally:
        postgres.drop_database(database)
        with admin.cursor() as cur:
            for role in (settings.pg_writer_user, settings.pg_reader_user, owner):
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.close()


# --- Prometheus metrics ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="make setup installs prometheus")
def test_every_job_health_query_answers_on_a_real_prometheus(
    stack, fresh_topic, fresh_db, trained, tmp_path
):
    """Flink's reporter, scraped by a real Prometheus, gives every query of the job-health
    dashboard a series while the job runs (PromQL syntax, metric names and labels)."""
    from deploy.local.stack import Flink

    if not scrape_ok():
        pytest.skip("the running stack was started without ANOMALY_FLINK_PROMETHEUS=on")
    check = subprocess.run(
        ["promtool", "check", "config", str(REPO_ROOT / "deploy/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    flink = Flink(stack)
    env = job_env(fresh_db, fresh_topic, ANOMALY_CHECKPOINT_INTERVAL_SECONDS="2")
    job_id = flink.submit(["--model-dir", str(trained[0].model_dir)], env=env)
    with prometheus(tmp_path) as url:
        try:
            wait_for_state(flink, job_id, ("RUNNING",), 120)
            produce_events(stack, fresh_topic, ticks=60, seed=23)
            empty = unanswered(
                url,
                env["ANOMALY_JOB_NAME"],
                False,
                120,
                ready=lambda: count_rows(fresh_db, fresh_db.scores_table) > 0,
            )
            assert not empty, empty
            # The check can fail: another job's name, or a metric Flink does not have.
            assert empty_queries(url, "no_such_job", one_metric=False)
            assert not instant_query(url, "flink_jobmanager_no_such_metric")
            # While it runs, the submitter's --if-not-running leaves it alone.
            proc = run_module("deploy.flink_run", ["--if-not-running"], env)
            assert proc.returncode == 0, proc.stderr
            assert f"already runs as job {job_id}; not submitted" in proc.stdout
            assert [j["jid"] for j in flink.running_jobs(env["ANOMALY_JOB_NAME"])] == [job_id]
        finally:
            flink.cancel(job_id)
    proc = run_module("deploy.flink_run", ["--jobmanager", "127.0.0.1:1"], env, timeout=120)
    assert proc.returncode == 1 and "is the JobManager's REST address right" in proc.stderr
