-- Every parsed event with its verdict: reject_reason names the first problem (NULL for a good
-- event), is_late says that its window had already closed when it arrived. The job registers
-- it as checked_events through one DataStream (jobs/score_telemetry.py), so that every branch
-- reads the same parsed events: telemetry_events.sql, insert_rejects.sql.
--
-- A window closes once the watermark reaches its last millisecond; an event for a closed
-- window would be dropped by the window operator without a trace, so it is routed to the late
-- events here instead. This runs in the source's own task, whose watermark is never behind the
-- window operator's: an event judged on time here is never dropped there.
-- Each text field converted once (a conversion costs more than every check after it).
CREATE TEMPORARY VIEW parsed_events AS
SELECT
  *,
  TRY_CAST(`ts_ms` AS BIGINT) AS ts_value,
  ${metric_values}
FROM telemetry_source;

CREATE TEMPORARY VIEW checked_events_query AS
SELECT
  *,
  CASE
    WHEN `device_id` IS NULL THEN 'device_id: missing or null'
    WHEN CHAR_LENGTH(TRIM(`device_id`)) = 0 THEN 'device_id: empty'
    WHEN CHAR_LENGTH(`device_id`) > ${max_device_id_length}
      THEN 'device_id: longer than ${max_device_id_length} characters'
    -- A key the database and every reader can take: no NUL or other control character, no
    -- lone UTF-16 surrogate (JSON's "\ud800" decodes to one). Emoji, accents and RTL marks
    -- are fine.
    WHEN REGEXP(`device_id`, '[\p{Cc}\p{Cs}]') THEN CASE
      WHEN REGEXP(`device_id`, '\p{Cs}') THEN 'device_id: not valid Unicode (a lone surrogate)'
      ELSE 'device_id: contains a control character' END
    WHEN `ts_ms` IS NULL THEN 'ts_ms: missing or null'
    WHEN ts_value IS NULL THEN 'ts_ms: not an integer'
    WHEN event_time IS NULL
      THEN 'ts_ms: before 1970 or more than ${max_clock_skew_seconds} s ahead of the broker'
    ${metric_checks}
  END AS reject_reason,
  -- NULL (no watermark yet, or no event time) counts as on time. CURRENT_WATERMARK is the
  -- dearest call here: once per event.
  COALESCE(
    TO_TIMESTAMP_LTZ(ts_value - MOD(ts_value, ${window_ms}) + ${window_ms} - 1, 3)
      <= CURRENT_WATERMARK(event_time),
    FALSE
  ) AS is_late
FROM parsed_events;
