-- The scores' (device_id, window_start DESC) index repeated the primary key's columns in the
-- same order (a B-tree reads either way: a device's newest windows come from the primary key
-- scanned backwards), so every upsert maintained one B-tree more for nothing.
DROP INDEX IF EXISTS ${scores_table}_device_time_idx;
