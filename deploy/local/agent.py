"""The local stack's metrics agent: Debian's collectd sending this host's CPU, load, memory and
network metrics to the local Kafka (write_kafka, Format JSON), as a real agent would.

  python -m deploy.local.agent start     start collectd (idempotent; creates the topic first)
  python -m deploy.local.agent status    whether it runs, where it writes, messages so far
  python -m deploy.local.agent stop

collectd reads every ANOMALY_AGENT_INTERVAL_SECONDS (default 2) and writes to the topic
ANOMALY_AGENT_TOPIC (default collectd-metrics) at ANOMALY_KAFKA_BOOTSTRAP; the host name in its
messages (the device of the job) is this machine's short host name unless --hostname says
otherwise. Its configuration, pid file and base folder are under the state folder's collectd/,
its log is logs/collectd.log. `make setup` installs it (collectd-core, librdkafka1, libyajl2).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from common.settings import Settings
from deploy.local.helpers import (
    StackError,
    cmdline,
    log,
    pid_alive,
    port_open,
    process_alive,
    spawn,
    stop_pid,
    wait_for,
)

PLUGIN_DIR = Path("/usr/lib/collectd")
TYPES_DB = Path("/usr/share/collectd/types.db")
# The interfaces whose traffic collectd reports; catalogues/host.yaml scores the loopback's.
INTERFACES = ("lo",)
_HOSTNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_CONFIG_HOSTNAME = re.compile(r'^Hostname "([^"]*)"', re.MULTILINE)


def collectd_binary() -> str:
    found = shutil.which("collectd") or shutil.which("collectd", path="/usr/sbin:/sbin")
    if not found or not (PLUGIN_DIR / "write_kafka.so").exists():
        raise StackError(
            "collectd with its write_kafka plugin not found: run `make setup` (Debian "
            "collectd-core, librdkafka1, libyajl2)"
        )
    return found


def short_hostname() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


def render_config(
    *,
    hostname: str,
    interval_s: int,
    bootstrap: str,
    topic: str,
    base_dir: Path,
    pid_file: Path,
    interfaces: tuple[str, ...] = INTERFACES,
) -> str:
    """collectd.conf (5.12 syntax): cpu in percent of the whole host, load, memory, the
    interfaces' traffic, every ``interval_s``, as JSON to ``topic``; its log on stdout."""
    interface_lines = "\n".join(f'  Interface "{name}"' for name in interfaces)
    return f"""\
# Written by deploy/local/agent.py at each start; edits are overwritten.
Hostname "{hostname}"
FQDNLookup false
BaseDir "{base_dir}"
PIDFile "{pid_file}"
PluginDir "{PLUGIN_DIR}"
TypesDB "{TYPES_DB}"
Interval {interval_s}
ReadThreads 2
WriteThreads 1

# First, so that the other plugins' messages reach the log too (collectd runs with -f: its
# stdout is the log file).
LoadPlugin logfile
<Plugin logfile>
  LogLevel "info"
  File STDOUT
  Timestamp true
  PrintSeverity true
</Plugin>

LoadPlugin cpu
LoadPlugin load
LoadPlugin memory
LoadPlugin interface
LoadPlugin write_kafka

# One value per CPU state in percent of all CPUs: cpu.percent-user, cpu.percent-idle, ...
<Plugin cpu>
  ReportByCpu false
  ReportByState true
  ValuesPercentage true
</Plugin>

<Plugin memory>
  ValuesAbsolute true
  ValuesPercentage false
</Plugin>

<Plugin interface>
{interface_lines}
  IgnoreSelected false
</Plugin>

# A JSON array of value lists per message, keyed at random (the write_kafka default).
# StoreRates false: derive values (interface octets, packets) as collectd's running totals,
# the job computes the rates. write_kafka's own default is true (its code, whatever
# collectd.conf(5) says): it would send rates that still say "derive".
<Plugin write_kafka>
  Property "metadata.broker.list" "{bootstrap}"
  <Topic "{topic}">
    Format JSON
    StoreRates false
  </Topic>
</Plugin>
"""


def check_config(binary: str, config: Path) -> None:
    """collectd's verdict on a configuration: a StackError that quotes it if invalid.

    `collectd -t` is a no-op in 5.12 (it exits 0 without reading the file: collectd issue
    #3216, fixed after 5.12 by pull request #3793), so this runs `collectd -T`: it reads the
    file, loads and configures every plugin and runs one round of reads, and exits non-zero on
    any error. Its one round is not flushed to Kafka (it exits first)."""
    try:
        done = subprocess.run(
            [binary, "-T", "-C", str(config)], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"`collectd -T -C {config}` did not finish within 60 s") from exc
    if done.returncode:
        lines = [
            line
            for line in (done.stdout + done.stderr).splitlines()
            if line.strip() and "[info]" not in line
        ]
        raise StackError(
            f"collectd rejects its configuration {config} (`collectd -T -C {config}`, exit "
            f"{done.returncode}):\n  " + "\n  ".join(lines or ["(no message)"])
        )


class Collectd:
    """collectd as a child daemon (``collectd -f``) of the local stack.

    ``state_dir``: where its configuration, pid file and log go (default: the state folder's
    collectd/, the log in logs/); ``hostname``: the host name its messages carry."""

    def __init__(
        self, settings: Settings, hostname: str | None = None, state_dir: Path | None = None
    ):
        self.s = settings
        self.hostname = hostname or short_hostname()
        if not _HOSTNAME.fullmatch(self.hostname):
            raise StackError(
                f"host name {self.hostname!r}: use letters, digits, '.', '_' and '-' only"
            )
        self.topic = settings.agent_topic
        self.interval_s = settings.agent_interval_seconds
        self.root = Path(state_dir) if state_dir else settings.state_dir / "collectd"
        self.config = self.root / "collectd.conf"
        self.pid_file = self.root / "collectd.pid"
        logs = self.root if state_dir else settings.state_dir / "logs"
        self.log_file = logs / "collectd.log"

    def config_text(self) -> str:
        return render_config(
            hostname=self.hostname,
            interval_s=self.interval_s,
            bootstrap=self.s.kafka_bootstrap,
            topic=self.topic,
            base_dir=self.root.resolve(),
            pid_file=self.pid_file.resolve(),
        )

    def pid(self) -> int | None:
        """The pid of this collectd (the pid file's process, if it runs our configuration)."""
        pid = pid_alive(self.pid_file)
        if pid is None:
            return None
        words = cmdline(pid)
        ours = "collectd" in " ".join(words) and str(self.config.resolve()) in words
        return pid if ours else None

    def running(self) -> bool:
        return self.pid() is not None

    def running_hostname(self) -> str | None:
        """The host name the running collectd's configuration gives (None if none runs)."""
        if not self.running():
            return None
        try:
            match = _CONFIG_HOSTNAME.search(self.config.read_text())
        except OSError:
            return None
        return match.group(1) if match else None

    def messages(self) -> int | None:
        """Messages the topic holds now (None if Kafka does not answer)."""
        from common.kafka_admin import messages_in

        try:
            return messages_in(self.s.kafka_bootstrap, self.topic)
        except Exception:  # status must not fail on a broker it cannot read
            return None

    def summary(self) -> str:
        """One line: whether it runs, what it sends where, the topic's messages, its files."""
        pid = self.pid()
        where = f"Kafka {self.s.kafka_bootstrap} topic {self.topic}"
        if pid is None:
            return f"collectd stopped ({where}; log {self.log_file})"
        count = self.messages()
        held = "topic not readable" if count is None else f"{count:,} messages on it"
        return (
            f"collectd running (pid {pid}): host {self.running_hostname()}, cpu/load/memory/"
            f"interface {','.join(INTERFACES)} every {self.interval_s} s -> {where} ({held}); "
            f"config {self.config}, log {self.log_file}"
        )

    def start(self, timeout_s: float | None = None) -> None:
        """Start collectd unless it runs with the same configuration (a running one with
        another is restarted); returns once its first message is on the topic."""
        from common.kafka_admin import ensure_topic

        text = self.config_text()
        if self.running():
            if self.config.read_text() == text:
                log(f"collectd already running (pid {self.pid()}) -> topic {self.topic}")
                return
            log("collectd runs with another configuration (host, topic or interval): restarting")
            self.stop()
        binary = collectd_binary()
        host, _, port = self.s.kafka_bootstrap.rpartition(":")
        if not port_open(host, int(port)):
            raise StackError(
                f"Kafka does not answer at {self.s.kafka_bootstrap}: `make up` starts it"
            )
        partitions = self.s.events_topic_partitions
        try:
            if ensure_topic(self.s.kafka_bootstrap, self.topic, partitions):
                log(f"created topic {self.topic} ({partitions} partitions)")
        except RuntimeError as exc:
            raise StackError(str(exc)) from exc
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(text)
        check_config(binary, self.config)
        before = self.messages() or 0
        pid = spawn([binary, "-f", "-C", str(self.config.resolve())], self.log_file, self.pid_file)

        def delivered() -> bool:
            # The process itself, not the pid file (written twice at start: by spawn and by
            # collectd's PIDFile): once, under load, the pid-file check said "exited" while the
            # collectd it had started ran on; the cause was not reproduced.
            if not process_alive(pid):
                raise StackError(
                    f"collectd exited at start; the end of its log {self.log_file}:\n"
                    + self.log_tail()
                )
            return (self.messages() or 0) > before

        wait = timeout_s or max(30.0, 5.0 * self.interval_s)
        try:
            wait_for(f"collectd's first message on {self.topic}", delivered, wait, self.log_file)
        except StackError as exc:
            if self.running():
                raise StackError(
                    f"{exc}; collectd runs (pid {self.pid()}) but nothing reached Kafka. The "
                    f"end of its log:\n{self.log_tail()}"
                ) from exc
            raise
        log(self.summary())

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "  (no log)"
        return "\n".join(f"  {line}" for line in text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.pid() is None:
            # Not ours (any more): leave a reused pid alone, forget the file.
            self.pid_file.unlink(missing_ok=True)
            return
        if stop_pid("collectd", self.pid_file, timeout_s=15):
            log("collectd stopped")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deploy.local.agent",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("command", choices=("start", "stop", "status"))
    p.add_argument(
        "--hostname", help="the host name (device) its messages carry (default: this machine's)"
    )
    args = p.parse_args(argv)
    try:
        collectd = Collectd(Settings.from_env(), hostname=args.hostname)
        if args.command == "start":
            collectd.start()
        elif args.command == "stop":
            collectd.stop()
            log(collectd.summary())
        else:
            print(collectd.summary(), flush=True)
            return 0 if collectd.running() else 3
    except StackError as exc:
        print(f"[stack] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
