"""Prepare a cluster's services for the job: the one-shot step of docker-compose and Kubernetes.

    python -m deploy.init [--fleet 100] [--train-if-missing] [--wait-s 180]

In order, each step idempotent (a rerun changes nothing that is already right):
  1. wait until PostgreSQL and Kafka answer (at most --wait-s);
  2. create or update the writer and reader roles with their passwords (the owner connects;
     it must be allowed to create roles, as the database image's superuser is);
  3. apply the pending migrations;
  4. create the events topic;
  5. with --fleet N, write the simulated fleet's reference data (devices, links, limits);
  6. with --train-if-missing, train a first model into the models folder when it has none
     usable by this job (simulated history, as `make demo` does).
Settings come from the ANOMALY_* environment, passwords included.
"""

from __future__ import annotations

import argparse
import sys
import time

from common.settings import Settings


def log(message: str) -> None:
    print(f"[init] {message}", flush=True)


def wait_until(what: str, attempt, deadline: float) -> None:
    """Call ``attempt`` until it stops raising; give up at ``deadline`` with its last error."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            attempt()
            log(f"{what} answers")
            return
        except Exception as exc:  # any failure means "not yet"
            last = exc
            time.sleep(2)
    raise RuntimeError(f"{what} did not answer in time: {last}")


def init(settings: Settings, *, fleet: int, train_if_missing: bool, wait_s: float) -> None:
    from common.db import connect, ensure_roles, migrate
    from common.kafka_admin import ensure_topic

    deadline = time.monotonic() + wait_s
    where = f"PostgreSQL {settings.pg_host}:{settings.pg_port}/{settings.pg_database}"
    wait_until(where, lambda: connect(settings).close(), deadline)
    import psycopg2

    conn = connect(settings)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            ensure_roles(cur, settings)
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise RuntimeError(
            f"{settings.pg_user} may not create the roles {settings.pg_writer_user} and "
            f"{settings.pg_reader_user} ({str(exc).strip()}): connect as a role with "
            "CREATEROLE (the database image's superuser), or create them beforehand"
        ) from exc
    finally:
        conn.close()
    log(f"roles {settings.pg_writer_user} (the job) and {settings.pg_reader_user} (Grafana, API)")
    for version in migrate(settings):
        log(f"applied migration {version}")
    log("schema up to date")
    created: list[bool] = []
    wait_until(
        f"Kafka {settings.kafka_bootstrap}",
        lambda: created.append(
            ensure_topic(
                settings.kafka_bootstrap, settings.events_topic, settings.events_topic_partitions
            )
        ),
        deadline,
    )
    state = "created" if created and created[-1] else "exists"
    log(f"topic {settings.events_topic}: {state} ({settings.events_topic_partitions} partitions)")
    if fleet:
        from simulator.devices import write_fleet
        from simulator.generator import SimulatorConfig

        log(f"reference data: {write_fleet(settings, SimulatorConfig(devices=fleet))}")
    if train_if_missing:
        from deploy.local.stack import model_unusable, train_demo_model

        reason = model_unusable(settings)
        if reason:
            log(f"{reason} in {settings.models_dir}: training one")
            train_demo_model(settings)
        else:
            log(f"model ready in {settings.models_dir}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.init", description=__doc__.splitlines()[0])
    p.add_argument(
        "--fleet", type=int, default=0, help="write the reference data of N simulated devices"
    )
    p.add_argument(
        "--train-if-missing",
        action="store_true",
        help="train a first model when the models folder has none this job can use",
    )
    p.add_argument("--wait-s", type=float, default=180, help="how long to wait for the services")
    a = p.parse_args(argv)
    began = time.monotonic()
    try:
        init(
            Settings.from_env(),
            fleet=a.fleet,
            train_if_missing=a.train_if_missing,
            wait_s=a.wait_s,
        )
    except Exception as exc:  # one clear line, then a non-zero exit
        print(f"[init] failed: {exc}", file=sys.stderr)
        return 1
    log(f"done in {time.monotonic() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
