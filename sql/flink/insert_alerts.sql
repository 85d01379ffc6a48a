-- Alerts and the incidents they belong to.
--
-- A window alerts when the model flags it or a catalogue rule fires on it. A device's alert
-- windows, in event-time order, belong to one incident while each starts at most
-- ${incident_quiet_seconds} s after the previous one ended; a later one starts a new incident.
-- This is decided once per window (one row per device and time, so the OVER order is total),
-- before the window's alerts are split into rows by source.
CREATE TEMPORARY VIEW alert_windows AS
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
  FROM scored_windows AS scored
  WHERE scored.s.is_anomaly IS TRUE OR ${rule_fires}
);

CREATE TEMPORARY VIEW incident_windows AS
SELECT
  *,
  MAX(starts_incident) OVER (
    PARTITION BY device_id ORDER BY window_time
    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
  ) AS incident_start
FROM alert_windows;

-- One row per window and source: 'model' for a flagged window (with its top metric and
-- explanation), 'rule:<name>' for each rule that fires (with the metric's value and the
-- threshold), both with the device's reference data.
CREATE TEMPORARY VIEW alerts AS
SELECT
  device_id,
  window_start,
  window_end,
  window_time,
  CAST('model' AS STRING) AS source,
  w.s.severity AS severity,
  w.s.top_metric AS metric,
  w.s.anomaly_score AS `value`,
  CAST(NULL AS DOUBLE) AS threshold,
  w.s.model_version AS model_version,
  w.s.explanation AS explanation,
  site,
  region,
  criticality,
  incident_start
FROM incident_windows AS w
WHERE w.s.is_anomaly IS TRUE
${rule_alerts};

INSERT INTO alerts_sink
SELECT
  device_id, window_start, source, window_end, severity, metric, `value`, threshold,
  model_version, explanation, site, region, criticality, incident_start
FROM alerts
