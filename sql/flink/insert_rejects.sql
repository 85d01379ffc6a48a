-- Dead letters: messages that are not JSON objects (kept verbatim), and JSON events that fail
-- a check (with the fields the job read; the exact message stays at its offset in Kafka).
INSERT INTO dead_letters_sink
SELECT
  source_topic,
  source_partition,
  source_offset,
  CAST(broker_time AS TIMESTAMP(3)),
  CASE WHEN payload IS NULL THEN 'empty message' ELSE 'not a JSON object' END,
  CAST(NULL AS STRING),
  payload
FROM telemetry_messages
WHERE payload IS NULL OR NOT (payload IS JSON OBJECT)
UNION ALL
SELECT
  source_topic,
  source_partition,
  source_offset,
  CAST(broker_time AS TIMESTAMP(3)),
  reject_reason,
  SUBSTRING(device_id FROM 1 FOR ${max_device_id_length}),
  ${parsed_payload}
FROM checked_events
WHERE reject_reason IS NOT NULL;

-- Late events: good events whose window had closed, with the watermark they met.
INSERT INTO late_events_sink
SELECT
  source_topic,
  source_partition,
  source_offset,
  CAST(broker_time AS TIMESTAMP(3)),
  device_id,
  CAST(event_time AS TIMESTAMP(3)),
  CAST(TO_TIMESTAMP_LTZ(ts_value - MOD(ts_value, ${window_ms}), 3) AS TIMESTAMP(3)),
  CAST(CURRENT_WATERMARK(event_time) AS TIMESTAMP(3))
FROM checked_events
WHERE reject_reason IS NULL AND is_late
