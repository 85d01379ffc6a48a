-- Write features, score, reference data and, for flagged windows, the explanation of every
-- window to the sink. With scoring off (ANOMALY_SCORING=off) the score columns are NULL.
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
  scored.s.explanation,
  site,
  region,
  device_kind,
  criticality,
  in_inventory
FROM scored_windows AS scored
