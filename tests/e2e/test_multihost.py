"""The cluster on several hosts (network namespaces of this machine, tests/netns.py): the
JobManager on one host, a standby JobManager on another, TaskManagers on two more, Kafka,
PostgreSQL and ZooKeeper on their own. The job is submitted remotely (`flink run -m` with
--ship); mid-stream the TaskManager host that runs it is cut off its network, then the leading
JobManager is killed (kill -9). The standby takes over through ZooKeeper and the job goes on
from its checkpoint without a resubmission; the tables equal an undisturbed run, row for row.

    make multihost        this test alone, with its figures
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from common.settings import PG_SECRET_FIELDS, REPO_ROOT, Settings
from deploy.local.flink import deep_merge
from tests import netns, pipeline
from tests.conftest import FIGURES
from tests.e2e.test_pipeline import assert_windows_exact
from tests.e2e.test_recovery import expected_windows, known_messages
from tests.pipeline import (
    PacedProducer,
    count_rows,
    fetch_scores,
    fetch_table,
    job_env,
    operator_metrics,
    reject_reason,
    wait_for_rows,
)

pytestmark = [pytest.mark.slow, pytest.mark.multihost]

JOBMANAGERS = ("jm1", "jm2")  # jm1 starts first and leads; jm2 stands by
TASKMANAGERS = ("tm1", "tm2")
SLOTS = 2  # per TaskManager: either one alone can run the whole job
# A dead leader's ZooKeeper session ends after this; then the standby takes the lead (Flink's
# default is 60 s).
ZK_SESSION_TIMEOUT_MS = 10_000
HA_CLUSTER_ID = "/anomaly-multihost"


class MultiHostCluster:
    """The services on their hosts; ``settings`` point a client (this process) at them."""

    def __init__(self, hosts: netns.Hosts, root: Path, base: Settings):
        from deploy.local.stack import Flink, ensure_secrets

        self.hosts, self.root = hosts, root
        address = {
            name: hosts.add(name) for name in ("zk", "kafka", "pg", *JOBMANAGERS, *TASKMANAGERS)
        }
        self.address = address
        self.settings = base.replace(
            state_dir=root / "client",
            kafka_bootstrap=f"{address['kafka']}:9092",
            pg_host=address["pg"],
            pg_port=5432,
            flink_rest_url=f"http://{address['jm1']}:8081",
            # Every host sees this folder, as every pod sees a shared volume.
            checkpoint_dir=(root / "checkpoints").as_uri(),
            flink_prometheus="off",
        )
        # Passwords of its own, generated into its own secrets file that every host reads.
        self.settings = ensure_secrets(
            self.settings.replace(**dict.fromkeys(PG_SECRET_FIELDS, ""))  # not the stack's
        )
        self.secrets_file = self.settings.secrets_file
        # One Flink configuration and classpath, as the local stack writes them; each host
        # gets its own copy with its addresses.
        self.flink = Flink(self.settings)
        self.flink.write_conf()
        self.flink.write_lib()
        self.flink_conf = yaml.safe_load((self.flink.conf_dir / "config.yaml").read_text())

    # --- services ------------------------------------------------------------------------------
    def service_env(self, name: str) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "ANOMALY_STATE_DIR": str(self.root / name),
            "ANOMALY_SECRETS_FILE": str(self.secrets_file),
            "ANOMALY_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "ANOMALY_PG_HOST": s.pg_host,
            "ANOMALY_PG_PORT": str(s.pg_port),
        }

    def serve(self, name: str, service: str) -> None:
        cmd = [sys.executable, "-m", "tests.netns", "serve", service]
        self.hosts.run(name, cmd, self.service_env(name), self.root / "logs" / f"{name}.log")

    def flink_dirs(self, name: str) -> dict[str, str]:
        home = self.root / name
        (home / "log").mkdir(parents=True, exist_ok=True)  # flink-daemon.sh writes there
        return {
            "FLINK_CONF_DIR": str(home / "conf"),
            "FLINK_LOG_DIR": str(home / "log"),
            "FLINK_PID_DIR": str(home),
            "FLINK_LIB_DIR": str(self.flink.lib_dir),
        }

    def write_flink_conf(self, name: str, overrides: dict) -> None:
        conf = self.root / name / "conf"
        shutil.copytree(self.flink.conf_dir, conf, dirs_exist_ok=True)
        merged = deep_merge(self.flink_conf, overrides)
        (conf / "config.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))

    def ha(self) -> dict:
        return {
            "high-availability": {
                "type": "zookeeper",
                "storageDir": (self.root / "ha").as_uri(),
                "cluster-id": HA_CLUSTER_ID,
                "zookeeper": {
                    "quorum": f"{self.address['zk']}:2181",
                    "client": {"session-timeout": ZK_SESSION_TIMEOUT_MS},
                },
            }
        }

    def start_zookeeper(self) -> None:
        """Flink's own ZooKeeper server (in flink-dist), one node."""
        ip = self.address["zk"]
        self.write_flink_conf("zk", {})
        data = self.root / "zk" / "data"
        data.mkdir(parents=True)
        (self.root / "zk" / "conf" / "zoo.cfg").write_text(
            f"tickTime=1000\ninitLimit=10\nsyncLimit=5\ndataDir={data}\n"
            f"clientPort=2181\nclientPortAddress={ip}\nserver.1={ip}:2888:3888\n"
        )
        cmd = [str(self.flink.home / "bin" / "zookeeper.sh"), "start", "1"]
        env = {**os.environ, **self.flink_dirs("zk")}
        self.hosts.run("zk", cmd, env, self.root / "logs" / "zk.log")
        wait_port("ZooKeeper", ip, 2181, 60)

    def start_flink(self, name: str, daemon: str) -> None:
        ip = self.address[name]
        self.write_flink_conf(
            name,
            deep_merge(
                self.ha(),
                {
                    # Every address of the host (its own namespace: eth0 and lo). Bound to
                    # one address, Flink 2.0's REST endpoint sends job files to the blob
                    # server at "localhost" and the submission fails (FLINK-38109).
                    "jobmanager": {"bind-host": "0.0.0.0", "rpc": {"address": ip}},
                    "rest": {"address": ip, "bind-address": ip},
                    "taskmanager": {"bind-host": ip, "host": ip, "numberOfTaskSlots": SLOTS},
                },
            ),
        )
        cmd = [str(self.flink.home / "bin" / f"{daemon}.sh"), "start"]
        env = {**os.environ, **self.flink_dirs(name)}
        self.hosts.run(name, cmd, env, self.root / "logs" / f"{name}.log")

    def start(self) -> None:
        from common.db import migrate

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            started = [
                pool.submit(self.serve, "pg", "postgres"),
                pool.submit(self.serve, "kafka", "kafka"),
                pool.submit(self.start_zookeeper),
            ]
            for future in started:
                future.result()
        migrate(self.settings)
        self.start_flink("jm1", "jobmanager")
        wait_port("JobManager jm1", self.address["jm1"], 8081, 90)
        self.wait_log("jm1", "granted leadership", 60)
        self.start_flink("jm2", "jobmanager")
        for name in TASKMANAGERS:
            self.start_flink(name, "taskmanager")
        wait_until(
            "the TaskManagers registered",
            lambda: self.rest("jm1", "/overview").get("taskmanagers", 0) == len(TASKMANAGERS),
            90,
        )
        wait_port("JobManager jm2", self.address["jm2"], 8081, 90)

    # --- reading the cluster -------------------------------------------------------------------
    def flink_at(self, jobmanager: str):
        """The cluster as seen through one JobManager's REST API."""
        from deploy.local.stack import Flink

        url = f"http://{self.address[jobmanager]}:8081"
        return Flink(self.settings.replace(flink_rest_url=url))

    def rest(self, jobmanager: str, path: str) -> dict:
        return self.flink_at(jobmanager).rest(path)

    def log_text(self, name: str) -> str:
        return "".join(
            p.read_text(errors="replace") for p in (self.root / name / "log").glob("*.log")
        )

    def wait_log(self, name: str, text: str, timeout_s: float) -> float:
        return wait_until(
            f"{text!r} in {name}'s log", lambda: text in self.log_text(name), timeout_s
        )

    def job_hosts(self, jobmanager: str, job_id: str) -> set[str]:
        """The hosts whose TaskManagers run the job's tasks."""
        by_ip = {ip: name for name, ip in self.address.items()}
        found = set()
        for vertex in self.rest(jobmanager, f"/jobs/{job_id}")["vertices"]:
            detail = self.rest(jobmanager, f"/jobs/{job_id}/vertices/{vertex['id']}")
            for subtask in detail["subtasks"]:
                endpoint = subtask.get("endpoint") or subtask.get("host", "")
                found.add(by_ip.get(endpoint.rsplit(":", 1)[0], endpoint))
        return found

    def all_running(self, jobmanager: str, job_id: str) -> bool:
        try:
            job = self.rest(jobmanager, f"/jobs/{job_id}")
        except (OSError, ValueError):
            return False
        return job["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in job["vertices"])

    def restarts(self, jobmanager: str, job_id: str) -> int:
        """Failures the job has recovered from (its exception history: the job's metrics are
        fetched from the JobManager every few seconds, its history is current)."""
        history = self.rest(jobmanager, f"/jobs/{job_id}/exceptions")["exceptionHistory"]
        return len(history["entries"])

    def checkpoints(self, jobmanager: str, job_id: str) -> dict:
        return self.rest(jobmanager, f"/jobs/{job_id}/checkpoints")


def wait_port(what: str, host: str, port: int, timeout_s: float) -> None:
    from deploy.local.stack import port_open

    wait_until(f"{what} listening on {host}:{port}", lambda: port_open(host, port), timeout_s)


def wait_until(what: str, check, timeout_s: float) -> float:
    """Until ``check`` holds; a REST API that does not answer (a JobManager on its way down
    or up) is "not yet"."""
    return pipeline.wait_until(what, check, timeout_s, passing=(OSError, ValueError, KeyError))


@pytest.fixture
def hosts():
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    # Readable by the `postgres` account, which runs PostgreSQL on its host.
    root = Path(tempfile.mkdtemp(prefix="anomaly-multihost-"))
    root.chmod(0o755)
    try:
        with netns.Hosts() as made:
            yield made, root
    finally:
        # The services' logs outlive the run (the hosts and their data do not).
        logs = Path(tempfile.gettempdir()) / "anomaly-multihost-logs"
        shutil.rmtree(logs, ignore_errors=True)
        for log in root.glob("*/log"):
            shutil.copytree(log, logs / log.parent.name)
        if (root / "logs").is_dir():
            shutil.copytree(root / "logs", logs / "start", dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)


def test_cluster_on_several_hosts_survives_a_cut_taskmanager_host_and_a_killed_leader(
    hosts, trained, base_settings
):
    from common.kafka_admin import ensure_topic
    from deploy.flink_run import Submission, submit

    made, root = hosts
    began = time.monotonic()
    cluster = MultiHostCluster(made, root, base_settings)
    cluster.start()
    settings = cluster.settings
    FIGURES["multi-host: 7 hosts up (ZooKeeper, Kafka, PostgreSQL, 2 JM, 2 TM)"] = (
        f"{time.monotonic() - began:.1f} s"
    )

    topic = "telemetry-multihost"
    ensure_topic(settings.kafka_bootstrap, topic, settings.events_topic_partitions)
    messages, events = known_messages(seed=41)
    # Remote submission, the project and the model shipped with the job; the client plans it
    # here with the hosts' addresses.
    env = {
        **cluster.flink_dirs("client"),
        "FLINK_CONF_DIR": str(cluster.flink.conf_dir),
        **job_env(settings, topic, ANOMALY_CHECKPOINT_INTERVAL_SECONDS="2"),
        "ANOMALY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "ANOMALY_PG_HOST": settings.pg_host,
        "ANOMALY_PG_PORT": str(settings.pg_port),
        "ANOMALY_CHECKPOINT_DIR": settings.checkpoint_dir,
        "ANOMALY_SECRETS_FILE": str(cluster.secrets_file),
    }
    submission = Submission(
        jobmanager=f"{cluster.address['jm1']}:8081", ship=True, model_dir=trained[0].model_dir
    )
    job_id = submit(submission, settings, env=env)
    # Input is still to come through both faults: the last slice waits for the second.
    faults_hit = threading.Event()
    producer = PacedProducer(settings, topic, messages, slices=70, pause_s=1.0, hold=faults_hit)
    producer.start()
    wait_until("job running", lambda: cluster.all_running("jm1", job_id), 120)
    wait_until(
        "two checkpoints and rows",
        lambda: (
            cluster.checkpoints("jm1", job_id)["counts"]["completed"] >= 2
            and count_rows(settings, settings.scores_table) > 0
        ),
        120,
    )

    # 1. The host of the TaskManager that runs the job falls off the network.
    victim = sorted(cluster.job_hosts("jm1", job_id))[0]
    assert victim in TASKMANAGERS, victim
    restarts = cluster.restarts("jm1", job_id)
    cut_at = time.monotonic()
    made.cut(victim)
    wait_until(
        "a restart after the cut",
        lambda: cluster.restarts("jm1", job_id) > restarts,
        90,
    )
    tm_back = wait_until("job running again", lambda: cluster.all_running("jm1", job_id), 120)
    survivor = next(name for name in TASKMANAGERS if name != victim)
    assert cluster.job_hosts("jm1", job_id) == {survivor}

    # 2. kill -9 of the leading JobManager once the job has checkpointed on the survivor.
    done = cluster.checkpoints("jm1", job_id)["counts"]["completed"]
    wait_until(
        "a checkpoint after the cut",
        lambda: cluster.checkpoints("jm1", job_id)["counts"]["completed"] > done,
        60,
    )
    assert "granted leadership" not in cluster.log_text("jm2")
    killed_at = time.monotonic()
    for pid in made.pids("jm1"):
        os.kill(pid, signal.SIGKILL)
    faults_hit.set()
    led_at = cluster.wait_log("jm2", "granted leadership", 90)
    jm_back = wait_until(
        "job running on the standby", lambda: cluster.all_running("jm2", job_id), 150
    )
    restored = cluster.checkpoints("jm2", job_id)["latest"]["restored"]
    assert restored and not restored["is_savepoint"], restored
    # The same job, recovered by the standby: nothing was submitted again.
    assert [j["jid"] for j in cluster.rest("jm2", "/jobs/overview")["jobs"]] == [job_id]

    caught_up = wait_for_rows(settings, settings.scores_table, expected_windows(events), 240)
    producer.join(120)
    assert producer.error is None, producer.error
    time.sleep(3)  # a doubled or late-rewritten row would show up now
    late = operator_metrics(cluster.flink_at("jm2"), job_id, ("numLateRecordsDropped",))
    late = {name: value for name, value in late.items() if value}
    assert late == {}, f"rows dropped as late inside the job: {late}"
    assert_windows_exact(fetch_scores(settings), events, trained)
    dead = fetch_table(settings, settings.dead_letters_table, "source_offset")
    assert len(dead) == sum(reject_reason(v) is not None for _, v in messages)
    assert count_rows(settings, settings.late_events_table) == 0

    FIGURES["multi-host: TaskManager host cut off its network"] = (
        f"running again on {survivor} {tm_back - cut_at:.1f} s after the cut, all rows "
        f"{caught_up - cut_at:.1f} s after it; 0 lost, 0 doubled"
    )
    FIGURES["multi-host: leading JobManager kill -9"] = (
        f"standby leads {led_at - killed_at:.1f} s after, job running again "
        f"{jm_back - killed_at:.1f} s after (same job, from checkpoint {restored['id']}), "
        f"all rows {caught_up - killed_at:.1f} s after; 0 lost, 0 doubled"
    )
