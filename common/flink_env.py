"""One way to create the Flink table environment, for the job, training and tests."""

from __future__ import annotations

import sys

from pyflink.java_gateway import get_gateway
from pyflink.table import EnvironmentSettings, TableEnvironment

from common.settings import Settings


def create_table_env(settings: Settings, *, streaming: bool = True) -> TableEnvironment:
    env_settings = (
        EnvironmentSettings.in_streaming_mode()
        if streaming
        else EnvironmentSettings.in_batch_mode()
    )
    if streaming:
        # A StreamTableEnvironment, so that the job can hand its scored windows through one
        # DataStream to every branch that reads them (jobs/score_telemetry.py).
        from pyflink.datastream import StreamExecutionEnvironment
        from pyflink.table import StreamTableEnvironment

        stream_env = StreamExecutionEnvironment.get_execution_environment()
        t_env = StreamTableEnvironment.create(stream_env, env_settings)
    else:
        t_env = TableEnvironment.create(env_settings)
    # In-process runs execute the JDBC sink in this JVM: it must run in UTC for window
    # timestamps to reach PostgreSQL unshifted (the cluster sets -Duser.timezone=UTC).
    jvm = get_gateway().jvm
    jvm.java.util.TimeZone.setDefault(jvm.java.util.TimeZone.getTimeZone("UTC"))
    config = t_env.get_config()
    # Window start/end are wall-clock timestamps in this zone; UTC keeps them equal to the
    # instants PostgreSQL stores.
    config.set("table.local-time-zone", "UTC")
    config.set("pipeline.name", settings.job_name)
    config.set("parallelism.default", str(settings.parallelism))
    # ONE string of ';'-separated URLs: a list is mis-parsed by Flink 2.0.0 (FLINK-37505).
    config.set("pipeline.jars", ";".join(settings.jar_urls()))
    # A partition with no new events stops holding the watermark (and every window) back.
    config.set("table.exec.source.idle-timeout", f"{settings.idle_timeout_seconds} s")
    # Bigger Arrow batches for the pandas UDF: one onnxruntime call scores many windows.
    config.set("python.fn-execution.arrow.batch.size", str(settings.arrow_batch_size))
    config.set("python.fn-execution.bundle.size", str(settings.arrow_batch_size))
    # Flush a partly filled bundle after 1 s so that low rates still see results promptly.
    config.set("python.fn-execution.bundle.time", "1000")
    # The Python workers run the interpreter that runs this code (the project's venv), unless
    # `flink run -pyexec` says otherwise.
    if not config.get("python.executable", None):
        config.set("python.executable", sys.executable)
    return t_env
