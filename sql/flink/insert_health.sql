-- Device health, latest state: with each window, 100 minus the highest severity (model or
-- rule) of the device's windows over the last ${health_seconds} s of event time
-- (health_windows.sql).
INSERT INTO device_health_sink
SELECT
  device_id,
  window_end,
  window_severity,
  100 - recent_severity,
  top_metric,
  model_version,
  site,
  region,
  criticality
FROM health_windows
