"""The local stack's Apache Kafka: one KRaft broker/controller on loopback."""

from __future__ import annotations

import subprocess
from pathlib import Path

from common.settings import REPO_ROOT, Settings
from deploy.local.helpers import (
    HERE,
    StackError,
    log,
    pid_alive,
    port_open,
    spawn,
    stop_pid,
    wait_for,
)

KAFKA_LIBS = REPO_ROOT / ".deps" / "kafka" / "libs"


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
