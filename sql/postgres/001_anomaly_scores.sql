-- Scored windows: one row per device and tumbling window, upserted by the Flink JDBC sink.
-- anomaly_score: the model's raw score, higher is more anomalous; is_anomaly: above the
-- model's threshold (002 adds severity). NULL when a feature was missing.
CREATE TABLE IF NOT EXISTS ${scores_table} (
  device_id     text        NOT NULL,
  window_start  timestamptz NOT NULL,
  window_end    timestamptz NOT NULL,
  ${pg_feature_columns},
  anomaly_score double precision,
  is_anomaly    boolean,
  model_version text,
  scored_at     timestamptz NOT NULL DEFAULT now(),
  -- TimescaleDB requires the time column in every unique key.
  PRIMARY KEY (device_id, window_start)
);

CREATE INDEX IF NOT EXISTS ${scores_table}_window_start_idx
  ON ${scores_table} (window_start DESC);

-- A hypertable where TimescaleDB can be loaded; a plain table (same columns, same queries)
-- where it cannot. Installed but not in shared_preload_libraries, loading it ends the session
-- (FATAL "must be preloaded", which no handler can catch): that is plain PostgreSQL too,
-- with a notice saying why. The preloaded loader registers its settings (timescaledb.*), which
-- any role may read, unlike shared_preload_libraries itself.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
    IF current_setting('timescaledb.disable_load', true) IS NOT NULL THEN
      CREATE EXTENSION IF NOT EXISTS timescaledb;
    ELSE
      RAISE NOTICE 'TimescaleDB is installed but not in shared_preload_libraries: plain tables';
    END IF;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    PERFORM create_hypertable('${scores_table}', 'window_start',
                              if_not_exists => TRUE, migrate_data => TRUE);
  END IF;
END
$$;
