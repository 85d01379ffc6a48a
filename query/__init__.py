"""The read side in Python: the HTTP API (query/api.py), on-demand scoring and retraining, and
PNG plots (query/plot.py), all over the SQL query layer (sql/postgres/R__query_layer.sql)."""
