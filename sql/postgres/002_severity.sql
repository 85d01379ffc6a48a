-- Severity 0-100 of each scored window, from the model card's calibration (udfs/calibration.py):
-- 50 at the model's threshold, so is_anomaly = (severity > 50). NULL where not scored.
-- anomaly_score is the model's raw score: higher is more anomalous, its scale depends on the
-- model (see the card of model_version).
ALTER TABLE ${scores_table} ADD COLUMN IF NOT EXISTS severity double precision;
