-- Device health, latest state: with each window, 100 minus the highest severity (model or
-- rule) of the device's windows over the last ${health_seconds} s of event time.
INSERT INTO device_health_sink
SELECT
  device_id,
  window_end,
  window_severity,
  100 - MAX(window_severity) OVER (
    PARTITION BY device_id ORDER BY window_time
    RANGE BETWEEN ${health_interval} PRECEDING AND CURRENT ROW
  ),
  top_metric,
  model_version,
  site,
  region,
  criticality
FROM (
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
)
