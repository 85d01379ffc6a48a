-- Scored windows into PostgreSQL. The primary key makes the JDBC sink upsert
-- (INSERT ... ON CONFLICT DO UPDATE), so a replay overwrites rows instead of duplicating them.
-- The JDBC connector cannot write TIMESTAMP_LTZ: window bounds go out as UTC wall-clock
-- TIMESTAMP(3) into timestamptz columns, which is exact because every JVM that runs the sink
-- uses UTC (deploy/local/flink-config.yaml, common/flink_env.py).
CREATE TEMPORARY TABLE anomaly_scores_sink (
  device_id STRING,
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  ${flink_feature_columns},
  anomaly_score DOUBLE,
  severity DOUBLE,
  is_anomaly BOOLEAN,
  model_version STRING,
  known_device BOOLEAN,
  top_metric STRING,
  explanation STRING,
  site STRING,
  region STRING,
  device_kind STRING,
  criticality STRING,
  in_inventory BOOLEAN,
  PRIMARY KEY (device_id, window_start) NOT ENFORCED
) WITH (
  'table-name' = '${scores_table}',
  ${jdbc_sink_options}
)
