"""PostgreSQL access and schema migrations (sql/postgres/NNN_*.sql, applied in order once).

python -m common.db migrate    apply what is pending, then list every version and when
python -m common.db status     list the versions applied, and the pending ones
python -m common.db prune      delete rows past their retention (plain PostgreSQL; cron)
python -m common.db refresh    re-materialize the anomaly aggregates (TimescaleDB, after a
                               backfill older than their refresh policies reach)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import psycopg2

from common.features import CATALOGUE, HORIZONS
from common.settings import ENV_PREFIX, Settings
from common.sql import _PLACEHOLDER, context, postgres_migrations, render_text

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


def _applied(cur) -> dict[str, tuple[str, object, dict | None]]:
    """Every applied migration: version -> (checksum, applied at, what it was rendered from)."""
    cur.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(),"
        " checksum text)"
    )
    cur.execute(f"ALTER TABLE {MIGRATIONS_TABLE} ADD COLUMN IF NOT EXISTS checksum text")
    # What a repeatable migration was rendered from (its SQL, the settings it reads, the
    # catalogue and horizons), so that a re-application can say which change caused it.
    cur.execute(f"ALTER TABLE {MIGRATIONS_TABLE} ADD COLUMN IF NOT EXISTS rendered_from jsonb")
    cur.execute(
        f"SELECT version, checksum, applied_at, rendered_from FROM {MIGRATIONS_TABLE}"  # noqa: S608
    )
    return {version: (checksum, at, inputs) for version, checksum, at, inputs in cur.fetchall()}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _rendered(path: Path, text: str, values: dict[str, str]) -> tuple[str, str]:
    """A migration's statement (its file's ``text`` rendered) and its checksum."""
    statement = render_text(text, values, source=str(path))
    return statement, _digest(statement)


def _read_applied(settings: Settings) -> dict[str, tuple[str, object, dict | None]]:
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            return _applied(cur)
    finally:
        conn.close()


def applied_versions(settings: Settings) -> dict[str, tuple[str, object]]:
    """Every applied migration: version -> (checksum of its rendered text, applied at)."""
    return {v: (checksum, at) for v, (checksum, at, _) in _read_applied(settings).items()}


def _due(version: str, checksum: str, done: dict[str, tuple]) -> bool:
    """Whether a migration is due: never applied, or repeatable with another text now."""
    if version not in done:
        return True
    return version.startswith("R__") and done[version][0] != checksum


# Placeholders named as a setting render that setting (${window_seconds}); the others are
# generated from the metric catalogue and the context horizons (feature columns, the query
# layer's metric lists).
_SETTING_NAMES = frozenset(f.name for f in dataclasses.fields(Settings))


def _rendered_from(text: str, values: dict[str, str]) -> dict[str, object]:
    """What a migration's rendered text depends on, recorded when it is applied."""
    used = sorted(set(_PLACEHOLDER.findall(text)))
    return {
        "sql": _digest(text),
        "settings": {name: values[name] for name in used if name in _SETTING_NAMES},
        "generated": {name: _digest(values[name]) for name in used if name not in _SETTING_NAMES},
        "catalogue": CATALOGUE.name,
        "context_horizons": ",".join(h.name for h in HORIZONS) or "(none)",
    }


def _changes(path: Path, before: dict | None, now: dict[str, object]) -> list[str]:
    """What changed since a migration was last applied, as a user would change it: the
    ANOMALY_* settings with their old and new values, or its SQL."""
    if not before:
        return []
    out = []
    old_settings = before.get("settings", {})
    for name, value in now["settings"].items():  # type: ignore[union-attr]
        if name in old_settings and old_settings[name] != value:
            out.append(f"{ENV_PREFIX}{name.upper()} {old_settings[name]} -> {value}")
    if before.get("generated") != now["generated"]:
        named = [
            f"{ENV_PREFIX}{key.upper()} {before.get(key)} -> {now[key]}"
            for key in ("catalogue", "context_horizons")
            if before.get(key) != now[key]
        ]
        out += named or ["the columns and metrics the project generates for it"]
    if before.get("sql") != now["sql"]:
        out.append(f"its SQL ({path.name})")
    return out


@dataclasses.dataclass
class _Step:
    path: Path
    statement: str
    checksum: str
    rendered_from: dict[str, object]
    # Why it runs: "is new", "changed (...)", or "follows <the repeatable one that changed>".
    reason: str
    # The changes that make it due, as _changes() names them (empty if not known).
    changes: list[str]

    @property
    def version(self) -> str:
        return self.path.stem

    @property
    def repeatable(self) -> bool:
        return self.version.startswith("R__")


def _plan(settings: Settings, migrations: list[Path] | None, done: dict[str, tuple]) -> list[_Step]:
    """The migrations to apply now, in order: versioned ones not applied yet, then, from the
    first repeatable one that is new or changed, that one and every repeatable one after it
    (they build on each other: a view dropped with its dependents is re-created by the later
    ones)."""
    values = context(settings)
    steps: list[_Step] = []
    trigger: _Step | None = None
    for path in migrations if migrations is not None else postgres_migrations():
        text = path.read_text()
        statement, checksum = _rendered(path, text, values)
        inputs = _rendered_from(text, values)
        version = path.stem
        changes: list[str] = []
        if version not in done:
            reason = "is new"
        elif _due(version, checksum, done):
            changes = _changes(path, done[version][2], inputs)
            reason = f"changed: {', '.join(changes)}" if changes else "changed"
        elif version.startswith("R__") and trigger is not None:
            reason = f"follows {trigger.version}"
        else:
            continue
        step = _Step(path, statement, checksum, inputs, reason, changes)
        if step.repeatable and trigger is None:
            trigger = step
        steps.append(step)
    return steps


def pending(settings: Settings, migrations: list[Path] | None = None) -> list[str]:
    """The migrations ``migrate`` would apply now."""
    return [step.version for step in _plan(settings, migrations, _read_applied(settings))]


def _record(cur, step: _Step) -> None:
    cur.execute(
        f"INSERT INTO {MIGRATIONS_TABLE} (version, checksum, rendered_from)"  # noqa: S608
        " VALUES (%s, %s, %s) ON CONFLICT (version) DO UPDATE"
        " SET checksum = EXCLUDED.checksum, rendered_from = EXCLUDED.rendered_from,"
        " applied_at = now()",
        (step.version, step.checksum, json.dumps(step.rendered_from)),
    )


RETRY = "`python -m common.db migrate` (`make migrate`; `make up` runs it too)"

# Views and functions outside the system's and TimescaleDB's schemas, by name.
_OBJECTS = """
SELECT CASE c.relkind WHEN 'm' THEN 'materialized view ' ELSE 'view ' END || c.oid::regclass
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname <> 'information_schema'
  AND n.nspname !~ '^(pg_|_timescaledb|timescaledb_)'
UNION ALL
SELECT 'function ' || p.oid::regprocedure
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname <> 'information_schema' AND n.nspname !~ '^(pg_|_timescaledb|timescaledb_)'
"""


def _objects(cur) -> set[str]:
    cur.execute(_OBJECTS)
    return {row[0] for row in cur.fetchall()}


def _dropped_on_purpose(name: str, steps: list[_Step]) -> bool:
    """Whether a migration of ``steps`` drops the object itself (not as a dependent)."""
    kind, _, qualified = name.partition(" ")
    if kind == "materialized":
        kind, _, qualified = qualified.partition(" ")
        kind = "materialized view"
    bare = re.escape(qualified.split("(")[0].split(".")[-1])
    kind = kind.replace(" ", r"\s+")
    drop = re.compile(rf"DROP\s+{kind}\s+(IF\s+EXISTS\s+)?(\S+\.)?\"?{bare}\b", re.I)
    return any(drop.search(step.statement) for step in steps)


def _apply_repeatable(conn, steps: list[_Step]) -> None:
    """Apply the repeatable migrations in one transaction: all of them or none. A view or
    function they drop with its dependents (DROP ... CASCADE) must be re-created by them; one
    that is not (e.g. an analyst's view on incident_status) fails the migration, named."""
    trigger = steps[0]
    why = f"{trigger.version} {trigger.reason}"
    names = ", ".join(step.version for step in steps)
    # "ANOMALY_X old -> new" back to "ANOMALY_X=old".
    back = [c.split(" -> ")[0].replace(" ", "=", 1) for c in trigger.changes if " -> " in c]
    undo = f" (or set {', '.join(back)} again)" if back else ""
    with conn, conn.cursor() as cur:
        before = _objects(cur)
        lost_at: dict[str, str] = {}
        present = before
        for step in steps:
            try:
                cur.execute(step.statement)
            except psycopg2.Error as exc:
                cause = "\n  ".join(str(exc).strip().splitlines())
                raise MigrationError(
                    f"migration {step.version} failed: {cause}\n"
                    f"It runs in one transaction with the repeatable migrations {names} "
                    f"(due because {why}): none of them was applied, the database keeps its "
                    "schema as it was.\n"
                    f"To do: fix the cause above{undo}, then run {RETRY} again."
                ) from exc
            now = _objects(cur)
            for name in present - now:
                lost_at.setdefault(name, step.version)
            present = now
        lost = sorted(name for name in before - present if not _dropped_on_purpose(name, steps))
        if lost:
            listed = ", ".join(f"{name} (dropped by {lost_at[name]})" for name in lost)
            raise MigrationError(
                f"re-applying the repeatable migrations {names} (because {why}) would drop "
                f"{listed}: each depends on what they drop and re-create, and no migration "
                "re-creates it. Nothing was applied.\n"
                "To do: save its definition (psql: \\d+ for a view, \\sf for a function), "
                f"drop it, run {RETRY} again, then create it again{undo}."
            )
        for step in steps:
            _record(cur, step)


def migrate(settings: Settings, migrations: list[Path] | None = None) -> list[str]:
    """Apply pending migrations; returns the versions applied.

    ``NNN_*.sql`` run once, in order, each in its own transaction. ``R__*.sql`` (repeatable)
    run again whenever their rendered text changes (a setting they render, the metric
    catalogue, the context horizons): from the first one that changed, that one and every
    repeatable one after it, all in one transaction.
    """
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            done = _applied(cur)
        steps = _plan(settings, migrations, done)
        for step in (s for s in steps if not s.repeatable):
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(step.statement)
                    _record(cur, step)
            except psycopg2.Error as exc:
                cause = "\n  ".join(str(exc).strip().splitlines())
                raise MigrationError(
                    f"migration {step.version} failed, nothing of it applied (the ones "
                    f"before it were): {cause}\nTo do: fix the cause above, then run {RETRY} "
                    "again."
                ) from exc
        repeatable = [s for s in steps if s.repeatable]
        if repeatable:
            _apply_repeatable(conn, repeatable)
    finally:
        conn.close()
    return [step.version for step in steps]


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
    done = _read_applied(settings)
    waiting = {step.version: step.reason for step in _plan(settings, None, done)}
    lines = []
    for path in postgres_migrations():
        v = path.stem
        if v in done and v not in waiting:
            lines.append(f"  applied  {v}  ({done[v][1]:%Y-%m-%d %H:%M:%S %Z})")
        else:
            lines.append(f"  pending  {v}" + (f"  ({waiting[v]})" if v in done else ""))
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
