"""The bare engine: the reference `make bench` holds the job against (python -m bench.pipeline).

Flink alone on the same events: the same topic read from its earliest to its latest offsets
with Flink's own JSON format (typed fields, unparseable messages skipped), event time from
ts_ms with the same watermark delay, the same tumbling window per device and the same
aggregates (sql/flink/window_features.sql), into a `blackhole` sink. No checks, dead letters,
late events, context, scoring or PostgreSQL: what those cost is the gap between the two.

    flink run -py bench/bare_job.py        (bench.pipeline submits it; settings: ANOMALY_*)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyflink.table import Schema, TableDescriptor

from common.flink_env import create_table_env
from common.settings import Settings
from common.sql import context, interval, render, statements
from jobs.score_telemetry import kafka_source_options


def main() -> None:
    settings = Settings.from_env()
    t_env = create_table_env(settings)
    t_env.execute_sql(f"""
CREATE TEMPORARY TABLE telemetry_events (
  {context(settings)["event_columns"]},
  event_time AS TO_TIMESTAMP_LTZ(`ts_ms`, 3),
  WATERMARK FOR event_time AS event_time - {interval(settings.watermark_delay_seconds)}
) WITH (
  {kafka_source_options(settings, bounded=True)},
  'properties.group.id' = '{settings.kafka_group_id}',
  'format' = 'json',
  'json.ignore-parse-errors' = 'true'
)""")
    # The window aggregates as the job defines them (the file's first view).
    t_env.execute_sql(
        statements(render("flink/window_features.sql", settings, label_columns=""))[0]
    )
    windows = t_env.from_path("window_aggregates")
    schema = Schema.new_builder().from_row_data_type(windows.get_schema().to_row_data_type())
    t_env.create_temporary_table(
        "bare_sink", TableDescriptor.for_connector("blackhole").schema(schema.build()).build()
    )
    windows.execute_insert("bare_sink")


if __name__ == "__main__":
    main()
