"""The read side's schema on the real PostgreSQL: migrations (twice, and as an upgrade), the
query layer's views and functions on a known data set, and what each role may do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import psycopg2
import pytest

from common.db import connect, migrate
from common.features import METRIC_NAMES
from common.sql import postgres_migrations
from query.drift import psi
from tests import readside_data as known
from tests.conftest import drop_database

pytestmark = pytest.mark.stack


def query(settings, statement: str, params=(), role: str = "owner") -> pd.DataFrame:
    conn = connect(settings, role=role)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
    finally:
        conn.close()


@pytest.fixture
def loaded(fresh_db):
    data = known.build()
    known.load(fresh_db, data)
    return fresh_db, data


def test_migrations_run_twice_cleanly_and_upgrade_the_previous_schema(stack, fresh_db):
    from psycopg2 import sql

    from common.db import pending, status_lines

    assert migrate(fresh_db) == [] and pending(fresh_db) == []
    lines = status_lines(fresh_db)
    assert all(line.strip().startswith("applied") for line in lines[:-1])
    assert "plain PostgreSQL" in lines[-1] or "TimescaleDB" in lines[-1]

    # An older schema (migrations up to 006, before the read side), with rows in it.
    name = f"{fresh_db.pg_database}_upgrade"
    admin = connect(stack)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()
    old = fresh_db.replace(pg_database=name)
    try:
        previous = [
            p
            for p in postgres_migrations()
            if p.stem[:3] <= "006" or p.stem in ("R__feature_columns", "R__incident_status")
        ]
        migrate(old, previous)
        rows = known.build().scores.head(30)
        known.insert_rows(old, old.scores_table, rows)
        applied = migrate(old)
        assert {"007_segment_limits", "008_read_side", "R__query_layer"} <= set(applied)
        assert migrate(old) == []
        counts = query(old, "SELECT sum(windows) AS n FROM anomaly_counts_1m")
        assert int(counts["n"][0]) == 30
    finally:
        drop_database(stack, name)


def test_latest_anomalies_filter_and_order(loaded):
    settings, data = loaded
    flagged = data.scores[data.scores["is_anomaly"] == True]  # noqa: E712
    got = query(settings, "SELECT * FROM latest_anomalies(5)", role="reader")
    expected = flagged.sort_values(
        ["window_start", "severity", "device_id"], ascending=[False, False, True]
    ).head(5)
    assert list(got["device_id"]) == list(expected["device_id"])
    assert list(pd.to_datetime(got["window_start"], utc=True)) == list(expected["window_start"])

    got = query(settings, "SELECT * FROM latest_anomalies(1000, NULL, 'site-2', 55)", role="reader")
    expected = flagged[(flagged["site"] == "site-2") & (flagged["severity"] >= 55)]
    assert len(got) == len(expected) > 0
    assert set(got["device_id"]) == {"dev-c"} and (got["severity"] >= 55).all()
    got = query(settings, "SELECT * FROM latest_anomalies(1000, 'dev-c')", role="reader")
    assert len(got) == int((flagged["device_id"] == "dev-c").sum())


@pytest.mark.parametrize("hours", [1, 30])
def test_anomaly_counts_per_device(loaded, hours):
    """Up to a day exact windows; beyond, the hourly aggregate (same answer here: the range
    starts on an hour)."""
    settings, data = loaded
    end = known.END
    start = end - pd.Timedelta(hours=hours)
    got = query(
        settings, "SELECT * FROM anomaly_counts(%s, %s) ORDER BY device_id", (start, end), "reader"
    ).set_index("device_id")
    part = data.scores[(data.scores["window_start"] >= start) & (data.scores["window_start"] < end)]
    for device, rows in part.groupby("device_id"):
        assert got.loc[device, "windows"] == len(rows)
        assert got.loc[device, "scored"] == rows["anomaly_score"].notna().sum()
        assert got.loc[device, "anomalies"] == (rows["is_anomaly"] == True).sum()  # noqa: E712
        assert got.loc[device, "max_severity"] == pytest.approx(rows["severity"].max())
    assert sorted(got.index) == sorted(part["device_id"].unique())


def test_minute_and_hour_aggregates(loaded):
    settings, data = loaded
    got = query(settings, "SELECT * FROM anomaly_counts_1h ORDER BY device_id, bucket")
    frame = data.scores.assign(bucket=data.scores["window_start"].dt.floor("1h"))
    expected = frame.groupby(["device_id", "bucket"]).agg(
        windows=("device_id", "size"),
        scored=("anomaly_score", "count"),
        anomalies=("is_anomaly", lambda s: int((s == True).sum())),  # noqa: E712
        max_severity=("severity", "max"),
        p95=("severity", lambda s: float(np.percentile(s.dropna(), 95))),
    )
    assert len(got) == len(expected)
    assert list(got["windows"]) == list(expected["windows"])
    assert list(got["scored"]) == list(expected["scored"])
    assert list(got["anomalies"]) == list(expected["anomalies"])
    np.testing.assert_allclose(got["max_severity"], expected["max_severity"])
    np.testing.assert_allclose(got["severity_p95"], expected["p95"], rtol=1e-9)
    minutes = query(
        settings, "SELECT sum(windows) AS n, count(*) AS buckets FROM anomaly_counts_1m"
    )
    assert int(minutes["n"][0]) == len(data.scores)


def test_top_devices_by_alert_severity(loaded):
    settings, data = loaded
    got = query(
        settings, "SELECT * FROM top_devices(%s, %s, 2)", (known.START, known.END), "reader"
    )
    # dev-b's rule alerts (severity 99) put it first.
    assert got["device_id"][0] == "dev-b" and got["max_severity"][0] == 99.0
    assert len(got) == 2
    b = data.alerts[data.alerts["device_id"] == "dev-b"]
    assert got["alert_windows"][0] == b["window_start"].nunique()
    assert got["top_metric"][0] == b["metric"].mode().sort_values().iloc[0]


def test_device_metric_with_its_typical_band(loaded):
    settings, data = loaded
    metric = METRIC_NAMES[1]
    start, end = known.START, known.START + pd.Timedelta(minutes=5)
    got = query(
        settings,
        "SELECT * FROM device_metric('dev-b', %s, %s, %s)",
        (metric, start, end),
        "reader",
    )
    rows = data.scores[
        (data.scores["device_id"] == "dev-b")
        & (data.scores["window_start"] >= start)
        & (data.scores["window_start"] < end)
    ]
    assert len(got) == len(rows) == 30
    assert list(pd.to_datetime(got["time"], utc=True)) == list(rows["window_start"])
    np.testing.assert_allclose(got["value"], rows[f"{metric}_mean"])
    np.testing.assert_allclose(got["min"], rows[f"{metric}_min"])
    if f"{metric}_avg1h" in rows:
        np.testing.assert_allclose(got["typical"], rows[f"{metric}_avg1h"])
        np.testing.assert_allclose(
            got["band_high"], rows[f"{metric}_avg1h"] + 2 * rows[f"{metric}_sd1h"]
        )
    with pytest.raises(psycopg2.Error) as err:
        query(settings, "SELECT * FROM device_metric('dev-b', 'x; DROP TABLE devices', %s, %s)",
              (start, end), "reader")  # fmt: skip
    assert err.value.pgcode == "22023" and "unknown metric" in err.value.pgerror


def test_open_incidents(loaded):
    settings, _ = loaded
    got = query(settings, "SELECT device_id, status FROM open_incidents", role="reader")
    assert list(got["device_id"]) == ["dev-b"] and set(got["status"]) == {"open"}


def test_drift_check_compares_recent_scores_with_the_training_distribution(loaded):
    settings, data = loaded
    got = query(
        settings,
        "SELECT * FROM drift_check(INTERVAL '2 hours', %s)",
        (known.END,),
        "reader",
    ).set_index("model_version")
    scores = data.scores.dropna(subset=["anomaly_score"])
    for version in (known.MODEL, known.SHIFTED):
        mine = scores[scores["model_version"] == version]["anomaly_score"].to_numpy()
        assert got.loc[version, "windows"] == len(mine)
        expected = psi(mine, known.NORMAL_QUANTILES)
        assert got.loc[version, "psi"] == pytest.approx(expected, rel=1e-9)
        assert got.loc[version, "share_above_q90"] == pytest.approx(
            np.mean(mine >= known.NORMAL_QUANTILES["0.9"])
        )
    assert got.loc[known.MODEL, "psi"] < 0.1 and not got.loc[known.MODEL, "retrain_advised"]
    assert got.loc[known.MODEL, "verdict"].startswith("stable")
    assert got.loc[known.SHIFTED, "psi"] > 0.25 and got.loc[known.SHIFTED, "retrain_advised"]
    assert "retraining advised" in got.loc[known.SHIFTED, "verdict"]
    unknown = got.loc[known.UNREGISTERED]
    assert pd.isna(unknown["retrain_advised"]) and "not registered" in unknown["verdict"]
    # Too few windows: no verdict either way.
    few = query(
        settings, "SELECT * FROM drift_check(INTERVAL '5 minutes', %s)", (known.END,), "reader"
    ).set_index("model_version")
    assert few.loc[known.MODEL, "windows"] == 60
    assert pd.isna(few.loc[known.MODEL, "retrain_advised"])
    assert few.loc[known.MODEL, "verdict"].startswith("too few")


def test_pipeline_views(loaded):
    settings, data = loaded
    throughput = query(settings, "SELECT * FROM pipeline_throughput_1m ORDER BY bucket")
    assert len(throughput) == 120
    assert int(throughput["windows"].sum()) == len(data.scores)
    assert int(throughput["events"].sum()) == 10 * len(data.scores)
    assert throughput["devices"].iloc[0] == 3 and throughput["devices"].iloc[-1] == 4
    rejects = query(settings, "SELECT * FROM rejects_1m ORDER BY bucket, kind, reason")
    assert [tuple(r) for r in rejects[["kind", "reason", "events"]].itertuples(index=False)] == [
        ("dead letter", "not a JSON object", 1),
        ("dead letter", "not a JSON object", 1),
        ("dead letter", "ts_ms: not an integer", 1),
        ("late", "window already closed", 1),
    ]
    models = query(settings, "SELECT * FROM models_in_use ORDER BY model_version")
    assert list(models["model_version"]) == sorted([known.MODEL, known.SHIFTED, known.UNREGISTERED])


def test_prune_deletes_what_is_past_retention(loaded):
    """Rows older than 30 days of retention go, the others stay. With TimescaleDB its
    retention policy may drop the old chunks first: either way none is left."""
    from common.db import prune, timescaledb_version

    settings, data = loaded
    settings = settings.replace(retention_days=30)
    assert migrate(settings) == ["R__timescale_policies"]
    old = data.scores.head(20).assign(
        window_start=lambda f: f["window_start"] - (known.END - known.EXPIRED),
        window_end=lambda f: f["window_end"] - (known.END - known.EXPIRED),
    )
    known.insert_rows(settings, settings.scores_table, old)
    deleted = dict(prune(settings))
    if timescaledb_version(settings) is None:
        assert deleted[settings.scores_table] == 20
        assert deleted[settings.alerts_table] == 0
    count = f"SELECT count(*) AS n FROM {settings.scores_table}"  # noqa: S608
    assert query(settings, count)["n"][0] == len(data.scores)
    assert deleted[settings.dead_letters_table] == 0


def test_the_reader_reads_and_cannot_write(loaded):
    settings, _ = loaded
    assert len(query(settings, "SELECT * FROM latest_anomalies LIMIT 3", role="reader")) == 3
    for statement in (
        f"INSERT INTO {settings.devices_table} (device_id) VALUES ('intruder')",  # noqa: S608
        f"UPDATE {settings.scores_table} SET severity = 0",  # noqa: S608
        f"DELETE FROM {settings.alerts_table}",  # noqa: S608
        "CREATE TABLE intruder (n int)",
        "SELECT * FROM prune_expired()",
        "SET default_transaction_read_only = off; "  # noqa: S608
        f"INSERT INTO {settings.devices_table} (device_id) VALUES ('intruder')",
    ):
        with pytest.raises(psycopg2.Error) as err:
            query(settings, statement, role="reader")
        assert err.value.pgcode in ("25006", "42501"), (statement, err.value.pgerror)
    intruders = "SELECT count(*) AS n FROM devices WHERE device_id = 'intruder'"
    assert query(settings, intruders)["n"][0] == 0


def test_the_writer_writes_results_only(loaded):
    settings, _ = loaded
    conn = connect(settings, role="writer")
    with conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {settings.health_table} (device_id, window_end, health)"  # noqa: S608
            " VALUES ('dev-a', now(), 90) ON CONFLICT (device_id) DO UPDATE SET health = 80"
        )
        cur.execute(f"SELECT count(*) FROM {settings.devices_table}")  # noqa: S608
    conn.close()
    for statement in (
        f"DELETE FROM {settings.scores_table}",  # noqa: S608
        f"DROP TABLE {settings.alerts_table}",
        f"INSERT INTO {settings.devices_table} (device_id) VALUES ('x')",  # noqa: S608
        "CREATE TABLE intruder (n int)",
    ):
        with pytest.raises(psycopg2.Error) as err:
            query(settings, statement, role="writer")
        assert err.value.pgcode in ("42501",), (statement, err.value.pgerror)
