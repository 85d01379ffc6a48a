"""One way to create the Flink table environment, for the job, training and tests."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from pyflink.java_gateway import get_gateway
from pyflink.table import EnvironmentSettings, TableEnvironment

from common.settings import Settings

if TYPE_CHECKING:
    import pandas as pd


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
    # Operators chained in one task hand rows on without copying them: +26 % events/s end to
    # end in `make bench` (1M events, 10k devices: 27.6k -> 34.8k), where copying rows was a
    # visible part of the TaskManager's profile. The job's operators do not keep a row they
    # were handed after passing it on.
    config.set("pipeline.object-reuse", "true")
    # Bigger Arrow batches for the pandas UDF: one onnxruntime call scores many windows.
    config.set("python.fn-execution.arrow.batch.size", str(settings.arrow_batch_size))
    config.set("python.fn-execution.bundle.size", str(settings.arrow_batch_size))
    # Flush a partly filled bundle after 1 s so that low rates still see results promptly.
    config.set("python.fn-execution.bundle.time", "1000")
    apply_flink_options(t_env, settings)
    register_functions(t_env, streaming=streaming)
    # The Python workers run the interpreter that runs this code (the project's venv), unless
    # `flink run -pyexec` says otherwise.
    if not config.get("python.executable", None):
        config.set("python.executable", sys.executable)
    return t_env


# The project's SQL functions (jvm/, in pipeline.jars): name -> (the stream's class, the batch
# one's). The stream's keep bounded state; the batch ones keep every sample of a window, whose
# input (history) need not come in time order (jvm/ Steps).
JAVA_FUNCTIONS = {
    "STEP_MAX": ("local.anomaly.flink.Steps$Max", "local.anomaly.flink.Steps$MaxOfAll"),
    "STEP_RMS": ("local.anomaly.flink.Steps$Rms", "local.anomaly.flink.Steps$RmsOfAll"),
}


def register_functions(t_env: TableEnvironment, *, streaming: bool) -> None:
    """The project's Java SQL functions (common.features.STEP_AGGREGATES), in every table
    environment: the stream and training compute the window features with the same SQL."""
    for name, (stream_class, batch_class) in JAVA_FUNCTIONS.items():
        t_env.create_java_temporary_system_function(
            name, stream_class if streaming else batch_class
        )


def apply_flink_options(t_env: TableEnvironment, settings: Settings) -> None:
    """The options of ANOMALY_FLINK_OPTIONS ("key=value;key=value"), over the job's own: the
    job applies them once more after its last option."""
    config = t_env.get_config()
    for option in filter(None, (part.strip() for part in settings.flink_options.split(";"))):
        key, sep, value = option.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"ANOMALY_FLINK_OPTIONS: {option!r} is not key=value (separate options with ;)"
            )
        config.set(key.strip(), value.strip())


def to_pandas(table) -> pd.DataFrame:
    """``table.to_pandas()`` with the schema's types converted from Java once. PyFlink's own
    converts every column's type three times, each through dozens of gateway calls: for the
    window features' ~100 columns that took about as long as running the query itself."""
    import pandas as pd
    import pyarrow as pa
    import pytz
    from pyflink.table.serializers import ArrowSerializer
    from pyflink.table.types import DataTypes, create_arrow_schema
    from pyflink.table.utils import tz_convert_from_internal

    gateway = get_gateway()
    j_table = table._j_table
    config = j_table.getTableEnvironment().getConfig()
    batch_size = config.get(gateway.jvm.org.apache.flink.python.PythonOptions.MAX_ARROW_BATCH_SIZE)
    batches = gateway.jvm.org.apache.flink.table.runtime.arrow.ArrowUtils.collectAsPandasDataFrame(
        j_table, batch_size
    )
    schema = table.get_schema()
    names = schema.get_field_names()
    if not batches.hasNext():
        return pd.DataFrame.from_records([], columns=names)
    types = schema.get_field_data_types()
    timezone = pytz.timezone(config.getLocalTimeZone().getId())
    row_type = DataTypes.ROW([DataTypes.FIELD(n, t) for n, t in zip(names, types, strict=True)])
    serializer = ArrowSerializer(create_arrow_schema(names, types), row_type, timezone)
    frame = pa.Table.from_batches(serializer.load_from_iterator(batches)).to_pandas()
    for name, data_type in zip(names, types, strict=True):
        frame[name] = tz_convert_from_internal(frame[name], data_type, timezone)
    return frame
