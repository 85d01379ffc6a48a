"""How the local stack finds and ends its Flink processes, with stand-in processes (no JVM)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.settings import Settings
from deploy.local.flink import Flink, config_dir
from deploy.local.helpers import process_alive

TM_CLASS = Flink.MAIN_CLASSES["taskmanager"]
JM_CLASS = Flink.MAIN_CLASSES["jobmanager"]


def test_config_dir_is_read_from_the_command_line_against_the_working_directory(tmp_path):
    args = ["java", "-cp", "x", TM_CLASS, "--configDir", "state/flink/conf", "-D", "a=b"]
    assert config_dir(args, tmp_path) == tmp_path / "state" / "flink" / "conf"
    assert config_dir(["java", TM_CLASS, "--configDir", "/abs/conf"], tmp_path) == Path("/abs/conf")
    assert config_dir(["java", TM_CLASS], tmp_path) is None
    assert config_dir(["java", TM_CLASS, "--configDir"], tmp_path) is None


@pytest.fixture
def flink(tmp_path) -> Flink:
    flink = Flink(Settings.from_env().replace(state_dir=tmp_path / "state"))
    flink.root.mkdir(parents=True)
    return flink


def test_taskmanagers_wanted_is_one_per_worker_line(flink):
    assert flink.taskmanagers_wanted() == 1  # pyflink's own workers file: localhost
    flink.conf_dir.mkdir(parents=True)
    (flink.conf_dir / "workers").write_text("# comment\nlocalhost\n\nlocalhost\n")
    assert flink.taskmanagers_wanted() == 2


def stand_in(main_class: str, conf: Path, ignore_sigterm: bool = False) -> subprocess.Popen:
    """A process whose command line looks like a Flink daemon's (main class, --configDir)."""
    code = "import signal, time\n"
    if ignore_sigterm:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('up', flush=True)\ntime.sleep(120)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, main_class, "--configDir", str(conf)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "up\n"
    return proc


def test_processes_by_pid_file_and_by_configuration_folder(flink, tmp_path):
    other_conf = tmp_path / "other" / "conf"
    ours_by_scan = stand_in(TM_CLASS, flink.conf_dir)
    ours_by_pid_file = stand_in(JM_CLASS, other_conf)  # named by our pid file only
    not_ours = stand_in(TM_CLASS, other_conf)
    try:
        (flink.root / "flink--standalonesession.pid").write_text(
            f"{ours_by_pid_file.pid}\n999999999\n{os.getpid()}\n"  # gone; not a Flink daemon
        )
        (flink.root / "flink--taskexecutor.pid").write_text("")
        assert flink.processes() == {
            "jobmanager": [ours_by_pid_file.pid],
            "taskmanager": [ours_by_scan.pid],
        }
        flink.forget_dead_pids()
        assert (flink.root / "flink--standalonesession.pid").read_text() == (
            f"{ours_by_pid_file.pid}\n"
        )
        assert not (flink.root / "flink--taskexecutor.pid").exists()

        flink.stop(timeout_s=5)
        for proc in (ours_by_scan, ours_by_pid_file):
            assert proc.wait(5) is not None
        assert process_alive(not_ours.pid), "another cluster's process must be left alone"
        assert flink.pid_files() == []
    finally:
        for proc in (ours_by_scan, ours_by_pid_file, not_ours):
            proc.kill()
            proc.wait()


def test_stop_kills_what_ignores_sigterm(flink, capsys):
    stubborn = stand_in(TM_CLASS, flink.conf_dir, ignore_sigterm=True)
    try:
        began = time.monotonic()
        flink.stop(timeout_s=1)
        assert stubborn.wait(5) == -9
        assert time.monotonic() - began < 5
        assert "stopped (1 process, 1 of them killed after 1 s)" in capsys.readouterr().out
    finally:
        stubborn.kill()
        stubborn.wait()


def test_stop_with_nothing_running_says_so(flink, capsys):
    flink.stop()
    assert "Flink cluster not running" in capsys.readouterr().out


def test_a_taskmanager_dumps_its_classes_once_and_the_next_ones_map_them(flink, tmp_path):
    """No archive: the config's options and a dump of this TaskManager's own at exit; a dump
    left by an exited TaskManager becomes the archive that the next ones map (the other dumps
    are removed); a changed jar of the lib folder: another archive, the old one removed."""
    flink.conf_dir.mkdir(parents=True)
    (flink.conf_dir / "config.yaml").write_text(
        "env:\n  java:\n    opts:\n      taskmanager: -XX:G1HeapRegionSize=8m\n"
    )
    flink.lib_dir.mkdir(parents=True)
    jar = tmp_path / "connector.jar"
    jar.write_bytes(b"classes")
    (flink.lib_dir / jar.name).symlink_to(jar)

    def option(opts: str, name: str) -> Path | None:
        found = [o.split("=", 1)[1] for o in opts.split() if o.startswith(f"-XX:{name}=")]
        return Path(found[0]) if found else None

    first, second = flink.taskmanager_java_opts(), flink.taskmanager_java_opts()
    assert first.startswith("-XX:G1HeapRegionSize=8m ")
    dump_a, dump_b = option(first, "ArchiveClassesAtExit"), option(second, "ArchiveClassesAtExit")
    assert dump_a and dump_b and dump_a != dump_b  # two TaskManagers, a file each
    assert option(first, "SharedArchiveFile") is None
    dump_a.write_bytes(b"archive a")
    dump_b.write_bytes(b"archive b")
    mapped = flink.taskmanager_java_opts()
    archive = option(mapped, "SharedArchiveFile")
    assert archive and archive.read_bytes() in (b"archive a", b"archive b")
    assert option(mapped, "ArchiveClassesAtExit") is None
    assert sorted(p.name for p in archive.parent.iterdir()) == [archive.name]
    assert option(flink.taskmanager_java_opts(), "SharedArchiveFile") == archive

    jar.write_bytes(b"classes, rebuilt")
    dump_c = option(flink.taskmanager_java_opts(), "ArchiveClassesAtExit")
    assert dump_c and not archive.exists()
    dump_c.write_bytes(b"archive c")
    assert option(flink.taskmanager_java_opts(), "SharedArchiveFile").read_bytes() == b"archive c"
