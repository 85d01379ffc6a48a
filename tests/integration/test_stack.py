"""The local stack itself, against the real services the session started."""

from __future__ import annotations

import contextlib
import io
import ipaddress
import re
import subprocess
import sys

import pytest

from common.db import connect, migrate
from common.features import FEATURE_NAMES
from common.settings import PG_SECRET_FIELDS, REPO_ROOT

pytestmark = pytest.mark.stack


def test_up_twice_is_harmless(stack):
    from deploy.local import stack as local

    local.up(stack)  # everything already runs: must only confirm
    assert local.Postgres(stack).running()
    assert local.Kafka(stack).running()
    assert local.Flink(stack).running()


def test_status_names_every_service_without_secrets(stack):
    out = subprocess.run(
        [sys.executable, "-m", "deploy.local.stack", "status"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name, where in [
        ("PostgreSQL", f":{stack.pg_port}"),
        ("Kafka", stack.kafka_bootstrap),
        ("Flink", stack.flink_rest_url),
    ]:
        line = next(line for line in out.splitlines() if line.strip().startswith(name))
        assert "running" in line and where in line
    assert not any(getattr(stack, name) in out for name in PG_SECRET_FIELDS)


def test_status_counts_what_the_job_kept_aside(fresh_db):
    """`make status` reads the result tables: dead letters by reason, late events and
    incidents (open and closed)."""
    from deploy.local.stack import print_result_counts

    conn = connect(fresh_db)
    with conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO dead_letters (source_topic, source_partition, source_offset, broker_time,"
            " reason) VALUES ('t', 0, %s, now(), %s)",
            [(1, "not a JSON object"), (2, "not a JSON object"), (3, "ts_ms: not an integer")],
        )
        cur.execute(
            "INSERT INTO incidents (device_id, started_at, ended_at, windows) VALUES"
            " ('a', now() - interval '20 min', now() - interval '10 min', 3),"
            " ('b', now() - interval '20 s', now() - interval '10 s', 1)"
        )
    conn.close()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        print_result_counts(fresh_db)
    lines = {line.split("  ")[1].strip(): line for line in buffer.getvalue().splitlines()[1:]}
    assert lines["dead letters"].endswith("3 (most: not a JSON object 2, ts_ms: not an integer 1)")
    assert lines["late events"].endswith(" 0")
    assert lines["scored windows"].endswith("0 (0 flagged)")
    assert lines["incidents"].endswith("2 (1 open now)")


def test_migrations_apply_once_and_schema_matches_features(fresh_db):
    assert migrate(fresh_db) == []  # the fixture applied them; a second run does nothing
    conn = connect(fresh_db)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
            (fresh_db.scores_table,),
        )
        columns = {row[0] for row in cur.fetchall()}
        cur.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (fresh_db.scores_table,),
        )
        key = {row[0] for row in cur.fetchall()}
    conn.close()
    assert set(FEATURE_NAMES) <= columns
    assert {"anomaly_score", "is_anomaly", "model_version", "window_end"} <= columns
    assert key == {"device_id", "window_start"}


def test_upsert_on_device_and_window_start(fresh_db):
    """Replays overwrite: the key the JDBC sink upserts on really is unique in PostgreSQL."""
    from psycopg2 import sql

    table = sql.Identifier(fresh_db.scores_table)
    upsert = sql.SQL(
        "INSERT INTO {} (device_id, window_start, window_end, anomaly_score)"
        " VALUES ('d', '2026-01-01T00:00:00Z', '2026-01-01T00:00:10Z', %s)"
        " ON CONFLICT (device_id, window_start)"
        " DO UPDATE SET anomaly_score = EXCLUDED.anomaly_score"
    ).format(table)
    conn = connect(fresh_db)
    with conn, conn.cursor() as cur:
        cur.execute(upsert, (1.0,))
        cur.execute(upsert, (2.0,))
        cur.execute(sql.SQL("SELECT count(*), max(anomaly_score) FROM {}").format(table))
        assert cur.fetchone() == (1, 2.0)
    conn.close()


def listening_sockets() -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket, from /proc/net/tcp and tcp6."""
    found = []
    for path, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(path) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] != "0A":  # LISTEN
                    continue
                addr_hex, port_hex = fields[1].split(":")
                raw = bytes.fromhex(addr_hex.rjust(width, "0"))
                # The kernel prints each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.append((ipaddress.ip_address(words).compressed, int(port_hex, 16)))
    return found


def test_services_listen_on_loopback_only(stack):
    ports = {
        stack.pg_port,
        int(stack.kafka_bootstrap.rsplit(":", 1)[1]),
        int(stack.flink_rest_url.rsplit(":", 1)[1]),
    }
    ours = [(addr, port) for addr, port in listening_sockets() if port in ports]
    assert {port for _, port in ours} == ports, f"not all services listen: {ours}"
    for addr, port in ours:
        assert addr in ("127.0.0.1", "::ffff:7f00:1"), f"port {port} listens on {addr}"


def test_every_port_of_the_stack_processes_is_loopback(stack):
    """Also the ports Flink and Kafka pick themselves (RPC, blob server, data, controller)."""
    from deploy.local import stack as local

    flink = local.Flink(stack)
    pids = {*flink.pids("jobmanager"), *flink.pids("taskmanager")}
    pids.add(local.pid_alive(local.Kafka(stack).pid_file))
    pids.add(int((local.Postgres(stack).data / "postmaster.pid").read_text().split()[0]))
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    owned = []
    for line in out.splitlines():
        fields = line.split()
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            owned.append(fields[3])
    assert len(owned) >= 6, f"expected the stack's listening sockets, saw {owned}"
    # The one exception: Flink's Prometheus reporter (no host option), on when asked for
    # (ANOMALY_FLINK_PROMETHEUS=on, as in this test session), on its own port range only.
    low, high = (int(p) for p in local.PROMETHEUS_REPORTER["port"].split("-"))
    for address in owned:
        host, port = address.rsplit(":", 1)
        if stack.flink_prometheus == "on" and low <= int(port) <= high:
            continue
        host = host.strip("[]")
        assert host in ("127.0.0.1", "::ffff:127.0.0.1"), f"{address} is not loopback-only"


def test_repeatable_migration_reruns_only_when_its_text_changes(fresh_db, tmp_path):
    script = tmp_path / "R__probe.sql"
    script.write_text("CREATE TABLE IF NOT EXISTS probe (n int); INSERT INTO probe VALUES (1);")
    assert migrate(fresh_db, [script]) == ["R__probe"]
    assert migrate(fresh_db, [script]) == []  # same text: skipped
    script.write_text("INSERT INTO probe VALUES (2);")
    assert migrate(fresh_db, [script]) == ["R__probe"]
    conn = connect(fresh_db)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT array_agg(n ORDER BY n) FROM probe")
        assert cur.fetchone()[0] == [1, 2]
    conn.close()


def test_feature_columns_come_back_when_the_catalogue_needs_them(fresh_db):
    """An older table (fewer metrics) gains the columns of the current catalogue's features."""
    from psycopg2 import sql

    conn = connect(fresh_db)
    column = FEATURE_NAMES[-1]
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(
                sql.Identifier(fresh_db.scores_table), sql.Identifier(column)
            )
        )
        cur.execute("DELETE FROM schema_migrations WHERE version = 'R__feature_columns'")
    # With every repeatable migration after it (they build on each other).
    assert migrate(fresh_db) == [
        "R__feature_columns",
        "R__grants",
        "R__incident_status",
        "R__query_layer",
        "R__timescale_policies",
    ]
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
            (fresh_db.scores_table, column),
        )
        assert cur.fetchone() == (1,)
    conn.close()


# --- a second Flink cluster of the test's own (other ports, other state folder) ------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_with(text: str) -> list[int]:
    """Live processes whose command line holds ``text``."""
    from pathlib import Path

    from deploy.local.helpers import process_alive

    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline and process_alive(int(proc.name)):
            found.append(int(proc.name))
    return found


@pytest.fixture
def own_flink(base_settings, tmp_path):
    """A small Flink cluster beside the session's: its own state folder, REST and RPC ports.
    Stopped at the end, also when the test fails; the session's cluster is never touched."""
    import yaml

    from deploy.local.flink import Flink

    rpc_port = free_port()

    class OwnFlink(Flink):
        def write_conf(self) -> None:
            super().write_conf()
            path = self.conf_dir / "config.yaml"
            conf = yaml.safe_load(path.read_text())
            conf["jobmanager"]["rpc"]["port"] = rpc_port
            conf["jobmanager"]["memory"]["process"]["size"] = "768m"
            conf["taskmanager"]["numberOfTaskSlots"] = 1
            conf["taskmanager"]["memory"]["process"]["size"] = "1280m"
            conf["taskmanager"]["memory"]["jvm-metaspace"]["size"] = "256m"
            path.write_text(yaml.safe_dump(conf, sort_keys=False))

    settings = base_settings.replace(
        state_dir=tmp_path / "state",
        flink_rest_url=f"http://127.0.0.1:{free_port()}",
        flink_prometheus="off",
    )
    flink = OwnFlink(settings)
    shared = Flink(base_settings)
    shared_before = shared.processes()
    try:
        yield flink
    finally:
        flink.stop(timeout_s=20)
        from deploy.local.helpers import end_processes

        end_processes(processes_with(str(flink.conf_dir)), timeout_s=5)  # whatever stop missed
        assert shared.processes() == shared_before, "the session's cluster must stay as it was"


def kill_9(pid: int, what: str) -> None:
    """SIGKILL ``pid`` and wait (at most 10 s) until it is gone."""
    import os
    import signal
    import time

    from deploy.local.helpers import process_alive

    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_alive(pid):
        assert time.monotonic() < deadline, f"the killed {what} is still there"
        time.sleep(0.1)


@pytest.mark.slow
def test_up_after_a_dead_taskmanager_starts_only_it_and_stop_ends_every_process(own_flink):
    """Issue 21: after a TaskManager died (kill -9), `up` started the whole cluster again (a
    second JobManager), and `stop` then left the first JobManager running."""
    import time

    from deploy.local.helpers import port_open

    flink = own_flink
    conf = str(flink.conf_dir)
    flink.start()
    (jobmanager,) = flink.pids("jobmanager")
    (taskmanager,) = flink.pids("taskmanager")
    assert flink.taskmanagers_wanted() == 1
    assert sorted(processes_with(conf)) == sorted([jobmanager, taskmanager])

    kill_9(taskmanager, "TaskManager")
    flink.start()  # what `make up` does for Flink

    assert flink.pids("jobmanager") == [jobmanager], "the JobManager must be left as it was"
    (new_taskmanager,) = flink.pids("taskmanager")
    assert new_taskmanager != taskmanager
    assert sorted(processes_with(conf)) == sorted([jobmanager, new_taskmanager])

    # The REST API answers, with exactly the new TaskManager registered (the dead one drops
    # out after its missed heartbeats) and its one slot (reported after it registers: the
    # overview has shown 1 TaskManager with 0 slots for a moment).
    def one_taskmanager_registers() -> dict:
        deadline = time.monotonic() + 60
        while (
            (overview := flink.overview() or {}).get("taskmanagers"),
            overview.get("slots-total"),
        ) != (1, 1):
            assert time.monotonic() < deadline, f"not one TaskManager with 1 slot: {overview}"
            time.sleep(0.5)
        return overview

    one_taskmanager_registers()
    (registered,) = flink.rest("/taskmanagers")["taskmanagers"]
    assert registered["id"].startswith("127.0.0.1:")

    # Up twice more: nothing new starts.
    flink.start()
    assert sorted(processes_with(conf)) == sorted([jobmanager, new_taskmanager])

    # A dead JobManager: only it starts again, and the TaskManager registers with it.
    kill_9(jobmanager, "JobManager")
    flink.start()
    (new_jobmanager,) = flink.pids("jobmanager")
    assert flink.pids("taskmanager") == [new_taskmanager]
    assert sorted(processes_with(conf)) == sorted([new_jobmanager, new_taskmanager])
    one_taskmanager_registers()  # with the new JobManager, once it has found it

    # A daemon no pid file names (a second TaskManager whose line is gone) is ended too.
    flink.start_daemon("taskmanager")
    for pid_file in flink.pid_files():
        pid_file.write_text("")
    # Its launcher script execs java a moment later: until then its command line holds the
    # configuration folder but not yet a TaskManager's main class, and a stop would miss it.
    deadline = time.monotonic() + 10
    while len(flink.pids("taskmanager")) != 2 or len(processes_with(conf)) != 3:
        assert time.monotonic() < deadline, processes_with(conf)
        time.sleep(0.1)
    flink.stop(timeout_s=20)
    assert processes_with(conf) == []
    assert not port_open("127.0.0.1", int(flink.s.flink_rest_url.rsplit(":", 1)[1]))
    assert flink.pid_files() == []


@pytest.mark.slow
def test_flink_run_attached_waits_for_the_job_to_end(stack, fresh_topic, fresh_db, trained):
    """Issue 21: `flink_run --attached -- --bounded` returned right after submission. It waits
    for the job's end now (exit 0: FINISHED); a job still running at --timeout fails it. On
    the session's cluster (its jobs run beside the others, each under its own id)."""
    import os

    from deploy.local.flink import Flink
    from tests.pipeline import job_env

    flink = Flink(stack)
    env = {**os.environ, **job_env(fresh_db, fresh_topic)}
    jobmanager = flink.s.flink_rest_url.removeprefix("http://")
    model = ["--model-dir", str(trained[0].model_dir)]

    def flink_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "deploy.flink_run", "-m", jobmanager, *args],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=400,
        )

    # Bounded (an empty topic): returns once the job has FINISHED.
    proc = flink_run("--attached", "--timeout", "240", "--", "--bounded", *model)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = re.search(r"job ([0-9a-f]{32}) submitted", proc.stdout).group(1)
    assert f"job {job_id} ended FINISHED" in proc.stdout
    assert flink.rest(f"/jobs/{job_id}")["state"] == "FINISHED"

    # Unbounded: still running at the timeout, so exit 1; the job keeps running.
    proc = flink_run("--attached", "--timeout", "5", "--", *model)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    job_id = re.search(r"job ([0-9a-f]{32}) submitted", proc.stdout).group(1)
    assert re.search(rf"job {job_id} still [A-Z]+ after 5 s", proc.stderr), proc.stderr
    assert flink.rest(f"/jobs/{job_id}")["state"] in ("CREATED", "INITIALIZING", "RUNNING")
    flink.cancel(job_id)
