"""The streaming job: Kafka telemetry -> window features (Flink SQL) -> ONNX score -> PostgreSQL.

Submit to a cluster:   flink run -pyexec .venv/bin/python -py jobs/score_telemetry.py
Run in-process:        python -m jobs.score_telemetry --bounded --wait

Settings come from ANOMALY_* environment variables (common/settings.py). Without --model-dir
the job follows the models folder's CURRENT pointer while it runs (hot reload).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# `flink run -py jobs/score_telemetry.py` runs this file as a script; make the project's
# packages importable even where it is not pip-installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyflink.table import Table, TableEnvironment, TableResult
from pyflink.table.expressions import col

from common.features import CATALOGUE, HORIZONS, MODEL_FEATURE_NAMES, SCORER_CONTEXT_NAMES
from common.models import current_version, resolve_model_dir
from common.settings import Settings
from common.sql import (
    context,
    context_sums,
    render,
    statements,
    window_feature_parts,
    windows_view,
)
from udfs.onnx_scorer import (
    NO_MODEL_YET,
    SCORE_RESULT_SQL_TYPE,
    ModelCardError,
    OnnxModel,
    score_window_udf,
)


def execute_file(t_env: TableEnvironment, relative_path: str, settings: Settings, **extra) -> None:
    for statement in statements(render(relative_path, settings, **extra)):
        t_env.execute_sql(statement)


def options_sql(options: dict[str, str]) -> str:
    return ",\n  ".join(f"'{key}' = '{value}'" for key, value in options.items())


def kafka_source_options(settings: Settings, *, bounded: bool, topic: str | None = None) -> str:
    """Where and how far a Kafka source of events_kafka.sql reads (the bench's bare engine,
    bench/bare_job.py, reads the same way): the topic (default: the events topic) from its
    earliest offset; a bounded run stops at the offsets that are latest when it starts."""
    options = {
        "connector": "kafka",
        "topic": topic or settings.events_topic,
        "properties.bootstrap.servers": settings.kafka_bootstrap,
        "scan.startup.mode": "earliest-offset",
    }
    if bounded:
        options["scan.bounded.mode"] = "latest-offset"
    return options_sql(options)


def source_tables(settings: Settings) -> list[tuple[str, str, str]]:
    """(table, topic, input) of each topic the job reads (ANOMALY_SOURCES); the first table is
    telemetry_source (its operator's name is what dashboards and the bench read)."""
    return [
        ("telemetry_source" if i == 0 else f"telemetry_source_{i}", topic, input_)
        for i, (topic, input_) in enumerate(settings.source_list)
    ]


def register_features(t_env: TableEnvironment, settings: Settings, *, bounded: bool) -> None:
    """Declare the Kafka sources, the event checks and the window-feature view."""
    tables = source_tables(settings)
    for table, topic, input_ in tables:
        mapping = json.dumps(CATALOGUE.agent_mapping(input_)) if input_ != "flat" else ""
        execute_file(
            t_env,
            "flink/events_kafka.sql",
            settings,
            kafka_source_options=kafka_source_options(settings, bounded=bounded, topic=topic),
            source_table=table,
            source_input=input_,
            source_mapping=mapping.replace("'", "''"),
            source_device_field=settings.otlp_device_attribute
            if input_ == "otlp"
            else settings.telegraf_device_tag,
        )
    sources = (
        tables[0][0]
        if len(tables) == 1
        else "(" + " UNION ALL ".join(f"SELECT * FROM {t}" for t, _, _ in tables) + ")"  # noqa: S608
    )
    execute_file(t_env, "flink/checked_events.sql", settings, telemetry_sources=sources)
    register_checked_events(t_env, settings)
    execute_file(t_env, "flink/telemetry_events.sql", settings)
    operator = settings.context_operator == "jvm" and bool(HORIZONS)
    aggregates, context = window_feature_parts(
        settings, context_table="window_context" if operator else None
    )
    for statement in aggregates:
        t_env.execute_sql(statement)
    if operator:
        register_window_context(t_env)
    for statement in context:
        t_env.execute_sql(statement)


def register_window_context(t_env) -> None:
    """Register ``window_context``: the window rows (``window_aggregates``, with each window's
    change where the features have it: common.sql.windows_view) with every horizon's sums
    (common.sql.context_sums), computed by WindowContext (jvm/), keyed by device."""
    specs = [
        (column, h.seconds * 1000, names) for h in HORIZONS for column, names in context_sums(h)
    ]
    table = window_context(t_env, t_env.from_path(windows_view()), "window_time", specs)
    t_env.create_temporary_view("window_context", table)


def window_context(t_env, windows: Table, time: str, specs) -> Table:
    """``windows`` with, for each (column, horizon_ms, (n, sum, sumsq)) of ``specs``, three
    columns more: the count, sum and sum of squares of the DOUBLE ``column`` over the device's
    (device_id) windows of the ``horizon_ms`` of event time (the rowtime ``time``) up to and
    including each one, computed by WindowContext (jvm/), keyed by device."""
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    columns = gateway.new_array(gateway.jvm.java.lang.String, len(specs))
    horizons = gateway.new_array(gateway.jvm.long, len(specs))
    names = gateway.new_array(gateway.jvm.java.lang.String, 3 * len(specs))
    for i, (column, horizon_ms, triple) in enumerate(specs):
        columns[i], horizons[i] = column, horizon_ms
        for k, name in enumerate(triple):
            names[3 * i + k] = name
    table = jvm_class("WindowContext").apply(
        t_env._j_tenv, windows._j_table, "device_id", time, columns, horizons, names
    )
    return Table(table, t_env)


def register_checked_events(t_env, settings: Settings) -> None:
    """Register ``checked_events``: every message read from Kafka once, parsed and checked
    (checked_events.sql), the counters' running totals as rates (CounterRates, keyed by
    device, only where the catalogue has counters), with is_late and watermark_met from
    LateMarker (jvm/), an operator whose watermark survives a restore. The windows read the
    good ones, the dead letters and late events the others: every branch reads this one plan
    of it.

    The event time crosses the DataStream as a plain column (it is NULL for events without a
    valid one, which a record timestamp may not be) and is the rowtime again behind it, with
    the source's watermarks."""
    from pyflink.table import DataTypes

    query = t_env.from_path("checked_events_query")
    events = query.select(
        *(
            col(c).cast(DataTypes.TIMESTAMP_LTZ(3)).alias(c) if c == "event_time" else col(c)
            for c in query.get_schema().get_field_names()
        )
    )
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    counters = gateway.new_array(gateway.jvm.java.lang.String, len(CATALOGUE.counters))
    for i, name in enumerate(CATALOGUE.counters):
        counters[i] = name
    marked = jvm_class("LateMarker").mark(
        t_env._j_tenv,
        events._j_table,
        "event_time",
        "is_late",
        "watermark_met",
        settings.window_seconds * 1000,
        "device_id",
        "reject_reason",
        "ts_ms",
        counters,
    )
    t_env.create_temporary_view("checked_events", Table(marked, t_env))


def recent_max(t_env, table: Table, time: str, value: str, horizon_ms: int, name: str) -> Table:
    """``table`` with the column ``name``: the highest ``value`` of the row's device
    (device_id) over the ``horizon_ms`` of event time (its rowtime ``time``) up to the row,
    computed by RecentMax (jvm/), keyed by device."""
    marked = jvm_class("RecentMax").apply(
        t_env._j_tenv, table._j_table, "device_id", time, value, horizon_ms, name
    )
    return Table(marked, t_env)


def register_health_windows(t_env, settings: Settings) -> None:
    """Register ``health_windows``: ``health_windows_query`` (health_windows.sql) with
    recent_severity, the highest window severity of the device over the last health_seconds
    of event time."""
    query = t_env.from_path("health_windows_query")
    windows = recent_max(
        t_env, query, "window_time", "window_severity", settings.health_seconds * 1000,
        "recent_severity",
    )  # fmt: skip
    t_env.create_temporary_view("health_windows", windows)


def register_via_data_stream(t_env, name: str, columns, schema) -> None:
    """Register the view ``name``: the view ``<name>_query`` with the columns
    ``columns(<its field names>)``, through one DataStream and back as ``schema`` says, so
    that every statement reading ``name`` reads one plan of it. (Internal rows instead of
    ``Row``s across it, as LateMarker does, made no difference in `make bench`.)"""
    query = t_env.from_path(f"{name}_query")
    stream = t_env.to_data_stream(query.select(*columns(query.get_schema().get_field_names())))
    t_env.create_temporary_view(name, t_env.from_data_stream(stream, schema))


def jvm_class(name: str):
    """A class of the project's jar (jvm/, shipped in pipeline.jars)."""
    from pyflink.java_gateway import get_gateway

    return getattr(get_gateway().jvm.local.anomaly.flink, name)


def jdbc_connection_options(settings: Settings) -> dict[str, str]:
    """The job connects as the writer role: it reads reference data and upserts results,
    and may not change the schema or delete rows (sql/postgres/R__grants.sql)."""
    user, password = settings.pg_role("writer")
    if not password:
        raise FileNotFoundError(
            f"no password for the database role {user}: set ANOMALY_PG_WRITER_PASSWORD "
            "(the local stack writes one to .state/secrets.env)"
        )
    return {
        "connector": "jdbc",
        "url": settings.jdbc_url,
        "username": user,
        "password": password,
    }


def reference_rows(settings: Settings, tables: list[str]) -> dict[str, int | None]:
    """How many rows each of ``tables`` has, counted up to one more than
    device_cache_full_max_rows, over one connection; None for all when the database cannot
    be asked."""
    import psycopg2
    from psycopg2 import sql

    from common.db import connect

    limit = settings.device_cache_full_max_rows + 1
    query = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT %s) AS t")
    counts: dict[str, int | None] = {}
    try:
        conn = connect(settings, role="writer")
        try:
            with conn, conn.cursor() as cur:
                for table in tables:
                    cur.execute(query.format(sql.Identifier(table)), (limit,))
                    counts[table] = int(cur.fetchone()[0])
        finally:
            conn.close()
    except (psycopg2.Error, RuntimeError):
        return dict.fromkeys(tables)
    return counts


def held_whole(settings: Settings, rows: int | None) -> bool:
    """Whether a reference table of ``rows`` rows (None: unknown) is held whole."""
    if settings.device_cache == "auto":
        return rows is not None and rows <= settings.device_cache_full_max_rows
    return settings.device_cache == "full"


def jdbc_lookup_options(settings: Settings, whole: bool) -> str:
    """Connection and cache options of a reference-data lookup (devices, segment limits).
    ``whole``: each lookup subtask holds the whole table, read by one scan when it starts
    and anew every device_cache_seconds (jvm/: FullCacheJdbcFactory), so a starting job's
    first windows are answered from memory instead of by a query per device and table. Else
    a key's row, or its absence, is read on first sight and cached for
    device_cache_seconds."""
    options = jdbc_connection_options(settings)
    if whole:
        options |= {
            "connector": "jdbc-full-cache",
            "reload-interval": f"{settings.device_cache_seconds} s",
        }
    else:
        options |= {
            "lookup.cache": "PARTIAL",
            "lookup.partial-cache.expire-after-write": f"{settings.device_cache_seconds} s",
            "lookup.partial-cache.max-rows": "1000000",
            "lookup.partial-cache.cache-missing-key": "true",
            "lookup.max-retries": "3",
        }
    return options_sql(options)


def reference_lookup_options(settings: Settings) -> dict[str, str]:
    """devices_jdbc.sql's lookup options of each reference table, as device_cache says; the
    choice and the tables' sizes are printed (the client's output)."""
    chosen = {}
    named = {
        "devices_lookup_options": settings.devices_table,
        "segment_limits_lookup_options": settings.segment_limits_table,
    }
    tables = list(named.values())
    counts = reference_rows(settings, tables) if settings.device_cache == "auto" else {}
    for name, table in named.items():
        rows = counts.get(table)
        whole = held_whole(settings, rows)
        chosen[name] = jdbc_lookup_options(settings, whole)
        limit = settings.device_cache_full_max_rows
        if rows is None:
            size = ""
        elif rows > limit:
            size = f"over {limit:,} rows, "
        else:
            size = f"{rows:,} rows, "
        how = "held whole" if whole else "rows cached on first sight"
        mode = f"ANOMALY_DEVICE_CACHE={settings.device_cache}"
        print(f"reference table {table}: {size}{how} ({mode})", flush=True)
    return chosen


def jdbc_sink_options(settings: Settings) -> str:
    """Connection and write options shared by every PostgreSQL sink. Rows are written in
    batches (at most 5,000 rows or 1 s apart) and on every checkpoint; a failed write is
    retried, then fails the job, which restarts from its last checkpoint."""
    options = {
        **jdbc_connection_options(settings),
        "sink.buffer-flush.max-rows": "5000",
        "sink.buffer-flush.interval": "1s",
        "sink.max-retries": "5",
    }
    return options_sql(options)


def register_scoring(
    t_env: TableEnvironment,
    settings: Settings,
    model_dir: Path | None,
    shipped_model: str | None = None,
) -> str:
    """Register the scoring UDF (the model loads in the worker's open()); returns the SQL
    expression that scores a window of window_features. ``model_dir`` pins a version;
    without it the UDF follows the models folder's CURRENT pointer. ``shipped_model``: the
    version travels with the job (`flink run -pyarch model.zip#<name>`, deploy/flink_run.py)
    and the workers load it from that folder of their working directory; ``model_dir`` is
    then the local copy checked here."""
    if settings.scoring == "off":
        return f"CAST(NULL AS {SCORE_RESULT_SQL_TYPE})"
    follow = model_dir is None and shipped_model is None and settings.model_reload_seconds > 0
    if follow and current_version(settings) is None:
        # Before the first model (a new fleet, your own agent's metrics): the windows are
        # stored unscored, the history a first model trains on (`training.train --postgres`),
        # and the job scores from the moment CURRENT names one.
        print(
            f"score_telemetry: no model yet ({settings.current_model_pointer} is missing): "
            "windows are stored unscored until a trained version is made current",
            file=sys.stderr,
            flush=True,
        )
        model_dir = NO_MODEL_YET
    else:
        model_dir = resolve_model_dir(settings, model_dir)
        # Load the model here too, before submitting: a model that does not fit this job
        # (other features or window) or fails its card's checks is refused at `flink run`
        # time with the reason, instead of failing in every TaskManager restart.
        OnnxModel.load(
            model_dir, MODEL_FEATURE_NAMES, settings.window_seconds, SCORER_CONTEXT_NAMES
        )
    t_env.create_temporary_function(
        "score_window",
        score_window_udf(
            shipped_model or model_dir,
            MODEL_FEATURE_NAMES,
            settings.window_seconds,
            pointer=settings.current_model_pointer.resolve() if follow else None,
            reload_seconds=settings.model_reload_seconds,
            vectorized=settings.scoring_udf == "pandas",
            context_names=SCORER_CONTEXT_NAMES,
        ),
    )
    return context(settings)["score_call"]


def register_scored_windows(t_env) -> None:
    """Register ``scored_windows``: the scored, enriched windows, handed to the SQL that reads
    them through one DataStream. Each INSERT of the statement set reads other columns, and the
    planner would otherwise prune and plan each branch on its own: window features, lookup
    join and the scoring UDF ran once per branch (4 scoring operators in the plan, where the
    DataStream boundary leaves 1)."""
    from pyflink.table import Schema

    # The window's event time travels as the records' timestamp (to_data_stream takes it
    # from the rowtime column, renamed here so as not to clash with the one declared below),
    # the watermark with them.
    def columns(names: list[str]) -> list:
        kept = [col(c) for c in names if c not in ("proc_time", "window_time")]
        return [*kept, col("window_time").alias("window_rowtime")]

    schema = (
        Schema.new_builder()
        .column_by_metadata("window_time", "TIMESTAMP_LTZ(3)", "rowtime")
        .watermark("window_time", "SOURCE_WATERMARK()")
        .build()
    )
    register_via_data_stream(t_env, "scored_windows", columns, schema)


# The job's sinks and INSERT statements (one statement set, one Flink job), and what the raw
# events add when ANOMALY_RAW_EVENTS=on.
SINKS = ("scores_jdbc.sql", "alerts_jdbc.sql", "incidents_jdbc.sql", "rejects_jdbc.sql")
INSERTS = (
    "insert_scores.sql",
    "insert_alerts.sql",
    "insert_incidents.sql",
    "insert_health.sql",
    "insert_rejects.sql",
)
RAW_EVENTS_SINK, RAW_EVENTS_INSERT = "raw_events_jdbc.sql", "insert_raw_events.sql"


def register_sinks(t_env: TableEnvironment, settings: Settings) -> None:
    """The JDBC sinks of scores, alerts, device health, incidents, dead letters and late
    events (and raw events)."""
    options = jdbc_sink_options(settings)
    sinks = SINKS + ((RAW_EVENTS_SINK,) if settings.raw_events == "on" else ())
    for relative_path in sinks:
        execute_file(t_env, f"flink/{relative_path}", settings, jdbc_sink_options=options)


def inserts(settings: Settings) -> tuple[str, ...]:
    return INSERTS + ((RAW_EVENTS_INSERT,) if settings.raw_events == "on" else ())


def configure_fault_tolerance(
    t_env: TableEnvironment, settings: Settings, *, bounded: bool
) -> None:
    """Checkpoints, and restarts with backoff: after a crash or an outage the job resumes from
    its last checkpoint and the upserting sinks overwrite what it replays, so the tables end
    up as an undisturbed run leaves them."""
    config = t_env.get_config()
    if settings.checkpoint_interval_seconds > 0:
        config.set("execution.checkpointing.interval", f"{settings.checkpoint_interval_seconds} s")
        config.set("execution.checkpointing.mode", "EXACTLY_ONCE")
        config.set("state.backend.type", settings.state_backend)
        config.set("execution.checkpointing.dir", settings.checkpoint_uri)
        # Kept after a cancel, so a job can be resubmitted from its last checkpoint (`-s`).
        config.set(
            "execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION"
        )
    # Back off from 1 s up to a minute between attempts; the web UI counts the restarts. A
    # bounded run (a replay, a test) gives up after a few attempts with the real exception.
    config.set("restart-strategy.type", "exponential-delay")
    config.set("restart-strategy.exponential-delay.initial-backoff", "1 s")
    config.set("restart-strategy.exponential-delay.max-backoff", "60 s")
    if bounded:
        config.set("restart-strategy.exponential-delay.attempts-before-reset-backoff", "4")


def run(
    settings: Settings,
    *,
    bounded: bool,
    model_dir: Path | None = None,
    shipped_model: str | None = None,
) -> TableResult:
    from common.flink_env import apply_flink_options, create_table_env

    t_env = create_table_env(settings, streaming=True)
    configure_fault_tolerance(t_env, settings, bounded=bounded)
    apply_flink_options(t_env, settings)
    register_features(t_env, settings, bounded=bounded)
    score_call = register_scoring(t_env, settings, model_dir, shipped_model)
    execute_file(t_env, "flink/devices_jdbc.sql", settings, **reference_lookup_options(settings))
    execute_file(t_env, "flink/scored_windows.sql", settings, score_call=score_call)
    register_scored_windows(t_env)
    execute_file(t_env, "flink/health_windows.sql", settings)
    register_health_windows(t_env, settings)
    register_sinks(t_env, settings)
    job = t_env.create_statement_set()
    for relative_path in inserts(settings):
        for statement in statements(render(f"flink/{relative_path}", settings)):
            if statement.lstrip().upper().startswith("INSERT"):
                job.add_insert_sql(statement)
            else:  # the views an INSERT reads
                t_env.execute_sql(statement)
    return job.execute()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bounded",
        action="store_true",
        help="stop at the Kafka offsets that are latest at start (tests, replays)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="score with this model version folder only (default: follow the models "
        "folder's CURRENT pointer, switching versions while running)",
    )
    parser.add_argument(
        "--shipped-model",
        metavar="NAME",
        help="the workers load the model from NAME/ in their working directory, where "
        "`flink run -pyarch model.zip#NAME` put it (deploy/flink_run.py --ship)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="block until the job ends (in-process runs)"
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    try:
        result = run(
            settings,
            bounded=args.bounded,
            model_dir=args.model_dir,
            shipped_model=args.shipped_model,
        )
    except (ModelCardError, FileNotFoundError) as exc:
        print(f"score_telemetry: not submitted: {exc}", file=sys.stderr)
        return 2
    client = result.get_job_client()
    if client is not None:
        print(f"submitted job {client.get_job_id()} ({settings.job_name})", flush=True)
    if args.wait:
        result.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
