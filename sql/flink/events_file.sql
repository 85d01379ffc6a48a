-- Telemetry events from newline-delimited JSON files (a simulator dump), for training and
-- replays in batch mode. Same columns and event time as the Kafka source, so the feature
-- query below runs unchanged on both.
CREATE TEMPORARY TABLE telemetry_events (
  ${event_columns},
  event_time AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR event_time AS event_time - ${watermark_interval}
) WITH (
  'connector' = 'filesystem',
  'path' = '${path}',
  'format' = 'json',
  'json.fail-on-missing-field' = 'false',
  'json.ignore-parse-errors' = 'false'
)
