"""The embedded local stack: PostgreSQL, Apache Kafka (KRaft), a Flink standalone cluster.

  python -m deploy.local.stack up        start what is not running (idempotent)
  python -m deploy.local.stack demo      up + first model + simulator + submit the job
  python -m deploy.local.stack status    what runs where
  python -m deploy.local.stack train     simulate history and train the demo model (make train)
  python -m deploy.local.stack down      stop everything (data stays under .state/)

Every service listens on 127.0.0.1 only and keeps its data, logs and pid files under the
state folder (ANOMALY_STATE_DIR, default .state/). Installing is deploy/local/setup.sh's job.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from common.settings import ENV_PREFIX, REPO_ROOT, SECRET_FIELDS, Settings
from deploy.flink_run import JOB_SCRIPT, LIVE_JOB_STATES, Submission, SubmitError, flink_home
from deploy.flink_run import submit as submit_job

HERE = Path(__file__).resolve().parent
KAFKA_LIBS = REPO_ROOT / ".deps" / "kafka" / "libs"
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def log(message: str) -> None:
    print(f"[stack] {message}", flush=True)


class StackError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# small process helpers


def pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    # A zombie is not alive.
    try:
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return None
    except OSError:
        pass
    return pid


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: its children, theirs, and so on."""
    out, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, log_file: Path | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    hint = f"; see {log_file}" if log_file else ""
    raise StackError(f"{what} did not come up within {timeout_s:.0f} s{hint}")


def spawn(cmd: list[str], log_file: Path, pid_file: Path, env: dict | None = None) -> int:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,  # outlives `make`, and a Ctrl-C in the terminal
        )
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def stop_pid(name: str, pid_file: Path, timeout_s: float = 30.0) -> bool:
    pid = pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid_file):
        time.sleep(0.2)
    if pid_alive(pid_file):
        log(f"{name} (pid {pid}) ignored SIGTERM for {timeout_s:.0f} s; killing it")
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


# --------------------------------------------------------------------------------------------
# PostgreSQL


class Postgres:
    def __init__(self, settings: Settings):
        self.s = settings
        self.root = settings.state_dir / "pg"
        self.data = self.root / "data"
        self.run_dir = self.root / "run"
        self.log_file = settings.state_dir / "logs" / "postgresql.log"

    @staticmethod
    def bin_dir() -> Path:
        import glob

        found = sorted(glob.glob(PG_BIN_GLOB))
        if not found:
            raise StackError("PostgreSQL server binaries not found: run `make setup`")
        return Path(found[-1])

    def _as_owner(self, cmd: list[str]) -> list[str]:
        # initdb and postgres refuse to run as root: run them as the `postgres` account.
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def running(self) -> bool:
        return port_open(self.s.pg_host, self.s.pg_port) and (self.data / "postmaster.pid").exists()

    def timescaledb_available(self) -> bool:
        """Whether the server has the TimescaleDB extension installed (it is in no package
        source this stack installs from; where someone installed it, the stack uses it)."""
        if self.s.pg_timescaledb == "off":
            return False
        major = self.bin_dir().parent.name
        return Path(f"/usr/share/postgresql/{major}/extension/timescaledb.control").is_file()

    def start(self) -> None:
        if self.running():
            log(f"PostgreSQL already running on {self.s.pg_host}:{self.s.pg_port}")
        else:
            if port_open(self.s.pg_host, self.s.pg_port):
                raise StackError(
                    f"port {self.s.pg_port} is taken by another program: stop it or set "
                    "ANOMALY_PG_PORT"
                )
            self._init()
            log(f"starting PostgreSQL on {self.s.pg_host}:{self.s.pg_port}")
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self.log_file.touch()
            self._chown(self.log_file)
            options = (
                f"-c listen_addresses={self.s.pg_host} -c port={self.s.pg_port} "
                f"-c unix_socket_directories={self.run_dir}"
            )
            if self.timescaledb_available():
                # The migrations then make hypertables, continuous aggregates and policies.
                # No telemetry: the stack talks to nothing beyond loopback.
                options += (
                    " -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off"
                )
                log("TimescaleDB is installed: loading it (ANOMALY_PG_TIMESCALEDB=off: plain)")
            subprocess.run(
                self._as_owner(
                    [
                        str(self.bin_dir() / "pg_ctl"),
                        "-D",
                        str(self.data),
                        "-l",
                        str(self.log_file),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        "60",
                        "start",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        self._ensure_database()

    def _init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        log(f"initialising a PostgreSQL data directory in {self.data}")
        for d in (self.root, self.data, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
            self._chown(d)
        self.run_dir.chmod(0o700)  # the trusted local socket is reachable by its owner only
        subprocess.run(
            self._as_owner(
                [
                    str(self.bin_dir() / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def admin_connection(self, database: str = "postgres"):
        import psycopg2

        return psycopg2.connect(
            host=str(self.run_dir), port=self.s.pg_port, user="postgres", dbname=database
        )

    def _ensure_database(self) -> None:
        from psycopg2 import sql

        from common.db import ensure_roles

        conn = self.admin_connection()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.s.pg_user,))
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                sql.SQL("{} ROLE {} LOGIN CREATEDB PASSWORD %s").format(
                    sql.SQL(verb), sql.Identifier(self.s.pg_user)
                ),
                (self.s.pg_password,),
            )
            # The job's writer and the read-only reader (passwords from the secrets file).
            ensure_roles(cur, self.s)
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.s.pg_database,))
            if not cur.fetchone():
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(self.s.pg_database), sql.Identifier(self.s.pg_user)
                    )
                )
        conn.close()

    def drop_database(self, name: str) -> None:
        """Drop a database as the server's superuser: TimescaleDB's job scheduler holds a
        connection to every database, which only the superuser may end."""
        from psycopg2 import sql

        conn = self.admin_connection()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        finally:
            conn.close()

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            log("PostgreSQL not running")
            return
        subprocess.run(
            self._as_owner(
                [str(self.bin_dir() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            ),
            check=False,
            stdout=subprocess.DEVNULL,
        )
        log("PostgreSQL stopped")


# --------------------------------------------------------------------------------------------
# Kafka


class Kafka:
    def __init__(self, settings: Settings):
        self.s = settings
        host, _, port = settings.kafka_bootstrap.rpartition(":")
        self.host, self.port = host, int(port)
        self.controller_port = self.port + 1
        self.root = settings.state_dir / "kafka"
        self.data = self.root / "data"
        self.pid_file = self.root / "kafka.pid"
        self.log_file = settings.state_dir / "logs" / "kafka.log"

    def running(self) -> bool:
        return pid_alive(self.pid_file) is not None and port_open(self.host, self.port)

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        if not any(KAFKA_LIBS.glob("kafka_*.jar")):
            raise StackError(f"Kafka broker jars missing in {KAFKA_LIBS}: run `make setup`")
        return [
            "java",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={HERE / 'kafka-log4j2.yaml'}",
            "-cp",
            f"{KAFKA_LIBS}/*",
            main,
            *args,
        ]

    def _properties(self) -> Path:
        text = (HERE / "kafka-server.properties").read_text()
        text = text.format(
            host=self.host, port=self.port, controller_port=self.controller_port, data=self.data
        )
        path = self.root / "server.properties"
        path.write_text(text)
        return path

    def start(self) -> None:
        if self.running():
            log(f"Kafka already running on {self.s.kafka_bootstrap}")
            return
        if port_open(self.host, self.port):
            raise StackError(
                f"port {self.port} is taken by another program: stop it or set "
                "ANOMALY_KAFKA_BOOTSTRAP"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        props = self._properties()
        if not (self.data / "meta.properties").exists():
            log(f"formatting Kafka KRaft storage in {self.data}")
            cluster_id = (
                subprocess.run(
                    self._java("kafka.tools.StorageTool", "random-uuid"),
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props),
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        log(f"starting Kafka (KRaft, single node) on {self.s.kafka_bootstrap}")
        spawn(self._java("kafka.Kafka", str(props), heap="768m"), self.log_file, self.pid_file)
        wait_for("Kafka", lambda: port_open(self.host, self.port), 90, self.log_file)

    def stop(self) -> None:
        if stop_pid("Kafka", self.pid_file, timeout_s=60):
            log("Kafka stopped")
        else:
            log("Kafka not running")


# --------------------------------------------------------------------------------------------
# Flink


# Flink's Prometheus reporter (ANOMALY_FLINK_PROMETHEUS=on): the JobManager takes the first
# free port of the range, each TaskManager the next; the cluster deployments use its first.
PROMETHEUS_REPORTER = {
    "factory": {"class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"},
    "port": "9249-9259",
}


class Flink:
    def __init__(self, settings: Settings):
        self.s = settings
        self.root = settings.state_dir / "flink"
        self.conf_dir = self.root / "conf"
        self.lib_dir = self.root / "lib"
        self.log_dir = settings.state_dir / "logs" / "flink"
        self.home = flink_home()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            FLINK_CONF_DIR=str(self.conf_dir),
            FLINK_LOG_DIR=str(self.log_dir),
            FLINK_PID_DIR=str(self.root),
            PYFLINK_CLIENT_EXECUTABLE=sys.executable,
        )
        return env

    def write_lib(self) -> None:
        """The cluster's classpath: pyflink's lib/, opt/flink-python (the Python operators) and
        the connector jars of pom-deps.txt.

        The TaskManager needs flink-python to run Python UDFs; the pip package keeps it in opt/.
        The connectors sit in lib/ and load parent-first (flink-config.yaml), so every job and
        every restart shares one copy of their classes: loaded per job from the job's jars, they
        filled the TaskManager's metaspace after a dozen submissions. Links in a folder of our
        own leave the installed package untouched.
        """
        if self.lib_dir.exists():
            shutil.rmtree(self.lib_dir)
        self.lib_dir.mkdir(parents=True)
        jars = [
            *(self.home / "lib").glob("*.jar"),
            *(self.home / "opt").glob("flink-python-*.jar"),
            *self.s.jars_dir.glob("*.jar"),
        ]
        for jar in jars:
            (self.lib_dir / jar.name).symlink_to(jar.resolve())

    def write_conf(self) -> None:
        """The package's config.yaml with the local stack's overrides on top."""
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for f in (self.home / "conf").iterdir():
            if f.name != "config.yaml":
                shutil.copy(f, self.conf_dir / f.name)
        base = yaml.safe_load((self.home / "conf" / "config.yaml").read_text()) or {}
        overrides = yaml.safe_load((HERE / "flink-config.yaml").read_text())
        java_opts = base.get("env", {}).get("java", {}).get("opts", {}).get("all", "")
        merged = _deep_merge(base, overrides)
        # Keep the package's --add-opens flags and add ours.
        extra = overrides.get("env", {}).get("java", {}).get("opts", {}).get("all", "")
        merged["env"]["java"]["opts"]["all"] = f"{java_opts} {extra}".strip()
        merged["rest"]["port"] = int(self.s.flink_rest_url.rsplit(":", 1)[1].rstrip("/"))
        merged["python"] = {"executable": sys.executable, "client": {"executable": sys.executable}}
        if self.s.flink_prometheus == "on":
            merged.setdefault("metrics", {})["reporter"] = {"prom": PROMETHEUS_REPORTER}
        (self.conf_dir / "config.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))

    def rest(
        self, path: str, method: str = "GET", timeout: float = 5.0, body: dict | None = None
    ) -> dict:
        """One call of Flink's REST API; ``body`` goes out as JSON."""
        req = urllib.request.Request(
            self.s.flink_rest_url.rstrip("/") + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={} if body is None else {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
        return json.loads(body) if body else {}

    def overview(self) -> dict | None:
        try:
            return self.rest("/overview", timeout=2)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def running(self) -> bool:
        ov = self.overview()
        return bool(ov and ov.get("taskmanagers", 0) >= 1)

    def start(self) -> None:
        if self.running():
            log(f"Flink cluster already running, web UI {self.s.flink_rest_url}")
            return
        self.write_conf()
        self.write_lib()
        log(f"starting Flink standalone cluster (web UI {self.s.flink_rest_url})")
        subprocess.run(
            [str(self.home / "bin" / "start-cluster.sh")],
            env={**self.env(), "FLINK_LIB_DIR": str(self.lib_dir)},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wait_for("Flink cluster", self.running, 120, self.log_dir)

    def stop(self) -> None:
        if not self.running() and not any(self.root.glob("*.pid")):
            log("Flink cluster not running")
            return
        subprocess.run(
            [str(self.home / "bin" / "stop-cluster.sh")],
            env={**self.env(), "FLINK_LIB_DIR": str(self.lib_dir)},
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        left = self.stray_python_workers()
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        ended = f" ({len(left)} stray Python worker processes ended)" if left else ""
        log(f"Flink cluster stopped{ended}")

    def stray_python_workers(self) -> list[int]:
        """Python UDF workers of this installation whose TaskManager is gone (their parent is
        init): a TaskManager stopped while a job ran can leave them behind."""
        runner = str(self.home / "bin" / "pyflink-udf-runner.sh").encode()
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes()
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if runner in cmdline and ppid == 1:
                found.append(int(proc.name))
        # and their children (the worker itself, its log tee)
        return found + [kid for pid in found for kid in descendants(pid)]

    # --- processes, for operators and fault-injection tests -------------------------------------
    DAEMONS = {"jobmanager": "standalonesession", "taskmanager": "taskexecutor"}

    def pids(self, daemon: str) -> list[int]:
        """Live pids of the cluster's JobManager or TaskManager processes."""
        live = []
        for pid_file in self.root.glob(f"flink-*-{self.DAEMONS[daemon]}.pid"):
            for line in pid_file.read_text().split():
                try:
                    os.kill(int(line), 0)
                except (ValueError, ProcessLookupError, PermissionError):
                    continue
                live.append(int(line))
        return live

    def start_daemon(self, daemon: str) -> None:
        """Start one more JobManager or TaskManager process (e.g. after one died)."""
        subprocess.run(
            [str(self.home / "bin" / f"{daemon}.sh"), "start"],
            env={**self.env(), "FLINK_LIB_DIR": str(self.lib_dir)},
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def stop_with_savepoint(self, job_id: str, target: Path, timeout_s: float = 120) -> str:
        """`flink stop`: take a savepoint, then stop the job; returns the savepoint's path.
        Windows still open stay in the savepoint (no drain), for the next job version."""
        trigger = self.rest(
            f"/jobs/{job_id}/stop",
            method="POST",
            timeout=10,
            body={"targetDirectory": target.resolve().as_uri(), "drain": False},
        )["request-id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.rest(f"/jobs/{job_id}/savepoints/{trigger}")
            if status["status"]["id"] == "COMPLETED":
                operation = status["operation"]
                if "failure-cause" in operation:
                    raise StackError(f"savepoint of {job_id} failed: {operation['failure-cause']}")
                return operation["location"]
            time.sleep(0.5)
        raise StackError(f"savepoint of job {job_id} not done within {timeout_s:.0f} s")

    def latest_checkpoint(self, job_id: str) -> Path | None:
        """The newest completed checkpoint a job left in the checkpoint folder (kept when the
        job is cancelled or its JobManager dies), to resubmit from with ``-s``."""
        uri = urllib.parse.urlparse(self.s.checkpoint_uri)
        if uri.scheme != "file":
            raise StackError(f"checkpoints are at {self.s.checkpoint_uri}: list them there")
        folder = Path(urllib.parse.unquote(uri.path)) / job_id
        done = [p for p in folder.glob("chk-*") if (p / "_metadata").exists()]
        return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)

    def jobs(self) -> list[dict]:
        try:
            return self.rest("/jobs/overview").get("jobs", [])
        except (urllib.error.URLError, OSError, ValueError):
            return []

    def running_jobs(self, name: str | None = None) -> list[dict]:
        return [
            j
            for j in self.jobs()
            if j.get("state") in LIVE_JOB_STATES and (name is None or j.get("name") == name)
        ]

    def operator_metric_ids(self, job_id: str, match: Callable[[str], bool]) -> list[tuple]:
        """Where a job's operator metrics whose names ``match`` are read: (the vertex's metrics
        path, the metric names), for each vertex that has any."""
        found = []
        for vertex in self.rest(f"/jobs/{job_id}")["vertices"]:
            base = f"/jobs/{job_id}/vertices/{vertex['id']}/metrics"
            names = [m["id"] for m in self.rest(base) if match(m["id"])]
            if names:
                found.append((base, names))
        return found

    def metric_values(self, base: str, names: list[str]) -> dict[str, float]:
        return {m["id"]: float(m["value"]) for m in self.rest(f"{base}?get={','.join(names)}")}

    def operator_metrics(self, job_id: str, suffixes: tuple[str, ...]) -> dict[str, float]:
        """Current values of a job's operator metrics whose names end with one of ``suffixes``
        (as the web UI lists them under each vertex), keyed by the full metric name."""
        found: dict[str, float] = {}
        for base, names in self.operator_metric_ids(job_id, lambda n: n.endswith(suffixes)):
            found.update(self.metric_values(base, names))
        return found

    def failure_summary(self, job_id: str) -> str:
        """One line on a job's failures: restarts in the last hour and since it started, and
        the newest failure's root cause, so that a crash loop shows without the web UI."""
        try:
            entries = self.rest(f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
            metric = self.rest(f"/jobs/{job_id}/metrics?get=numRestarts")
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            return f"failures: not readable ({exc})"
        total = next((int(float(m["value"])) for m in metric if m.get("id") == "numRestarts"), None)
        return failure_summary(entries, time.time() * 1000, total)

    def cancel(self, job_id: str) -> None:
        self.rest(f"/jobs/{job_id}?mode=cancel", method="PATCH")

    def submit(
        self,
        job_args: list[str],
        env: dict[str, str] | None = None,
        from_savepoint: str | Path | None = None,
        script: Path | None = None,
    ) -> str:
        """`flink run -d` the job (from a savepoint or retained checkpoint if given) with the
        same script a remote cluster is submitted with (deploy/flink_run.py); returns the job
        id Flink prints. ``script``: another entry point than the scoring job."""
        submission = Submission(
            jobmanager=self.s.flink_rest_url,
            from_savepoint=str(from_savepoint) if from_savepoint else None,
            job_args=list(job_args),
            script=script or JOB_SCRIPT,
        )
        try:
            return submit_job(submission, self.s, env={**self.env(), **(env or {})})
        except SubmitError as exc:
            raise StackError(str(exc)) from exc


def root_cause(stacktrace: str, width: int = 200) -> str:
    """The innermost cause of a Java stack trace, on one line."""
    lines = [line.strip() for line in stacktrace.splitlines() if line.strip()]
    causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by:")]
    cause = causes[-1] if causes else (lines[0] if lines else "(no stack trace)")
    return cause if len(cause) <= width else cause[: width - 3] + "..."


def failure_summary(entries: list[dict], now_ms: float, total: int | None) -> str:
    """``entries``: Flink's exception history, one per failure (each but a final one is
    followed by a restart); ``total``: the job's numRestarts metric."""
    recent = sum(1 for e in entries if now_ms - e.get("timestamp", 0) <= 3_600_000)
    since = "" if total is None else f", {total} restarts since it started"
    if not entries:
        return f"failures: none in the last hour{since}"
    newest = max(entries, key=lambda e: e.get("timestamp", 0))
    age_s = max(0.0, (now_ms - newest.get("timestamp", now_ms)) / 1000)
    return (
        f"failures: {recent} in the last hour{since}; newest {age_s:.0f} s ago: "
        f"{root_cause(newest.get('stacktrace') or newest.get('exceptionName', ''))}"
    )


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# the stack as a whole


def ensure_secrets(settings: Settings) -> Settings:
    """The local stack's PostgreSQL passwords (owner, writer, reader): from the environment,
    else generated once into the secrets file (mode 600)."""
    missing = [name for name in SECRET_FIELDS if not getattr(settings, name)]
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
    log(f"stack up in {time.monotonic() - began:.1f} s")
    return settings


def down(settings: Settings) -> None:
    flink = Flink(settings)
    for job in flink.running_jobs():
        log(f"cancelling job {job['jid']} ({job['name']})")
        flink.cancel(job["jid"])
    Simulator(settings).stop()
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
    job_id = flink.submit([], from_savepoint=savepoint)
    log(f"job {job_id} runs from the savepoint ({time.monotonic() - began:.1f} s switch-over)")


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
    for job in flink.jobs():
        print(f"  job {job['jid']}  {job['state']:<10} {job['name']}")
        if job.get("state") in (*LIVE_JOB_STATES, "FAILED"):
            print(f"      {flink.failure_summary(job['jid'])}")
    if pg.running():
        print_result_counts(settings)
    return 0


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
        choices=("up", "down", "demo", "status", "migrate", "psql", "train", "upgrade"),
    )
    args = p.parse_args(argv)
    settings = Settings.from_env()
    try:
        if args.command == "up":
            up(settings)
        elif args.command == "demo":
            demo(settings)
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
