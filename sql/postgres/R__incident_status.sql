-- Incidents with their state: open while a new flagged window could still extend them, i.e.
-- until the quiet period, plus the time the job needs to close a window (window length and
-- allowed lateness), has passed in event time (stream_time) since the last alert window
-- ended. Re-created (repeatable migration) whenever the settings it renders or its columns
-- change: dropped with what depends on it (open_incidents, correlated_incident_status), which
-- the repeatable migrations after this one re-create (migrate re-applies them all, in order,
-- in one transaction).
DROP VIEW IF EXISTS incident_status CASCADE;
DROP VIEW IF EXISTS stream_time CASCADE;
-- How far the stream has got in event time: the end of the newest window the job has scored
-- (now() before the first). Incidents open and close by it, not by the wall clock, so that a
-- job that stops or lags does not close them, and a replay of history closes its own.
CREATE VIEW stream_time AS
SELECT COALESCE(max(window_end), now()) AS stream_time FROM ${health_table};

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
                                    + ${watermark_delay_seconds}) > f.stream_time
    THEN 'open' ELSE 'closed'
  END AS status,
  i.ended_at - i.started_at AS duration
FROM ${incidents_table} AS i
CROSS JOIN stream_time AS f;

