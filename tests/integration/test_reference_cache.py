"""The job's reference-data lookups (sql/flink/devices_jdbc.sql with jdbc_lookup_options) in an
in-process streaming job against the real PostgreSQL, both ways of holding the tables
(ANOMALY_DEVICE_CACHE): a device's row enriches its rows, a device without one gets NULLs, and
an edit in the database (a changed row, a new one) reaches the lookups within the cache period
while the job runs, without a restart."""

from __future__ import annotations

import time
from datetime import UTC

import pytest

pytestmark = pytest.mark.stack

CACHE_S = 1
# Rows looked up this long after the edit must see it (the cache period, and room for a
# reload's scan and a busy machine).
SETTLED_S = CACHE_S + 2.0


@pytest.mark.parametrize("cache", ["full", "partial"])
def test_an_edit_to_the_devices_table_reaches_the_running_lookups(fresh_db, cache):
    from common.flink_env import create_table_env
    from jobs.score_telemetry import execute_file, reference_lookup_options
    from simulator.devices import upsert_devices

    settings = fresh_db.replace(parallelism=1, device_cache=cache, device_cache_seconds=CACHE_S)
    # A text and a number, both through the cache's row format (held whole: binary rows).
    upsert_devices(
        settings, [{"device_id": "dev-a", "site": "north", "cpu_utilization_high": 90.5}]
    )
    t_env = create_table_env(settings, streaming=True)
    execute_file(t_env, "flink/devices_jdbc.sql", settings, **reference_lookup_options(settings))
    # 4 rows a second for 10 s, alternately of dev-a (a row, then an edited one) and dev-b
    # (no row, then one).
    t_env.execute_sql(
        """CREATE TEMPORARY TABLE ticks (seq INT, pt AS PROCTIME()) WITH (
          'connector' = 'datagen', 'rows-per-second' = '4', 'number-of-rows' = '40',
          'fields.seq.kind' = 'sequence', 'fields.seq.start' = '1', 'fields.seq.end' = '40')"""
    )
    table = t_env.sql_query(
        """SELECT t.seq, t.device_id, d.site, CAST(t.pt AS TIMESTAMP(3)), d.cpu_utilization_high
        FROM (SELECT seq, pt, IF(MOD(seq, 2) = 0, 'dev-a', 'dev-b') AS device_id FROM ticks) t
        LEFT JOIN devices_lookup FOR SYSTEM_TIME AS OF t.pt AS d ON d.device_id = t.device_id"""
    )
    rows, edited_at = [], None
    with table.execute().collect() as results:
        for row in results:
            # When the row was looked up (the job's zone is UTC).
            at = row[3].replace(tzinfo=UTC).timestamp()
            rows.append((row[0], row[1], (row[2], row[4]), at))
            if edited_at is None:
                edited_at = time.time()
                upsert_devices(
                    settings,
                    [
                        {"device_id": "dev-a", "site": "south", "cpu_utilization_high": 95.25},
                        {"device_id": "dev-b", "site": "east", "cpu_utilization_high": None},
                    ],
                )
    assert len(rows) == 40
    before = {(device, site) for _, device, site, at in rows if at < edited_at}
    after = {(device, site) for _, device, site, at in rows if at > edited_at + SETTLED_S}
    assert before, "no row was looked up before the edit"
    assert before <= {("dev-a", ("north", 90.5)), ("dev-b", (None, None))}
    assert after == {("dev-a", ("south", 95.25)), ("dev-b", ("east", None))}


def test_auto_holds_a_table_whole_up_to_its_row_limit(fresh_db, capsys):
    """ANOMALY_DEVICE_CACHE=auto: a table of at most device_cache_full_max_rows rows is held
    whole, a larger one cached by key, and one the client cannot count too; the choice and
    the count are printed."""
    from jobs.score_telemetry import held_whole, reference_lookup_options, reference_rows
    from simulator.devices import upsert_devices

    devices = [{"device_id": f"dev-{i}", "site": "north"} for i in range(3)]
    upsert_devices(fresh_db, devices)
    settings = fresh_db.replace(device_cache="auto", device_cache_full_max_rows=2)
    tables = [settings.devices_table, settings.segment_limits_table]
    # counted up to the limit + 1, both over one connection
    assert reference_rows(settings, tables) == {tables[0]: 3, tables[1]: 0}
    options = reference_lookup_options(settings)
    assert "'lookup.cache' = 'PARTIAL'" in options["devices_lookup_options"]
    assert "'connector' = 'jdbc-full-cache'" in options["segment_limits_lookup_options"]
    printed = capsys.readouterr().out
    assert (
        f"reference table {settings.devices_table}: over 2 rows, rows cached on first sight"
        in printed
    )
    assert f"reference table {settings.segment_limits_table}: 0 rows, held whole" in printed
    roomy = settings.replace(device_cache_full_max_rows=3)
    assert "jdbc-full-cache" in reference_lookup_options(roomy)["devices_lookup_options"]
    unreachable = settings.replace(pg_port=1)
    assert reference_rows(unreachable, tables) == {tables[0]: None, tables[1]: None}
    assert not held_whole(unreachable, None)
    assert held_whole(settings.replace(device_cache="full"), None)
    assert not held_whole(settings.replace(device_cache="partial"), 0)
