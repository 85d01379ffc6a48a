-- The query layer: the questions users ask, as views and functions that Grafana, the HTTP API
-- (query/api.py) and analysts share. Repeatable: re-created whenever its rendered text
-- changes (e.g. the catalogue gains a metric) or a repeatable migration before it is
-- re-applied (open_incidents reads incident_status, which R__incident_status re-creates).
-- Functions are dropped with their dependents (CASCADE): a dependent no migration re-creates
-- makes the migration fail, named. The reader may read views re-created here by the default
-- privileges of R__grants.sql. Every function is STABLE and takes its parameters as values
-- (no dynamic SQL), so a caller cannot make it run other SQL.

-- Flagged windows, newest first when ordered by window_start DESC (index
-- ${scores_table}_anomalies_idx), with what the job knew of the device and why it was flagged.
CREATE OR REPLACE VIEW latest_anomalies AS
SELECT
  s.device_id,
  s.window_start,
  s.window_end,
  s.severity,
  s.anomaly_score,
  s.top_metric,
  s.explanation,
  s.model_version,
  s.site,
  s.region,
  s.device_kind,
  s.criticality,
  s.known_device,
  s.in_inventory
FROM ${scores_table} AS s
WHERE s.is_anomaly;

-- The newest p_limit flagged windows, optionally of one device, one site, at least a severity.
DROP FUNCTION IF EXISTS latest_anomalies(integer, text, text, double precision) CASCADE;
CREATE FUNCTION latest_anomalies(
  p_limit integer DEFAULT 50,
  p_device text DEFAULT NULL,
  p_site text DEFAULT NULL,
  p_min_severity double precision DEFAULT NULL
) RETURNS SETOF latest_anomalies
LANGUAGE sql STABLE AS $fn$
  SELECT *
  FROM latest_anomalies AS a
  WHERE (p_device IS NULL OR a.device_id = p_device)
    AND (p_site IS NULL OR a.site = p_site)
    AND (p_min_severity IS NULL OR a.severity >= p_min_severity)
  ORDER BY a.window_start DESC, a.severity DESC, a.device_id
  LIMIT greatest(p_limit, 0)
$fn$;

-- Per device over [p_start, p_end) (window starts): windows, scored windows, anomalies,
-- rule alerts, the highest severity and the newest anomaly. Ranges up to a day count exact
-- windows; longer ones read the hourly aggregate, in whole hours from p_start's hour.
DROP FUNCTION IF EXISTS anomaly_counts(timestamptz, timestamptz) CASCADE;
CREATE FUNCTION anomaly_counts(p_start timestamptz, p_end timestamptz)
RETURNS TABLE (
  device_id text,
  windows bigint,
  scored bigint,
  anomalies bigint,
  max_severity double precision,
  last_anomaly timestamptz
)
LANGUAGE sql STABLE AS $fn$
  SELECT s.device_id, count(*), count(s.anomaly_score), count(*) FILTER (WHERE s.is_anomaly),
         max(s.severity), max(s.window_start) FILTER (WHERE s.is_anomaly)
  FROM ${scores_table} AS s
  WHERE p_end - p_start <= INTERVAL '1 day'
    AND s.window_start >= p_start AND s.window_start < p_end
  GROUP BY s.device_id
  UNION ALL
  SELECT h.device_id, sum(h.windows)::bigint, sum(h.scored)::bigint, sum(h.anomalies)::bigint,
         max(h.max_severity), NULL::timestamptz
  FROM anomaly_counts_1h AS h
  WHERE p_end - p_start > INTERVAL '1 day'
    AND h.bucket >= date_trunc('hour', p_start) AND h.bucket < p_end
  GROUP BY h.device_id
$fn$;

-- The devices with the worst alerts (model or rule) over [p_start, p_end): highest severity,
-- how many alert windows, the metric named most often, the newest alert.
DROP FUNCTION IF EXISTS top_devices(timestamptz, timestamptz, integer) CASCADE;
CREATE FUNCTION top_devices(p_start timestamptz, p_end timestamptz, p_limit integer DEFAULT 10)
RETURNS TABLE (
  device_id text,
  site text,
  max_severity double precision,
  alert_windows bigint,
  top_metric text,
  last_alert timestamptz
)
LANGUAGE sql STABLE AS $fn$
  SELECT a.device_id, max(a.site), max(a.severity), count(DISTINCT a.window_start),
         mode() WITHIN GROUP (ORDER BY a.metric), max(a.window_start)
  FROM ${alerts_table} AS a
  WHERE a.window_start >= p_start AND a.window_start < p_end
  GROUP BY a.device_id
  ORDER BY max(a.severity) DESC NULLS LAST, count(DISTINCT a.window_start) DESC, a.device_id
  LIMIT greatest(p_limit, 0)
$fn$;

-- One metric of one device over [p_start, p_end), window by window: its mean, min and max,
-- the typical value (the mean of the device's window means over the ${band_horizon} context)
-- and the band typical +- 2 spreads, the window's severity and flag. An unknown metric is an
-- error (SQLSTATE 22023) naming the metrics there are.
DROP FUNCTION IF EXISTS device_metric(text, text, timestamptz, timestamptz) CASCADE;
CREATE FUNCTION device_metric(
  p_device text, p_metric text, p_start timestamptz, p_end timestamptz
) RETURNS TABLE (
  "time" timestamptz,
  value double precision,
  min double precision,
  max double precision,
  typical double precision,
  band_low double precision,
  band_high double precision,
  severity double precision,
  is_anomaly boolean
)
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
  IF p_metric IS NULL OR NOT p_metric = ANY (${metric_names_array}) THEN
    RAISE EXCEPTION 'unknown metric %', coalesce(quote_literal(p_metric), 'NULL')
      USING ERRCODE = '22023', HINT = 'metrics: ' || array_to_string(${metric_names_array}, ', ');
  END IF;
  RETURN QUERY
  SELECT s.window_start, b.value, b.min, b.max, b.typical,
         b.typical - 2 * b.spread, b.typical + 2 * b.spread, s.severity, s.is_anomaly
  FROM ${scores_table} AS s
  CROSS JOIN LATERAL (
    SELECT ${metric_case_mean} AS value, ${metric_case_min} AS min, ${metric_case_max} AS max,
           ${metric_case_typical} AS typical, ${metric_case_spread} AS spread
  ) AS b
  WHERE s.device_id = p_device AND s.window_start >= p_start AND s.window_start < p_end
  ORDER BY s.window_start;
END
$fn$;

-- The metrics of the catalogue this deployment scores (for pickers such as Grafana's).
CREATE OR REPLACE VIEW catalogue_metrics AS
SELECT unnest(${metric_names_array}) AS metric;

-- Incidents still open (a new alert window could still extend them), worst first.
CREATE OR REPLACE VIEW open_incidents AS
SELECT * FROM incident_status WHERE status = 'open';

-- Correlated incidents (alerting/correlate.py): the root, its symptoms (the other devices),
-- their span and peak, open while any member is, and where its notification stands.
CREATE OR REPLACE VIEW correlated_incident_status AS
SELECT
  c.id,
  c.root_device,
  c.root_reason,
  COALESCE(array_agg(m.device_id ORDER BY m.started_at, m.device_id)
           FILTER (WHERE m.device_id <> c.root_device), '{}') AS symptoms,
  count(*) AS devices,
  min(s.started_at) AS started_at,
  max(s.ended_at) AS ended_at,
  max(s.peak_severity) AS peak_severity,
  CASE WHEN bool_or(s.status = 'open') THEN 'open' ELSE 'closed' END AS status,
  CASE
    WHEN n.resolved_at IS NOT NULL THEN 'resolved sent'
    WHEN n.fired_at IS NOT NULL THEN 'firing sent'
    ELSE 'not sent'
  END AS notification,
  n.last_error AS notification_error
FROM ${correlated_table} AS c
JOIN ${correlation_table} AS m ON m.correlated_id = c.id
JOIN incident_status AS s ON s.device_id = m.device_id AND s.started_at = m.started_at
LEFT JOIN ${notifications_table} AS n ON n.correlated_id = c.id
GROUP BY c.id, c.root_device, c.root_reason, n.resolved_at, n.fired_at, n.last_error;

-- Pipeline health per minute of event time: events counted into windows, windows written,
-- devices heard from, flagged windows; and how long after its window ended a row landed.
CREATE OR REPLACE VIEW pipeline_throughput_1m AS
SELECT
  date_trunc('minute', s.window_start) AS bucket,
  sum(s.${events_count_column})::bigint AS events,
  count(*) AS windows,
  count(DISTINCT s.device_id) AS devices,
  count(*) FILTER (WHERE s.is_anomaly) AS anomalies,
  avg(extract(epoch FROM s.scored_at - s.window_end)) AS avg_landing_s,
  max(extract(epoch FROM s.scored_at - s.window_end)) AS max_landing_s
FROM ${scores_table} AS s
GROUP BY 1;

-- What the job refused or found late, per minute of arrival at the broker.
CREATE OR REPLACE VIEW rejects_1m AS
SELECT date_trunc('minute', broker_time) AS bucket, 'dead letter' AS kind, reason, count(*) AS events
FROM ${dead_letters_table} GROUP BY 1, 3
UNION ALL
SELECT date_trunc('minute', broker_time), 'late', 'window already closed', count(*)
FROM ${late_events_table} GROUP BY 1;

-- The model versions scoring now: windows of the last 5 minutes of event time per version.
CREATE OR REPLACE VIEW models_in_use AS
SELECT s.model_version, count(*) AS windows, max(s.window_end) AS last_window_end,
       m.model, m.created_at, m.current_since
FROM ${scores_table} AS s
LEFT JOIN ${models_table} AS m ON m.version = s.model_version
WHERE s.window_start > (SELECT max(window_start) FROM ${scores_table}) - INTERVAL '5 minutes'
  AND s.model_version IS NOT NULL
GROUP BY s.model_version, m.model, m.created_at, m.current_since;

-- Drift: do the scores of [p_until - p_since, p_until) still look like the training scores of
-- the model that gave them? Per model version: the share of recent windows in each bin of the
-- training scores' quantiles (below q0.5, q0.5-q0.9, q0.9-q0.99, q0.99-q0.999, above: expected
-- 50 / 40 / 9 / 0.9 / 0.1 %), the population stability index over those bins, and the verdict:
-- retraining is advised above PSI ${drift_psi_retrain} (0.1-0.25 is a moderate shift, above
-- 0.25 a large one), judged on at least ${drift_min_windows} scored windows.
DROP FUNCTION IF EXISTS drift_check(interval, timestamptz) CASCADE;
CREATE FUNCTION drift_check(
  p_since interval DEFAULT INTERVAL '1 hour', p_until timestamptz DEFAULT now()
) RETURNS TABLE (
  model_version text,
  windows bigint,
  share_below_q50 double precision,
  share_above_q90 double precision,
  share_above_q99 double precision,
  share_above_q999 double precision,
  psi double precision,
  retrain_advised boolean,
  verdict text
)
LANGUAGE sql STABLE AS $fn$
  WITH recent AS (
    SELECT s.model_version AS version, s.anomaly_score AS score
    FROM ${scores_table} AS s
    WHERE s.window_start >= p_until - p_since AND s.window_start < p_until
      AND s.anomaly_score IS NOT NULL
  ),
  bins AS (
    SELECT r.version, count(*) AS n,
           m.version IS NOT NULL AS registered,
           count(*) FILTER (WHERE r.score < (m.score_quantiles ->> '0.5')::float8) AS b0,
           count(*) FILTER (WHERE r.score >= (m.score_quantiles ->> '0.5')::float8
                              AND r.score < (m.score_quantiles ->> '0.9')::float8) AS b1,
           count(*) FILTER (WHERE r.score >= (m.score_quantiles ->> '0.9')::float8
                              AND r.score < (m.score_quantiles ->> '0.99')::float8) AS b2,
           count(*) FILTER (WHERE r.score >= (m.score_quantiles ->> '0.99')::float8
                              AND r.score < (m.score_quantiles ->> '0.999')::float8) AS b3,
           count(*) FILTER (WHERE r.score >= (m.score_quantiles ->> '0.999')::float8) AS b4
    FROM recent AS r
    LEFT JOIN ${models_table} AS m ON m.version = r.version
    GROUP BY r.version, m.version
  ),
  judged AS (
    -- PSI = sum over bins of (actual - expected) * ln(actual / expected); an empty bin counts
    -- as 0.01 % so that the logarithm stays finite.
    SELECT b.*,
           (SELECT sum((greatest(x.n::float8 / b.n, 1e-4) - x.e)
                       * ln(greatest(x.n::float8 / b.n, 1e-4) / x.e))
            FROM unnest(ARRAY[b.b0, b.b1, b.b2, b.b3, b.b4],
                        ARRAY[0.5, 0.4, 0.09, 0.009, 0.001]::float8[]) AS x(n, e)
           ) AS index
    FROM bins AS b
  )
  SELECT
    j.version,
    j.n,
    j.b0::float8 / j.n,
    (j.b2 + j.b3 + j.b4)::float8 / j.n,
    (j.b3 + j.b4)::float8 / j.n,
    j.b4::float8 / j.n,
    CASE WHEN j.registered THEN j.index END,
    CASE
      WHEN NOT j.registered OR j.n < ${drift_min_windows} THEN NULL
      ELSE j.index > ${drift_psi_retrain}
    END,
    CASE
      WHEN NOT j.registered
        THEN 'model version not registered: run python -m common.models register'
      WHEN j.n < ${drift_min_windows}
        THEN format('too few scored windows to judge (%s < ${drift_min_windows})', j.n)
      WHEN j.index > ${drift_psi_retrain}
        THEN format('drifted (PSI %s > ${drift_psi_retrain}): retraining advised',
                    round(j.index::numeric, 3))
      WHEN j.index > 0.1
        THEN format('moderate shift (PSI %s): watch it', round(j.index::numeric, 3))
      ELSE format('stable (PSI %s)', round(j.index::numeric, 3))
    END
  FROM judged AS j
  ORDER BY j.n DESC
$fn$;
