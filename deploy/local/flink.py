"""The local stack's Flink standalone cluster: its configuration, classpath, processes and REST
API."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from common.settings import Settings
from deploy.flink_run import (
    JOB_SCRIPT,
    LIVE_JOB_STATES,
    Submission,
    SubmitError,
    flatten_config,
    flink_home,
    java_binary,
    root_cause,
)
from deploy.flink_run import submit as submit_job
from deploy.local.helpers import (
    HERE,
    StackError,
    cmdline,
    descendants,
    end_processes,
    log,
    process_alive,
    wait_for,
)

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
        java_opts = flatten_config(base).get("env.java.opts.all", "")
        merged = deep_merge(base, overrides)
        # Keep the package's --add-opens flags and add ours.
        extra = flatten_config(overrides).get("env.java.opts.all", "")
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

    def start(self, timeout_s: float = 120) -> None:
        """Start what of the cluster is missing: all of it when none of its processes runs;
        else only a JobManager that is gone and the TaskManagers that are (a second JobManager
        beside a live one finds its ports taken, and would outlive `stop`)."""
        procs = self.processes()
        jobmanagers, taskmanagers = procs["jobmanager"], procs["taskmanager"]
        if not jobmanagers and not taskmanagers and self.running():
            # Not ours (another state folder's, or started by hand): leave it be.
            log(f"Flink cluster already running, web UI {self.s.flink_rest_url}")
            return
        if not (self.conf_dir / "config.yaml").exists() or not (jobmanagers or taskmanagers):
            self.write_conf()
            self.write_lib()
        wanted = self.taskmanagers_wanted()
        missing = max(0, wanted - len(taskmanagers))
        if jobmanagers:
            # A JobManager that is just starting answers within a few seconds.
            try:
                wait_for("Flink's REST API", lambda: self.overview() is not None, 60, self.log_dir)
            except StackError as exc:
                pids = ", ".join(map(str, jobmanagers))
                raise StackError(
                    f"Flink's JobManager runs (pid {pids}) but its REST API at "
                    f"{self.s.flink_rest_url} does not answer: {exc}. `make stop` ends it."
                ) from exc
            if not missing:
                log(f"Flink cluster already running, web UI {self.s.flink_rest_url}")
                return
        before = self.taskmanager_ids()
        self.forget_dead_pids()
        if not jobmanagers and not taskmanagers:
            log(f"starting Flink standalone cluster (web UI {self.s.flink_rest_url})")
        elif not jobmanagers:
            log(f"starting Flink's JobManager ({len(taskmanagers)} TaskManager(s) still run)")
        else:
            log(
                f"Flink's JobManager runs (pid {jobmanagers[0]}); starting {missing} TaskManager(s)"
            )
        if not jobmanagers:
            self.start_daemon("jobmanager")
        for _ in range(missing):
            self.start_daemon("taskmanager")

        def registered() -> bool:
            ids = self.taskmanager_ids()
            return bool(ids) and len(ids - before) >= missing

        wait_for("Flink cluster", registered, timeout_s, self.log_dir)

    def stop(self, timeout_s: float = 30) -> None:
        """Stop every process of the cluster: the ones its pid files name and any other Flink
        process running with its configuration folder (e.g. a second JobManager that an older
        `up` started); SIGTERM, then SIGKILL what still runs after ``timeout_s``."""
        procs = self.processes()
        pids = [*procs["taskmanager"], *procs["jobmanager"]]
        killed = end_processes(pids, timeout_s) if pids else []
        for pid_file in self.pid_files():
            pid_file.unlink(missing_ok=True)
        left = self.stray_python_workers()
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        ended = f" ({len(left)} stray Python worker processes ended)" if left else ""
        if not pids:
            log(f"Flink cluster not running{ended}")
            return
        forced = f", {len(killed)} of them killed after {timeout_s:.0f} s" if killed else ""
        count = f"{len(pids)} process{'' if len(pids) == 1 else 'es'}"
        log(f"Flink cluster stopped ({count}{forced}){ended}")

    def stray_python_workers(self) -> list[int]:
        """Python UDF workers of this installation whose TaskManager is gone (their parent is
        init): a TaskManager stopped while a job ran can leave them behind. Workers of another
        cluster (another configuration folder in their environment) are left alone."""
        runner = str(self.home / "bin" / "pyflink-udf-runner.sh").encode()
        ours = f"FLINK_CONF_DIR={self.conf_dir}".encode()
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                command = (proc / "cmdline").read_bytes()
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if runner in command and ppid == 1:
                with contextlib.suppress(OSError):
                    environ = (proc / "environ").read_bytes().split(b"\0")
                    conf = [v for v in environ if v.startswith(b"FLINK_CONF_DIR=")]
                    if conf and conf[0] != ours:
                        continue
                found.append(int(proc.name))
        # and their children (the worker itself, its log tee)
        return found + [kid for pid in found for kid in descendants(pid)]

    # --- processes, for operators and fault-injection tests -------------------------------------
    DAEMONS = {"jobmanager": "standalonesession", "taskmanager": "taskexecutor"}
    # The class each daemon's JVM runs (flink-daemon.sh).
    MAIN_CLASSES = {
        "jobmanager": "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
        "taskmanager": "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
    }

    def pid_files(self, daemon: str | None = None) -> list[Path]:
        """flink-daemon.sh's pid files of the cluster (FLINK_PID_DIR), one pid per line."""
        kinds = [self.DAEMONS[daemon]] if daemon else list(self.DAEMONS.values())
        return [f for kind in kinds for f in sorted(self.root.glob(f"flink-*-{kind}.pid"))]

    def processes(self) -> dict[str, list[int]]:
        """Live JobManager and TaskManager processes of the cluster: the pids its pid files
        name (if that process is still such a daemon) and every Flink daemon process whose
        configuration folder is this cluster's, also one whose pid file line is gone."""
        found: dict[str, set[int]] = {daemon: set() for daemon in self.DAEMONS}
        for daemon in self.DAEMONS:
            for pid_file in self.pid_files(daemon):
                with contextlib.suppress(OSError):
                    for word in pid_file.read_text().split():
                        if word.isdigit() and self.MAIN_CLASSES[daemon] in cmdline(int(word)):
                            found[daemon].add(int(word))
        conf_dir = self.conf_dir.resolve()
        for proc in Path("/proc").glob("[0-9]*"):
            args = cmdline(int(proc.name))
            daemon = next((d for d, c in self.MAIN_CLASSES.items() if c in args), None)
            if daemon and config_dir(args, proc / "cwd") == conf_dir:
                found[daemon].add(int(proc.name))
        return {
            daemon: sorted(p for p in pids if process_alive(p)) for daemon, pids in found.items()
        }

    def pids(self, daemon: str) -> list[int]:
        """Live pids of the cluster's JobManager or TaskManager processes."""
        return self.processes()[daemon]

    def taskmanagers_wanted(self) -> int:
        """TaskManagers the cluster runs: one per line of its workers file (start-cluster.sh)."""
        workers = self.conf_dir / "workers"
        if not workers.exists():
            workers = self.home / "conf" / "workers"
        lines = [line.strip() for line in workers.read_text().splitlines()]
        return max(1, sum(1 for line in lines if line and not line.startswith("#")))

    def taskmanager_ids(self) -> set[str]:
        """The TaskManagers registered with the JobManager (none if it does not answer)."""
        try:
            return {tm["id"] for tm in self.rest("/taskmanagers", timeout=2)["taskmanagers"]}
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return set()

    def forget_dead_pids(self) -> None:
        """Drop the pids of processes that are gone from the pid files (flink-daemon.sh
        numbers a new daemon's log file by the lines of its pid file)."""
        procs = self.processes()
        for daemon in self.DAEMONS:
            live = set(procs[daemon])
            for pid_file in self.pid_files(daemon):
                with contextlib.suppress(OSError):
                    kept = [
                        w for w in pid_file.read_text().split() if w.isdigit() and int(w) in live
                    ]
                    if kept:
                        pid_file.write_text("".join(f"{pid}\n" for pid in kept))
                    else:
                        pid_file.unlink()

    def start_daemon(self, daemon: str) -> None:
        """Start one more JobManager or TaskManager process (e.g. after one died)."""
        env = {**self.env(), "FLINK_LIB_DIR": str(self.lib_dir)}
        if daemon == "taskmanager":
            env["FLINK_ENV_JAVA_OPTS_TM"] = self.taskmanager_java_opts()
        subprocess.run(
            [str(self.home / "bin" / f"{daemon}.sh"), "start"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def taskmanager_java_opts(self) -> str:
        """The TaskManager's JVM options (config.yaml's env.java.opts.taskmanager) with its
        class-data archive (Java's dynamic CDS): the classes a TaskManager loaded (Flink's
        runtime, the connectors, Beam and the Python operators), mapped by the next one
        instead of loaded again, so that a cold TaskManager runs its first job sooner: first
        row 12.3-13.4 s against 14.0-14.8 s after `make up` (scoring on), 10.7-11.3 against
        11.6-11.7 s (scoring off; three cold starts each, 1M events, 10k devices).

        The archive is named after the java, the options and every jar of the cluster's lib
        folder (path, size, time), so a rebuilt jar or an upgrade makes a new one. Without
        it, this TaskManager writes its classes to a file of its own when it exits (`make
        stop`); the next start takes the first such file as the archive and removes the
        others (a TaskManager killed while writing leaves a file Java refuses with a
        warning, never loads)."""
        import hashlib

        config = flatten_config(yaml.safe_load((self.conf_dir / "config.yaml").read_text()) or {})
        opts = config.get("env.java.opts.taskmanager", "")
        java = java_binary()
        stamps = [opts, str(java.resolve())]
        with contextlib.suppress(OSError):
            stamps.append(str(java.resolve().stat().st_mtime_ns))
        for jar in sorted(self.lib_dir.glob("*.jar")):
            with contextlib.suppress(OSError):
                stat = jar.resolve().stat()
                stamps.append(f"{jar.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        key = hashlib.sha256("|".join(stamps).encode()).hexdigest()[:12]
        folder = self.root / "class-archives"
        archive = folder / f"taskmanager-{key}.jsa"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            dumps = sorted(folder.glob(f"taskmanager-{key}.*.dump"))
            if not archive.exists() and dumps:
                os.replace(dumps.pop(0), archive)
            for stale in folder.iterdir():
                if stale != archive and (stale.suffix == ".jsa" or stale in dumps):
                    stale.unlink(missing_ok=True)
        except OSError:
            return opts
        if archive.exists():
            return f"{opts} -XX:SharedArchiveFile={archive}".strip()
        dump = folder / f"taskmanager-{key}.{os.getpid()}-{time.monotonic_ns()}.dump"
        return f"{opts} -XX:ArchiveClassesAtExit={dump}".strip()

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

    def watermarks(self, job_id: str) -> dict[str, int | None]:
        """Each vertex's current input watermark (the lowest of its subtasks', ms; None before
        the first), keyed by the vertex's name, as the web UI's Watermarks tab shows them.
        The web UI fetches metrics every few seconds: this waits up to 15 s for them."""
        vertices = self.rest(f"/jobs/{job_id}")["vertices"]
        marks: dict[str, list] = {}
        deadline = time.monotonic() + 15
        while True:
            for vertex in vertices:
                got = self.rest(f"/jobs/{job_id}/vertices/{vertex['id']}/watermarks")
                if got:
                    marks[vertex["name"]] = [int(float(m["value"])) for m in got]
            if len(marks) == len(vertices) or time.monotonic() > deadline:
                break
            time.sleep(1)
        lowest = {name: min(marks.get(name, [None])) for name in (v["name"] for v in vertices)}
        return {n: None if ms is None or ms < -(2**62) else ms for n, ms in lowest.items()}

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

    def wait_restored(self, job_id: str, timeout_s: float = 120) -> None:
        """Wait until every task of a job (just submitted from a savepoint) runs: each has
        restored its state and opened. A state the new plan's operators cannot read (another
        row type in an OVER's state, say) fails on the TaskManager after the submission
        succeeded, and the job restarts again and again: raise StackError with the cause."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.rest(f"/jobs/{job_id}")
            entries = self.rest(f"/jobs/{job_id}/exceptions").get("exceptionHistory", {})
            state = restore_state(job, entries.get("entries", []))
            if state == "restored":
                return
            if state != "waiting":
                raise StackError(state)
            if time.monotonic() > deadline:
                raise StackError(f"job {job_id}'s tasks not all running after {timeout_s:.0f} s")
            time.sleep(1)

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


def config_dir(args: list[str], cwd: Path) -> Path | None:
    """The folder a Flink daemon's command line names with --configDir, resolved against its
    working directory ``cwd``; None if it names none."""
    try:
        given = args[args.index("--configDir") + 1]
    except (ValueError, IndexError):
        return None
    with contextlib.suppress(OSError):
        return (cwd.resolve() / given).resolve()
    return None


def newest_entry(entries: list[dict]) -> dict:
    """The newest of Flink's exception history entries ({} for none)."""
    return max(entries, key=lambda e: e.get("timestamp", 0), default={})


def entry_cause(entry: dict) -> str:
    """An exception history entry's root cause, on one line."""
    return root_cause(entry.get("stacktrace") or entry.get("exceptionName") or "")


def restore_state(job: dict, entries: list[dict]) -> str:
    """Of a job submitted from a savepoint (Flink's /jobs/<id> and its exception history):
    "restored" once every task runs (a task restores its state before it runs), "waiting"
    before, else what failed."""
    if entries or job.get("state") not in ("CREATED", "INITIALIZING", "RUNNING"):
        cause = entry_cause(newest_entry(entries))
        return f"job {job.get('jid')} is {job.get('state')}: {cause}"
    tasks = [v.get("tasks") or {} for v in job.get("vertices") or []]
    done = [t.get("RUNNING", 0) + t.get("FINISHED", 0) for t in tasks]
    if tasks and all(d > 0 and d == sum(t.values()) for d, t in zip(done, tasks, strict=True)):
        return "restored"
    return "waiting"


def failure_summary(entries: list[dict], now_ms: float, total: int | None) -> str:
    """``entries``: Flink's exception history, one per failure (each but a final one is
    followed by a restart); ``total``: the job's numRestarts metric."""
    recent = sum(1 for e in entries if now_ms - e.get("timestamp", 0) <= 3_600_000)
    since = "" if total is None else f", {total} restarts since it started"
    if not entries:
        return f"failures: none in the last hour{since}"
    newest = newest_entry(entries)
    age_s = max(0.0, (now_ms - newest.get("timestamp", now_ms)) / 1000)
    return (
        f"failures: {recent} in the last hour{since}; newest {age_s:.0f} s ago: "
        f"{entry_cause(newest)}"
    )


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
