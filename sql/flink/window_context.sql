-- Longer-horizon context of every window (ANOMALY_CONTEXT_HORIZONS, e.g. 1m and 1h): per
-- metric, the mean and spread of the device's window means over the horizon, and the window
-- mean's deviation from that mean. Named <metric>_avg<h>, <metric>_sd<h>, <metric>_dev<h>.
--
-- State stays small at any horizon: a HOP over the window rows (cascaded on their window_time)
-- keeps six partial aggregates per device and horizon and emits the horizon's statistics every
-- sixth of it. The HOP is shifted by -1 ms, so the statistics emitted at refresh boundary b
-- cover the windows starting in [b - horizon - window, b - window): exactly the horizon before
-- the window [b - window, b), which has a later event time (b - 1 ms) than the statistics
-- (b - 2 ms). Windows and statistics then flow as one stream in event-time order per device,
-- and each window takes the latest statistics (LAST_VALUE over ROWS UNBOUNDED PRECEDING keeps
-- one value per device, not the rows): the horizon before it, or for a coarser refresh the
-- horizon before the window at the latest boundary. Statistics from an older boundary (the
-- device sent nothing over the last horizon) are not used: avg/sd NULL, dev 0.
CREATE TEMPORARY VIEW window_means AS
SELECT device_id, window_time AS mean_time, ${window_mean_list}
FROM window_aggregates;

${context_views}

CREATE TEMPORARY VIEW window_and_context_rows AS
SELECT
  device_id,
  window_time,
  TRUE AS is_window,
  window_start,
  window_end,
  ${window_feature_list}${label_list},
  ${context_nulls}
FROM window_aggregates
${context_branches};

CREATE TEMPORARY VIEW window_features AS
SELECT
  device_id,
  window_start,
  window_end,
  window_time,
  ${window_feature_list}${label_list},
  ${context_features}
FROM (
  SELECT
    *,
    ${context_last_values}
  FROM window_and_context_rows
  WINDOW w AS (
    PARTITION BY device_id ORDER BY window_time
    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
  )
)
WHERE is_window
