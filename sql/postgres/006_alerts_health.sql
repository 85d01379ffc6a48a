-- Alerts: one row per window and source, 'model' for a window the model flagged, 'rule:<name>'
-- for a window a catalogue rule fires on (the metric, its value and the threshold it
-- crossed). Incidents merge a device's alerts of all sources.
CREATE TABLE IF NOT EXISTS ${alerts_table} (
  device_id     text             NOT NULL,
  window_start  timestamptz      NOT NULL,
  source        text             NOT NULL,
  window_end    timestamptz      NOT NULL,
  severity      double precision,
  -- model: the top metric of the explanation; rule: the rule's metric.
  metric        text,
  -- model: the anomaly score; rule: the metric's window aggregate.
  value         double precision,
  -- rule: the threshold crossed (a number or the device's limit); model: NULL.
  threshold     double precision,
  model_version text,
  explanation   text,
  site          text,
  region        text,
  criticality   text,
  -- started_at of the incident (same device) this alert belongs to.
  incident_start timestamptz,
  PRIMARY KEY (device_id, window_start, source)
);
CREATE INDEX IF NOT EXISTS ${alerts_table}_window_start_idx ON ${alerts_table} (window_start DESC);

ALTER TABLE ${incidents_table} ADD COLUMN IF NOT EXISTS sources text;

-- Latest state: one row per device, upserted with each of its windows. health 0-100 is 100
-- minus the highest severity (model or rule) of its windows over the last health_seconds.
CREATE TABLE IF NOT EXISTS ${health_table} (
  device_id     text PRIMARY KEY,
  window_end    timestamptz      NOT NULL,
  severity      double precision,
  health        double precision NOT NULL,
  top_metric    text,
  model_version text,
  site          text,
  region        text,
  criticality   text
);

-- Links between devices (e.g. a router's interfaces to its neighbours), from the inventory.
CREATE TABLE IF NOT EXISTS ${links_table} (
  device_a text NOT NULL,
  device_b text NOT NULL,
  PRIMARY KEY (device_a, device_b)
);

-- A link is as healthy as its less healthy end; unknown ends count as healthy (NULL ignored).
CREATE OR REPLACE VIEW link_health AS
SELECT
  l.device_a,
  l.device_b,
  LEAST(a.health, b.health) AS health,
  GREATEST(a.window_end, b.window_end) AS window_end
FROM ${links_table} AS l
LEFT JOIN ${health_table} AS a ON a.device_id = l.device_a
LEFT JOIN ${health_table} AS b ON b.device_id = l.device_b;
