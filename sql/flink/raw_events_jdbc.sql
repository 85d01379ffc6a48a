-- Every good event as it arrived (ANOMALY_RAW_EVENTS=on), for analysts who query the recent
-- past directly: written within about a second (the sinks flush every second), keyed by its
-- place in Kafka and its event time, so that a replay upserts the same rows.
CREATE TEMPORARY TABLE raw_events_sink (
  device_id STRING,
  event_time TIMESTAMP(3),
  ${event_metric_columns},
  source_topic STRING,
  source_partition INT,
  source_offset BIGINT,
  PRIMARY KEY (source_topic, source_partition, source_offset, event_time) NOT ENFORCED
) WITH (
  'table-name' = '${raw_events_table}',
  ${jdbc_sink_options}
)
