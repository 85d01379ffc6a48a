-- Why a window was flagged (NULL for windows that were not): the metric that contributes
-- most to its score, and the top metrics as a JSON array of
-- {metric, feature, direction, actual, typical, contribution} (udfs/onnx_scorer.py); query it
-- with explanation::jsonb, e.g. explanation::jsonb -> 0 ->> 'feature'.
ALTER TABLE ${scores_table}
  ADD COLUMN IF NOT EXISTS top_metric text,
  ADD COLUMN IF NOT EXISTS explanation text;
