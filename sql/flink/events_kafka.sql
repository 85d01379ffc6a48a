-- Telemetry events from Kafka, one table per topic the job reads (ANOMALY_SOURCES), read once.
-- With input flat, one JSON object per message with every metric, keyed by device id. With an
-- agent's input (collectd, telegraf, otlp; README "Agents"), sparse points: one row per device
-- and time a message holds, its metrics those it has points of (NULL for the others), the
-- names the catalogue keeps mapped to its metrics and the others ignored; a counter's running
-- total is turned into a rate behind the source, keyed by device (jvm/ CounterRates).
--
-- The telemetry-json format (jvm/, TelemetryJsonDeserializer) parses each message once, with
-- the same Jackson reading as Flink's JSON format, and never skips one: it types every field,
-- makes every check that needs only the message (device_id; ts_ms an integer; each metric a
-- finite number within the catalogue's range) and names the first problem in event_problem
-- (device_id, ts_ms) or value_problem (the metrics, in catalogue order). A message that is not
-- a JSON object, or has a problem, keeps its exact bytes in payload (for the dead letters).
--
-- Event time is the event's own ts_ms (epoch milliseconds), but only when it is plausible:
-- from 1970 on, at most ${max_clock_skew_seconds} s ahead of the broker's timestamp of the
-- message (the one check that needs the broker's time). The format gives the time as a
-- timestamp (event_ts, what TO_TIMESTAMP_LTZ(ts_ms, 3) gives from 1970 to the year 9999, else
-- NULL), so each message costs a comparison, not conversions. Otherwise event_time is NULL, which
-- neither moves the watermark nor reaches a window (the event becomes a dead letter). The
-- watermark trails the newest event time by the allowed out-of-orderness; the job sets
-- table.exec.source.idle-timeout so that a quiet partition does not hold every window open.
-- The table reads the topic from its earliest offsets (kafka_source_options, one definition in
-- jobs/score_telemetry.py): endless, or for bounded runs (tests, replays, benchmarks) up to
-- the offsets that were latest when the job started.
CREATE TEMPORARY TABLE ${source_table} (
  `device_id` STRING,
  `ts_ms` BIGINT,
  ${event_metric_columns},
  `event_problem` STRING,
  `value_problem` STRING,
  `payload` BYTES,
  `event_ts` TIMESTAMP_LTZ(3),
  `source_topic` STRING METADATA FROM 'topic' VIRTUAL,
  `source_partition` INT METADATA FROM 'partition' VIRTUAL,
  `source_offset` BIGINT METADATA FROM 'offset' VIRTUAL,
  `broker_time` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
  event_time AS CASE
    WHEN `event_ts` <= `broker_time` + ${clock_skew_interval} THEN `event_ts`
  END,
  WATERMARK FOR event_time AS event_time - ${watermark_interval}
) WITH (
  ${kafka_source_options},
  'properties.group.id' = '${kafka_group_id}',
  'format' = 'telemetry-json',
  'telemetry-json.limits' = '${metric_limits}',
  'telemetry-json.max-device-id-length' = '${max_device_id_length}',
  'telemetry-json.input' = '${source_input}',
  'telemetry-json.mapping' = '${source_mapping}',
  'telemetry-json.device-field' = '${source_device_field}'
)
