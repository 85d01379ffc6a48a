"""PostgreSQL access and schema migrations (sql/postgres/NNN_*.sql, applied in order once)."""

from __future__ import annotations

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
    """Apply pending migrations, each in its own transaction; returns the versions applied."""
    values = context(settings)
    applied_now: list[str] = []
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur.execute(f"SELECT version FROM {MIGRATIONS_TABLE}")  # noqa: S608
            done = {row[0] for row in cur.fetchall()}
        for path in migrations if migrations is not None else postgres_migrations():
            version = path.stem
            if version in done:
                continue
            statement = render_text(path.read_text(), values, source=str(path))
            with conn, conn.cursor() as cur:
                cur.execute(statement)
                cur.execute(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version) VALUES (%s)",  # noqa: S608
                    (version,),
                )
            applied_now.append(version)
    finally:
        conn.close()
    return applied_now
