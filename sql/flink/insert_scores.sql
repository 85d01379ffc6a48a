-- Score every window with the current model (one vectorized UDF call per Arrow batch; the
-- device id selects the per-device normalisation) and write features, score and, for flagged
-- windows, the explanation to the sink. With scoring off (ANOMALY_SCORING=off) score_call is
-- a NULL row: features only, e.g. to measure what scoring costs.
INSERT INTO anomaly_scores_sink
SELECT
  device_id,
  window_start,
  window_end,
  ${feature_list},
  scored.s.anomaly_score,
  scored.s.severity,
  scored.s.is_anomaly,
  scored.s.model_version,
  scored.s.known_device,
  scored.s.top_metric,
  scored.s.explanation
FROM (
  SELECT *, ${score_call} AS s FROM window_features
) AS scored
