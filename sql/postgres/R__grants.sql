-- Who may do what. The schema's owner (who runs these migrations) owns every table; the
-- Flink job connects as ${pg_writer_user}, Grafana, the HTTP API and analysts as
-- ${pg_reader_user}. Roles are cluster-wide and created with their passwords by whoever
-- administers the server (the local stack does: deploy/local/stack.py); a role that does not
-- exist yet is skipped with a notice. Repeatable: re-applied when the tables change.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${pg_writer_user}') THEN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO ${pg_writer_user}', current_database());
    GRANT USAGE ON SCHEMA public TO ${pg_writer_user};
    -- It reads reference data (lookup joins) and writes results: no DELETE, no DDL.
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${pg_writer_user};
    GRANT INSERT, UPDATE ON ${scores_table}, ${alerts_table}, ${incidents_table},
      ${health_table}, ${dead_letters_table}, ${late_events_table}, ${raw_events_table}
      TO ${pg_writer_user};
    -- Model versions are recorded as the writer too (a retraining, a rollback): no owner.
    GRANT INSERT, UPDATE ON ${models_table} TO ${pg_writer_user};
    -- The notifier (alerting/notifier.py) records correlations and what it delivered.
    GRANT INSERT, UPDATE ON ${correlated_table}, ${correlation_table}, ${notifications_table}
      TO ${pg_writer_user};
    -- As for the reader below: what the later repeatable migrations re-create stays readable.
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO ${pg_writer_user};
  ELSE
    RAISE NOTICE 'role ${pg_writer_user} does not exist: no grants for the job''s writer';
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${pg_reader_user}') THEN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO ${pg_reader_user}', current_database());
    GRANT USAGE ON SCHEMA public TO ${pg_reader_user};
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${pg_reader_user};
    -- Tables and views created later are readable too: those the repeatable migrations after
    -- this one drop and re-create (incident_status, the query layer's views) included. Functions
    -- are executable by PUBLIC, PostgreSQL's default, also once re-created.
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO ${pg_reader_user};
  ELSE
    RAISE NOTICE 'role ${pg_reader_user} does not exist: no grants for readers';
  END IF;
END
$$;
