"""Training from the windows the job stored in PostgreSQL, for a time range (real database)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from psycopg2 import sql

from common.db import connect
from common.features import FEATURE_NAMES
from training.train import main as train_main

pytestmark = pytest.mark.stack

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def test_trains_on_the_stored_windows_of_the_range_only(fresh_db, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    rows = []
    for minute in range(0, 60 * 3):  # 3 h of windows for 3 devices, 1 per minute
        for d in range(3):
            values = rng.normal(50 + 10 * d, 2, size=len(FEATURE_NAMES))
            start = T0 + timedelta(minutes=minute)
            rows.append((f"dev-{d}", start, start + timedelta(seconds=10), *values.tolist()))
    columns = ["device_id", "window_start", "window_end", *FEATURE_NAMES]
    insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(fresh_db.scores_table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    conn = connect(fresh_db)
    with conn, conn.cursor() as cur:
        cur.executemany(insert, rows)
    conn.close()
    for key, value in {
        "ANOMALY_PG_DATABASE": fresh_db.pg_database,
        "ANOMALY_PG_PORT": str(fresh_db.pg_port),
        "ANOMALY_PG_HOST": fresh_db.pg_host,
        "ANOMALY_MODELS_DIR": str(tmp_path / "models"),
    }.items():
        monkeypatch.setenv(key, value)
    since, until = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    args = ["--postgres", "--since", since.isoformat(), "--until", until.isoformat()]
    assert train_main([*args, "--no-current"]) == 0
    (card_path,) = (tmp_path / "models").glob("*/card.json")
    card = json.loads(card_path.read_text())
    assert card["training"]["windows"] == 60 * 3  # the middle hour only: [since, until)
    assert card["training"]["first_window_start"].startswith("2026-11-20 01:00:00")
    assert card["training"]["last_window_start"].startswith("2026-11-20 01:59:00")
    assert "PostgreSQL" in card["training"]["source"]
    assert set(card["normalisation"]["devices"]) == {"dev-0", "dev-1", "dev-2"}


def test_an_empty_range_is_a_clear_error(fresh_db, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANOMALY_PG_DATABASE", fresh_db.pg_database)
    monkeypatch.setenv("ANOMALY_MODELS_DIR", str(tmp_path / "models"))
    assert train_main(["--postgres", "--since", "2030-01-01T00:00:00+00:00"]) == 1
    assert "holds no windows" in capsys.readouterr().err
