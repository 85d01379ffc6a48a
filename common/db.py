"""PostgreSQL access and schema migrations (sql/postgres/NNN_*.sql, applied in order once)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg2

from common.settings import Settings
from common.sql import context, postgres_migrations, render_text

MIGRATIONS_TABLE = "schema_migrations"


def connect(settings: Settings, database: str | None = None):
    if not settings.pg_password:
        raise RuntimeError(
            "no PostgreSQL password: set ANOMALY_PG_PASSWORD or start the local stack "
            "(`make up` writes one to .state/secrets.env)"
        )
    return psycopg2.connect(**settings.pg_dsn(database))


def migrate(settings: Settings, migrations: list[Path] | None = None) -> list[str]:
    """Apply pending migrations, each in its own transaction; returns the versions applied.

    ``NNN_*.sql`` run once, in order. ``R__*.sql`` (repeatable) run again whenever their
    rendered text changes, e.g. when the metric catalogue gains metrics.
    """
    values = context(settings)
    applied_now: list[str] = []
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(),"
                " checksum text)"
            )
            cur.execute(f"ALTER TABLE {MIGRATIONS_TABLE} ADD COLUMN IF NOT EXISTS checksum text")
            cur.execute(f"SELECT version, checksum FROM {MIGRATIONS_TABLE}")  # noqa: S608
            done = dict(cur.fetchall())
        for path in migrations if migrations is not None else postgres_migrations():
            version = path.stem
            statement = render_text(path.read_text(), values, source=str(path))
            checksum = hashlib.sha256(statement.encode()).hexdigest()[:16]
            repeatable = version.startswith("R__")
            if version in done and (not repeatable or done[version] == checksum):
                continue
            with conn, conn.cursor() as cur:
                cur.execute(statement)
                cur.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, checksum) VALUES (%s, %s)"  # noqa: S608
                    " ON CONFLICT (version) DO UPDATE"
                    " SET checksum = EXCLUDED.checksum, applied_at = now()",
                    (version, checksum),
                )
            applied_now.append(version)
    finally:
        conn.close()
    return applied_now
