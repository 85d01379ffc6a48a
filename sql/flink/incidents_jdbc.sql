-- Incidents into PostgreSQL, keyed by device and start: the job upserts the row each time a
-- flagged window extends the incident, and a replay overwrites it.
CREATE TEMPORARY TABLE incidents_sink (
  device_id STRING,
  started_at TIMESTAMP(3),
  ended_at TIMESTAMP(3),
  windows BIGINT,
  peak_severity DOUBLE,
  top_metrics STRING,
  sources STRING,
  model_version STRING,
  site STRING,
  region STRING,
  criticality STRING,
  PRIMARY KEY (device_id, started_at) NOT ENFORCED
) WITH (
  'table-name' = '${incidents_table}',
  ${jdbc_sink_options}
)
