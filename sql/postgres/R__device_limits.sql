-- Repeatable: a low and a high limit per catalogue metric for each device (NULL: none), for
-- the catalogue's rules with `reference` thresholds. Columns of metrics no longer in the
-- catalogue stay.
${pg_add_device_limit_columns}
