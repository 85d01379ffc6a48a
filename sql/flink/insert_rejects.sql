-- Dead letters: every message that is not a good event, with the first problem found. A
-- message the format flagged keeps its exact bytes (payload_bytes) and, readable, their text
-- (UTF-8; each invalid byte shows as U+FFFD). An event whose time alone fails (before 1970, or
-- ahead of the broker) keeps the fields the job read, as JSON.
--
-- Every text written here is one PostgreSQL can store: NUL and lone surrogates become U+FFFD
-- (common/sql.py storable_text).
INSERT INTO dead_letters_sink
SELECT
  source_topic,
  source_partition,
  source_offset,
  CAST(broker_time AS TIMESTAMP(3)),
  reject_reason,
  ${storable_device_id},
  CASE WHEN payload IS NOT NULL THEN ${storable_payload_text}
    WHEN `ts_ms` IS NOT NULL THEN ${storable_parsed_payload} END,
  payload
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
  CAST(TO_TIMESTAMP_LTZ(`ts_ms` - MOD(`ts_ms`, ${window_ms}), 3) AS TIMESTAMP(3)),
  CAST(watermark_met AS TIMESTAMP(3))
FROM checked_events
WHERE reject_reason IS NULL AND is_late
