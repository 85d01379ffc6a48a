-- Incidents: a device's flagged windows, in event-time order, merge into one incident while
-- each starts at most ${incident_quiet_seconds} s after the previous one ended. A window that
-- starts later opens a new incident; each incident is the running aggregate of its windows,
-- upserted as it grows (one row per device and start).
CREATE TEMPORARY VIEW flagged_windows AS
SELECT
  device_id,
  window_start,
  window_end,
  window_time,
  scored.s.severity AS severity,
  scored.s.top_metric AS top_metric,
  scored.s.model_version AS model_version,
  site,
  region,
  criticality
FROM scored_windows AS scored
WHERE scored.s.is_anomaly;

CREATE TEMPORARY VIEW incident_starts AS
SELECT
  *,
  CASE
    WHEN previous_end IS NULL OR window_start > previous_end + ${incident_quiet_interval}
    THEN window_start
  END AS starts_incident
FROM (
  SELECT
    *,
    LAG(window_end) OVER (PARTITION BY device_id ORDER BY window_time) AS previous_end
  FROM flagged_windows
);

INSERT INTO incidents_sink
SELECT
  device_id,
  incident_start,
  MAX(window_end),
  COUNT(*),
  MAX(severity),
  LISTAGG(DISTINCT top_metric),
  MAX(model_version),
  MAX(site),
  MAX(region),
  MAX(criticality)
FROM (
  SELECT
    *,
    MAX(starts_incident) OVER (
      PARTITION BY device_id ORDER BY window_time
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) AS incident_start
  FROM incident_starts
)
GROUP BY device_id, incident_start
