-- Repeatable: re-applied whenever its rendered text changes, i.e. when the active metric
-- catalogue gains metrics. Adds a column for every window feature the job writes; columns of
-- metrics no longer in the catalogue stay (NULL in new rows), so history is never dropped.
${pg_add_feature_columns}
