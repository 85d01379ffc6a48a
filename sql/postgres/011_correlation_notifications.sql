-- Correlated incidents: device incidents on linked devices whose spans overlap, merged into
-- one incident with a probable root device (alerting/correlate.py decides; the notifier
-- writes). One page per failure instead of one per device.
CREATE TABLE IF NOT EXISTS ${correlated_table} (
  -- The first member's device and start: '<device>@<started_at as ISO-8601>'.
  id             text PRIMARY KEY,
  root_device    text        NOT NULL,
  -- Why the root was ranked first: onset, direction along the links, severity.
  root_reason    text,
  started_at     timestamptz NOT NULL,
  -- Set once a notification named the root: later members no longer change it.
  root_frozen    boolean     NOT NULL DEFAULT false,
  updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ${correlated_table}_started_at_idx ON ${correlated_table} (started_at DESC);

-- Each device incident's correlated incident (a single-device failure is one of its own).
CREATE TABLE IF NOT EXISTS ${correlation_table} (
  device_id     text        NOT NULL,
  started_at    timestamptz NOT NULL,
  correlated_id text        NOT NULL REFERENCES ${correlated_table} (id),
  PRIMARY KEY (device_id, started_at)
);
CREATE INDEX IF NOT EXISTS ${correlation_table}_correlated_id_idx ON ${correlation_table} (correlated_id);

-- The notifier's outbox, one row per correlated incident: the labels it was first sent with
-- (Alertmanager identifies an alert by them, so they never change), and when Alertmanager
-- accepted its firing and its resolved notification. Pending = the backlog.
CREATE TABLE IF NOT EXISTS ${notifications_table} (
  correlated_id  text PRIMARY KEY REFERENCES ${correlated_table} (id),
  labels         jsonb       NOT NULL,
  fired_at       timestamptz,
  resolved_at    timestamptz,
  last_sent_at   timestamptz,
  sends          bigint      NOT NULL DEFAULT 0,
  last_error     text
);
