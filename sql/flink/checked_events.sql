-- Every message with its verdict: reject_reason names the first problem (NULL for a good
-- event): the format's (events_kafka.sql) for the device id and the type of the time, then the
-- time's plausibility, then the format's for the metrics. The job registers it as
-- checked_events through LateMarker (jvm/, jobs/score_telemetry.py), which adds is_late (the
-- event's window had already closed when it arrived) and watermark_met (the watermark then).
-- Every branch reads the same checked events: telemetry_events.sql, insert_rejects.sql,
-- insert_raw_events.sql.
CREATE TEMPORARY VIEW checked_events_query AS
SELECT
  `device_id`,
  `ts_ms`,
  ${event_metric_names},
  `payload`,
  source_topic,
  source_partition,
  source_offset,
  broker_time,
  event_time,
  COALESCE(
    event_problem,
    CASE WHEN event_time IS NULL
      THEN 'ts_ms: before 1970 or more than ${max_clock_skew_seconds} s ahead of the broker' END,
    value_problem
  ) AS reject_reason
FROM ${telemetry_sources}
