-- Retention, compression and refresh, with the horizons of the settings
-- (ANOMALY_RETENTION_DAYS, ANOMALY_RAW_EVENTS_RETENTION_DAYS, ANOMALY_COMPRESS_AFTER_DAYS).
-- Repeatable: re-applied whenever they change.
--
-- prune_expired() deletes what is older than the retention horizons, table by table, and
-- says how many rows went: on plain PostgreSQL call it from cron (or `python -m common.db
-- prune`); with TimescaleDB the retention policies below drop whole chunks instead.
DROP FUNCTION IF EXISTS prune_expired() CASCADE;
CREATE FUNCTION prune_expired() RETURNS TABLE (table_name text, rows_deleted bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
  target record;
  deleted bigint;
BEGIN
  FOR target IN SELECT * FROM (VALUES
      ('${scores_table}', 'window_start', ${retention_days}),
      ('${alerts_table}', 'window_start', ${retention_days}),
      ('${incidents_table}', 'started_at', ${retention_days}),
      ('${dead_letters_table}', 'broker_time', ${retention_days}),
      ('${late_events_table}', 'broker_time', ${retention_days}),
      ('${raw_events_table}', 'event_time', ${raw_events_retention_days})
    ) AS t(name, time_column, days)
  LOOP
    EXECUTE format('DELETE FROM %I WHERE %I < now() - make_interval(days => %s)',
                   target.name, target.time_column, target.days);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    table_name := target.name;
    rows_deleted := deleted;
    RETURN NEXT;
  END LOOP;
END
$fn$;

DO $$
DECLARE
  target record;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    RAISE NOTICE 'no TimescaleDB: no retention or compression policies (use prune_expired())';
    RETURN;
  END IF;
  -- Retention: chunks older than the horizon are dropped.
  FOR target IN SELECT * FROM (VALUES
      ('${scores_table}', ${retention_days}),
      ('${alerts_table}', ${retention_days}),
      ('${incidents_table}', ${retention_days}),
      ('${dead_letters_table}', ${retention_days}),
      ('${late_events_table}', ${retention_days}),
      ('${raw_events_table}', ${raw_events_retention_days}),
      ('anomaly_counts_1m', ${retention_days})
    ) AS t(name, days)
  LOOP
    PERFORM remove_retention_policy(target.name, if_exists => TRUE);
    PERFORM add_retention_policy(target.name, make_interval(days => target.days));
  END LOOP;
  -- Compression: a device's rows of a chunk compress together, newest first; chunks older
  -- than the horizon are compressed (upserts into them still work, more slowly).
  FOR target IN SELECT * FROM (VALUES
      ('${scores_table}', 'window_start'),
      ('${alerts_table}', 'window_start'),
      ('${raw_events_table}', 'event_time')
    ) AS t(name, time_column)
  LOOP
    EXECUTE format(
      'ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L,'
      ' timescaledb.compress_orderby = %L)',
      target.name, 'device_id', target.time_column || ' DESC');
    PERFORM remove_compression_policy(target.name, if_exists => TRUE);
    PERFORM add_compression_policy(target.name, make_interval(days => ${compress_after_days}));
  END LOOP;
  -- Continuous aggregates: materialize what is complete; newer buckets are real-time.
  PERFORM remove_continuous_aggregate_policy('anomaly_counts_1m', if_exists => TRUE);
  PERFORM add_continuous_aggregate_policy('anomaly_counts_1m',
    start_offset => INTERVAL '1 day', end_offset => INTERVAL '2 minutes',
    schedule_interval => INTERVAL '1 minute');
  PERFORM remove_continuous_aggregate_policy('anomaly_counts_1h', if_exists => TRUE);
  PERFORM add_continuous_aggregate_policy('anomaly_counts_1h',
    start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '15 minutes');
END
$$;
