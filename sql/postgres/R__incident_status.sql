-- Incidents with their state: open while a new flagged window could still extend them, i.e.
-- until the quiet period, plus the time the job needs to close a window (window length and
-- allowed lateness), has passed since the last alert window ended. Re-created (repeatable
-- migration) whenever the settings it renders or its columns change: dropped with what depends
-- on it (open_incidents), which the repeatable migrations after this one re-create (migrate
-- re-applies them all, in order, in one transaction).
DROP VIEW IF EXISTS incident_status CASCADE;
CREATE VIEW incident_status AS
SELECT
  i.device_id,
  i.started_at,
  i.ended_at,
  i.windows,
  i.peak_severity,
  i.top_metrics,
  i.sources,
  i.model_version,
  i.site,
  i.region,
  i.criticality,
  CASE
    WHEN i.ended_at + make_interval(secs => ${incident_quiet_seconds} + ${window_seconds}
                                    + ${watermark_delay_seconds}) > now()
    THEN 'open' ELSE 'closed'
  END AS status,
  i.ended_at - i.started_at AS duration
FROM ${incidents_table} AS i;
