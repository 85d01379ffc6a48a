"""Hosts of our own on one machine: Linux network namespaces joined by one bridge, each with
its own address, for tests that need several hosts (tests/e2e/test_multihost.py).

Every address is on a /24 of the benchmarking range (RFC 2544) that this module creates and
removes; the test talks to nothing else. A host can be cut off its network (its link goes
down: packets are dropped, no connection is reset, as when a cable or a switch port fails).
Closing kills every process left in the namespaces and removes them, the links and the bridge,
also after a failure; a run that was killed outright is cleaned up by the next one.

    python -m tests.netns serve postgres|kafka   one service of the local stack on this host,
                                                 with the ANOMALY_* settings of the environment
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PREFIX = "anomtest"
SUBNET = ipaddress.ip_network("198.18.71.0/24")
BRIDGE = f"{PREFIX}-br"
LINK_PREFIX = "at-"  # the machine's ends of the hosts' cables (names of at most 15 characters)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed: run `make setup`"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


class Hosts:
    """Named hosts on one test subnet; the machine itself is .1 on the bridge."""

    def __init__(self) -> None:
        self.addresses: dict[str, str] = {}
        self._free = (str(a) for a in list(SUBNET.hosts())[1:])
        self.gateway = str(next(SUBNET.hosts()))

    # --- lifetime ------------------------------------------------------------------------------
    def __enter__(self) -> Hosts:
        self.clean_leftovers()
        routes = json.loads(_ip("-j", "route", "show").stdout or "[]")
        for route in routes:
            dst = route.get("dst", "")
            if dst not in ("default", "") and ipaddress.ip_network(dst, False).overlaps(SUBNET):
                raise RuntimeError(f"{SUBNET} is already routed on this machine ({route}): no test")
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/{SUBNET.prefixlen}", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def clean_leftovers() -> None:
        """Remove namespaces and the bridge a killed run left behind (ours by their prefix)."""
        for line in _ip("netns", "list").stdout.splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith(f"{PREFIX}-"):
                _kill_namespace(name)
        # A deleted namespace lives on while the kernel holds its sockets (a cut host's
        # connections retry for minutes), and its cable with it: cut those by name.
        for link in json.loads(_ip("-j", "link", "show", "type", "veth").stdout or "[]"):
            if link.get("ifname", "").startswith(LINK_PREFIX):
                _ip("link", "del", link["ifname"], check=False)
        _ip("link", "del", BRIDGE, check=False)

    def close(self) -> None:
        for name in list(self.addresses):
            _kill_namespace(self.namespace(name))
            _ip("link", "del", self.link(name), check=False)
        _ip("link", "del", BRIDGE, check=False)
        self.addresses.clear()

    # --- hosts ---------------------------------------------------------------------------------
    @staticmethod
    def namespace(name: str) -> str:
        return f"{PREFIX}-{name}"

    @staticmethod
    def link(name: str) -> str:
        """The machine's end of the host's cable (at most 15 characters)."""
        return f"{LINK_PREFIX}{name}"[:15]

    def add(self, name: str) -> str:
        """A new host called ``name``; returns its address."""
        ns, link, address = self.namespace(name), self.link(name), next(self._free)
        self.addresses[name] = address  # closed even if it is only half made
        _ip("netns", "add", ns)
        _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", link, "master", BRIDGE, "up")
        for args in (
            ("addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0"),
            ("link", "set", "eth0", "up"),
            # Processes of one host talk over loopback (e.g. a TaskManager and its Python
            # workers).
            ("link", "set", "lo", "up"),
        ):
            _ip("-n", ns, *args)
        return address

    def command(self, name: str, cmd: list[str]) -> list[str]:
        """``cmd`` run on host ``name``."""
        return ["ip", "netns", "exec", self.namespace(name), *cmd]

    def run(self, name: str, cmd: list[str], env: dict, log: Path, timeout_s: float = 180) -> None:
        """Run ``cmd`` on host ``name`` to its end; its output goes to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.run(
                self.command(name, cmd), env=env, stdout=out, stderr=out, timeout=timeout_s
            )
        if proc.returncode:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{cmd[:3]} on {name} exited {proc.returncode}:\n{tail}")

    def pids(self, name: str) -> list[int]:
        out = _ip("netns", "pids", self.namespace(name), check=False).stdout
        return [int(p) for p in out.split()]

    def cut(self, name: str) -> None:
        """Take the host off the network: its link goes down, nothing answers or resets."""
        _ip("link", "set", self.link(name), "down")

    def reconnect(self, name: str) -> None:
        _ip("link", "set", self.link(name), "up")


def _kill_namespace(ns: str, timeout_s: float = 15) -> None:
    """SIGKILL every process in namespace ``ns``, then remove it (its links go with it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    _ip("netns", "del", ns, check=False)


def serve(service: str) -> None:
    """Start one service of the local stack with this environment's settings, on this host's
    address, and return once it answers (it keeps running in the background)."""
    from common.settings import Settings
    from deploy.local import stack

    settings = Settings.from_env()
    if service == "postgres":
        postgres = stack.Postgres(settings)
        postgres._init()
        # Clients come from the other hosts of the subnet (initdb allows loopback only).
        hba = postgres.data / "pg_hba.conf"
        line = f"host all all {SUBNET} scram-sha-256\n"
        if line not in hba.read_text():
            hba.write_text(hba.read_text() + line)
        postgres.start()
    elif service == "kafka":
        stack.Kafka(settings).start()
    else:
        raise SystemExit(f"unknown service {service!r}: postgres or kafka")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "serve":
        raise SystemExit(__doc__)
    serve(sys.argv[2])
