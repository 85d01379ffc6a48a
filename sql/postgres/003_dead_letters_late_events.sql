-- Nothing the job reads is dropped without a trace: messages it cannot use land in
-- dead letters, events that arrive after their window closed land in late events. Both are
-- keyed by the message's place in Kafka (topic, partition, offset; plus the broker's timestamp,
-- the time column TimescaleDB needs in every unique key), so replays upsert, never duplicate.

-- Scores of devices the model has no statistics for (scored with the fleet's) are marked.
ALTER TABLE ${scores_table} ADD COLUMN IF NOT EXISTS known_device boolean;

CREATE TABLE IF NOT EXISTS ${dead_letters_table} (
  source_topic     text        NOT NULL,
  source_partition integer     NOT NULL,
  source_offset    bigint      NOT NULL,
  broker_time      timestamptz NOT NULL,
  -- What is wrong: 'not a JSON object', 'empty message', or '<field>: <problem>'.
  reason           text        NOT NULL,
  device_id        text,
  -- The message itself when it is not a JSON object; otherwise the fields the job read.
  payload          text,
  recorded_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (source_topic, source_partition, source_offset, broker_time)
);
CREATE INDEX IF NOT EXISTS ${dead_letters_table}_broker_time_idx
  ON ${dead_letters_table} (broker_time DESC);

CREATE TABLE IF NOT EXISTS ${late_events_table} (
  source_topic     text        NOT NULL,
  source_partition integer     NOT NULL,
  source_offset    bigint      NOT NULL,
  broker_time      timestamptz NOT NULL,
  device_id        text        NOT NULL,
  event_time       timestamptz NOT NULL,
  -- The window the event belonged to, already written without it.
  window_start     timestamptz NOT NULL,
  -- The job's watermark when the event arrived, and how far behind it the event was.
  watermark        timestamptz NOT NULL,
  lateness_ms      bigint GENERATED ALWAYS AS
                     ((extract(epoch FROM watermark - event_time) * 1000)::bigint) STORED,
  recorded_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (source_topic, source_partition, source_offset, broker_time)
);
CREATE INDEX IF NOT EXISTS ${late_events_table}_broker_time_idx
  ON ${late_events_table} (broker_time DESC);

DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
    PERFORM create_hypertable('${dead_letters_table}', 'broker_time',
                              if_not_exists => TRUE, migrate_data => TRUE);
    PERFORM create_hypertable('${late_events_table}', 'broker_time',
                              if_not_exists => TRUE, migrate_data => TRUE);
  END IF;
END
$$;
