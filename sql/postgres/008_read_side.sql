-- The read side: what Grafana, the HTTP API and analysts query besides the job's tables.
--
-- Time indexes: BRIN on the time column of every append-mostly table (a few pages for
-- millions of rows in time order; plain PostgreSQL's range scans need them, hypertables chunk
-- by time anyway), beside the B-tree the newest-first queries use.
CREATE INDEX IF NOT EXISTS ${scores_table}_window_start_brin
  ON ${scores_table} USING brin (window_start);
CREATE INDEX IF NOT EXISTS ${scores_table}_device_time_idx
  ON ${scores_table} (device_id, window_start DESC);
CREATE INDEX IF NOT EXISTS ${scores_table}_anomalies_idx
  ON ${scores_table} (window_start DESC) WHERE is_anomaly;
CREATE INDEX IF NOT EXISTS ${alerts_table}_window_start_brin
  ON ${alerts_table} USING brin (window_start);
CREATE INDEX IF NOT EXISTS ${dead_letters_table}_broker_time_brin
  ON ${dead_letters_table} USING brin (broker_time);
CREATE INDEX IF NOT EXISTS ${late_events_table}_broker_time_brin
  ON ${late_events_table} USING brin (broker_time);
CREATE INDEX IF NOT EXISTS ${incidents_table}_started_at_brin
  ON ${incidents_table} USING brin (started_at);

-- Model versions that scored or may score windows, with the facts of their card the read
-- side needs: the training scores' quantiles (the drift check compares recent scores with
-- them), the threshold, the evaluation. Written when a version is trained or made current
-- (python -m common.models register).
CREATE TABLE IF NOT EXISTS ${models_table} (
  version         text PRIMARY KEY,
  model           text        NOT NULL,
  created_at      timestamptz NOT NULL,
  window_seconds  integer     NOT NULL,
  features        text[]      NOT NULL,
  threshold       double precision NOT NULL,
  training_windows bigint,
  -- Quantiles of the training windows' scores, {"0.5": x, "0.9": y, ...}.
  score_quantiles jsonb       NOT NULL,
  -- The card without its per-device normalisation and self-check rows.
  card            jsonb       NOT NULL,
  registered_at   timestamptz NOT NULL DEFAULT now(),
  -- When it was last made CURRENT (NULL: never).
  current_since   timestamptz
);

-- Every good event as it arrived (written only with ANOMALY_RAW_EVENTS=on), for analysts who
-- query the recent past directly. Keyed by its place in Kafka plus its event time (the time
-- column TimescaleDB needs in every unique key): replays upsert.
CREATE TABLE IF NOT EXISTS ${raw_events_table} (
  device_id        text        NOT NULL,
  event_time       timestamptz NOT NULL,
  ${pg_metric_columns},
  source_topic     text        NOT NULL,
  source_partition integer     NOT NULL,
  source_offset    bigint      NOT NULL,
  PRIMARY KEY (source_topic, source_partition, source_offset, event_time)
);
CREATE INDEX IF NOT EXISTS ${raw_events_table}_device_time_idx
  ON ${raw_events_table} (device_id, event_time DESC);
CREATE INDEX IF NOT EXISTS ${raw_events_table}_event_time_brin
  ON ${raw_events_table} USING brin (event_time);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    PERFORM create_hypertable('${alerts_table}', 'window_start',
                              if_not_exists => TRUE, migrate_data => TRUE);
    PERFORM create_hypertable('${incidents_table}', 'started_at',
                              if_not_exists => TRUE, migrate_data => TRUE);
    PERFORM create_hypertable('${raw_events_table}', 'event_time',
                              chunk_time_interval => INTERVAL '1 hour',
                              if_not_exists => TRUE, migrate_data => TRUE);
  END IF;
END
$$;
