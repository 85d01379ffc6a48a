-- Each scored window's severity for device health: the higher of the model's (0 when it did
-- not score) and the catalogue rules' that fire. The job adds recent_severity, the highest of
-- the device's window severities over the last ${health_seconds} s of event time (RecentMax,
-- jvm/, keyed by device: jobs/score_telemetry.py), and registers the result as health_windows
-- (insert_health.sql).
CREATE TEMPORARY VIEW health_windows_query AS
SELECT
  device_id,
  window_end,
  window_time,
  GREATEST(COALESCE(scored.s.severity, CAST(0 AS DOUBLE)), ${rule_severity}) AS window_severity,
  scored.s.top_metric AS top_metric,
  scored.s.model_version AS model_version,
  site,
  region,
  criticality
FROM scored_windows AS scored
