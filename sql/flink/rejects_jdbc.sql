-- Where unusable and late messages go, keyed by their place in Kafka: a replay after a failure
-- overwrites the same rows (upsert), so each message appears once whatever happens.
CREATE TEMPORARY TABLE dead_letters_sink (
  source_topic STRING,
  source_partition INT,
  source_offset BIGINT,
  broker_time TIMESTAMP(3),
  reason STRING,
  device_id STRING,
  payload STRING,
  payload_bytes BYTES,
  PRIMARY KEY (source_topic, source_partition, source_offset, broker_time) NOT ENFORCED
) WITH (
  'table-name' = '${dead_letters_table}',
  ${jdbc_sink_options}
);

CREATE TEMPORARY TABLE late_events_sink (
  source_topic STRING,
  source_partition INT,
  source_offset BIGINT,
  broker_time TIMESTAMP(3),
  device_id STRING,
  event_time TIMESTAMP(3),
  window_start TIMESTAMP(3),
  `watermark` TIMESTAMP(3),
  PRIMARY KEY (source_topic, source_partition, source_offset, broker_time) NOT ENFORCED
) WITH (
  'table-name' = '${late_events_table}',
  ${jdbc_sink_options}
)
