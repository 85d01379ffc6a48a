"""The benchmark (make bench): throughput, latency and memory of the whole pipeline on the local
stack, beside the hand-written consumer loop users would otherwise write.

  python -m bench.pipeline                                   # 5M events, 10k devices
  python -m bench.pipeline --events 1000000 --parallelism 1,2 --devices 1000,10000,100000
  python -m bench.pipeline --events 20000 --devices 100 --realtime-s 20 --rate 2000   # smoke

In one run, on events preloaded into Kafka (simulator, one process, so that none is late):

1. **Throughput**, Kafka -> PostgreSQL, the job bounded over the preloaded topic, for each
   device count and parallelism: scoring off (window features only) and scoring on
   (vectorized pandas UDF); then, on a smaller topic (``--per-row-events``), vectorized
   against per-row scoring (a general UDF, one window per call); and each ``--variant``
   (other settings, e.g. ``raw-events:ANOMALY_RAW_EVENTS=on``). Reported: the steady-state
   rate (the events over the time from the first record the Kafka source read to the job's
   end, when the last row is written: start-up apart), job time, start-up (submission to
   the job running, its first record read, its first row visible in PostgreSQL), windows
   written, the peak memory of the TaskManager JVM and of its Python workers (RSS sampled
   twice a second), the job's state in its largest checkpoint, and the CPU seconds the run
   took in each process of the stack (TaskManager, Python workers, PostgreSQL, Kafka): on a
   machine whose cores they share, what each part costs; of the TaskManager's, those of the
   JVM's JIT compilers and garbage collector.
2. **Latency** in real time: the simulator at a fixed rate (``--rate`` events/s) for
   ``--realtime-s`` seconds into the running job (scoring on); per window, the time its row
   became visible in PostgreSQL (an insert trigger of the scratch table) minus
   the window's end: p50 / p95 / p99 after a warm-up.
3. **Baseline**: a kafka-python consumer loop scoring each event with a pickled scikit-learn
   IsolationForest and inserting into PostgreSQL, on the same events (at most
   ``--baseline-events`` of them).

Prints a table and the ratios, writes everything (with the machine's facts and the settings)
to .state/bench/pipeline.json. Topics and databases are scratch ones, removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common.settings import REPO_ROOT, Settings


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def execute(settings: Settings, statement: str, name: str, params: tuple = ()):
    """Run ``statement`` with ``{}`` as the quoted identifier ``name`` (and ``%s`` bound to
    ``params``); returns its first row (None for statements that return none)."""
    from psycopg2 import sql

    from common.db import connect

    conn = connect(settings)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL(statement).format(sql.Identifier(name)), params or None)
            return cur.fetchone() if cur.description else None
    finally:
        conn.close()


@contextlib.contextmanager
def scratch(settings: Settings, prefix: str):
    """A new topic name and a new migrated database (topic ``<prefix>-<tag>``, database
    ``bench_<tag>``), both removed afterwards."""
    from common.db import migrate
    from common.kafka_admin import delete_topic

    tag = uuid.uuid4().hex[:8]
    topic, database = f"{prefix}-{tag}", f"bench_{tag}"
    execute(settings, "CREATE DATABASE {}", database)
    try:
        migrate(settings.replace(pg_database=database))
        yield topic, database
    finally:
        drop_database(settings, database)
        delete_topic(settings.kafka_bootstrap, topic)


def drop_database(settings: Settings, name: str) -> None:
    """As the local server's superuser where it is the local stack's, else as the owner."""
    from deploy.local.stack import Postgres

    try:
        Postgres(settings).drop_database(name)
    except Exception:  # not the local stack's server
        execute(settings, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


def preload(settings: Settings, topic: str, simulator_args: list[str], what: str) -> float:
    """Fill a new topic with the simulator; returns the seconds it took. One process: two
    would interleave their events in each partition, seconds apart in event time, and make
    a share of them late (how many depends on the run's timing)."""
    from common.kafka_admin import ensure_topic

    ensure_topic(settings.kafka_bootstrap, topic, settings.events_topic_partitions)
    log(f"preloading {what} into topic {topic}")
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "simulator", *simulator_args, "--topic", topic,
         "--processes", "1", "--progress-s", "10"],
        check=True,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.monotonic() - began


POLL_S = 0.5
WARMUP_S = 20.0
SOURCE_RECORDS = "numRecordsOut"
# The source that reads every message once (the job's; the bare engine's).
SOURCE_NAME = "Source__telemetry_source"
BARE_SOURCE_NAME = "Source__telemetry_events"
BARE_SCRIPT = REPO_ROOT / "bench" / "bare_job.py"


# --- processes and their memory ------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def stat_cpu_s(path: str) -> tuple[str, float] | None:
    """The name and CPU seconds (user + system) of the process or thread whose /proc ``stat``
    file this is, None if it is gone."""
    try:
        stat = Path(path).read_text()
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return None
    return name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float | None:
    """The CPU seconds (user + system) process ``pid`` has used, None if it is gone."""
    read = stat_cpu_s(f"/proc/{pid}/stat")
    return read and read[1]


# The TaskManager JVM's own threads, by the start of the name the kernel keeps (15
# characters): its JIT compilers, and its garbage collector's (with the VM thread, which runs
# the collector's pauses). The rest of its CPU is the job's tasks (and Flink's own threads).
JVM_THREADS = {
    "jit": ("C1 CompilerThre", "C2 CompilerThre"),
    "gc": ("GC Thread", "G1 ", "VM Thread"),
}


def jvm_thread_cpu_s(pid: int) -> dict[tuple[int, int], tuple[str, float]]:
    """The CPU seconds each of process ``pid``'s JVM_THREADS has used, by (pid, thread id):
    (its group, seconds)."""
    found = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        if (read := stat_cpu_s(f"/proc/{pid}/task/{tid}/stat")) is None:
            continue
        name, used = read
        group = next((g for g, starts in JVM_THREADS.items() if name.startswith(starts)), None)
        if group:
            found[(pid, int(tid))] = (group, used)
    return found


class CpuMeter:
    """CPU seconds a run takes, per part of the stack, from /proc: each process's use since
    the run began (the processes then, from that figure on; those started since, from 0),
    sampled at each poll, so a process that ends between two polls loses its last half
    second (PostgreSQL's backends of the job's connections, at its end). The parts:
    TaskManagers, their Python workers (both as the poll found them), PostgreSQL (the server
    and its backends), Kafka (the broker). Of the TaskManagers' seconds, those of the JVM's
    JIT compilers and garbage collector (JVM_THREADS) are told apart too (jvm_seconds): a
    profile's samples do not show them."""

    PARTS = ("taskmanager", "python", "postgresql", "kafka")

    def __init__(self, settings: Settings, tms: list[int]):
        self.state = settings.state_dir
        self.first = {
            pid: used for seen in self.read(tms, python_workers(tms)).values()
            for pid, used in seen.items()
        }  # fmt: skip
        self.last: dict[str, dict[int, float]] = {name: {} for name in self.PARTS}
        self.first_threads = {key: v for pid in tms for key, v in jvm_thread_cpu_s(pid).items()}
        self.last_threads: dict[tuple[int, int], tuple[str, float]] = {}

    def parts(self, tms: list[int], workers: list[int]) -> dict[str, list[int]]:
        from deploy.local.helpers import descendants

        def from_pid_file(path: Path, children: bool) -> list[int]:
            try:
                pid = int(path.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                return []
            return [pid, *descendants(pid)] if children else [pid]

        postgresql = from_pid_file(self.state / "pg" / "data" / "postmaster.pid", True)
        kafka = from_pid_file(self.state / "kafka" / "kafka.pid", False)
        return dict(zip(self.PARTS, (tms, workers, postgresql, kafka), strict=True))

    def read(self, tms: list[int], workers: list[int]) -> dict[str, dict[int, float]]:
        """Per part, each live process's CPU seconds so far."""
        return {
            name: {pid: used for pid in pids if (used := cpu_s(pid)) is not None}
            for name, pids in self.parts(tms, workers).items()
        }

    def sample(self, tms: list[int], workers: list[int]) -> None:
        for name, seen in self.read(tms, workers).items():
            self.last[name].update(seen)
        for pid in tms:
            self.last_threads.update(jvm_thread_cpu_s(pid))

    def jvm_seconds(self) -> dict[str, float]:
        """Of the TaskManagers' CPU seconds, the JIT compilers' and the garbage collector's."""
        used = dict.fromkeys(JVM_THREADS, 0.0)
        for key, (group, seconds) in self.last_threads.items():
            used[group] += seconds - self.first_threads.get(key, (group, 0.0))[1]
        return {group: round(seconds, 1) for group, seconds in used.items()}

    def seconds(self) -> dict[str, float]:
        return {
            name: round(sum(used - self.first.get(pid, 0.0) for pid, used in seen.items()), 1)
            for name, seen in self.last.items()
        }


def python_workers(tm_pids: list[int]) -> list[int]:
    """The TaskManagers' Python UDF worker processes."""
    from deploy.local.stack import descendants

    workers = []
    for tm in tm_pids:
        for pid in descendants(tm):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"pyflink.fn_execution" in cmdline:  # not the runner script or its tee
                workers.append(pid)
    return workers


# --- one bounded run ---------------------------------------------------------------------------


@dataclass
class Throughput:
    label: str
    devices: int
    parallelism: int
    scoring: str
    scoring_udf: str
    events: int
    job_s: float = 0.0
    # From the first record read to the job's end.
    running_s: float = 0.0
    steady_events_per_s: float = 0.0
    # Seconds after submission (`flink run` included): the job RUNNING, its first record read,
    # its first row visible in PostgreSQL.
    running_at_s: float | None = None
    first_record_s: float | None = None
    # No poll saw the job running: it ended before `flink run` returned.
    unobserved: bool = False
    first_row_s: float | None = None
    windows: int = 0
    flagged: int = 0
    late_events: int = 0
    raw_rows: int = 0
    tm_rss_peak_mb: float = 0.0
    python_rss_peak_mb: float = 0.0
    python_workers: int = 0
    checkpoint_state_mb: float | None = None
    # CPU seconds per part of the stack (CpuMeter), submission to the job's end.
    cpu_s: dict = field(default_factory=dict)
    # Of the TaskManagers' CPU seconds, its JIT compilers' and garbage collector's.
    tm_jvm_cpu_s: dict = field(default_factory=dict)
    # Settings this run changes (--variant), as ANOMALY_* variables.
    extra_env: dict = field(default_factory=dict)
    topic: str = ""
    # base (the ratios' runs), bare (the bare engine: bench/bare_job.py), variant (--variant),
    # profiled (--profile: slowed by it) or per-row
    role: str = "base"
    profile: dict | None = None
    samples: list = field(default_factory=list, repr=False)


class SourceRecords:
    """Records the job's raw Kafka source has read so far (all its subtasks), from the REST
    API; where the metrics are is looked up once, not on every poll."""

    def __init__(self, flink, job_id: str, source_name: str = SOURCE_NAME):
        self.flink, self.job_id, self.source_name = flink, job_id, source_name
        self.where: list[tuple] = []

    def __call__(self) -> float:
        if not self.where:
            self.where = self.flink.operator_metric_ids(
                self.job_id,
                lambda n: self.source_name in n and n.endswith(f".{SOURCE_RECORDS}"),
            )
        return sum(
            sum(self.flink.metric_values(base, names).values()) for base, names in self.where
        )


def first_row_visible(db: Settings) -> bool:
    row = execute(db, "SELECT EXISTS (SELECT 1 FROM {})", db.scores_table)
    return bool(row and row[0])


def checkpoint_state_mb(flink, job_id: str) -> float | None:
    try:
        latest = flink.rest(f"/jobs/{job_id}/checkpoints")["latest"]["completed"]
    except (KeyError, TypeError, OSError, ValueError):
        return None
    return None if not latest else latest.get("state_size", 0) / 2**20


class Profiler:
    """Profiles the TaskManager and its Python workers for ``seconds`` in the background."""

    def __init__(self, seconds: float, out_dir: Path):
        self.seconds, self.out_dir = seconds, out_dir
        self.result: dict = {}
        self.threads: list[threading.Thread] = []

    def start(self, tm_pids: list[int], workers: list[int]) -> None:
        from bench.profile import profile_jvm, profile_python

        log(f"profiling the TaskManager and {len(workers)} Python worker(s) for {self.seconds} s")

        def jvm() -> None:
            self.result["jvm"] = profile_jvm(tm_pids[0], self.seconds, self.out_dir)

        def python() -> None:
            self.result["python"] = profile_python(workers, self.seconds, self.out_dir)

        self.threads = [threading.Thread(target=f, daemon=True) for f in (jvm, python)]
        for t in self.threads:
            t.start()

    def join(self) -> dict:
        for t in self.threads:
            t.join(self.seconds + 120)
        return self.result


def bounded_run(
    flink,
    settings: Settings,
    topic: str,
    database: str,
    r: Throughput,
    profiler: Profiler | None = None,
) -> Throughput:
    env = {
        "ANOMALY_EVENTS_TOPIC": topic,
        "ANOMALY_PG_DATABASE": database,
        "ANOMALY_SCORING": r.scoring,
        "ANOMALY_SCORING_UDF": r.scoring_udf,
        "ANOMALY_PARALLELISM": str(r.parallelism),
        "ANOMALY_JOB_NAME": "bench-" + r.label.replace(" ", "-"),
        "ANOMALY_KAFKA_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        **r.extra_env,
    }
    r.topic = topic
    db = settings.replace(pg_database=database)
    log(f"{r.label}: the job over {r.events:,} events ({r.devices:,} devices, p={r.parallelism})")
    bare = r.role == "bare"
    cpu = CpuMeter(settings, flink.pids("taskmanager"))
    submitted = time.time()
    if bare:
        job_id = flink.submit([], env=env, script=BARE_SCRIPT)
    else:
        job_id = flink.submit(["--bounded"], env=env)
    source_records = SourceRecords(flink, job_id, BARE_SOURCE_NAME if bare else SOURCE_NAME)
    while True:
        t = time.time() - submitted
        job = flink.rest(f"/jobs/{job_id}")
        tms = flink.pids("taskmanager")
        workers = python_workers(tms)
        cpu.sample(tms, workers)
        if job["state"] in ("FINISHED", "FAILED", "CANCELED"):
            break
        if job["state"] == "RUNNING":
            if r.running_at_s is None:
                r.running_at_s = round(t, 2)
            records = source_records()
            r.samples.append((round(t, 2), records))
            if records and r.first_record_s is None:
                r.first_record_s = round(t, 2)
            if r.first_row_s is None and not bare and first_row_visible(db):
                r.first_row_s = round(t, 2)
            r.tm_rss_peak_mb = max(r.tm_rss_peak_mb, sum(rss_mb(p) for p in tms))
            r.python_workers = max(r.python_workers, len(workers))
            r.python_rss_peak_mb = max(r.python_rss_peak_mb, sum(rss_mb(p) for p in workers))
            if profiler and not profiler.threads and records >= 0.2 * r.events and workers:
                profiler.start(tms, workers)
            state = checkpoint_state_mb(flink, job_id)
            if state is not None:
                r.checkpoint_state_mb = round(max(state, r.checkpoint_state_mb or 0), 1)
        time.sleep(POLL_S)
    if job["state"] != "FINISHED":
        raise RuntimeError(
            f"job {job_id} ended {job['state']}: {flink.rest(f'/jobs/{job_id}/exceptions')}"
        )
    tms = flink.pids("taskmanager")
    if not r.tm_rss_peak_mb:
        # A tiny run can end before `flink run` returns: no poll saw it RUNNING. The
        # TaskManager's size just after it is then the figure (a lower bound of the peak).
        r.tm_rss_peak_mb = sum(rss_mb(p) for p in tms)
    if profiler and profiler.threads:
        r.profile = profiler.join()
    cpu.sample(tms, python_workers(tms))
    r.cpu_s = cpu.seconds()
    r.tm_jvm_cpu_s = cpu.jvm_seconds()
    r.job_s = job["duration"] / 1000
    if r.running_at_s is None and job.get("timestamps", {}).get("RUNNING"):
        # No poll saw it run: `flink run` returned after the job ended (the checkout's first
        # client writes its class archive at exit). RUNNING from the job's own record.
        r.running_at_s = round(job["timestamps"]["RUNNING"] / 1000 - submitted, 2)
        r.unobserved = True
    # Steady state: the events over the time from the first record read (start-up behind)
    # to the job's end, when the last row was written.
    # (A tiny run can end before the REST metrics show a record: then from RUNNING.)
    ended_s = job["end-time"] / 1000 - submitted
    for began_s in (r.first_record_s, r.running_at_s):
        if began_s is not None and ended_s > began_s:
            r.running_s = round(ended_s - began_s, 1)
            r.steady_events_per_s = round(r.events / (ended_s - began_s))
            break
    if bare:  # a blackhole: no rows to count
        log(f"{r.label}: {r.steady_events_per_s:,} events/s steady, job {r.job_s:.1f} s")
        return r
    if r.first_row_s is None and first_row_visible(db):
        # A short bounded run writes its windows at its end, between two polls.
        r.first_row_s = round(ended_s, 2)
    r.windows, r.flagged = execute(
        db, "SELECT count(*), count(*) FILTER (WHERE is_anomaly) FROM {}", settings.scores_table
    )
    (r.late_events,) = execute(db, "SELECT count(*) FROM {}", settings.late_events_table)
    (r.raw_rows,) = execute(db, "SELECT count(*) FROM {}", settings.raw_events_table)
    for table in (
        settings.scores_table,
        settings.late_events_table,
        settings.alerts_table,
        settings.raw_events_table,
    ):
        execute(db, "TRUNCATE {}", table)
    r.tm_rss_peak_mb, r.python_rss_peak_mb = round(r.tm_rss_peak_mb), round(r.python_rss_peak_mb)
    log(
        f"{r.label}: {r.steady_events_per_s:,} events/s steady, job {r.job_s:.1f} s, first row "
        f"after {r.first_row_s} s, {r.windows:,} windows"
    )
    return r


# --- real-time latency ---------------------------------------------------------------------------


def close_windows(settings: Settings, topic: str) -> None:
    """One good event per partition a minute ahead: the watermark passes every window sent so
    far, as if the stream went on (its own window never closes, so it leaves no row)."""
    from confluent_kafka import Producer

    from simulator.generator import SimulatorConfig, TelemetryGenerator

    ahead_ms = int(time.time() * 1000) + 60_000
    (event,) = next(iter(TelemetryGenerator(SimulatorConfig(devices=1)).events(ahead_ms, 1)))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for partition in range(settings.events_topic_partitions):
        sentinel = {**event, "device_id": f"bench-sentinel-{partition}", "ts_ms": ahead_ms}
        producer.produce(topic, json.dumps(sentinel).encode(), partition=partition)
    if producer.flush(30):
        raise RuntimeError("latency: the closing events were not delivered")


def latency_run(
    flink, settings: Settings, rate: int, seconds: float, devices: int, warmup_s: float
) -> dict:
    """The job on a live topic, events at ``rate`` per second; when each window's row became
    visible in PostgreSQL, minus the window's end."""
    with scratch(settings, "bench-latency") as (topic, database):
        from common.kafka_admin import ensure_topic

        ensure_topic(settings.kafka_bootstrap, topic, settings.events_topic_partitions)
        db = settings.replace(pg_database=database)
        # When each row became visible: a column the scratch table's insert trigger fills
        # (a volatile default is refused by a compressed TimescaleDB hypertable).
        execute(db, "ALTER TABLE {} ADD COLUMN visible_at timestamptz", settings.scores_table)
        execute(
            db,
            "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN NEW.visible_at := clock_timestamp(); RETURN NEW; END $$",
            "bench_visible_at",
        )
        execute(
            db,
            "CREATE TRIGGER bench_visible_at BEFORE INSERT ON {} FOR EACH ROW"
            " EXECUTE FUNCTION bench_visible_at()",
            settings.scores_table,
        )
        env = {
            "ANOMALY_EVENTS_TOPIC": topic,
            "ANOMALY_PG_DATABASE": database,
            "ANOMALY_JOB_NAME": "bench-latency",
            "ANOMALY_KAFKA_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}",
        }
        job_id = flink.submit([], env=env)
        try:
            deadline = time.monotonic() + 120
            while flink.rest(f"/jobs/{job_id}")["state"] != "RUNNING":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"latency job {job_id} did not start")
                time.sleep(0.5)
            interval_ms = max(1, round(devices * 1000 / rate))
            log(
                f"latency: {devices:,} devices, one event each per {interval_ms} ms "
                f"({devices * 1000 / interval_ms:,.0f} events/s) for {seconds:.0f} s, real time"
            )
            started = time.time()
            subprocess.run(
                [sys.executable, "-m", "simulator", "--devices", str(devices), "--realtime",
                 "--interval-ms", str(interval_ms), "--duration-s", str(seconds),
                 "--topic", topic, "--processes", "1", "--progress-s", "30"],
                check=True,
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            sent_s = time.time() - started
            closing_at = time.time()
            close_windows(settings, topic)
            # The last windows close one window and the watermark delay after the last event
            # (an idle source then lets the watermark pass too); a job that fell behind takes
            # longer: wait until no row has come for 5 s.
            time.sleep(settings.window_seconds + settings.watermark_delay_seconds)
            last, still_since = -1, time.monotonic()
            give_up = time.monotonic() + 300
            while time.monotonic() < give_up:
                (rows,) = execute(db, "SELECT count(*) FROM {}", settings.scores_table)
                if rows != last:
                    last, still_since = rows, time.monotonic()
                elif time.monotonic() - still_since > 5:
                    break
                time.sleep(1)
        finally:
            flink.cancel(job_id)
        query = (
            "SELECT count(*),"
            " percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP"
            " (ORDER BY extract(epoch FROM visible_at - window_end)),"
            " max(extract(epoch FROM visible_at - window_end))"
            " FROM {} WHERE window_start >= to_timestamp(%s) AND window_end <= to_timestamp(%s)"
        )
        # After the warm-up, and closed by the stream's own watermark (not by the closing
        # events sent after it); a short run may have none of those: then every window that
        # ended before the closing events were sent (one ending later was closed early by
        # them, and its row would land before its end).
        closed_by_stream = True
        row = execute(
            db,
            query,
            settings.scores_table,
            (started + warmup_s, started + sent_s - settings.watermark_delay_seconds),
        )
        if not row[0]:
            closed_by_stream = False
            row = execute(db, query, settings.scores_table, (started + warmup_s, closing_at))
    windows, percentiles, worst = row
    if not windows:
        raise RuntimeError(
            f"latency: no window after the {warmup_s:.0f} s warm-up landed ({last} rows in all)"
        )
    p50, p95, p99 = percentiles
    return {
        "rate_events_per_s": round(devices * 1000 / interval_ms),
        "devices": devices,
        "seconds": seconds,
        "sent_s": round(sent_s, 1),
        "windows_measured": windows,
        "windows_landed": last,
        "closed_by_stream_only": closed_by_stream,
        "visible_after_window_end_s": {
            "p50": round(float(p50), 2),
            "p95": round(float(p95), 2),
            "p99": round(float(p99), 2),
            "max": round(float(worst), 2),
        },
        "warmup_s": warmup_s,
        "goal_p99_s": settings.window_seconds + settings.watermark_delay_seconds + 2,
    }


# --- the run as a whole -------------------------------------------------------------------------


def machine_facts(settings: Settings) -> dict:
    from pyflink.version import __version__ as flink_version

    facts = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "flink": flink_version,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }
    with contextlib.suppress(OSError, IndexError):
        facts["cpu"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    facts["settings"] = {
        k: getattr(settings, k)
        for k in (
            "window_seconds",
            "watermark_delay_seconds",
            "context_horizons",
            "arrow_batch_size",
            "checkpoint_interval_seconds",
            "state_backend",
            "events_topic_partitions",
        )
    }
    return facts


def print_table(runs: list[Throughput]) -> None:
    head = (
        f"{'run':<26} {'devices':>8} {'p':>2} {'steady ev/s':>12} {'job s':>7} {'1st row s':>9} "
        f"{'windows':>9} {'late':>5} {'TM MB':>6} {'py MB':>6} {'state MB':>8} "
        f"{'CPU s TM/py/PG/Kafka':>21} {'TM: JIT/GC':>10}"
    )
    print(head)
    for r in runs:
        print(
            f"{r.label:<26} {r.devices:>8,} {r.parallelism:>2} {r.steady_events_per_s:>12,} "
            f"{r.job_s:>7.1f} {r.first_row_s or float('nan'):>9.1f} {r.windows:>9,} "
            f"{r.late_events:>5,} {r.tm_rss_peak_mb:>6,.0f} {r.python_rss_peak_mb:>6,.0f} "
            f"{r.checkpoint_state_mb if r.checkpoint_state_mb is not None else float('nan'):>8.1f} "
            f"{'/'.join(f'{v:.0f}' for v in r.cpu_s.values()):>21} "
            f"{'/'.join(f'{v:.0f}' for v in r.tm_jvm_cpu_s.values()):>10}"
        )


def size_label(devices: int) -> str:
    return f"{devices // 1000}k" if devices >= 1000 else str(devices)


def variant(text: str) -> tuple[str, dict[str, str]]:
    name, sep, assignments = text.partition(":")
    pairs = [part.split("=", 1) for part in assignments.split(",") if part]
    if not sep or not name or not pairs or any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME:VAR=VALUE[,VAR=VALUE]")
    return name, dict(pairs)


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    from bench.baseline_loop import run_baseline
    from deploy.local.stack import Flink, model_unusable

    settings = Settings.from_env()
    p = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--events", type=int, default=5_000_000, help="events per preload")
    p.add_argument(
        "--devices", type=int_list, default=[10_000], help="device counts, e.g. 1000,10000"
    )
    p.add_argument("--parallelism", type=int_list, default=[1], help="job parallelisms, e.g. 1,2")
    p.add_argument("--no-per-row", action="store_true", help="skip the per-row scoring runs")
    p.add_argument(
        "--per-row-events",
        type=int,
        default=200_000,
        help="events of the per-row against vectorized comparison (per row is slow)",
    )
    p.add_argument(
        "--variant",
        type=variant,
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE[,VAR=VALUE]",
        help="one more scoring run with other settings, e.g. "
        "batch-50k:ANOMALY_ARROW_BATCH_SIZE=50000 (repeatable)",
    )
    p.add_argument(
        "--profile",
        type=float,
        default=0,
        metavar="SECONDS",
        help="profile the first scoring run's TaskManager (JFR) and Python workers (py-spy)",
    )
    p.add_argument("--rate", type=int, default=20_000, help="real-time run: events/s")
    p.add_argument("--realtime-s", type=float, default=120, help="real-time run: seconds (0: none)")
    p.add_argument(
        "--warmup-s", type=float, default=WARMUP_S, help="real-time run: windows not measured"
    )
    p.add_argument(
        "--baseline-events", type=int, default=10_000, help="consumer loop: events (0: none)"
    )
    p.add_argument("--json-out", type=Path, default=settings.state_dir / "bench" / "pipeline.json")
    a = p.parse_args(argv)
    flink = Flink(settings)
    if not flink.overview():
        print("bench: the local stack is not running: `make up` starts it", file=sys.stderr)
        return 2
    reason = model_unusable(settings)
    if reason:
        print(f"bench: {reason}: `make train` makes one", file=sys.stderr)
        return 2

    began = time.monotonic()
    runs: list[Throughput] = []
    baseline: dict | None = None
    for n, devices in enumerate(a.devices):
        with scratch(settings, "bench") as (topic, database):
            preload_s = preload(
                settings,
                topic,
                ["--devices", str(devices), "--count", str(a.events)],
                f"{a.events:,} events from {devices:,} devices",
            )
            log(f"preloaded in {preload_s:.1f} s ({a.events / preload_s:,.0f} events/s)")
            for parallelism in a.parallelism:
                plan = [
                    ("bare-engine", "off", "pandas", {}, "bare"),
                    ("scoring-off", "off", "pandas", {}, "base"),
                    ("scoring-on", "on", "pandas", {}, "base"),
                ]
                first = n == 0 and parallelism == a.parallelism[0]
                if first:
                    plan += [(name, "on", "pandas", extra, "variant") for name, extra in a.variant]
                if first and a.profile:
                    plan.append(("scoring-on-profiled", "on", "pandas", {}, "profiled"))
                for label, scoring, udf_kind, extra, role in plan:
                    run = functools.partial(
                        Throughput,
                        f"{label} {size_label(devices)} p{parallelism}",
                        devices,
                        parallelism,
                        scoring,
                        udf_kind,
                        a.events,
                        extra_env=extra,
                        role=role,
                    )
                    profiler = None
                    if role == "profiled":
                        profiler = Profiler(a.profile, a.json_out.parent / "profile")
                    done = bounded_run(flink, settings, topic, database, run(), profiler)
                    if done.unobserved and role == "bare":  # a blackhole: no rows left behind
                        log(
                            f"{done.label}: the job ended before its client returned (the "
                            "checkout's first client writes its class archive as it exits), "
                            "so its start-up could not be told apart: measured again"
                        )
                        done = bounded_run(flink, settings, topic, database, run(), profiler)
                    runs.append(done)
            if n == 0 and a.baseline_events:
                baseline = run_baseline(
                    settings.replace(pg_database=database), topic, min(a.baseline_events, a.events)
                )
    if not a.no_per_row:
        # Per-row scoring is slow: its own, smaller topic, with a vectorized run beside it.
        devices, events = a.devices[0], min(a.per_row_events, a.events)
        with scratch(settings, "bench-per-row") as (topic, database):
            preload(
                settings,
                topic,
                ["--devices", str(devices), "--count", str(events)],
                f"{events:,} events from {devices:,} devices (per row against vectorized)",
            )
            for label, udf_kind in (("vectorized", "pandas"), ("per-row", "row")):
                run = Throughput(
                    f"{label} {size_label(devices)} p1",
                    devices,
                    1,
                    "on",
                    udf_kind,
                    events,
                    role="per-row",
                )
                runs.append(bounded_run(flink, settings, topic, database, run))
    latency = None
    if a.realtime_s:
        latency = latency_run(flink, settings, a.rate, a.realtime_s, a.devices[0], a.warmup_s)

    print(
        f"\nthe pipeline, Kafka -> PostgreSQL, {a.events:,} preloaded events per device count "
        f"({os.cpu_count()} cores; steady = events / time from the first record read to the "
        "job's end, start-up apart)"
    )
    print_table(runs)
    ratios = {}
    first = runs[0]

    def run_of(devices, parallelism, scoring, udf_kind="pandas", role="base") -> Throughput:
        return next(
            x
            for x in runs
            if (x.devices, x.parallelism, x.scoring, x.scoring_udf, x.role)
            == (devices, parallelism, scoring, udf_kind, role)
        )

    def rate(devices, parallelism, scoring, udf_kind="pandas") -> float:
        return run_of(devices, parallelism, scoring, udf_kind).steady_events_per_s

    d0, p0 = a.devices[0], a.parallelism[0]
    pair = {r.scoring_udf: r for r in runs if r.role == "per-row"}
    if pair:
        ratios["vectorized_over_per_row"] = round(
            pair["pandas"].steady_events_per_s / max(pair["row"].steady_events_per_s, 1), 2
        )
        ratios["per_row_over_vectorized_job_time"] = round(
            pair["row"].job_s / max(pair["pandas"].job_s, 0.1), 2
        )
    for devices in a.devices:
        for parallelism in a.parallelism:
            on, off = rate(devices, parallelism, "on"), rate(devices, parallelism, "off")
            ratios[f"scoring_cost_{devices}_p{parallelism}"] = round(1 - on / max(off, 1), 3)
            bare = run_of(devices, parallelism, "off", role="bare")
            full = run_of(devices, parallelism, "on")
            # The goal's measure: the full job (scoring on) against the bare engine, steady
            # events/s; and the same by job time (REST duration, start-up included).
            ratios[f"full_over_bare_{devices}_p{parallelism}"] = (
                round(on / bare.steady_events_per_s, 3) if bare.steady_events_per_s else None
            )
            ratios[f"full_over_bare_job_time_{devices}_p{parallelism}"] = round(
                bare.job_s / max(full.job_s, 0.1), 3
            )
    for r in runs:
        if r.role == "variant":
            ratios[f"variant_{r.label}_over_scoring_on"] = round(
                r.steady_events_per_s / max(rate(d0, p0, "on"), 1), 3
            )
    for name, value in ratios.items():
        print(f"{name}: {value}")
    for r in runs:
        for side, prof in (r.profile or {}).items():
            if "error" in prof:
                print(f"profile {side}: {prof['error']}")
                continue
            print(f"\nwhere the time goes, {side} ({r.label}, {prof['samples']:,} samples):")
            print("  by part: " + ", ".join(f"{part} {pct} %" for part, pct in prof["parts"]))
            if prof.get("tasks"):
                print("  by task: " + "; ".join(f"{task} {pct} %" for task, pct in prof["tasks"]))
            for name, pct in prof["top_self"][:8]:
                print(f"  {pct:5.1f} %  {name}")
    if baseline:
        ratios["pipeline_over_baseline"] = round(
            rate(d0, p0, "on") / max(baseline["events_per_s"], 1), 1
        )
        print(
            f"baseline (kafka-python loop, per-event pickled scikit-learn, PostgreSQL inserts): "
            f"{baseline['events_per_s']:,} events/s over {baseline['events']:,} events; the "
            f"pipeline with scoring: {ratios['pipeline_over_baseline']}x"
        )
    if latency:
        v = latency["visible_after_window_end_s"]
        print(
            f"real time at {latency['rate_events_per_s']:,} events/s: row visible after window "
            f"end p50 {v['p50']} s, p95 {v['p95']} s, p99 {v['p99']} s, max {v['max']} s "
            f"({latency['windows_measured']:,} windows after a {latency['warmup_s']:.0f} s warm-up)"
        )
    out = {
        "events": a.events,
        "runs": [{k: v for k, v in asdict(r).items() if k != "samples"} for r in runs],
        "ratios": ratios,
        "baseline": baseline,
        "latency": latency,
        "machine": machine_facts(settings),
        "wall_s": round(time.monotonic() - began, 1),
        "first_run_samples": first.samples,
    }
    a.json_out.parent.mkdir(parents=True, exist_ok=True)
    a.json_out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"bench: done in {out['wall_s']:.0f} s; written to {a.json_out}")
    # Every run over the same topic must write the same windows.
    by_topic: dict[str, set[int]] = {}
    for r in runs:
        if r.role == "bare":
            continue
        by_topic.setdefault(r.topic, set()).add(r.windows)
    differ = {t: w for t, w in by_topic.items() if len(w) > 1}
    if differ:
        print(
            f"bench: runs over the same events wrote different windows: {differ}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
