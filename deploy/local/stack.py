"""The embedded local stack: PostgreSQL, Apache Kafka (KRaft), a Flink standalone cluster.

  python -m deploy.local.stack up        start what is not running (idempotent)
  python -m deploy.local.stack demo      up + first model + simulator + submit the job
  python -m deploy.local.stack demo-agent
        up + this host's collectd + a second job on its metrics (catalogue host), then a
        first model from the windows it stored (make demo-agent; --windows N, --hostname H)
  python -m deploy.local.stack status    what runs where
  python -m deploy.local.stack train     simulate history and train the demo model (make train)
  python -m deploy.local.stack down      stop everything (data stays under .state/)

Every service listens on 127.0.0.1 only and keeps its data, logs and pid files under the
state folder (ANOMALY_STATE_DIR, default .state/). Installing is deploy/local/setup.sh's job.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from common.settings import ENV_PREFIX, PG_SECRET_FIELDS, REPO_ROOT, Settings
from deploy.flink_run import LIVE_JOB_STATES

# Each service keeps its start, stop and status in its own module (postgres.py, kafka.py,
# flink.py); their names stay importable from here, as before the split.
from deploy.local.agent import Collectd
from deploy.local.alerting import Alertmanager, Inbox, Notifier
from deploy.local.flink import (  # noqa: F401
    PROMETHEUS_REPORTER,
    Flink,
    deep_merge,
    failure_summary,
    root_cause,
)
from deploy.local.helpers import (  # noqa: F401
    HERE,
    StackError,
    descendants,
    log,
    pid_alive,
    port_open,
    spawn,
    stop_pid,
    wait_for,
)
from deploy.local.kafka import KAFKA_LIBS, Kafka  # noqa: F401
from deploy.local.postgres import PG_BIN_GLOB, Postgres  # noqa: F401

# --------------------------------------------------------------------------------------------
# the stack as a whole


def ensure_secrets(settings: Settings) -> Settings:
    """The local stack's PostgreSQL passwords (owner, writer, reader): from the environment,
    else generated once into the secrets file (mode 600)."""
    missing = [name for name in PG_SECRET_FIELDS if not getattr(settings, name)]
    if not missing:
        return settings
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    generated = {name: secrets.token_urlsafe(24) for name in missing}
    fd = os.open(settings.secrets_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        for name, password in generated.items():
            f.write(f"{ENV_PREFIX}{name.upper()}={password}\n")
    log(
        f"generated {len(generated)} PostgreSQL password(s) into {settings.secrets_file} (mode 600)"
    )
    return settings.replace(**generated)


def migrate_or_explain(settings: Settings, postgres_was_running: bool) -> list[str]:
    """Apply the pending migrations; if they fail, a StackError that says what failed and
    what to do (the migration's own message), and that PostgreSQL stays running, with how to
    stop it or carry on."""
    import psycopg2

    from common.db import migrate

    try:
        return migrate(settings)
    except (RuntimeError, psycopg2.Error) as exc:
        who = "it was already running" if postgres_was_running else "started by this command"
        raise StackError(
            f"the database migrations failed.\n{str(exc).strip()}\n"
            f"PostgreSQL is still running on {settings.pg_host}:{settings.pg_port} ({who}); "
            "Kafka and Flink were not started by this command. When the cause is fixed, "
            "`make up` carries on from here; `make stop` stops PostgreSQL and every other "
            "service of the stack."
        ) from exc


def up(settings: Settings) -> Settings:
    from common.kafka_admin import ensure_topic

    began = time.monotonic()
    settings = ensure_secrets(settings)
    postgres = Postgres(settings)
    postgres_was_running = postgres.running()
    postgres.start()
    write_pgpass(settings)
    for version in migrate_or_explain(settings, postgres_was_running):
        log(f"applied database migration {version}")
    Kafka(settings).start()
    if ensure_topic(
        settings.kafka_bootstrap, settings.events_topic, settings.events_topic_partitions
    ):
        log(
            f"created topic {settings.events_topic} ({settings.events_topic_partitions} partitions)"
        )
    Flink(settings).start()
    Inbox(settings).start()
    Alertmanager(settings).start()
    Notifier(settings).start()
    log(f"stack up in {time.monotonic() - began:.1f} s")
    return settings


def down(settings: Settings) -> None:
    flink = Flink(settings)
    for job in flink.running_jobs():
        log(f"cancelling job {job['jid']} ({job['name']})")
        flink.cancel(job["jid"])
    Simulator(settings).stop()
    Collectd(settings).stop()
    Notifier(settings).stop()
    Alertmanager(settings).stop()
    Inbox(settings).stop()
    flink.stop()
    Kafka(settings).stop()
    Postgres(settings).stop()


class Simulator:
    """The demo's endless real-time simulator, as a background process."""

    def __init__(self, settings: Settings):
        self.s = settings
        self.pid_file = settings.state_dir / "simulator.pid"
        self.log_file = settings.state_dir / "logs" / "simulator.log"

    def start(self, args: list[str]) -> None:
        if pid_alive(self.pid_file):
            log(f"simulator already running (log {self.log_file})")
            return
        cmd = [sys.executable, "-m", "simulator", "--realtime", "--progress-s", "30", *args]
        spawn(cmd, self.log_file, self.pid_file)
        log(f"simulator started: {' '.join(args)} (log {self.log_file})")

    def stop(self) -> None:
        if stop_pid("simulator", self.pid_file):
            log("simulator stopped")


DEMO_DEVICES = 100
# Training history and the live stream: the same fleet, different days.
DEMO_HISTORY_SEED = 1
DEMO_LIVE_SEED = 2


def model_unusable(settings: Settings) -> str | None:
    """Why the CURRENT model cannot score this job's features, or None if it can."""
    from common.features import MODEL_FEATURE_NAMES
    from common.models import resolve_model_dir
    from udfs.onnx_scorer import ModelCardError, OnnxModel

    try:
        OnnxModel.load(resolve_model_dir(settings), MODEL_FEATURE_NAMES, settings.window_seconds)
    except FileNotFoundError:
        return "no model yet"
    except ModelCardError as exc:
        return f"the current model does not fit this job ({exc})"
    return None


def train_demo_model(settings: Settings) -> None:
    """Simulate 30 min of mostly clean history for the demo fleet, train on it, make it CURRENT,
    and record its accuracy on a labelled run of the same fleet in its card."""
    dump = settings.state_dir / "training" / "events.jsonl"
    log(f"simulating 30 min of history for {DEMO_DEVICES} devices into {dump}")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "simulator",
            "--devices",
            str(DEMO_DEVICES),
            "--seed",
            str(DEMO_HISTORY_SEED),
            "--anomaly-rate",
            "0.0002",
            "--duration-s",
            "1800",
            "--output",
            "file",
            "--path",
            str(dump),
        ],
        check=True,
        cwd=REPO_ROOT,
    )
    subprocess.run(
        [sys.executable, "-m", "training.train", "--events", str(dump)], check=True, cwd=REPO_ROOT
    )
    log(
        "measuring the new model on a labelled simulator run of the same fleet (figures go "
        "into its card)"
    )
    subprocess.run(
        [sys.executable, "-m", "training.evaluate", "simulator", "--model", "current",
         "--devices", str(DEMO_DEVICES)],
        check=True,
        cwd=REPO_ROOT,
    )  # fmt: skip


def demo(settings: Settings) -> None:

    settings = up(settings)
    reason = model_unusable(settings)
    if reason:
        log(f"{reason}: training one")
        train_demo_model(settings)
    from simulator.devices import write_fleet
    from simulator.generator import SimulatorConfig

    log(f"reference data: {write_fleet(settings, SimulatorConfig(devices=DEMO_DEVICES))}")
    Simulator(settings).start(
        [
            "--devices",
            str(DEMO_DEVICES),
            "--seed",
            str(DEMO_LIVE_SEED),
            "--topic",
            settings.events_topic,
        ]
    )
    flink = Flink(settings)
    existing = flink.running_jobs(settings.job_name)
    if existing:
        job_id = existing[0]["jid"]
        log(f"job {settings.job_name} already running: {job_id}")
    else:
        log("submitting the job with `flink run`")
        job_id = flink.submit([])
    print_guide(settings, job_id)


def upgrade(settings: Settings) -> None:
    """Roll the running job over to the CURRENT model (or new job code) without losing or
    doubling a window: stop it with a savepoint, submit the new version from that savepoint."""
    flink = Flink(settings)
    running = flink.running_jobs(settings.job_name)
    if not running:
        raise StackError(f"no running job named {settings.job_name}: `make demo` starts one")
    old = running[0]["jid"]
    target = settings.state_dir / "flink" / "savepoints"
    log(f"stopping job {old} with a savepoint into {target}")
    began = time.monotonic()
    savepoint = flink.stop_with_savepoint(old, target)
    log(f"savepoint {savepoint}; submitting the new version from it")
    try:
        job_id = flink.submit([], from_savepoint=savepoint)
        try:
            flink.wait_restored(job_id)
        except StackError:
            flink.cancel(job_id)  # else it restarts for good on a state it cannot read
            raise
    except StackError as exc:
        raise StackError(
            f"the old job {old} is stopped and the new version did not start from its "
            f"savepoint {savepoint}: {exc}\n"
            f"  Once the cause is mended: python -m deploy.flink_run -s {savepoint}\n"
            "  A fresh start (the topic read again, the same windows written over): "
            "python -m deploy.flink_run"
        ) from exc
    log(
        f"job {job_id} runs from the savepoint, every task restored "
        f"({time.monotonic() - began:.1f} s switch-over)"
    )


# --------------------------------------------------------------------------------------------
# make demo-agent: this host's collectd through a second job


AGENT_JOB_NAME = "anomaly-agent"
AGENT_CATALOGUE = "host"
# One catalogue, one database: the query layer (views, the metric functions) is rendered from
# the catalogue it is migrated with, so the agent's job writes apart from the demo's.
AGENT_DATABASE = "anomaly_host"
# No new window of the host for this long while waiting: something is wrong, say where to look.
AGENT_STALL_S = 180
AGENT_DEAD_LETTERS_SQL = (
    "SELECT reason, count(*) FROM {table} WHERE source_topic = '{topic}' GROUP BY reason"
)


def agent_env(settings: Settings) -> dict[str, str]:
    """The agent job's settings, as the environment of its submission and of its training."""
    return {
        "ANOMALY_CATALOGUE": AGENT_CATALOGUE,
        "ANOMALY_PG_DATABASE": AGENT_DATABASE,
        "ANOMALY_SOURCES": f"{settings.agent_topic}:collectd",
        "ANOMALY_JOB_NAME": AGENT_JOB_NAME,
        "ANOMALY_KAFKA_GROUP_ID": AGENT_JOB_NAME,
        "ANOMALY_MODELS_DIR": str((settings.state_dir / f"models-{AGENT_CATALOGUE}").resolve()),
    }


def run_agent_python(settings: Settings, args: list[str], what: str) -> str:
    """``python args`` under the agent job's environment; its output, or a StackError that
    quotes it."""
    done = subprocess.run(
        [sys.executable, *args],
        env={**os.environ, **agent_env(settings)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        output = (done.stdout + done.stderr).strip()
        tail = "\n  ".join(output.splitlines()[-20:])
        raise StackError(f"{what} failed (exit {done.returncode}):\n  {tail}")
    return done.stdout


def agent_training_needs(settings: Settings) -> tuple[list[str], int]:
    """The model features of the agent's catalogue and the fewest complete windows training
    fits on (training/train.py), as a process under the agent's environment sees them (the
    catalogue is read at import)."""
    code = (
        "import json\n"
        "from common.features import MODEL_FEATURE_NAMES as f\n"
        "from training.train import windows_needed\n"
        "print(json.dumps([list(f), windows_needed(len(f))]))"
    )
    features, needed = json.loads(
        run_agent_python(settings, ["-c", code], "reading the host catalogue").splitlines()[-1]
    )
    return features, int(needed)


def host_windows(settings: Settings, host: str, features: list[str]) -> dict:
    """The host's windows in the scores table: how many, how many complete (every model
    feature a finite number, as training needs), how many scored, the first and newest."""
    from psycopg2 import sql

    from common.db import connect

    # NaN sorts above 'Infinity' in PostgreSQL: this keeps finite numbers only (not NULL).
    finite = sql.SQL(" AND ").join(
        sql.SQL("{c} > '-Infinity' AND {c} < 'Infinity'").format(c=sql.Identifier(f))
        for f in features
    )
    query = sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE {finite}), count(model_version),"
        " min(window_start), max(window_start) FROM {table} WHERE device_id = %s"
    ).format(finite=finite, table=sql.Identifier(settings.scores_table))
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(query, (host,))
            total, complete, scored, first, newest = cur.fetchone()
    finally:
        conn.close()
    return {
        "total": total,
        "complete": complete,
        "scored": scored,
        "first": first,
        "newest": newest,
    }


def submit_agent_job(settings: Settings, flink: Flink) -> str:
    """The agent job's id: the running one, else a new submission (if the cluster has a free
    slot for it)."""
    existing = flink.running_jobs(AGENT_JOB_NAME)
    if existing:
        log(f"job {AGENT_JOB_NAME} already running: {existing[0]['jid']}")
        return existing[0]["jid"]
    ov = flink.overview() or {}
    free, total = ov.get("slots-available", 0), ov.get("slots-total", 0)
    if free < settings.parallelism:
        others = ", ".join(f"{j['name']} ({j['jid']})" for j in flink.running_jobs()) or "none"
        raise StackError(
            f"the Flink cluster has {free} free task slot(s) of {total}: the agent job needs "
            f"{settings.parallelism}. Running jobs: {others}. Cancel one in the web UI "
            f"({settings.flink_rest_url}), or `make stop` (stops everything), then run "
            "`make demo-agent` again; or give the TaskManager more slots "
            "(taskmanager.numberOfTaskSlots in deploy/local/flink-config.yaml)."
        )
    log(
        f"submitting job {AGENT_JOB_NAME} with `flink run` (catalogue {AGENT_CATALOGUE}, "
        f"sources {settings.agent_topic}:collectd; {free}/{total} slots free)"
    )
    job_id = flink.submit([], env=agent_env(settings))
    wait_agent_job_running(flink, job_id)
    return job_id


def wait_agent_job_running(flink: Flink, job_id: str, timeout_s: float = 120) -> None:
    """Until every task of the job runs; a StackError if it fails or waits for slots."""
    deadline = time.monotonic() + timeout_s
    waiting: list[str] = []
    while time.monotonic() < deadline:
        job = flink.rest(f"/jobs/{job_id}")
        if job.get("state") in ("FAILED", "CANCELED", "FINISHED"):
            raise StackError(
                f"job {AGENT_JOB_NAME} ({job_id}) is {job['state']}: "
                f"{flink.failure_summary(job_id)}"
            )
        waiting = [v["name"] for v in job.get("vertices", []) if v.get("status") != "RUNNING"]
        if job.get("state") == "RUNNING" and not waiting:
            log(f"job {AGENT_JOB_NAME} running: {job_id}")
            return
        time.sleep(1)
    ov = flink.overview() or {}
    raise StackError(
        f"job {AGENT_JOB_NAME} ({job_id}) has tasks not running after {timeout_s:.0f} s "
        f"({len(waiting)} waiting; {ov.get('slots-available', '?')}/"
        f"{ov.get('slots-total', '?')} slots free): if it waits for a task slot, cancel "
        f"another job in the web UI ({flink.s.flink_rest_url}); else see its exceptions there"
    )


def wait_for_host_windows(
    settings: Settings, flink: Flink, job_id: str, host: str, features: list[str], wanted: int
) -> dict:
    """Until the scores table holds ``wanted`` complete windows of the host; progress lines
    as they come. A StackError if the job stops or no window comes for AGENT_STALL_S."""
    log(
        f"waiting for {wanted} complete {settings.window_seconds} s windows of host {host} "
        f"(about {wanted * settings.window_seconds // 60} min from the first); Ctrl-C leaves "
        "collectd and the job running, `make demo-agent` again carries on"
    )
    last_total, last_change, last_print = -1, time.monotonic(), 0.0
    while True:
        seen = host_windows(settings, host, features)
        now = time.monotonic()
        if seen["total"] != last_total:
            last_total, last_change = seen["total"], now
        if seen["complete"] >= wanted:
            log(f"{seen['complete']} complete windows of host {host}: enough to train")
            return seen
        if now - last_print >= 15:
            last_print = now
            newest = seen["newest"].strftime("%H:%M:%S %Z") if seen["newest"] else "none yet"
            left_s = (wanted - seen["complete"]) * settings.window_seconds
            log(
                f"windows of host {host}: {seen['total']} stored, {seen['complete']} complete "
                f"of {wanted} wanted (newest {newest}; about {left_s // 60} min {left_s % 60} s "
                "to go)"
            )
        if not flink.running_jobs(AGENT_JOB_NAME):
            raise StackError(
                f"job {AGENT_JOB_NAME} ({job_id}) stopped running: {flink.failure_summary(job_id)}"
            )
        if now - last_change > AGENT_STALL_S:
            raise StackError(
                f"no new window of host {host} in {settings.scores_table} for "
                f"{AGENT_STALL_S} s although job {job_id} runs. Look at: `make status` "
                f"(collectd, the job's failures), the topic (`python -m deploy.local.agent "
                f"status`), the job's dead letters ({psql_command(settings)} -c \""
                + AGENT_DEAD_LETTERS_SQL.format(
                    table=settings.dead_letters_table, topic=settings.agent_topic
                )
                + f'"), the web UI {settings.flink_rest_url}'
            )
        time.sleep(5)


def train_agent_model(settings: Settings, since: datetime) -> str:
    """`python -m training.train --postgres` under the agent's environment, from ``since``;
    the version it made CURRENT in the agent's models folder."""
    from common.models import current_version

    agent = settings.replace(models_dir=Path(agent_env(settings)["ANOMALY_MODELS_DIR"]))
    since_text = since.isoformat()
    log(f"training a model on the windows stored since {since_text} (training.train --postgres)")
    output = run_agent_python(
        settings,
        ["-m", "training.train", "--postgres", "--since", since_text],
        "training the agent's model",
    )
    for line in output.splitlines():
        if line.startswith("training:"):
            log(line)
    version = current_version(agent)
    if version is None:
        raise StackError(f"training wrote no CURRENT pointer into {agent.models_dir}")
    return version


def demo_agent(settings: Settings, hostname: str | None = None, windows: int | None = None):
    """`make demo-agent`: the stack, collectd on this host, the agent job (catalogue host,
    database AGENT_DATABASE) on its topic, and, once it has stored enough windows of this host
    (``windows``, default what training needs), a first model."""
    from common.models import current_version

    settings = up(settings)
    env = agent_env(settings)
    db = settings.replace(pg_database=AGENT_DATABASE)
    Postgres(db).ensure_database()
    for line in run_agent_python(
        settings, ["-m", "common.db", "migrate"], f"the migrations of database {AGENT_DATABASE}"
    ).splitlines():
        if line.startswith("applied "):
            log(f"{line} (database {AGENT_DATABASE}, catalogue {AGENT_CATALOGUE})")
    collectd = Collectd(settings, hostname=hostname)
    collectd.start()
    host = collectd.running_hostname() or collectd.hostname
    models_dir = Path(env["ANOMALY_MODELS_DIR"])
    models_dir.mkdir(parents=True, exist_ok=True)
    flink = Flink(settings)
    job_id = submit_agent_job(settings, flink)
    version = current_version(settings.replace(models_dir=models_dir))
    features, needed = agent_training_needs(settings)
    if version:
        log(f"model {version} is CURRENT in {models_dir}: the job scores with it")
    else:
        if windows is not None and windows < needed:
            log(
                f"training needs at least {needed} complete windows (2 per model feature, "
                f"training/train.py); waiting for {needed}, not {windows}"
            )
        wanted = max(windows or 0, needed)
        seen = wait_for_host_windows(db, flink, job_id, host, features, wanted)
        version = train_agent_model(settings, seen["first"])
        log(f"model {version} is CURRENT in {models_dir}; the job picks it up within seconds")
        wait_first_scored(db, host, features)
    print_agent_guide(db, job_id, host, version)


def wait_first_scored(settings: Settings, host: str, features: list[str]) -> None:
    """Until the first window of the host carries a score (a note, not an error, if none
    within the time a window, the watermark and a model reload take, and a minute)."""
    timeout_s = settings.window_seconds + settings.watermark_delay_seconds + 60
    timeout_s += settings.model_reload_seconds
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if host_windows(settings, host, features)["scored"]:
            log(f"the first scored windows of host {host} are in {settings.scores_table}")
            return
        time.sleep(3)
    log(
        f"no scored window of host {host} within {timeout_s} s of the model: the job reloads "
        "CURRENT from its models folder (ANOMALY_MODELS_DIR); see its logs in the web UI"
    )


HOST_SCORES_SQL = (
    "SELECT window_start, round(severity::numeric, 1) AS severity, is_anomaly, model_version, "
    "top_metric, round(cpu_user_mean::numeric, 1) AS cpu_user, "
    "round(load1_mean::numeric, 2) AS load1, round((mem_used_mean / 1e6)::numeric) AS mem_mb, "
    "round(net_rx_bytes_mean::numeric) AS lo_rx_bytes_s FROM {table} "
    "WHERE device_id = '{host}' ORDER BY window_start DESC LIMIT 20"
)


def print_agent_guide(settings: Settings, job_id: str, host: str, version: str) -> None:
    env = agent_env(settings)
    query = HOST_SCORES_SQL.format(table=settings.scores_table, host=host)
    retrain = " ".join(f"{k}={v}" for k, v in env.items() if k != "ANOMALY_SOURCES")
    print(
        f"""
The agent pipeline is running: collectd -> Kafka -> job {AGENT_JOB_NAME} -> PostgreSQL.
  Flink web UI   {settings.flink_rest_url}   (job {job_id}, {AGENT_JOB_NAME})
  collectd       host {host}, every {settings.agent_interval_seconds} s -> Kafka \
{settings.kafka_bootstrap} topic {settings.agent_topic}
  model          {version} in {env["ANOMALY_MODELS_DIR"]} (catalogue {AGENT_CATALOGUE})

This host's newest windows and their scores (a window lands about \
{settings.window_seconds + settings.watermark_delay_seconds} s after it closes):
  {psql_command(settings)} -c "{query}"

  python -m deploy.local.agent status    collectd and its topic
  retrain from the newest windows:
    {retrain} \\
      .venv/bin/python -m training.train --postgres --since $(date -u -d '1 hour ago' +%FT%TZ)
  make status    what runs where (the agent job too)
  make stop      stop everything (both jobs, collectd, the services)
""",
        flush=True,
    )


LATEST_SCORES_SQL = (
    "SELECT device_id, window_start, round(severity::numeric, 1) AS severity, is_anomaly, "
    "model_version, top_metric FROM {table} ORDER BY window_start DESC, severity DESC LIMIT 20"
)


def write_pgpass(settings: Settings) -> Path:
    """A libpq password file (mode 600) so that `psql` needs no password on the command line."""
    path = settings.state_dir / "pgpass"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(
            f"{settings.pg_host}:{settings.pg_port}:*:{settings.pg_user}:{settings.pg_password}\n"
        )
    return path


def psql_command(settings: Settings) -> str:
    return (
        f"PGPASSFILE={settings.state_dir / 'pgpass'} psql -h {settings.pg_host} "
        f"-p {settings.pg_port} -U {settings.pg_user} {settings.pg_database}"
    )


def print_guide(settings: Settings, job_id: str) -> None:
    first_rows_s = settings.window_seconds + settings.watermark_delay_seconds
    query = LATEST_SCORES_SQL.format(table=settings.scores_table)
    print(
        f"""
The pipeline is running.
  Flink web UI   {settings.flink_rest_url}   (job {job_id})
  Kafka          {settings.kafka_bootstrap}   topic {settings.events_topic}
  PostgreSQL     {settings.pg_host}:{settings.pg_port}   database {settings.pg_database}

Newest anomaly scores (the first rows land about {first_rows_s} s after the job starts):
  {psql_command(settings)} -c "{query}"

  make psql      an SQL prompt on the results database (views: latest_anomalies,
                 open_incidents, device_health; functions: anomaly_counts, drift_check, ...)
  make api       the HTTP API on http://127.0.0.1:8000/docs
  make plot PLOT_ARGS="--device dev-00003 --metric latency_ms --since 30m"   a PNG report
  make notifications   what Alertmanager ({settings.alertmanager_url}) delivered: one per
                 correlated incident, to the example route's pager and chat (its inbox)
  make status    what runs where
  make stop      stop everything
""",
        flush=True,
    )


def status(settings: Settings) -> int:
    pg, kafka, flink, sim = (
        Postgres(settings),
        Kafka(settings),
        Flink(settings),
        Simulator(settings),
    )

    def line(name: str, ok: bool, where: str) -> None:
        print(f"  {name:<12} {'running' if ok else 'stopped':<8} {where}")

    print("local stack:")
    line("PostgreSQL", pg.running(), f"{settings.pg_host}:{settings.pg_port} (data {pg.data})")
    line("Kafka", kafka.running(), f"{settings.kafka_bootstrap} (data {kafka.data})")
    ov = flink.overview()
    slots = f", {ov['slots-available']}/{ov['slots-total']} slots free" if ov else ""
    line("Flink", bool(ov), f"{settings.flink_rest_url}{slots}")
    line(
        "simulator",
        pid_alive(sim.pid_file) is not None,
        f"-> {settings.events_topic} (log {sim.log_file})",
    )
    collectd = Collectd(settings)
    line(
        "collectd",
        collectd.running(),
        f"-> {settings.agent_topic} as host {collectd.running_hostname() or collectd.hostname}"
        f" (log {collectd.log_file}); make demo-agent",
    )
    am, notifier = Alertmanager(settings), Notifier(settings)
    line("Alertmanager", am.running(), f"{settings.alertmanager_url} (config {am.config})")
    line("notifier", notifier.running(), f"log {notifier.log_file}; make notifications")
    for job in flink.jobs():
        print(f"  job {job['jid']}  {job['state']:<10} {job['name']}")
        if job.get("state") in (*LIVE_JOB_STATES, "FAILED"):
            print(f"      {flink.failure_summary(job['jid'])}")
    if pg.running():
        print_result_counts(settings)
        print_notification_backlog(settings)
    return 0


def print_notification_backlog(settings: Settings) -> None:
    """Notifications Alertmanager has not accepted yet (it was away, or refused them)."""
    from alerting.notifier import backlog

    try:
        pending, error = backlog(settings)
    except Exception as exc:  # status must not fail on a database it cannot read
        print(f"  (notification backlog not readable: {exc})")
        return
    print(f"  {'notifications':<15} {pending} waiting for Alertmanager (backlog)")
    if pending and error:
        print(f"      last error: {error}")


def print_result_counts(settings: Settings) -> None:
    """Rows in the result tables over the last hour: scored windows, flagged windows,
    incidents, and what the job kept aside (dead letters by reason, late events)."""
    from psycopg2 import sql

    from common.db import connect

    try:
        conn = connect(settings)
    except Exception as exc:  # status must not fail on a database it cannot read
        print(f"  (result tables not readable: {exc})")
        return
    hour = sql.SQL("> now() - interval '1 hour'")
    queries = {
        # By when they were written, not by event time: a replay of history counts too.
        "scored windows": sql.SQL(
            "SELECT count(*)::text || ' (' || count(*) FILTER (WHERE is_anomaly) || ' flagged)'"
            " || coalesce(', newest window ' || to_char(max(window_start) AT TIME ZONE 'UTC',"
            " 'YYYY-MM-DD HH24:MI:SS') || ' UTC', '') FROM {} WHERE scored_at {}"
        ).format(sql.Identifier(settings.scores_table), hour),
        "dead letters": sql.SQL(
            "SELECT (SELECT count(*) FROM {table} WHERE broker_time {hour})::text"
            " || coalesce(' (most: ' || string_agg(reason || ' ' || n, ', ' ORDER BY n DESC)"
            " || ')', '') FROM (SELECT reason, count(*) AS n FROM {table}"
            " WHERE broker_time {hour} GROUP BY reason ORDER BY n DESC LIMIT 3) AS r"
        ).format(table=sql.Identifier(settings.dead_letters_table), hour=hour),
        "late events": sql.SQL("SELECT count(*)::text FROM {} WHERE broker_time {}").format(
            sql.Identifier(settings.late_events_table), hour
        ),
        "incidents": sql.SQL(
            "SELECT count(*)::text || ' (' || count(*) FILTER (WHERE status = 'open')"
            " || ' open now)' FROM incident_status WHERE ended_at {}"
        ).format(hour),
    }
    print("last hour:")
    try:
        with conn, conn.cursor() as cur:
            for label, query in queries.items():
                cur.execute(query)
                print(f"  {label:<15} {cur.fetchone()[0]}")
    except Exception as exc:
        print(f"  (result tables not readable: {exc})")
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deploy.local.stack", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "command",
        choices=(
            "up",
            "down",
            "demo",
            "demo-agent",
            "status",
            "migrate",
            "psql",
            "train",
            "upgrade",
        ),
    )
    p.add_argument(
        "--windows",
        type=int,
        help="demo-agent: complete windows of this host to train the first model on "
        "(default and least: what training needs)",
    )
    p.add_argument(
        "--hostname", help="demo-agent: the host name collectd reports (default: this machine's)"
    )
    args = p.parse_args(argv)
    settings = Settings.from_env()
    try:
        if args.command == "up":
            up(settings)
        elif args.command == "demo":
            demo(settings)
        elif args.command == "demo-agent":
            demo_agent(settings, hostname=args.hostname, windows=args.windows)
        elif args.command == "down":
            down(settings)
        elif args.command == "status":
            return status(settings)
        elif args.command == "psql":
            print(psql_command(settings))
        elif args.command == "train":
            train_demo_model(settings)
        elif args.command == "upgrade":
            upgrade(settings)
        elif args.command == "migrate":
            applied = migrate_or_explain(settings, Postgres(settings).running())
            log(f"applied {applied or 'nothing (schema up to date)'}")
    except (StackError, subprocess.CalledProcessError, FileNotFoundError) as exc:
        print(f"[stack] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
