-- Telemetry events from Kafka: one JSON object per message, keyed by device id.
-- Event time is the event's own ts_ms (epoch milliseconds). The watermark trails the newest
-- event time by the allowed out-of-orderness; the job sets table.exec.source.idle-timeout so
-- that a quiet partition does not hold every window open.
-- ${bounded_option} is empty for the endless job and stops the source at the offsets that were
-- latest when the job started for bounded runs (tests, replays, benchmarks).
CREATE TEMPORARY TABLE telemetry_events (
  ${event_columns},
  event_time AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR event_time AS event_time - INTERVAL '${watermark_delay_seconds}' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = '${events_topic}',
  'properties.bootstrap.servers' = '${kafka_bootstrap}',
  'properties.group.id' = '${kafka_group_id}',
  'scan.startup.mode' = 'earliest-offset',
  ${bounded_option}
  'format' = 'json',
  'json.fail-on-missing-field' = 'false',
  'json.ignore-parse-errors' = 'false'
)
