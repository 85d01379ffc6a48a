-- Incidents: the running aggregate of each incident's alerts (insert_alerts.sql), upserted
-- as it grows (one row per device and start).
INSERT INTO incidents_sink
SELECT
  device_id,
  incident_start,
  MAX(window_end),
  COUNT(DISTINCT window_start),
  MAX(severity),
  LISTAGG(DISTINCT metric),
  LISTAGG(DISTINCT source),
  MAX(model_version),
  MAX(site),
  MAX(region),
  MAX(criticality)
FROM alerts
GROUP BY device_id, incident_start
