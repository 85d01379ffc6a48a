-- Per-device tumbling-window aggregates: mean, population stddev, min, max and sample count of
-- each metric over ${window_seconds} s of event time. A window TVF emits append-only rows once
-- the watermark passes the window end. Reads `telemetry_events` (Kafka, file or test data).
-- Training fills label_columns with labelled_events: events of the window its source labels
-- anomalous (the streaming job renders it empty). window_context.sql adds the longer horizons
-- and defines window_features (common/sql.py window_feature_statements).
CREATE TEMPORARY VIEW window_aggregates AS
SELECT
  device_id,
  window_start,
  window_end,
  -- The window's event time (window_end - 1 ms), for what is computed over windows later.
  window_time,
  ${feature_expressions}${label_columns}
FROM TABLE(
  TUMBLE(TABLE telemetry_events, DESCRIPTOR(event_time), ${window_interval})
)
GROUP BY device_id, window_start, window_end, window_time
