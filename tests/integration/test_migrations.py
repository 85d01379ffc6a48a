"""Repeatable migrations on a populated database when the settings they render change: each
change re-applies the changed one and every repeatable one after it, in one transaction; the
views and functions come back, readable by the reader, and the rows stay. A failure changes
nothing and says what to do, also through `make up`."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg2
import pytest

from common.catalogue import load as load_catalogue
from common.db import MigrationError, connect, migrate, pending
from common.features import METRIC_NAMES
from common.settings import ENV_PREFIX, REPO_ROOT

pytestmark = pytest.mark.stack

REPEATABLE_FROM_INCIDENT_STATUS = ["R__incident_status", "R__query_layer", "R__timescale_policies"]


def populate(settings) -> None:
    """A few rows in the tables the job writes: scores (one flagged), an alert, incidents
    (one ended 5 s ago, one 2 min ago, one long ago), a device, a dead letter."""
    metric = METRIC_NAMES[0]
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {settings.scores_table} (device_id, window_start, window_end,"  # noqa: S608
            f" {metric}_mean, anomaly_score, severity, is_anomaly, top_metric)"
            " SELECT 'dev-a', t, t + interval '10 s', 1.5 * k, k, 30 * k, k = 3, %s"
            " FROM generate_series(1, 3) AS k,"
            " LATERAL (SELECT date_trunc('minute', now()) - k * interval '10 s') AS w(t)",
            (metric,),
        )
        cur.execute(
            f"INSERT INTO {settings.alerts_table} (device_id, window_start, source, window_end,"  # noqa: S608
            " severity, metric) VALUES ('dev-a', now() - interval '30 s', 'model',"
            " now() - interval '20 s', 90, %s)",
            (metric,),
        )
        cur.execute(
            f"INSERT INTO {settings.incidents_table} (device_id, started_at, ended_at, windows)"  # noqa: S608
            " VALUES ('dev-a', now() - interval '30 s', now() - interval '5 s', 2),"
            " ('dev-b', now() - interval '3 min', now() - interval '2 min', 4),"
            " ('dev-c', now() - interval '2 hours', now() - interval '110 min', 9)"
        )
        cur.execute(
            f"INSERT INTO {settings.devices_table} (device_id, site) VALUES ('dev-a', 's1')"  # noqa: S608
        )
        cur.execute(
            f"INSERT INTO {settings.dead_letters_table} (source_topic, source_partition,"  # noqa: S608
            " source_offset, broker_time, reason) VALUES ('t', 0, 1, now(), 'empty message')"
        )
    conn.close()


ROWS = {"scores_table": 3, "alerts_table": 1, "incidents_table": 3, "devices_table": 1}


def answers(settings, metric: str) -> dict[str, object]:
    """What the query layer answers, as the reader (Grafana, the API); and that the writer can
    still do what the job does."""
    conn = connect(settings, role="reader")
    got: dict[str, object] = {}
    with conn, conn.cursor() as cur:
        cur.execute("SELECT device_id FROM open_incidents ORDER BY device_id")
        got["open"] = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT count(*) FROM incident_status")
        got["incidents"] = cur.fetchone()[0]
        cur.execute("SELECT device_id, severity FROM latest_anomalies(10)")
        got["latest"] = cur.fetchall()
        cur.execute(
            "SELECT count(*) FROM device_metric('dev-a', %s, now() - interval '1 hour', now())",
            (metric,),
        )
        got["metric windows"] = cur.fetchone()[0]
        cur.execute("SELECT array_agg(metric) FROM catalogue_metrics")
        got["metrics"] = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM anomaly_counts(now() - interval '1 hour', now())")
        got["devices counted"] = cur.fetchone()[0]
    conn.close()
    conn = connect(settings, role="writer")
    with conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {settings.devices_table}")  # noqa: S608
        cur.execute(
            f"INSERT INTO {settings.incidents_table} (device_id, started_at, ended_at, windows)"  # noqa: S608
            " SELECT device_id, started_at, ended_at, windows FROM incidents"
            " WHERE device_id = 'dev-a' ON CONFLICT (device_id, started_at)"
            " DO UPDATE SET windows = EXCLUDED.windows"
        )
    conn.close()
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        for name in ROWS:
            table = getattr(settings, name)
            cur.execute(f"SELECT count(*) FROM {table}")  # noqa: S608
            got[name] = cur.fetchone()[0]
    conn.close()
    return got


def unknown_metric(settings, metric: str) -> bool:
    """Whether device_metric refuses the metric as not in the catalogue (SQLSTATE 22023)."""
    conn = connect(settings, role="reader")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM device_metric('dev-a', %s, now(), now())", (metric,))
    except psycopg2.Error as exc:
        return exc.pgcode == "22023"
    finally:
        conn.close()
    return False


def expect(settings, metric: str, metrics, open_devices: list[str]) -> None:
    got = answers(settings, metric)
    assert got["open"] == open_devices
    assert got["incidents"] == 3
    assert got["latest"] == [("dev-a", 90.0)]
    assert got["metric windows"] == 3
    assert got["metrics"] == list(metrics)
    assert got["devices counted"] == 1
    assert {name: got[name] for name in ROWS} == ROWS


def migrate_in_subprocess(settings, **env: str) -> str:
    """`python -m common.db migrate` with ANOMALY_* variables: the metric catalogue and the
    context horizons are read from the environment when common.features is imported."""
    variables = {
        **os.environ,
        f"{ENV_PREFIX}PG_DATABASE": settings.pg_database,
        f"{ENV_PREFIX}RETENTION_DAYS": str(settings.retention_days),
        f"{ENV_PREFIX}RAW_EVENTS_RETENTION_DAYS": str(settings.raw_events_retention_days),
        **{ENV_PREFIX + name.upper(): value for name, value in env.items()},
    }
    done = subprocess.run(
        [sys.executable, "-m", "common.db", "migrate"],
        cwd=REPO_ROOT,
        env=variables,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_setting_change_re_applies_the_repeatable_migrations_on_a_populated_database(
    fresh_db,
):
    db = fresh_db
    populate(db)
    network = METRIC_NAMES
    metric = network[0]
    # Open: within quiet (60 s) + window (10 s) + watermark delay (5 s) of the last alert.
    expect(db, metric, network, ["dev-a"])

    # The window (the user's report: R__incident_status could not drop its view), the
    # watermark delay and the quiet period, rendered from the settings given.
    wide = db.replace(window_seconds=300, context_horizons="30m,6h")
    assert migrate(wide) == REPEATABLE_FROM_INCIDENT_STATUS
    expect(db, metric, network, ["dev-a", "dev-b"])  # 2 min ago is within 300 + 60 + 5 s
    assert migrate(wide) == []
    assert migrate(db.replace(watermark_delay_seconds=400)) == REPEATABLE_FROM_INCIDENT_STATUS
    expect(db, metric, network, ["dev-a", "dev-b"])
    assert migrate(db.replace(incident_quiet_seconds=7200)) == REPEATABLE_FROM_INCIDENT_STATUS
    expect(db, metric, network, ["dev-a", "dev-b", "dev-c"])
    assert migrate(db) == REPEATABLE_FROM_INCIDENT_STATUS
    expect(db, metric, network, ["dev-a"])

    # The user's report, `make up` after ANOMALY_WINDOW_SECONDS=300 alone (context horizons
    # "auto" follow it); then the horizons and the catalogue, read from the environment of a
    # new process.
    out = migrate_in_subprocess(db, window_seconds="300")
    assert "applied R__incident_status" in out and "applied R__query_layer" in out
    expect(db, metric, network, ["dev-a", "dev-b"])
    wide_env = {"window_seconds": "300", "context_horizons": "30m,6h"}
    out = migrate_in_subprocess(db, **wide_env)
    assert "applied R__feature_columns" in out and "applied R__query_layer" in out
    expect(db, metric, network, ["dev-a", "dev-b"])
    for name in ("iot", "skab"):
        metrics = load_catalogue(name).metric_names
        out = migrate_in_subprocess(db, catalogue=name, **wide_env)
        assert "applied R__device_limits" in out and "applied R__incident_status" in out
        expect(db, metrics[-1], metrics, ["dev-a", "dev-b"])
        assert unknown_metric(db, metric)  # the former catalogue's metric is gone
    out = migrate_in_subprocess(db, catalogue="iot")  # two changes at once, the other way
    assert "applied R__feature_columns" in out
    expect(db, load_catalogue("iot").metric_names[0], load_catalogue("iot").metric_names, ["dev-a"])

    # Back to this process's settings: everything as at the start, then nothing to do.
    assert "R__feature_columns" in migrate(db)
    expect(db, metric, network, ["dev-a"])
    assert migrate(db) == [] and pending(db) == []


def test_a_dependent_no_migration_re_creates_stops_the_migration_and_says_what_to_do(fresh_db):
    """An analyst's view on open_incidents would go with incident_status: nothing is applied,
    and the error names the view, the setting that changed and the command to run again;
    `make up` says the same, without a traceback, and that PostgreSQL is still running."""
    db = fresh_db
    populate(db)
    conn = connect(db)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE VIEW my_report AS SELECT device_id FROM open_incidents")
        cur.execute("SELECT checksum FROM schema_migrations WHERE version = 'R__incident_status'")
        checksum = cur.fetchone()[0]
    wide = db.replace(window_seconds=300, context_horizons="30m,6h")
    with pytest.raises(MigrationError) as err:
        migrate(wide)
    message = str(err.value)
    for part in (
        "view my_report",
        "R__incident_status changed: ANOMALY_WINDOW_SECONDS 10 -> 300",
        "Nothing was applied",
        "python -m common.db migrate",
        "ANOMALY_WINDOW_SECONDS=10 again",
    ):
        assert part in message, message
    with conn, conn.cursor() as cur:
        cur.execute("SELECT checksum FROM schema_migrations WHERE version = 'R__incident_status'")
        assert cur.fetchone()[0] == checksum
        cur.execute("SELECT count(*) FROM my_report")
        assert cur.fetchone()[0] == 1
    assert pending(wide) == REPEATABLE_FROM_INCIDENT_STATUS

    done = subprocess.run(
        [sys.executable, "-m", "deploy.local.stack", "up"],
        cwd=REPO_ROOT,
        env={
            **os.environ,
            f"{ENV_PREFIX}PG_DATABASE": db.pg_database,
            f"{ENV_PREFIX}WINDOW_SECONDS": "300",
            f"{ENV_PREFIX}CONTEXT_HORIZONS": "30m,6h",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    for part in ("view my_report", "PostgreSQL is still running", "make stop", "make up"):
        assert part in done.stderr, done.stderr

    # Once the view is out of the way, the same change goes through.
    with conn, conn.cursor() as cur:
        cur.execute("DROP VIEW my_report")
    conn.close()
    assert migrate(wide) == REPEATABLE_FROM_INCIDENT_STATUS
    expect(db, METRIC_NAMES[0], METRIC_NAMES, ["dev-a", "dev-b"])


def test_repeatable_migrations_apply_together_or_not_at_all(fresh_db, tmp_path):
    """A failing repeatable migration leaves none of the ones re-applied with it, and its
    error names it, why they ran and what to do."""
    first, second = tmp_path / "R__a_first.sql", tmp_path / "R__b_second.sql"
    first.write_text("CREATE TABLE probe (n int); INSERT INTO probe VALUES (1);")
    second.write_text("SELECT 1;")
    assert migrate(fresh_db, [first, second]) == ["R__a_first", "R__b_second"]
    first.write_text("INSERT INTO probe VALUES (2);")
    second.write_text("SELECT * FROM no_such_table;")
    with pytest.raises(MigrationError) as err:
        migrate(fresh_db, [first, second])
    message = str(err.value)
    assert message.startswith("migration R__b_second failed: relation")
    assert "(due because R__a_first changed: its SQL (R__a_first.sql))" in message
    assert "none of them was applied" in message and "python -m common.db migrate" in message
    conn = connect(fresh_db)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT array_agg(n) FROM probe")
        assert cur.fetchone()[0] == [1]
    conn.close()
    second.write_text("SELECT 2;")
    assert migrate(fresh_db, [first, second]) == ["R__a_first", "R__b_second"]
