-- Per-device tumbling-window features: mean, population stddev, min, max and sample count of
-- each metric over ${window_seconds} s of event time. A window TVF emits append-only rows once
-- the watermark passes the window end. Reads `telemetry_events` (Kafka, file or test data).
CREATE TEMPORARY VIEW window_features AS
SELECT
  device_id,
  window_start,
  window_end,
  ${feature_expressions}
FROM TABLE(
  TUMBLE(TABLE telemetry_events, DESCRIPTOR(event_time), INTERVAL '${window_seconds}' SECOND)
)
GROUP BY device_id, window_start, window_end
