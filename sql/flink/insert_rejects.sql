-- Dead letters: messages that are not JSON objects (their exact bytes kept), and JSON events
-- that fail a check (with the fields the job read; the exact message stays at its offset in
-- Kafka).
--
-- Every text written here is one PostgreSQL can store: NUL and lone surrogates become U+FFFD
-- (common/sql.py storable_text). A message that is not a JSON object is kept exactly in
-- payload_bytes and readable in payload (UTF-8; each invalid byte shows as U+FFFD).
CREATE TEMPORARY VIEW unparsed_messages AS
SELECT *, DECODE(payload, 'UTF-8') AS payload_text
FROM telemetry_messages;

INSERT INTO dead_letters_sink
SELECT
  source_topic,
  source_partition,
  source_offset,
  CAST(broker_time AS TIMESTAMP(3)),
  CASE WHEN payload IS NULL THEN 'empty message' ELSE 'not a JSON object' END,
  CAST(NULL AS STRING),
  ${storable_payload_text},
  payload
FROM unparsed_messages
WHERE payload IS NULL OR NOT (${json_object_test})
UNION ALL
SELECT
  source_topic,
  source_partition,
  source_offset,
  CAST(broker_time AS TIMESTAMP(3)),
  reject_reason,
  ${storable_device_id},
  ${storable_parsed_payload},
  CAST(NULL AS BYTES)
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
