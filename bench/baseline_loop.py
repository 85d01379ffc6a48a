"""The baseline the benchmark compares with: the pipeline people write by hand without Flink.

A kafka-python consumer loop that decodes each JSON event, scores it with a pickled
scikit-learn IsolationForest (fitted on the fleet's normal events, one event per call, as such
loops do) and inserts the scores into PostgreSQL (one batch per poll, committed). It knows no
windows, no event time, no late or bad events and no restarts; it is here for its speed.

  python -m bench.baseline_loop --topic TOPIC --events 50000      (on the local stack)
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
import uuid

import numpy as np

from common.features import METRICS
from common.settings import Settings

TABLE = "baseline_scores"  # a fixed name in the benchmark's scratch database
METRIC_NAMES = [m.name for m in METRICS]
FIT_EVENTS = 20_000


def fit_pickled_model(devices: int = 100) -> bytes:
    """An IsolationForest on simulated normal events of the fleet, pickled."""
    from sklearn.ensemble import IsolationForest

    from simulator.generator import SimulatorConfig, TelemetryGenerator

    generator = TelemetryGenerator(SimulatorConfig(devices=devices, anomaly_rate=0.0, seed=5))
    rows = []
    for tick in generator.events(1_700_000_000_000, FIT_EVENTS // devices):
        rows += [[float(e[m]) for m in METRIC_NAMES] for e in tick]
    model = IsolationForest(n_estimators=100, random_state=0).fit(np.asarray(rows))
    return pickle.dumps(model)


def run_baseline(settings: Settings, topic: str, events: int, time_limit_s: float = 300) -> dict:
    """Consume ``events`` events of ``topic`` from the start, score and insert each; returns
    the events/s from the first poll to the last commit."""
    import psycopg2.extras
    from kafka import KafkaConsumer

    from common.db import connect

    model = pickle.loads(fit_pickled_model())
    conn = connect(settings)
    with conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (device_id text, ts_ms bigint,"
            " score double precision, is_anomaly boolean)"
        )
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"baseline-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=500,
    )
    print(f"bench: baseline: consuming {events:,} events of {topic}", file=sys.stderr, flush=True)
    done, began, bad = 0, None, 0
    deadline = time.monotonic() + time_limit_s
    try:
        while done < events and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=1000)
            if began is None and batch:
                began = time.monotonic()
            rows = []
            for records in batch.values():
                for record in records:
                    try:
                        e = json.loads(record.value)
                        x = [[float(e[m]) for m in METRIC_NAMES]]
                    except (ValueError, KeyError, TypeError):
                        bad += 1
                        continue
                    score = float(model.score_samples(x)[0])
                    rows.append((e["device_id"], int(e["ts_ms"]), score, bool(score < -0.6)))
            if rows:
                with conn, conn.cursor() as cur:
                    psycopg2.extras.execute_values(
                        cur,
                        f"INSERT INTO {TABLE} VALUES %s",  # noqa: S608
                        rows,
                        page_size=1000,
                    )
                done += len(rows)
    finally:
        consumer.close()
    elapsed = time.monotonic() - (began or time.monotonic())
    with conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {TABLE}")  # noqa: S608
        (stored,) = cur.fetchone()
        cur.execute(f"DROP TABLE {TABLE}")
    conn.close()
    return {
        "events": done,
        "stored": stored,
        "bad": bad,
        "seconds": round(elapsed, 1),
        "events_per_s": round(done / elapsed) if elapsed else 0,
        "model": "IsolationForest(n_estimators=100), pickled, one event per call",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baseline_loop", description=__doc__)
    p.add_argument("--topic", required=True)
    p.add_argument("--events", type=int, default=50_000)
    a = p.parse_args(argv)
    print(json.dumps(run_baseline(Settings.from_env(), a.topic, a.events)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
