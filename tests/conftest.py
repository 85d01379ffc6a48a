"""Session fixtures: the real local stack (started once), fresh topics and databases per test,
and a model trained by the real training pipeline."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from pathlib import Path

import pytest

from common.settings import Settings
from simulator.generator import SimulatorConfig, TelemetryGenerator
from simulator.sinks import FileSink

FIGURES: dict[str, object] = {}


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section("figures measured by this run")
        for key, value in FIGURES.items():
            terminalreporter.write_line(f"{key}: {value}")


# The e2e streams carry event times of 2023 (fixed, so that results repeat): a database's
# own retention (TimescaleDB's policies) must not drop them while a test runs.
TEST_RETENTION_DAYS = 3650


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    # Flink's Prometheus reporter on: the job-health dashboard's queries run on a real
    # Prometheus (tests/e2e/test_cluster.py).
    return Settings.from_env().replace(
        retention_days=TEST_RETENTION_DAYS,
        raw_events_retention_days=TEST_RETENTION_DAYS,
        flink_prometheus="on",
    )


@pytest.fixture(scope="session")
def stack(base_settings: Settings):
    """PostgreSQL, Kafka and Flink, running for the whole session.

    Services that were already running (e.g. `make demo`) are reused and left running;
    the ones this session starts are stopped at its end.
    """
    from deploy.local import stack as local

    services = {
        "notifier": local.Notifier(base_settings),
        "alertmanager": local.Alertmanager(base_settings),
        "inbox": local.Inbox(base_settings),
        "flink": local.Flink(base_settings),
        "kafka": local.Kafka(base_settings),
        "postgres": local.Postgres(base_settings),
    }
    was_running = {name: svc.running() for name, svc in services.items()}
    settings = local.up(base_settings)
    yield settings
    # The notifier first, then Flink: each talks to the ones after it.
    for name, svc in services.items():
        if not was_running[name]:
            svc.stop()


@pytest.fixture
def fresh_topic(stack: Settings) -> str:
    from common.kafka_admin import ensure_topic

    topic = f"test-{uuid.uuid4().hex[:10]}"
    ensure_topic(stack.kafka_bootstrap, topic, stack.events_topic_partitions)
    return topic


@contextlib.contextmanager
def new_database(stack: Settings):
    """Settings pointing at a new, migrated database, dropped on leaving."""
    from psycopg2 import sql

    from common.db import connect, migrate

    name = f"test_{uuid.uuid4().hex[:10]}"
    conn = connect(stack)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
    settings = stack.replace(pg_database=name)
    try:
        migrate(settings)
        yield settings
    finally:
        drop_database(stack, name)


@pytest.fixture
def fresh_db(stack: Settings):
    """Settings pointing at a new, migrated database; dropped afterwards."""
    with new_database(stack) as settings:
        yield settings


def drop_database(stack: Settings, name: str) -> None:
    from deploy.local.stack import Postgres

    Postgres(stack).drop_database(name)


def write_dump(path: Path, config: SimulatorConfig, start_ms: int, ticks: int) -> list[dict]:
    events = [e for tick in TelemetryGenerator(config).events(start_ms, ticks) for e in tick]
    sink = FileSink(path)
    sink.send_many(events)
    sink.close()
    return events


# Training history: 60 devices x 20 min of the default fleet the e2e tests stream too.
HISTORY_SEED = 7
FLEET_DEVICES = 60


@pytest.fixture(scope="session")
def trained(tmp_path_factory, base_settings: Settings):
    """A model trained by the real training pipeline (Flink batch features -> per-device
    normalisation -> the default model -> ONNX)."""
    from training.detectors import DetectorParams
    from training.train import train

    root = tmp_path_factory.mktemp("training")
    dump = root / "events.jsonl"
    write_dump(
        dump,
        SimulatorConfig(devices=FLEET_DEVICES, seed=HISTORY_SEED, anomaly_rate=0.0002),
        start_ms=1_700_000_000_000,
        ticks=1200,
    )
    settings = base_settings.replace(models_dir=root / "models")
    began = time.monotonic()
    result = train(settings, dump, DetectorParams(), log=lambda m: None)
    elapsed = time.monotonic() - began
    FIGURES[f"training (72k events, {DetectorParams().model}) wall time"] = f"{elapsed:.1f} s"
    card = json.loads((result.model_dir / "card.json").read_text())
    return result, settings, card


@pytest.fixture(scope="session")
def retrained(trained):
    """A second model version from the same history (other calibration): the upgrade."""
    from training.detectors import DetectorParams
    from training.train import train

    result, settings, _ = trained
    dump = result.model_dir.parent.parent / "events.jsonl"
    second = train(settings, dump, DetectorParams(contamination=0.004), log=lambda m: None)
    card = json.loads((second.model_dir / "card.json").read_text())
    assert second.version != result.version
    return second, settings, card


@pytest.fixture
def alerting(tmp_path, base_settings: Settings):
    """A real Alertmanager with the example route (deploy/alertmanager/alertmanager.yml) and
    quick timings, its pager and chat webhooks pointed at an inbox in this test; its own
    storage, so nothing carries over from another test."""
    import socket
    from types import SimpleNamespace

    from alerting.inbox import Inbox
    from deploy.local.alerting import Alertmanager, render_config

    inbox = Inbox().start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = base_settings.replace(alertmanager_url=f"http://127.0.0.1:{port}")
    config = render_config(
        {"pager": f"{inbox.url}/pager", "chat": f"{inbox.url}/chat"},
        group_wait="1s",
        group_interval="1s",
        repeat_interval="1h",
    )
    am = Alertmanager(settings, config, root=tmp_path / "alertmanager", maintenance="2s")
    am.start()
    yield SimpleNamespace(url=settings.alertmanager_url, inbox=inbox, am=am)
    am.stop()
    inbox.stop()
