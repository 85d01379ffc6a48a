-- Device reference data from PostgreSQL, read by a lookup join (scored_windows.sql). A table of
-- at most ${device_cache_full_max_rows} rows (ANOMALY_DEVICE_CACHE=auto) is held whole by each
-- lookup subtask, read when it starts and anew every ${device_cache_seconds} s, so no window
-- waits for a query of its own; a larger one is read a device at a time, each row (or its
-- absence) cached as long (jobs/score_telemetry.py: jdbc_lookup_options). A device without a
-- row gets NULLs.
CREATE TEMPORARY TABLE devices_lookup (
  device_id STRING,
  site STRING,
  region STRING,
  kind STRING,
  criticality STRING,
  owner STRING,
  -- The device's own limits per metric (NULL: none), for rules with `reference` thresholds.
  ${device_limit_columns},
  PRIMARY KEY (device_id) NOT ENFORCED
) WITH (
  'table-name' = '${devices_table}',
  ${devices_lookup_options}
);

-- Each device's limits per time-of-day segment (${segment_limits_table}), for rules with
-- `segment_reference` thresholds, read by a second lookup join on (device, segment) and held
-- like the devices' rows. The job joins it only when a catalogue rule needs it.
CREATE TEMPORARY TABLE segment_limits_lookup (
  device_id STRING,
  segment INT,
  ${device_limit_columns},
  PRIMARY KEY (device_id, segment) NOT ENFORCED
) WITH (
  'table-name' = '${segment_limits_table}',
  ${segment_limits_lookup_options}
)
