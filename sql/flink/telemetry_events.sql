-- Good, on-time events, typed: what the window features read.
CREATE TEMPORARY VIEW telemetry_events AS
SELECT
  `device_id`,
  `ts_ms`,
  ${event_metric_names},
  event_time
FROM checked_events
WHERE reject_reason IS NULL AND NOT is_late
