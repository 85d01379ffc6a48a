"""Where model versions live: models/<version>/{model.onnx,card.json}, a CURRENT pointer and
a HISTORY of what was current, so that a rollback is one command:

  python -m common.models list              versions, newest first, * marks CURRENT
  python -m common.models use VERSION       make VERSION current
  python -m common.models rollback          make the previously current version current again
  python -m common.models register [V ...]  record versions (default: all) in PostgreSQL

`use`, `rollback` and training also record the version in the database's model_versions
table, whose training score quantiles the drift check compares recent scores with.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from common.settings import Settings


def current_version(settings: Settings) -> str | None:
    try:
        return settings.current_model_pointer.read_text().strip() or None
    except FileNotFoundError:
        return None


def resolve_model_dir(settings: Settings, model_dir: Path | None = None) -> Path:
    """The model folder to score with: the one given, else the CURRENT version."""
    if model_dir is None:
        version = current_version(settings)
        if version is None:
            raise FileNotFoundError(
                f"no current model ({settings.current_model_pointer} is missing): "
                "train one with `make train`"
            )
        model_dir = settings.models_dir / version
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "model.onnx").is_file():
        raise FileNotFoundError(f"{model_dir} holds no model.onnx: train one with `make train`")
    return model_dir


def set_current(settings: Settings, version: str) -> None:
    """Point CURRENT at ``version`` atomically (rename), so readers never see half a write."""
    if not (settings.models_dir / version / "model.onnx").is_file():
        raise FileNotFoundError(
            f"model version {version!r} not found in {settings.models_dir} "
            "(`python -m common.models list` shows the versions)"
        )
    previous = current_version(settings)
    tmp = settings.current_model_pointer.with_suffix(".tmp")
    tmp.write_text(version + "\n")
    os.replace(tmp, settings.current_model_pointer)
    if previous != version:
        with (settings.models_dir / "HISTORY").open("a") as history:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            history.write(f"{stamp} {version}\n")


def history(settings: Settings) -> list[str]:
    """Versions that were made current, oldest first."""
    try:
        lines = (settings.models_dir / "HISTORY").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [line.split()[1] for line in lines if len(line.split()) == 2]


def rollback(settings: Settings) -> str:
    """Make the version that was current before the present one current again."""
    current = current_version(settings)
    earlier = [v for v in history(settings) if v != current]
    if current is None or not earlier:
        raise FileNotFoundError("no earlier model version to roll back to")
    target = earlier[-1]
    set_current(settings, target)
    return target


def versions(settings: Settings) -> list[dict]:
    """Every version with its card's headline facts, newest first."""
    found = []
    for card_path in settings.models_dir.glob("*/card.json"):
        try:
            card = json.loads(card_path.read_text())
        except (OSError, json.JSONDecodeError):
            card = {}
        found.append(
            {
                "version": card_path.parent.name,
                "created_at": card.get("created_at", ""),
                "model": card.get("model", "?"),
                "windows": card.get("training", {}).get("windows"),
            }
        )
    return sorted(found, key=lambda v: v["created_at"], reverse=True)


# Card entries too large or too private for the database copy: per-device statistics and
# the self-check windows.
_UNREGISTERED = ("normalisation", "self_check")


def register(settings: Settings, versions: list[str], *, current: str | None = None) -> int:
    """Upsert the cards of ``versions`` into the models table; ``current`` (one of them) is
    stamped as current now. Returns how many were written."""
    from psycopg2 import sql
    from psycopg2.extras import Json

    from common.db import connect

    rows = []
    for version in versions:
        card_path = settings.models_dir / version / "card.json"
        try:
            card = json.loads(card_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise FileNotFoundError(f"model version {version!r}: no readable card ({exc})") from exc
        rows.append(
            (
                version,
                card["model"],
                card["created_at"],
                card["window_seconds"],
                card["feature_names"],
                card["calibration"]["threshold"],
                card.get("training", {}).get("windows"),
                Json(card["training"]["score_quantiles"]),
                Json({k: v for k, v in card.items() if k not in _UNREGISTERED}),
                version == current,
            )
        )
    statement = sql.SQL(
        "INSERT INTO {table} (version, model, created_at, window_seconds, features, threshold,"
        " training_windows, score_quantiles, card, current_since)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, CASE WHEN %s THEN now() END)"
        " ON CONFLICT (version) DO UPDATE SET card = EXCLUDED.card,"
        " score_quantiles = EXCLUDED.score_quantiles, registered_at = now(),"
        " current_since = COALESCE(EXCLUDED.current_since, {table}.current_since)"
    ).format(table=sql.Identifier(settings.models_table))
    # As the writer (allowed on this table, sql/postgres/R__grants.sql): whoever rolls out a
    # model (the API's retraining, a pod's rollback) records it without the owner's password.
    conn = connect(settings, role="writer")
    try:
        with conn, conn.cursor() as cur:
            cur.executemany(statement, rows)
    finally:
        conn.close()
    return len(rows)


def register_quietly(settings: Settings, version: str, *, current: bool) -> None:
    """Record a version in the database if it can be reached; warn on stderr when it cannot
    (the model works all the same; the drift check then names it unregistered)."""
    try:
        register(settings, [version], current=version if current else None)
    except Exception as exc:  # no database, no password, old schema: not fatal here
        print(
            f"models: {version} not recorded in PostgreSQL ({str(exc).strip()}); run "
            "`python -m common.models register` once the database is up",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.models", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="versions, newest first; * marks CURRENT")
    use = sub.add_parser("use", help="make VERSION current")
    use.add_argument("version")
    sub.add_parser("rollback", help="make the previously current version current again")
    reg = sub.add_parser("register", help="record versions in PostgreSQL (default: all)")
    reg.add_argument("version", nargs="*")
    a = p.parse_args(argv)
    settings = Settings.from_env()
    try:
        if a.command == "list":
            current = current_version(settings)
            for v in versions(settings):
                mark = "*" if v["version"] == current else " "
                print(
                    f"{mark} {v['version']}  {v['created_at']}  {v['model']}  "
                    f"{v['windows'] or '?'} training windows"
                )
        elif a.command == "use":
            set_current(settings, a.version)
            print(f"CURRENT is now {a.version}")
            register_quietly(settings, a.version, current=True)
        elif a.command == "rollback":
            version = rollback(settings)
            print(f"rolled back: CURRENT is now {version}")
            register_quietly(settings, version, current=True)
        else:
            chosen = a.version or [v["version"] for v in versions(settings)]
            written = register(settings, chosen)
            print(f"registered {written} model version(s) in {settings.models_table}")
    except FileNotFoundError as exc:
        print(f"models: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
