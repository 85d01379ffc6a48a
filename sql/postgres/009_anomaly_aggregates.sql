-- Anomaly counts and severity percentiles per device, per minute and per hour: what the fleet
-- dashboards and anomaly_counts() read over long ranges.
--
-- With TimescaleDB: continuous aggregates, real-time (materialized_only = false: buckets not
-- yet materialized are computed from the hypertable at query time, so the newest minute is
-- never missing), refreshed by the policies of R__timescale_policies.sql. Without it: plain
-- views over the scores table with the same columns, always current. One definition of the
-- columns serves both (the SELECT below, with the bucket function filled in).
DO $$
DECLARE
  body constant text := $q$
    SELECT
      %s AS bucket,
      device_id,
      count(*) AS windows,
      count(anomaly_score) AS scored,
      count(*) FILTER (WHERE is_anomaly) AS anomalies,
      max(severity) AS max_severity,
      avg(severity) AS avg_severity,
      percentile_cont(0.5) WITHIN GROUP (ORDER BY severity) AS severity_p50,
      percentile_cont(0.95) WITHIN GROUP (ORDER BY severity) AS severity_p95,
      percentile_cont(0.99) WITHIN GROUP (ORDER BY severity) AS severity_p99,
      avg(anomaly_score) AS avg_score,
      max(anomaly_score) AS max_score
    FROM ${scores_table}
    GROUP BY 1, 2
  $q$;
  timescale constant boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb');
  bucket record;
BEGIN
  FOR bucket IN SELECT * FROM (VALUES ('1m', 'minute'), ('1h', 'hour')) AS b(suffix, unit) LOOP
    IF timescale THEN
      EXECUTE format(
        'CREATE MATERIALIZED VIEW IF NOT EXISTS anomaly_counts_%s'
        ' WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS %s'
        ' WITH NO DATA',
        bucket.suffix,
        format(body, format('time_bucket(INTERVAL %L, window_start)', '1 ' || bucket.unit)));
    ELSE
      EXECUTE format(
        'CREATE OR REPLACE VIEW anomaly_counts_%s AS %s',
        bucket.suffix,
        format(body, format('date_trunc(%L, window_start)', bucket.unit)));
    END IF;
  END LOOP;
END
$$;
