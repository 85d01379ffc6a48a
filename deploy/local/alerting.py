"""The local stack's notifications: Prometheus Alertmanager (Debian's prometheus-alertmanager)
on loopback, the inbox that stands in for the pager and the chat, and the notifier that
sends the incidents to Alertmanager."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from common.settings import REPO_ROOT, Settings
from deploy.local.helpers import StackError, log, pid_alive, port_open, spawn, stop_pid, wait_for

EXAMPLE_CONFIG = REPO_ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
INBOX_PORT = 9096


def alertmanager_binary() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if not found:
        raise StackError(
            "Alertmanager not found: run `make setup` (Debian prometheus-alertmanager)"
        )
    return found


def render_config(receivers: dict[str, str], **route: str) -> str:
    """The example configuration (deploy/alertmanager/alertmanager.yml) with each receiver's
    webhook pointed at ``receivers[name]`` and route timings overridden by ``route``."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = receivers[receiver["name"]]
    config["route"].update(route)
    return yaml.safe_dump(config, sort_keys=False)


def check_config(path: Path) -> None:
    """amtool's verdict on a configuration file; a StackError that quotes it if invalid."""
    amtool = shutil.which("amtool")
    if not amtool:
        return
    done = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True)
    if done.returncode:
        raise StackError(
            f"Alertmanager configuration {path} is invalid:\n{(done.stdout + done.stderr).strip()}"
        )


class Alertmanager:
    def __init__(
        self,
        settings: Settings,
        config_text: str | None = None,
        root: Path | None = None,
        maintenance: str = "1m",
    ):
        self.maintenance = maintenance
        self.s = settings
        url = urlsplit(settings.alertmanager_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 9095
        self.root = root or settings.state_dir / "alertmanager"
        self.config = self.root / "alertmanager.yml"
        self.config_text = config_text
        self.pid_file = self.root / "alertmanager.pid"
        self.log_file = (
            self.root / "alertmanager.log"
            if root
            else settings.state_dir / "logs" / "alertmanager.log"
        )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def running(self) -> bool:
        return pid_alive(self.pid_file) is not None and port_open(self.host, self.port)

    def start(self) -> None:
        if self.running():
            log(f"Alertmanager already running on {self.host}:{self.port}")
            return
        if port_open(self.host, self.port):
            raise StackError(
                f"port {self.port} is taken by another program: stop it or set "
                "ANOMALY_ALERTMANAGER_URL"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        if self.config_text is None:
            inbox = f"http://127.0.0.1:{INBOX_PORT}"
            self.config_text = render_config({"pager": f"{inbox}/pager", "chat": f"{inbox}/chat"})
        self.config.write_text(self.config_text)
        check_config(self.config)
        cmd = [
            alertmanager_binary(),
            f"--config.file={self.config}",
            f"--storage.path={self.root / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            # One instance: no gossip cluster (it would listen on every interface).
            "--cluster.listen-address=",
            # The notification log (what was sent to whom) is written to disk this often and
            # at shutdown: a restart does not page again for what was already paged (a crash
            # may, for what it paged since the last write).
            f"--data.maintenance-interval={self.maintenance}",
        ]
        spawn(cmd, self.log_file, self.pid_file)
        wait_for("Alertmanager", self.ready, 30, self.log_file)
        log(f"Alertmanager on http://{self.host}:{self.port} (config {self.config})")

    def stop(self) -> None:
        if stop_pid("Alertmanager", self.pid_file):
            log("Alertmanager stopped")


class Inbox:
    """The example route's receivers on the local stack: notifications into a file."""

    def __init__(self, settings: Settings):
        self.file = settings.state_dir / "notifications.jsonl"
        self.pid_file = settings.state_dir / "inbox.pid"
        self.log_file = settings.state_dir / "logs" / "inbox.log"

    def running(self) -> bool:
        return pid_alive(self.pid_file) is not None

    def start(self) -> None:
        if self.running():
            return
        if port_open("127.0.0.1", INBOX_PORT):
            raise StackError(
                f"port {INBOX_PORT} (the notification inbox) is taken by another program"
            )
        cmd = [
            sys.executable,
            "-m",
            "alerting.inbox",
            "--port",
            str(INBOX_PORT),
            "--file",
            str(self.file),
        ]
        spawn(cmd, self.log_file, self.pid_file)
        wait_for(
            "notification inbox", lambda: port_open("127.0.0.1", INBOX_PORT), 15, self.log_file
        )

    def stop(self) -> None:
        stop_pid("inbox", self.pid_file)


class Notifier:
    def __init__(self, settings: Settings):
        self.pid_file = settings.state_dir / "notifier.pid"
        self.log_file = settings.state_dir / "logs" / "notifier.log"

    def running(self) -> bool:
        return pid_alive(self.pid_file) is not None

    def start(self) -> None:
        if self.running():
            log(f"notifier already running (log {self.log_file})")
            return
        spawn([sys.executable, "-m", "alerting.notifier", "run"], self.log_file, self.pid_file)
        log(f"notifier started (log {self.log_file})")

    def stop(self) -> None:
        if stop_pid("notifier", self.pid_file):
            log("notifier stopped")
