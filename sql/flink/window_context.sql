-- Longer-horizon context of every window (ANOMALY_CONTEXT_HORIZONS, e.g. 1m and 1h): per
-- metric, the mean and population spread of the device's window means over the horizon before
-- the window, and the window mean's deviation from that mean. Named <metric>_avg<h>,
-- <metric>_sd<h>, <metric>_dev<h>.
--
-- One OVER per horizon runs on the window rows themselves. RANGE <horizon> PRECEDING AND
-- CURRENT ROW takes the window and the device's windows of the horizon before it, and the
-- statistics leave the window's own mean out: (sum - mean) / (windows - 1). A device has no
-- context on its first window, or after a silence longer than the horizon: avg and sd are
-- NULL, dev is 0.
--
-- Why not compute the statistics apart and merge them back into the windows: a merge of two
-- streams is ordered by watermarks. After the sources idle (a quiet fleet, a broker outage),
-- Flink lets the merge advance on one input before the other has caught up, and drops the
-- other's rows as late. The OVERs see each window once, in event-time order, on one path.
-- Their cost: each keeps the device's window rows of its horizon in state (1h of 10 s
-- windows: 360 rows per device). Flink clears a device's rows once it has been silent for
-- 1.5 horizons.
--
-- The stream computes the same sums (common.sql.context_sums) with WindowContext (jvm/,
-- ANOMALY_CONTEXT_OPERATOR=jvm, the default): one keyed operator on the same single path,
-- which keeps only the tracked values of each device's windows; this file then reads its
-- table instead of the OVER views. The batch path (training, evaluation) uses the OVERs.
${context_views}

CREATE TEMPORARY VIEW window_features AS
SELECT
  device_id,
  window_start,
  window_end,
  window_time,
  ${window_feature_list}${label_list},
  ${context_features}
FROM ${context_source}
