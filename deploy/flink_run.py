"""Submit the scoring job to a Flink cluster with `flink run`: the local stack, or a remote one.

    python -m deploy.flink_run --jobmanager flink.example.net:8081 --parallelism 2
    python -m deploy.flink_run --jobmanager flink.example.net:8081 --ship \\
        --python-exec /usr/bin/python3.11
    python -m deploy.flink_run --attached -- --bounded    # wait for the job's end

Two ways to get the job's Python code to the cluster:

* **Prebuilt image** (default; deploy/docker/Dockerfile): the JobManager and TaskManagers run an
  image with the project, its pinned Python packages and the connector jars at the same paths
  as the client. The workers run ``--python-exec`` (default: this interpreter, which is the
  image's and the local stack's) and follow the shared models folder's CURRENT pointer, so a
  new model rolls out without a resubmission.
* **--ship**: the cluster has Python 3.11 with the pinned packages, but not the project. The
  project's packages go along with ``-pyfs`` and the model version with ``-pyarch``; the
  workers score with that version until the job is resubmitted (a new model rolls out with
  stop-with-savepoint and a resubmission, as `make upgrade` does).

Settings (addresses, topics, tables) are the ``ANOMALY_*`` environment of this process; the
job's client plans the job here, so Kafka, PostgreSQL and the models folder must be reachable
from where this runs. Passwords travel in the environment, never on the command line.
Everything after ``--`` goes to the job (jobs/score_telemetry.py), e.g. ``-- --bounded``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.settings import REPO_ROOT, Settings

JOB_SCRIPT = REPO_ROOT / "jobs" / "score_telemetry.py"
# What the Python workers import (the UDFs and what they use) and the client reads (SQL,
# catalogues): shipped with -pyfs in --ship mode.
SHIPPED_PACKAGES = ("common", "udfs", "jobs", "simulator")
SHIPPED_DATA = ("sql", "catalogues")
# The name the shipped model version is extracted under in each worker's working directory.
SHIPPED_MODEL_NAME = "anomaly_model"
_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")
# What the JobManager says when a savepoint's state does not fit the submitted plan.
_UNMAPPED_STATE = "Cannot map checkpoint/savepoint state for operator"
# A job in one of these states runs, or is about to.
LIVE_JOB_STATES = ("CREATED", "INITIALIZING", "RUNNING", "RESTARTING")
# A job in one of these states has ended (SUSPENDED: its JobManager gave it up).
TERMINAL_JOB_STATES = ("FINISHED", "FAILED", "CANCELED", "SUSPENDED")
# How long --attached waits for the job to end, by default.
ATTACHED_TIMEOUT_S = 3600.0
# Options of the `flink run` client's JVM (see submit).
CLIENT_JVM_ARGS = "-XX:TieredStopAtLevel=1"


class SubmitError(RuntimeError):
    """`flink run` could not submit the job; the message says why and what to do."""


def flink_home() -> Path:
    """The Flink distribution the client uses: the pyflink package's (same version as the
    cluster's image, both from pyproject.toml)."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def tool_classpath(jar: Path) -> str:
    """The class path of the project's own JVM tools run outside a cluster (jvm/ FormatCheck,
    FormatBench): the client's Flink jars (flink-json among them) and ``jar``."""
    return ":".join(str(j) for j in [*sorted((flink_home() / "lib").glob("*.jar")), jar])


@dataclass
class Submission:
    """One `flink run` of the scoring job."""

    jobmanager: str
    parallelism: int | None = None
    python_exec: str = sys.executable
    ship: bool = False
    model_dir: Path | None = None
    from_savepoint: str | None = None
    detached: bool = True
    job_args: list[str] = field(default_factory=list)
    flink_bin: Path | None = None
    # The job's script: the scoring job, or another entry point (the bench's bare engine).
    script: Path = JOB_SCRIPT

    def command(self, staging: Path | None = None, launcher: list[str] | None = None) -> list[str]:
        """The `flink run` command line; ``staging`` holds the archives of --ship mode;
        ``launcher`` (client_launcher) starts the client in place of the `flink` script."""
        cmd = [*(launcher or [str(self.flink_bin or flink_home() / "bin" / "flink")]), "run"]
        if self.detached:
            cmd.append("--detached")
        cmd += ["--jobmanager", rest_address(self.jobmanager)]
        if self.parallelism:
            cmd += ["--parallelism", str(self.parallelism)]
        if self.from_savepoint:
            cmd += ["--fromSavepoint", str(self.from_savepoint)]
        # The workers' interpreter; the client's is this one (the job plans here).
        cmd += ["-pyexec", self.python_exec, "-pyclientexec", sys.executable]
        job_args = list(self.job_args)
        if self.ship:
            if staging is None:
                raise ValueError("--ship needs a staging folder for its archives")
            cmd += ["-pyfs", str(staging / "project.zip")]
            cmd += ["-pyarch", f"{staging / 'model.zip'}#{SHIPPED_MODEL_NAME}"]
            job_args += ["--shipped-model", SHIPPED_MODEL_NAME]
        if self.model_dir is not None:
            job_args += ["--model-dir", str(self.model_dir)]
        return [*cmd, "--python", str(self.script), *job_args]


def stage_project(target: Path) -> Path:
    """project.zip: the packages the workers import and the SQL the client renders, at the
    top level of the archive (it goes on the workers' PYTHONPATH)."""
    path = target / "project.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for top in (*SHIPPED_PACKAGES, *SHIPPED_DATA):
            for f in sorted((REPO_ROOT / top).rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc":
                    zf.write(f, f.relative_to(REPO_ROOT).as_posix())
    return path


def stage_model(model_dir: Path, target: Path) -> Path:
    """model.zip: one model version folder's files, extracted on every worker."""
    path = target / "model.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(model_dir.iterdir()):
            if f.is_file():
                zf.write(f, f.name)
    return path


def client_lib_dir(settings: Settings) -> Path | None:
    """The `flink run` client's lib folder (FLINK_LIB_DIR): pyflink's, with Flink's table
    planner itself (pom-deps.txt's `client:` jar, fetched into <jars>/client/ by `make
    setup`) in place of flink-table-planner-loader. The loader unpacks the planner into a
    temporary folder at every start and loads it through a classloader of its own, whose
    classes the class-data archive (client_class_archive) cannot hold; from the classpath,
    they are archived with the rest: 11.9 s against 13.0 s to "submitted" on average, faster
    in each of 5 alternating pairs. None, for pyflink's own lib, where the planner jar of the
    installed Flink version is missing or the state folder cannot be written."""
    from importlib.metadata import version

    flink = version("apache-flink")
    planner = settings.jars_dir / "client" / f"flink-table-planner_2.12-{flink}.jar"
    if not planner.is_file():
        return None
    jars = [
        jar
        for jar in sorted((flink_home() / "lib").glob("*.jar"))
        if not jar.name.startswith("flink-table-planner-loader")
    ]
    jars.append(planner)
    folder = settings.state_dir / "flink-client" / f"lib-{flink}"
    try:
        if sorted(p.resolve() for p in folder.glob("*.jar")) != sorted(j.resolve() for j in jars):
            # Whole or not at all, also when two clients make it at once.
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".lib-", dir=folder.parent))
            for jar in jars:
                (staging / jar.name).symlink_to(jar.resolve())
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(staging, folder)
    except OSError:
        return None
    return folder


def java_binary() -> Path:
    """The java a Flink script started here runs: JAVA_HOME's, else the first on PATH."""
    home = os.environ.get("JAVA_HOME")
    return Path(home, "bin", "java") if home else Path(shutil.which("java") or "java")


def client_class_archive(
    settings: Settings, lib: Path | None = None, launcher: str = "script"
) -> tuple[Path | None, Path | None]:
    """The class-data archive of the `flink run` client (Java's dynamic CDS): the classes one
    client loaded, mapped by the next instead of loaded again; 18.1 s against 21.2 s to
    "submitted" (3 alternating pairs). Returns (archive, None) when it exists, else (archive,
    a file of this client's own to dump its classes to at exit); (None, None) where the state
    folder cannot be written. The name follows the Java and PyFlink installed and the client's
    lib folder ``lib`` (None: pyflink's) and ``launcher`` (what starts the JVM: "script", or
    "direct" for client_launcher, whose class path may be ordered otherwise), so an upgrade
    makes a new one (a stale archive is only ignored, with a warning of the JVM's)."""
    import hashlib
    from importlib.metadata import version

    java = java_binary()
    try:
        stamp = f"{java.resolve()}:{java.resolve().stat().st_mtime_ns}"
        key = hashlib.sha256(f"{stamp}|{version('apache-flink')}|{lib or ''}|{launcher}".encode())
        key = key.hexdigest()[:12]
        folder = settings.state_dir / "flink-client"
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None, None
    archive = folder / f"classes-{key}.jsa"
    if archive.exists():
        return archive, None
    return archive, folder / f".classes-{key}-{os.getpid()}-{time.monotonic_ns()}.jsa"


def flatten_config(tree: dict, prefix: str = "") -> dict[str, str]:
    """A config.yaml's nested keys as Flink's flat ones ("env.java.opts.all"), values as text."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flatten_config(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def _java_feature(java: Path) -> int | None:
    """The feature release (17, 21) of the java at ``java``, from its home's ``release``
    file; None if that cannot be read."""
    try:
        release = java.resolve().parent.parent / "release"
        found = re.search(r'^JAVA_VERSION="(\d+)', release.read_text(), re.M)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def client_launcher(env: dict[str, str]) -> tuple[list[str], dict[str, str]] | None:
    """What pyflink's `bin/flink` script runs, without the script: (the java command line up
    to CliFrontend, the variables it exports). The script starts two JVMs of its own first
    (one to flatten config.yaml, one to ask java its version): 1.1 s against 0.4 s for
    `flink --version` here. Read the same way: FLINK_CONF_DIR's config.yaml (env.java.home,
    env.java.default-opts.all, env.java.opts.all, env.java.opts.client, env.log.dir,
    env.log.max, env.log.level), FLINK_LIB_DIR's jars (flink-dist last), the variables the
    script takes over it (JAVA_HOME, FLINK_ENV_JAVA_OPTS, FLINK_ENV_JAVA_OPTS_CLI,
    FLINK_LOG_DIR, FLINK_IDENT_STRING, HOSTNAME, MAX_LOG_FILE_NUMBER, ROOT_LOG_LEVEL).
    None where any of it cannot be read, or Hadoop or HBase is set up (their class paths and
    configuration folders join the script's class path): the script, then. (The script's
    class path also ends in empty entries, the working folder to java; this one does not.)"""
    import socket

    import yaml

    hadoop = ("HADOOP_CLASSPATH", "HADOOP_CONF_DIR", "HADOOP_HOME", "YARN_CONF_DIR")
    hbase = ("HBASE_CONF_DIR", "HBASE_HOME")
    if any(env.get(name) for name in (*hadoop, *hbase)) or any(
        Path(folder).is_dir() for folder in ("/etc/hadoop/conf", "/etc/hbase/conf")
    ):
        return None
    home = flink_home()
    conf = Path(env.get("FLINK_CONF_DIR") or home / "conf")
    lib = Path(env.get("FLINK_LIB_DIR") or home / "lib")
    try:
        config = flatten_config(yaml.safe_load((conf / "config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    jars = sorted(str(p) for p in lib.glob("*.jar") if p.is_file())
    dist = [j for j in jars if re.fullmatch(r"flink-dist[^/]*\.jar", Path(j).name)]
    if len(dist) != 1:
        return None  # the script says what is wrong
    java_home = config.get("env.java.home") or env.get("JAVA_HOME")
    if java_home and Path(java_home).is_dir():
        java = Path(java_home, "bin", "java")
    else:
        found = shutil.which("java", path=env.get("PATH"))
        if not found:
            return None
        java = Path(found)
    feature = _java_feature(java)
    if feature is None:
        return None

    def unquote(text: str) -> str:
        return text.removeprefix('"').removesuffix('"')

    opts = env.get("FLINK_ENV_JAVA_OPTS")
    if not opts:
        chosen = config.get("env.java.opts.all") or config.get("env.java.opts", "")
        opts = "-XX:+IgnoreUnrecognizedVMOptions " + unquote(
            f"{config.get('env.java.default-opts.all', '')} {chosen}"
        )
        if feature > 17:
            opts += " -Djava.security.manager=allow"
    cli_opts = env.get("FLINK_ENV_JAVA_OPTS_CLI") or unquote(config.get("env.java.opts.client", ""))
    log_dir = env.get("FLINK_LOG_DIR") or config.get("env.log.dir") or str(home / "log")
    ident = env.get("FLINK_IDENT_STRING") or env.get("USER", "")
    host = env.get("HOSTNAME") or socket.gethostname()
    log4j = f"file:{conf}/log4j-cli.properties"
    command = [
        str(java),
        *env.get("JVM_ARGS", "").split(),
        *opts.split(),
        *cli_opts.split(),
        f"-Dlog.file={log_dir}/flink-{ident}-client-{host}.log",
        f"-Dlog4j.configuration={log4j}",
        f"-Dlog4j.configurationFile={log4j}",
        f"-Dlogback.configurationFile=file:{conf}/logback.xml",
        "-classpath",
        ":".join([j for j in jars if j not in dist] + dist),
        "org.apache.flink.client.cli.CliFrontend",
    ]
    exported = {
        "FLINK_CONF_DIR": str(conf),
        "FLINK_BIN_DIR": str(home / "bin"),
        "FLINK_PLUGINS_DIR": env.get("FLINK_PLUGINS_DIR") or str(home / "plugins"),
        "FLINK_LIB_DIR": str(lib),
        "FLINK_OPT_DIR": env.get("FLINK_OPT_DIR") or str(home / "opt"),
        "MAX_LOG_FILE_NUMBER": env.get("MAX_LOG_FILE_NUMBER") or config.get("env.log.max", "10"),
        "ROOT_LOG_LEVEL": env.get("ROOT_LOG_LEVEL") or config.get("env.log.level", "INFO"),
    }
    return command, exported


def submit(submission: Submission, settings: Settings, env: dict[str, str] | None = None) -> str:
    """Run `flink run`; returns the id of the submitted job (detached) or of the job that ran
    (attached). Raises SubmitError with the CLI's last lines when it fails."""
    from common.models import resolve_model_dir

    run_env = dict(os.environ)
    run_env.update(env or {})
    if submission.parallelism:
        # The job sets parallelism.default from its settings (common/flink_env.py), which
        # would override `flink run -p`: both say the same.
        run_env["ANOMALY_PARALLELISM"] = str(submission.parallelism)
    run_env.setdefault("PYFLINK_CLIENT_EXECUTABLE", sys.executable)
    # The client's JVM plans the job once and exits: the quick compiler alone (no C2) gets it
    # submitted sooner, 19.9 s against 22.6 s on average (5 alternating pairs of submissions
    # of the job, this 2-core machine); so does an archive of the classes it loaded last time
    # (below). JVM_ARGS given by the user come after, so they win.
    # A lib folder given (FLINK_LIB_DIR) or another Flink (--flink-bin) is used as it is.
    lib = None
    if submission.flink_bin is None and not run_env.get("FLINK_LIB_DIR"):
        lib = client_lib_dir(settings)
    if lib is not None:
        run_env["FLINK_LIB_DIR"] = str(lib)
    launcher_kind = "script" if submission.flink_bin else "direct"
    archive, dump = client_class_archive(settings, lib, launcher_kind)
    if archive is None:
        sharing = ""
    elif dump is None:
        sharing = f"-XX:SharedArchiveFile={archive}"
    else:
        sharing = f"-XX:ArchiveClassesAtExit={dump}"
    run_env["JVM_ARGS"] = " ".join(
        filter(None, [CLIENT_JVM_ARGS, sharing, run_env.get("JVM_ARGS")])
    )
    try:
        jobs_overview(submission.jobmanager)  # the REST API answers
    except (OSError, ValueError) as exc:
        raise SubmitError(
            f"cannot reach the JobManager at {submission.jobmanager} ({exc}): is the "
            "JobManager's REST address right and reachable from here?"
        ) from exc
    staging = Path(tempfile.mkdtemp(prefix="flink-run-")) if submission.ship else None
    proc: subprocess.CompletedProcess | None = None
    try:
        if staging is not None:
            # The version shipped: the one given, else CURRENT at submission time.
            model_dir = resolve_model_dir(settings, submission.model_dir)
            submission = dataclasses.replace(submission, model_dir=model_dir)
            stage_project(staging)
            stage_model(model_dir, staging)
        launcher = None if submission.flink_bin else client_launcher(run_env)
        if launcher is not None:
            run_env.update(launcher[1])
        cmd = submission.command(staging, launcher[0] if launcher else None)
        proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True, cwd=REPO_ROOT)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if dump is not None and dump.exists():
            # Whole or not at all, also when two clients dump at once.
            if proc is not None and proc.returncode == 0:
                os.replace(dump, archive)
            else:
                dump.unlink()
    output = proc.stdout + proc.stderr
    match = _JOB_ID.search(output)
    if proc.returncode != 0 and _UNMAPPED_STATE in output and submission.from_savepoint:
        # Flink's --allowNonRestoredState is no way on for this job: its incidents' OVERs
        # came back half-restored (one's state mapped, the other's not), and the job failed
        # on a NULL incident start.
        raise SubmitError(
            f"the savepoint {submission.from_savepoint} holds state of an operator this job's "
            "plan does not have: the job's code, settings or catalogue changed its plan since "
            "the savepoint was taken, and its state cannot move over. Either run the version "
            "that took it (and its settings) from it, or start this one without -s: it reads "
            "the topic again from its earliest offset and writes the same windows over."
        )
    if proc.returncode != 0 or not match:
        tail = "\n".join(output.splitlines()[-30:])
        if "Traceback" in output or "ProgramAbortException" in output:
            why = "the job's client stopped with the error below"
        else:
            why = "is the JobManager's REST address right and reachable from here?"
        raise SubmitError(
            f"`flink run` against {submission.jobmanager} failed (exit {proc.returncode}); "
            f"{why}\n{tail}"
        )
    return match.group(1)


def rest_address(jobmanager: str) -> str:
    """host:port of a JobManager given as host:port or http://host:port/."""
    return jobmanager.removeprefix("http://").rstrip("/")


def rest_get(jobmanager: str, path: str):
    """GET ``path`` of a JobManager's REST API, decoded; raises OSError when it does not
    answer."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://{rest_address(jobmanager)}{path}", timeout=10) as resp:
        return json.load(resp)


def jobs_overview(jobmanager: str) -> list[dict]:
    """The cluster's jobs (GET /jobs/overview); raises OSError when it does not answer."""
    return rest_get(jobmanager, "/jobs/overview").get("jobs", [])


def running_job(jobmanager: str, name: str) -> str | None:
    """The id of a job called ``name`` the cluster runs (or is starting), else None."""
    live = (j for j in jobs_overview(jobmanager) if j["state"] in LIVE_JOB_STATES)
    return next((j["jid"] for j in live if j["name"] == name), None)


def job_state(jobmanager: str, job_id: str) -> str:
    """A job's state (GET /jobs/<id>); raises OSError when the REST API does not answer."""
    return rest_get(jobmanager, f"/jobs/{job_id}")["state"]


def wait_for_end(
    poll: Callable[[], str],
    timeout_s: float,
    interval_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_change: Callable[[str], None] = lambda state: None,
) -> tuple[str, bool]:
    """Poll a job's state until it is terminal or ``timeout_s`` has passed: (the last state
    seen, whether it is terminal). ``poll`` raising OSError (the REST API does not answer for a
    moment, e.g. a JobManager restarting) counts as no answer; ``on_change`` hears each new
    state."""
    deadline = clock() + timeout_s
    state = "UNKNOWN"
    while True:
        try:
            seen = poll()
        except (OSError, ValueError, KeyError):
            seen = state
        if seen != state:
            state = seen
            on_change(state)
        if state in TERMINAL_JOB_STATES:
            return state, True
        if clock() >= deadline:
            return state, False
        sleep(max(0.0, min(interval_s, deadline - clock())))


def wait_attached(
    jobmanager: str,
    job_id: str,
    timeout_s: float,
    poll: Callable[[], str] | None = None,
    **wait_options,
) -> int:
    """--attached: wait for the job to end and say how; the exit code (0: FINISHED).
    ``wait_options``: wait_for_end's interval, clock and sleep."""
    print(f"flink_run: waiting up to {timeout_s:.0f} s for job {job_id} to end", flush=True)
    state, ended = wait_for_end(
        poll or (lambda: job_state(jobmanager, job_id)),
        timeout_s,
        on_change=lambda s: print(f"flink_run: job {job_id} is {s}", flush=True),
        **wait_options,
    )
    if not ended:
        print(
            f"flink_run: job {job_id} still {state} after {timeout_s:.0f} s; it keeps running "
            f"(cancel it with `flink cancel -m {rest_address(jobmanager)} {job_id}`)",
            file=sys.stderr,
        )
        return 1
    if state != "FINISHED":
        cause = failure_cause(jobmanager, job_id) if state == "FAILED" else ""
        print(f"flink_run: job {job_id} ended {state}{cause}", file=sys.stderr)
        return 1
    print(f"flink_run: job {job_id} ended FINISHED")
    return 0


def failure_cause(jobmanager: str, job_id: str) -> str:
    """': <the newest failure's root cause>' from the job's exception history, or ''."""
    try:
        entries = rest_get(jobmanager, f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
        newest = max(entries, key=lambda e: e.get("timestamp", 0))
    except (OSError, ValueError, KeyError):
        return ""
    return f": {root_cause(newest.get('stacktrace') or newest.get('exceptionName', ''))}"


def root_cause(stacktrace: str, width: int = 200) -> str:
    """The innermost cause of a Java stack trace, on one line."""
    lines = [line.strip() for line in stacktrace.splitlines() if line.strip()]
    causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by:")]
    cause = causes[-1] if causes else (lines[0] if lines else "(no stack trace)")
    return cause if len(cause) <= width else cause[: width - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    job_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, job_args = argv[:cut], argv[cut + 1 :]
    settings = Settings.from_env()
    p = argparse.ArgumentParser(
        prog="python -m deploy.flink_run",
        description=__doc__.splitlines()[0],
        epilog="Arguments after -- go to jobs/score_telemetry.py (e.g. -- --bounded).",
    )
    p.add_argument(
        "-m",
        "--jobmanager",
        default=settings.flink_rest_url,
        help="the JobManager's REST address, host:port (default ANOMALY_FLINK_REST_URL, "
        "%(default)s)",
    )
    p.add_argument(
        "-p",
        "--parallelism",
        type=int,
        help="the job's parallelism (default ANOMALY_PARALLELISM, %(default)s)",
        default=settings.parallelism,
    )
    p.add_argument(
        "--python-exec",
        default=sys.executable,
        help="the Python 3.11 the TaskManagers run the UDF workers with (default: this one)",
    )
    p.add_argument(
        "--ship",
        action="store_true",
        help="ship the project's code (-pyfs) and the model version (-pyarch) with the job",
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        help="score with this model version folder (default: CURRENT; without --ship the "
        "job follows CURRENT while it runs)",
    )
    p.add_argument("-s", "--from-savepoint", help="start from this savepoint or checkpoint")
    p.add_argument(
        "--attached",
        action="store_true",
        help="wait for the job to end (bounded runs): exit 0 if it FINISHED, 1 if it FAILED or "
        "was CANCELED, or is still running after --timeout",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=ATTACHED_TIMEOUT_S,
        metavar="SECONDS",
        help="with --attached: how long to wait for the job to end (default %(default).0f s; "
        "the job keeps running after)",
    )
    p.add_argument("--flink-bin", type=Path, help="the `flink` CLI (default: pyflink's)")
    p.add_argument(
        "--if-not-running",
        action="store_true",
        help="do nothing when the cluster already runs a job of this name (ANOMALY_JOB_NAME)",
    )
    a = p.parse_args(argv)
    if a.parallelism is not None and a.parallelism < 1:
        p.error("--parallelism must be at least 1")
    if a.timeout <= 0:
        p.error("--timeout must be more than 0 seconds")
    submission = Submission(
        jobmanager=a.jobmanager,
        parallelism=a.parallelism,
        python_exec=a.python_exec,
        ship=a.ship,
        model_dir=a.model_dir,
        from_savepoint=a.from_savepoint,
        detached=not a.attached,
        job_args=job_args,
        flink_bin=a.flink_bin,
    )
    if a.if_not_running:
        try:
            existing = running_job(submission.jobmanager, settings.job_name)
        except OSError as exc:
            print(f"flink_run: cannot reach {submission.jobmanager}: {exc}", file=sys.stderr)
            return 1
        if existing:
            print(f"flink_run: {settings.job_name} already runs as job {existing}; not submitted")
            return 0
    mode = "shipping code and model" if a.ship else "code from the cluster's image"
    print(f"flink_run: submitting {settings.job_name} to {submission.jobmanager} ({mode})")
    try:
        job_id = submit(submission, settings)
    except (SubmitError, FileNotFoundError) as exc:
        print(f"flink_run: {exc}", file=sys.stderr)
        return 1
    web = f"http://{rest_address(submission.jobmanager)}"
    print(f"flink_run: job {job_id} submitted; web UI {web}/#/job/running/{job_id}/overview")
    if not a.attached:
        return 0
    return wait_attached(submission.jobmanager, job_id, a.timeout)


if __name__ == "__main__":
    sys.exit(main())
