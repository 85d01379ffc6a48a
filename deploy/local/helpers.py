"""What the local stack's services share: the log line, the error, small process helpers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from common.settings import REPO_ROOT

HERE = Path(__file__).resolve().parent


def log(message: str) -> None:
    print(f"[stack] {message}", flush=True)


class StackError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# small process helpers


def pid_alive(pid_file: Path) -> int | None:
    """The pid a pid file names, if that process lives (a zombie does not)."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if process_alive(pid) else None


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
    """End the process a pid file names (SIGTERM, SIGKILL after ``timeout_s``); whether one
    ran."""
    pid = pid_alive(pid_file)
    if pid is not None and end_processes([pid], timeout_s):
        log(f"{name} (pid {pid}) ignored SIGTERM for {timeout_s:.0f} s; killed it")
    pid_file.unlink(missing_ok=True)
    return pid is not None


def cmdline(pid: int) -> list[str]:
    """A process's command line, one word a string; empty if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def end_processes(pids: list[int], timeout_s: float = 30.0, kill_wait_s: float = 10.0) -> list[int]:
    """SIGTERM to each of ``pids``; SIGKILL to those still alive after ``timeout_s``. Returns
    the pids that were killed; raises StackError if any outlives the SIGKILL by ``kill_wait_s``."""

    def alive() -> list[int]:
        return [pid for pid in pids if process_alive(pid)]

    for pid in alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = alive()
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + kill_wait_s
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive():
        raise StackError(f"processes {alive()} outlived SIGKILL for {kill_wait_s:.0f} s")
    return killed
