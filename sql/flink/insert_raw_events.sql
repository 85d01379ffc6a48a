-- Raw events (ANOMALY_RAW_EVENTS=on): every event that passed the checks, late ones too (they
-- are real measurements; their window had only closed), with its typed metrics.
INSERT INTO raw_events_sink
SELECT
  device_id,
  CAST(event_time AS TIMESTAMP(3)),
  ${event_metric_names},
  source_topic,
  source_partition,
  source_offset
FROM checked_events
WHERE reject_reason IS NULL
