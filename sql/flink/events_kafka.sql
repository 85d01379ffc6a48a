-- Telemetry events from Kafka: one JSON object per message, keyed by device id, read twice.
--
-- telemetry_source parses each message once with the JSON format, every field as text: a
-- field of the wrong type reads as its text instead of failing the job, and checked_events
-- (checked_events.sql) types and checks it. A message that is not a JSON object at all is
-- skipped here, and telemetry_messages (the same messages as their exact bytes) sends exactly
-- those to the dead letters. IS JSON OBJECT parses text where the JSON format parses bytes, so
-- the test also follows how the format reads bytes (common/sql.py json_object_test).
--
-- Event time is the event's own ts_ms (epoch milliseconds), but only when it is plausible:
-- an integer from 1970 on, at most ${max_clock_skew_seconds} s ahead of the broker's timestamp
-- of the message. Otherwise event_time is NULL, which neither moves the watermark nor reaches
-- a window (the event becomes a dead letter). The watermark trails the newest event time by
-- the allowed out-of-orderness; the job sets table.exec.source.idle-timeout so that a quiet
-- partition does not hold every window open.
-- The watermark moves on every event rather than every 200 ms, so the late-event test in
-- checked_events.sql sees it current, also just after a restart (Flink does not restore
-- watermarks).
-- Both tables read the same topic from the same offsets (kafka_source_options, one definition
-- in jobs/score_telemetry.py): endless, or for bounded runs (tests, replays, benchmarks) up to
-- the offsets that were latest when the job started.
CREATE TEMPORARY TABLE telemetry_source (
  ${source_event_columns},
  `source_topic` STRING METADATA FROM 'topic' VIRTUAL,
  `source_partition` INT METADATA FROM 'partition' VIRTUAL,
  `source_offset` BIGINT METADATA FROM 'offset' VIRTUAL,
  `broker_time` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
  event_time AS CASE
    WHEN TRY_CAST(`ts_ms` AS BIGINT) BETWEEN 0 AND 253402300799999
      AND TO_TIMESTAMP_LTZ(TRY_CAST(`ts_ms` AS BIGINT), 3)
          <= `broker_time` + ${clock_skew_interval}
    THEN TO_TIMESTAMP_LTZ(TRY_CAST(`ts_ms` AS BIGINT), 3)
  END,
  WATERMARK FOR event_time AS event_time - ${watermark_interval}
) WITH (
  ${kafka_source_options},
  'properties.group.id' = '${kafka_group_id}',
  'format' = 'json',
  'json.fail-on-missing-field' = 'false',
  'json.ignore-parse-errors' = 'true',
  'scan.watermark.emit.strategy' = 'on-event'
);

CREATE TEMPORARY TABLE telemetry_messages (
  `payload` BYTES,
  `source_topic` STRING METADATA FROM 'topic' VIRTUAL,
  `source_partition` INT METADATA FROM 'partition' VIRTUAL,
  `source_offset` BIGINT METADATA FROM 'offset' VIRTUAL,
  `broker_time` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL
) WITH (
  ${kafka_source_options},
  'properties.group.id' = '${kafka_group_id}-messages',
  'format' = 'raw'
)
