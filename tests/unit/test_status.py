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
