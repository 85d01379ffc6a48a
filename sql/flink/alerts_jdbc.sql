-- Alerts into PostgreSQL, one row per device, window and source (upsert on replays).
CREATE TEMPORARY TABLE alerts_sink (
  device_id STRING,
  window_start TIMESTAMP(3),
  source STRING,
  window_end TIMESTAMP(3),
  severity DOUBLE,
  metric STRING,
  `value` DOUBLE,
  threshold DOUBLE,
  model_version STRING,
  explanation STRING,
  site STRING,
  region STRING,
  criticality STRING,
  incident_start TIMESTAMP(3),
  PRIMARY KEY (device_id, window_start, source) NOT ENFORCED
) WITH (
  'table-name' = '${alerts_table}',
  ${jdbc_sink_options}
);

-- The latest state of each device (upserted with every window it sends).
CREATE TEMPORARY TABLE device_health_sink (
  device_id STRING,
  window_end TIMESTAMP(3),
  severity DOUBLE,
  health DOUBLE,
  top_metric STRING,
  model_version STRING,
  site STRING,
  region STRING,
  criticality STRING,
  PRIMARY KEY (device_id) NOT ENFORCED
) WITH (
  'table-name' = '${health_table}',
  ${jdbc_sink_options}
)
