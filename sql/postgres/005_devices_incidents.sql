-- Device reference data, maintained by whoever owns the inventory (the simulator fills it for
-- its fleet: `python -m simulator.devices`). The job joins it to every window (a lookup join
-- with a cache, sql/flink/scored_windows.sql); a device without a row is still scored.
CREATE TABLE IF NOT EXISTS ${devices_table} (
  device_id   text PRIMARY KEY,
  site        text,
  region      text,
  kind        text,
  -- low, medium, high, critical
  criticality text,
  owner       text,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- What the job knew about the device when it scored the window; in_inventory is false for a
-- device without a reference row (its other columns are then NULL).
ALTER TABLE ${scores_table}
  ADD COLUMN IF NOT EXISTS site text,
  ADD COLUMN IF NOT EXISTS region text,
  ADD COLUMN IF NOT EXISTS device_kind text,
  ADD COLUMN IF NOT EXISTS criticality text,
  ADD COLUMN IF NOT EXISTS in_inventory boolean;

-- One row per incident: flagged windows of a device merged while the gaps between them stay
-- within the quiet period (ANOMALY_INCIDENT_QUIET_SECONDS). The job upserts the row as the
-- incident grows; the view incident_status says whether it is still open.
CREATE TABLE IF NOT EXISTS ${incidents_table} (
  device_id      text             NOT NULL,
  started_at     timestamptz      NOT NULL,
  ended_at       timestamptz      NOT NULL,
  windows        bigint           NOT NULL,
  peak_severity  double precision,
  -- The top metric of each flagged window, distinct, comma-separated.
  top_metrics    text,
  model_version  text,
  site           text,
  region         text,
  criticality    text,
  PRIMARY KEY (device_id, started_at)
);
CREATE INDEX IF NOT EXISTS ${incidents_table}_ended_at_idx ON ${incidents_table} (ended_at DESC);
