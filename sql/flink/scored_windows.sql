-- Every window with its device's reference data (lookup join; a device without a row keeps
-- NULLs and in_inventory = false) and its score (one vectorized UDF call per Arrow batch; the
-- device id selects the per-device normalisation). Scores, alerts, incidents and device
-- health all read scored_windows. With a `segment_reference` rule in the catalogue, a second
-- lookup join adds the device's limits for the time-of-day segment of the window
-- (segment_<metric>_high/_low).
CREATE TEMPORARY VIEW enriched_windows AS
SELECT
  f.*,
  d.site,
  d.region,
  d.kind AS device_kind,
  d.criticality,
  d.device_id IS NOT NULL AS in_inventory,
  ${device_limit_select}${segment_limit_select}
FROM (SELECT *, PROCTIME() AS proc_time${segment_key} FROM window_features) AS f
LEFT JOIN devices_lookup FOR SYSTEM_TIME AS OF f.proc_time AS d
  ON f.device_id = d.device_id${segment_join};

-- The job registers this query's result as `scored_windows` through one DataStream (see
-- jobs/score_telemetry.py), so that every branch shares one scoring. rule_<name> says
-- whether a catalogue rule fires on the window (common/sql.py rule_flag_columns).
CREATE TEMPORARY VIEW scored_windows_query AS
SELECT *, ${score_call} AS s${rule_flag_columns} FROM enriched_windows
