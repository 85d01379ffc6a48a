-- Repeatable: a low and a high limit per catalogue metric for each device (NULL: none), in the
-- devices table (rules with `reference` thresholds) and per time-of-day segment in the segment
-- limits table (rules with `segment_reference`). Columns of metrics no longer in the catalogue
-- stay.
${pg_add_device_limit_columns}
${pg_add_segment_limit_columns}
