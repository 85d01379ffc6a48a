"""PostgreSQL access and schema migrations (sql/postgres/NNN_*.sql, applied in order once).

python -m common.db migrate    apply what is pending, then list every version and when
python -m common.db status     list the versions applied, and the pending ones
python -m common.db prune      delete rows past their retention (plain PostgreSQL; cron)
python -m common.db refresh    re-materialize the anomaly aggregates (TimescaleDB, after a
                               backfill older than their refresh policies reach)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import psycopg2

from common.settings import Settings
from common.sql import context, postgres_migrations, render_text

MIGRATIONS_TABLE = "schema_migrations"


def connect(settings: Settings, database: str | None = None, role: str = "owner"):
    """A connection as one of the database roles: owner (migrations, tests), writer (what
    the Flink job may do) or reader (Grafana, the HTTP API)."""
    user, password = settings.pg_role(role)
    if not password:
        raise RuntimeError(
            f"no PostgreSQL password for {user} ({role}): set ANOMALY_PG_"
            f"{'' if role == 'owner' else role.upper() + '_'}PASSWORD or start the local "
            "stack (`make up` writes them to .state/secrets.env)"
        )
    return psycopg2.connect(**settings.pg_dsn(database, role=role))


def ensure_roles(cur, settings: Settings) -> None:
    """Create or update the writer and reader login roles with their passwords (needs a
    role that may create roles; the local stack runs it as the server's superuser). The
    reader's sessions are read-only by default and time out after 30 s per statement."""
    from psycopg2 import sql

    for role in ("writer", "reader"):
        user, password = settings.pg_role(role)
        if not password:
            raise RuntimeError(f"no password for the {role} role {user}")
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        cur.execute(
            sql.SQL("{} ROLE {} LOGIN PASSWORD %s").format(sql.SQL(verb), sql.Identifier(user)),
            (password,),
        )
    reader = sql.Identifier(settings.pg_reader_user)
    cur.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(reader))
    cur.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '30s'").format(reader))


def _applied(cur) -> dict[str, tuple[str, object]]:
    cur.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(),"
        " checksum text)"
    )
    cur.execute(f"ALTER TABLE {MIGRATIONS_TABLE} ADD COLUMN IF NOT EXISTS checksum text")
    cur.execute(f"SELECT version, checksum, applied_at FROM {MIGRATIONS_TABLE}")  # noqa: S608
    return {version: (checksum, at) for version, checksum, at in cur.fetchall()}


def _rendered(path: Path, values: dict[str, str]) -> tuple[str, str]:
    statement = render_text(path.read_text(), values, source=str(path))
    return statement, hashlib.sha256(statement.encode()).hexdigest()[:16]


def applied_versions(settings: Settings) -> dict[str, tuple[str, object]]:
    """Every applied migration: version -> (checksum of its rendered text, applied at)."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            return _applied(cur)
    finally:
        conn.close()


def _due(version: str, checksum: str, done: dict[str, tuple[str, object]]) -> bool:
    """Whether a migration is to run: never applied, or repeatable with another text now."""
    if version not in done:
        return True
    return version.startswith("R__") and done[version][0] != checksum


def pending(
    settings: Settings,
    migrations: list[Path] | None = None,
    done: dict[str, tuple[str, object]] | None = None,
) -> list[str]:
    """The migrations ``migrate`` would apply now (``done``: the applied versions, if read)."""
    values = context(settings)
    done = applied_versions(settings) if done is None else done
    return [
        path.stem
        for path in (migrations if migrations is not None else postgres_migrations())
        if _due(path.stem, _rendered(path, values)[1], done)
    ]


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
            done = _applied(cur)
        for path in migrations if migrations is not None else postgres_migrations():
            version = path.stem
            statement, checksum = _rendered(path, values)
            if not _due(version, checksum, done):
                continue
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(statement)
                    cur.execute(
                        f"INSERT INTO {MIGRATIONS_TABLE} (version, checksum) VALUES (%s, %s)"  # noqa: S608
                        " ON CONFLICT (version) DO UPDATE"
                        " SET checksum = EXCLUDED.checksum, applied_at = now()",
                        (version, checksum),
                    )
            except psycopg2.Error as exc:
                raise MigrationError(
                    f"migration {version} failed, nothing of it applied: "
                    f"{str(exc).strip()} (fix it and run `python -m common.db migrate` again)"
                ) from exc
            applied_now.append(version)
    finally:
        conn.close()
    return applied_now


class MigrationError(RuntimeError):
    pass


def timescaledb_version(settings: Settings) -> str | None:
    """The TimescaleDB extension's version in the database, None on plain PostgreSQL."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
            row = cur.fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def status_lines(settings: Settings) -> list[str]:
    done = applied_versions(settings)
    waiting = set(pending(settings, done=done))
    lines = []
    for path in postgres_migrations():
        v = path.stem
        if v in done and v not in waiting:
            lines.append(f"  applied  {v}  ({done[v][1]:%Y-%m-%d %H:%M:%S %Z})")
        else:
            lines.append(f"  pending  {v}" + ("  (changed since applied)" if v in done else ""))
    ts = timescaledb_version(settings)
    lines.append(f"  TimescaleDB {ts}" if ts else "  plain PostgreSQL (no TimescaleDB extension)")
    return lines


AGGREGATES = ("anomaly_counts_1m", "anomaly_counts_1h")


def refresh_aggregates(settings: Settings) -> list[str]:
    """Materialize the continuous aggregates over all their history (TimescaleDB; plain
    PostgreSQL's views are always current). Their policies refresh only the recent past
    (a day, a week), so rows written for older times (a backfill, a replay) reach them only
    this way. Returns the aggregates refreshed."""
    if timescaledb_version(settings) is None:
        return []
    conn = connect(settings)
    conn.autocommit = True  # refresh_continuous_aggregate cannot run in a transaction
    try:
        with conn.cursor() as cur:
            for name in AGGREGATES:
                _refresh(cur, name)
    finally:
        conn.close()
    return list(AGGREGATES)


def _refresh(cur, name: str, timeout_s: float = 60.0) -> None:
    """Refresh one aggregate, waiting for its policy's refresh if one is under way (they
    refuse to overlap: LockNotAvailable)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cur.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (name,))
            return
        except psycopg2.errors.LockNotAvailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def prune(settings: Settings) -> list[tuple[str, int]]:
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT table_name, rows_deleted FROM prune_expired()")
            return [(t, int(n)) for t, n in cur.fetchall()]
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.db", description=__doc__.splitlines()[0])
    p.add_argument("command", choices=("migrate", "status", "prune", "refresh"))
    a = p.parse_args(argv)
    settings = Settings.from_env()
    where = f"{settings.pg_database} on {settings.pg_host}:{settings.pg_port}"
    try:
        if a.command == "migrate":
            applied = migrate(settings)
            for version in applied:
                print(f"applied {version}")
            print(f"database {where}:")
            print("\n".join(status_lines(settings)))
            print(f"migrate: {len(applied)} applied, schema up to date")
        elif a.command == "status":
            print(f"database {where}:")
            print("\n".join(status_lines(settings)))
        elif a.command == "refresh":
            done = refresh_aggregates(settings)
            print(f"refresh: {', '.join(done) or 'nothing to refresh (plain PostgreSQL)'}")
        else:
            results = prune(settings)
            for table, rows in results:
                print(f"  {table}: {rows} rows deleted")
            print(f"prune: {sum(n for _, n in results)} rows past their retention deleted")
    except (psycopg2.Error, RuntimeError) as exc:
        print(f"common.db {a.command}: {str(exc).strip()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
