-- Limits per device and time-of-day segment, for catalogue rules with `segment_reference`
-- thresholds: "traffic at station S between 08:00 and 09:00 above its reference". A segment is
-- ANOMALY_REFERENCE_SEGMENT_SECONDS of the UTC day (default 3600: segment 8 is 08:00-09:00);
-- the job looks a window's row up by device and the segment its start falls in (a cached
-- lookup join). Columns: a low and a high limit per catalogue metric (R__device_limits.sql),
-- NULL where there is none; a window without a row, or with a NULL limit, fires no rule.
CREATE TABLE IF NOT EXISTS ${segment_limits_table} (
  device_id  text        NOT NULL,
  segment    integer     NOT NULL CHECK (segment >= 0),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (device_id, segment)
);
