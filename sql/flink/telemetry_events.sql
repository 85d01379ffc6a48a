-- Good, on-time events, typed: what the window features read.
CREATE TEMPORARY VIEW telemetry_events AS
SELECT
  `device_id`,
  ts_value AS `ts_ms`,
  ${typed_metric_columns},
  event_time
FROM checked_events
WHERE reject_reason IS NULL AND NOT is_late
