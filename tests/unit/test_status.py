"""`make status` on a job's failures: the count in the last hour and the newest root cause."""

from deploy.local.stack import failure_summary, root_cause

TRACE = (
    "org.apache.flink.runtime.JobException: Recovery is suppressed\n"
    "\tat org.apache.flink.runtime.Foo.bar(Foo.java:1)\n"
    "Caused by: java.io.IOException: Failed to lookup with key '+I(evil dev)'\n"
    "\t... 3 more\n"
    "Caused by: org.postgresql.util.PSQLException: ERROR: invalid byte sequence for encoding"
    ' "UTF8": 0x00\n'
    "\tat org.postgresql.core.v3.QueryExecutorImpl.receiveErrorResponse(QueryExecutorImpl.java:2)\n"
)


def test_root_cause_is_the_innermost_cause_on_one_line():
    assert root_cause(TRACE) == (
        'org.postgresql.util.PSQLException: ERROR: invalid byte sequence for encoding "UTF8": 0x00'
    )
    assert (
        root_cause("java.lang.RuntimeException: boom\n\tat x") == "java.lang.RuntimeException: boom"
    )
    assert root_cause("x" * 300, width=50) == "x" * 47 + "..."
    assert root_cause("") == "(no stack trace)"


def test_failure_summary_counts_the_last_hour_and_names_the_newest_cause():
    now = 10_000_000.0
    entries = [
        {"timestamp": now - 30_000, "stacktrace": TRACE},
        {"timestamp": now - 4_000_000, "stacktrace": "java.lang.Error: old"},
        {"timestamp": now - 60_000, "stacktrace": "java.lang.Error: older"},
    ]
    line = failure_summary(entries, now, total=7)
    assert line.startswith(
        "failures: 2 in the last hour, 7 restarts since it started; newest 30 s ago: "
    )
    assert line.endswith("0x00")
    assert failure_summary([], now, total=0) == (
        "failures: none in the last hour, 0 restarts since it started"
    )
    assert failure_summary([], now, total=None) == "failures: none in the last hour"


def test_a_job_from_a_savepoint_is_restored_once_every_task_runs():
    """`make upgrade` waits for this (deploy.local.flink.restore_state): a state the new plan
    cannot read fails on the TaskManager after the submission succeeded."""
    from deploy.local.flink import restore_state

    def job(state: str, *tasks: dict) -> dict:
        return {"jid": "j1", "state": state, "vertices": [{"tasks": t} for t in tasks]}

    running, starting = {"RUNNING": 1, "INITIALIZING": 0}, {"RUNNING": 0, "INITIALIZING": 1}
    assert restore_state(job("RUNNING", running, {"RUNNING": 2}), []) == "restored"
    assert restore_state(job("RUNNING", running, {"FINISHED": 1, "RUNNING": 1}), []) == "restored"
    assert restore_state(job("RUNNING", running, starting), []) == "waiting"
    assert restore_state(job("RUNNING", running, {"RUNNING": 1, "DEPLOYING": 1}), []) == "waiting"
    assert restore_state(job("CREATED"), []) == "waiting"
    migration = (
        "java.lang.RuntimeException: Error while getting state\n\tat x\n"
        "Caused by: org.apache.flink.util.StateMigrationException: For heap backends, the new "
        "state serializer must not be incompatible with the old state serializer."
    )
    failed = restore_state(job("RESTARTING", running), [{"timestamp": 1, "stacktrace": migration}])
    assert failed.startswith("job j1 is RESTARTING: org.apache.flink.util.StateMigrationException")
    # A failure the job already recovered from counts too: the upgrade did not go cleanly.
    again = restore_state(job("RUNNING", running), [{"timestamp": 1, "stacktrace": migration}])
    assert again.startswith("job j1 is RUNNING: org.apache.flink.util.StateMigrationException")
    assert restore_state(job("FAILED", running), []) == "job j1 is FAILED: (no stack trace)"
