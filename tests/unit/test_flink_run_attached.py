"""`python -m deploy.flink_run --attached`: waiting for the job's end, without a cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deploy import flink_run


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def states(*seen):
    """A poll function answering ``seen`` in turn (an exception is raised), then the last."""
    answers = list(seen)

    def poll() -> str:
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return poll


@pytest.mark.parametrize("final", ["FINISHED", "FAILED", "CANCELED", "SUSPENDED"])
def test_waits_through_live_states_until_a_terminal_one(final):
    clock, changes = FakeClock(), []
    state, ended = flink_run.wait_for_end(
        states("INITIALIZING", "RUNNING", "RUNNING", "RESTARTING", "RUNNING", final),
        timeout_s=60,
        clock=clock,
        sleep=clock.sleep,
        on_change=changes.append,
    )
    assert (state, ended) == (final, True)
    assert changes == ["INITIALIZING", "RUNNING", "RESTARTING", "RUNNING", final]
    assert clock.slept == [1.0] * 5


def test_a_rest_api_that_does_not_answer_for_a_moment_is_waited_through():
    clock, changes = FakeClock(), []
    state, ended = flink_run.wait_for_end(
        states("RUNNING", OSError("connection refused"), ValueError("half a body"), "FINISHED"),
        timeout_s=60,
        clock=clock,
        sleep=clock.sleep,
        on_change=changes.append,
    )
    assert (state, ended) == ("FINISHED", True)
    assert changes == ["RUNNING", "FINISHED"]


def test_gives_up_after_the_timeout_with_the_last_state():
    clock = FakeClock()
    state, ended = flink_run.wait_for_end(
        states("RUNNING"), timeout_s=10, interval_s=3, clock=clock, sleep=clock.sleep
    )
    assert (state, ended) == ("RUNNING", False)
    assert clock.now == 10  # the last sleep ends at the deadline, not after it
    assert clock.slept == [3, 3, 3, 1]


def test_never_answering_is_a_timeout_too():
    clock = FakeClock()
    state, ended = flink_run.wait_for_end(
        states(OSError("refused")), timeout_s=5, clock=clock, sleep=clock.sleep
    )
    assert (state, ended) == ("UNKNOWN", False)


@pytest.mark.parametrize(
    ("final", "code"), [("FINISHED", 0), ("FAILED", 1), ("CANCELED", 1), ("SUSPENDED", 1)]
)
def test_the_exit_code_and_the_report_follow_the_final_state(final, code, capsys, monkeypatch):
    monkeypatch.setattr(flink_run, "failure_cause", lambda jm, job: ": java.lang.Boom")
    assert flink_run.wait_attached("127.0.0.1:1", "j1", 60, poll=states(final)) == code
    out, err = capsys.readouterr()
    assert f"job j1 is {final}" in out
    if code:
        reason = ": java.lang.Boom" if final == "FAILED" else ""
        assert f"job j1 ended {final}{reason}" in err
    else:
        assert "job j1 ended FINISHED" in out and not err


def test_still_running_at_the_timeout_fails_and_says_how_to_cancel(capsys):
    clock = FakeClock()
    code = flink_run.wait_attached(
        "127.0.0.1:1", "j1", 5, poll=states("RUNNING"), clock=clock, sleep=clock.sleep
    )
    assert code == 1 and clock.now == 5
    err = capsys.readouterr().err
    assert "job j1 still RUNNING after 5 s" in err and "flink cancel -m 127.0.0.1:1 j1" in err


def submitted(monkeypatch, job_id="a" * 32):
    """main() with `flink run` replaced: records the Submission, returns ``job_id``."""
    calls = []

    def fake_submit(submission, settings, env=None):
        calls.append(submission)
        return job_id

    monkeypatch.setattr(flink_run, "submit", fake_submit)
    return calls


def test_attached_waits_for_the_end_and_exits_by_it(monkeypatch, capsys):
    calls = submitted(monkeypatch)
    waited = []
    monkeypatch.setattr(
        flink_run, "wait_attached", lambda jm, job, timeout: waited.append((jm, job, timeout)) or 1
    )
    code = flink_run.main(["-m", "h:8081", "--attached", "--timeout", "90", "--", "--bounded"])
    assert code == 1
    assert waited == [("h:8081", "a" * 32, 90.0)]
    assert calls[0].job_args == ["--bounded"] and not calls[0].detached


def test_without_attached_it_returns_after_submission(monkeypatch):
    submitted(monkeypatch)
    monkeypatch.setattr(flink_run, "wait_attached", lambda *a: pytest.fail("must not wait"))
    assert flink_run.main(["-m", "h:8081", "--", "--bounded"]) == 0


def test_attached_waits_an_hour_by_default(monkeypatch):
    submitted(monkeypatch)
    waited = []
    monkeypatch.setattr(flink_run, "wait_attached", lambda jm, job, t: waited.append(t) or 0)
    assert flink_run.main(["-m", "h:8081", "--attached"]) == 0
    assert waited == [flink_run.ATTACHED_TIMEOUT_S] == [3600.0]


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_timeout_must_be_positive(value, monkeypatch):
    submitted(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        flink_run.main(["-m", "h:8081", "--attached", "--timeout", value])
    assert exc.value.code == 2


def test_the_client_dumps_its_classes_once_then_maps_them(tmp_path):
    """No archive yet: a file of this client's own to dump to (beside, never over, the
    archive); once the archive exists, it is used; an unwritable state folder: none."""
    from common.settings import Settings

    settings = Settings.from_env().replace(state_dir=tmp_path / "state")
    archive, dump = flink_run.client_class_archive(settings)
    assert archive.parent == dump.parent == tmp_path / "state" / "flink-client"
    assert archive.suffix == dump.suffix == ".jsa" and dump != archive
    assert flink_run.client_class_archive(settings)[1] != dump  # each client its own
    archive.write_bytes(b"classes")
    assert flink_run.client_class_archive(settings) == (archive, None)
    (tmp_path / "file").write_text("")
    blocked = settings.replace(state_dir=tmp_path / "file" / "state")
    assert flink_run.client_class_archive(blocked) == (None, None)


def test_the_client_loads_the_planner_from_its_classpath_where_make_setup_fetched_it(tmp_path):
    """With pom-deps.txt's planner jar of the installed Flink: a lib folder of pyflink's jars
    with the planner in place of its loader, made once, and a class archive of its own; without
    it: pyflink's lib."""
    from importlib.metadata import version

    from common.settings import Settings

    settings = Settings.from_env().replace(state_dir=tmp_path / "state", jars_dir=tmp_path / "jars")
    assert flink_run.client_lib_dir(settings) is None
    planner = (
        tmp_path / "jars" / "client" / f"flink-table-planner_2.12-{version('apache-flink')}.jar"
    )
    planner.parent.mkdir(parents=True)
    planner.write_bytes(b"planner")
    lib = flink_run.client_lib_dir(settings)
    pyflink_lib = flink_run.flink_home() / "lib"
    names = sorted(p.name for p in lib.iterdir())
    assert names == sorted(
        [planner.name]
        + [j.name for j in pyflink_lib.glob("*.jar") if "planner-loader" not in j.name]
    )
    assert (lib / planner.name).resolve() == planner
    assert any("planner-loader" in j.name for j in pyflink_lib.glob("*.jar"))
    made = lib.stat().st_mtime_ns
    assert flink_run.client_lib_dir(settings) == lib and lib.stat().st_mtime_ns == made
    archive = flink_run.client_class_archive(settings, lib)[0]
    assert archive != flink_run.client_class_archive(settings)[0]


def test_the_client_starts_as_the_flink_script_would_start_it(tmp_path):
    """client_launcher's command line and exported variables are those pyflink's `bin/flink`
    script hands its JVM: the script runs with a java that records what it is asked to run
    for CliFrontend (and is the real java for the script's own helpers), over a config.yaml
    with client options, a log folder and a java home of its own."""
    import os
    import shutil

    import yaml

    home = flink_run.flink_home()
    real_java = Path(shutil.which("java")).resolve()
    java_home = tmp_path / "jdk"
    (java_home / "bin").mkdir(parents=True)
    shutil.copy(real_java.parent.parent / "release", java_home / "release")
    record = tmp_path / "cli-args"
    fake = java_home / "bin" / "java"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do if [ "$a" = org.apache.flink.client.cli.CliFrontend ]; then\n'
        f"  printf '%s\\n' \"$@\" > {record}\n"
        f"  env | grep -E '^(FLINK_|MAX_LOG|ROOT_LOG)' | sort > {record}.env; exit 0\n"
        "fi; done\n"
        f'exec {real_java} "$@"\n'
    )
    fake.chmod(0o755)
    conf = tmp_path / "conf"
    shutil.copytree(home / "conf", conf)
    config = yaml.safe_load((conf / "config.yaml").read_text())
    config["env"]["java"]["opts"]["client"] = "-Dclient.option=1 -Xss2m"
    config["env"]["log"] = {"dir": str(tmp_path / "logs"), "level": "WARN"}
    (conf / "config.yaml").write_text(yaml.safe_dump(config))
    env = {
        "PATH": os.environ["PATH"],
        "JAVA_HOME": str(java_home),
        "FLINK_CONF_DIR": str(conf),
        "JVM_ARGS": "-XX:TieredStopAtLevel=1 -Dfrom.jvm.args=1",
        "HOSTNAME": "host1",
        "USER": "someone",
    }
    args = ["run", "--python", "job.py"]
    subprocess.run([home / "bin" / "flink", *args], env=env, check=True, timeout=120)
    # The script's class path ends in Hadoop's (none here): empty entries, left out here.
    script_command = [a.rstrip(":") for a in record.read_text().splitlines()]
    script_env = dict(line.split("=", 1) for line in Path(f"{record}.env").read_text().splitlines())
    command, exported = flink_run.client_launcher(env)
    assert [*command[1:], *args] == script_command
    assert command[0] == str(fake)
    assert exported == {k: v for k, v in script_env.items() if k in exported}
    assert set(exported) >= {"FLINK_CONF_DIR", "FLINK_LIB_DIR", "FLINK_OPT_DIR", "ROOT_LOG_LEVEL"}
    assert "-Dclient.option=1" in command and f"-Dlog.file={tmp_path}/logs/" in " ".join(command)
    classpath = command[command.index("-classpath") + 1].split(":")
    assert Path(classpath[-1]).name.startswith("flink-dist")


def test_the_client_falls_back_to_the_script_where_its_setup_cannot_be_read(tmp_path):
    """No config.yaml, or a lib folder without flink-dist: None (the script runs, and says
    what is wrong)."""
    import os

    env = {"PATH": os.environ["PATH"], "FLINK_CONF_DIR": str(tmp_path / "none")}
    assert flink_run.client_launcher(env) is None
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "flink-table-runtime.jar").write_bytes(b"")
    env = {"PATH": os.environ["PATH"], "FLINK_LIB_DIR": str(tmp_path / "lib")}
    assert flink_run.client_launcher(env) is None
    assert flink_run.client_launcher({"PATH": os.environ["PATH"]}) is not None
    hadoop = {"PATH": os.environ["PATH"], "HADOOP_CLASSPATH": "/opt/hadoop/share/*"}
    assert flink_run.client_launcher(hadoop) is None
