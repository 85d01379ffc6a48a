-- Incidents: the running aggregate of each incident's alerts (insert_alerts.sql), upserted
-- as it grows (one row per device and start). A device's alerts arrive in event-time order,
-- so LAST_VALUE is the model version of its latest model alert (rule alerts carry NULL,
-- which LAST_VALUE skips): after a hot reload, the version now judging the incident.
INSERT INTO incidents_sink
SELECT
  device_id,
  incident_start,
  MAX(window_end),
  COUNT(DISTINCT window_start),
  MAX(severity),
  LISTAGG(DISTINCT metric),
  LISTAGG(DISTINCT source),
  LAST_VALUE(model_version),
  MAX(site),
  MAX(region),
  MAX(criticality)
FROM alerts
GROUP BY device_id, incident_start
