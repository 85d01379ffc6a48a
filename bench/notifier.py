"""What one notifier cycle costs as the horizon fills: a scratch database with N device
incidents within the horizon (a fleet of routers and their links, a third of the incidents in
cascades), then cycles timed: the first (everything new: correlate and record) and the steady
ones (nothing new: read, plan).

  python -m bench.notifier --incidents 100,1000,10000        (make bench-notifier; needs make up)

Sending is left out (no Alertmanager): what is timed is what the notifier adds to PostgreSQL
and the cycle it polls with (2 s).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np


def fill(db, n: int, seed: int = 0) -> None:
    from common.db import connect

    rng = np.random.default_rng(seed)
    devices = max(50, n // 2)
    routers = devices // 5
    links = {
        (f"d{r:06d}", f"d{int(x):06d}")
        for r in range(routers)
        for x in rng.choice(np.arange(routers, devices), 3, replace=False)
    }
    end = datetime(2026, 1, 1, tzinfo=UTC)
    span = 3000  # seconds of event time the incidents start in (within the 1 h horizon)
    rows = []
    for i in range(n):
        if i % 3 == 0 and routers:
            # A cascade: a router and its linked devices, 10 s apart.
            r = int(rng.integers(routers))
            start = end - timedelta(seconds=int(rng.integers(120, span)))
            rows.append((f"d{r:06d}", start, start + timedelta(seconds=60)))
            for a, b in links:
                if a == f"d{r:06d}":
                    s = start + timedelta(seconds=10)
                    rows.append((b, s, s + timedelta(seconds=50)))
        else:
            d = int(rng.integers(devices))
            start = end - timedelta(seconds=int(rng.integers(120, span)))
            rows.append((f"d{d:06d}", start, start + timedelta(seconds=30)))
    rows = list({(d, s): (d, s, e) for d, s, e in rows}.values())[:n]
    conn = connect(db)
    with conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {db.links_table} VALUES (%s, %s)", sorted(links))  # noqa: S608
        cur.executemany(
            f"INSERT INTO {db.incidents_table} (device_id, started_at, ended_at, windows,"  # noqa: S608
            " peak_severity, sources) VALUES (%s, %s, %s, 3, 80, 'model')",
            rows,
        )
        cur.execute(
            f"INSERT INTO {db.health_table} (device_id, window_end, health)"  # noqa: S608
            " VALUES ('clock', %s, 100)",
            (end,),
        )
    conn.close()


def timed_cycles(db, cycles: int = 5) -> tuple[float, float, int]:
    from alerting.notifier import plan, read_groups
    from common.db import connect

    conn = connect(db, role="writer")
    took = []
    try:
        for _ in range(cycles):
            began = time.perf_counter()
            with conn, conn.cursor() as cur:
                stream_time, groups, _ = read_groups(cur, db)
            plan(groups, stream_time, datetime.now(UTC), db)
            took.append(time.perf_counter() - began)
    finally:
        conn.close()
    return took[0], float(np.median(took[1:])), len(groups)


def main(argv: list[str] | None = None) -> int:
    from common.db import connect, migrate
    from common.settings import Settings
    from deploy.local.stack import Postgres

    parser = argparse.ArgumentParser(prog="python -m bench.notifier", description=__doc__)
    parser.add_argument("--incidents", default="100,1000,10000")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    print(f"{'incidents':>10} {'correlated':>10} {'first cycle':>12} {'steady cycle':>13}")
    for n in (int(x) for x in args.incidents.split(",")):
        name = f"bench_notifier_{uuid.uuid4().hex[:8]}"
        admin = connect(settings)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        admin.close()
        db = settings.replace(pg_database=name)
        try:
            migrate(db)
            fill(db, n)
            first, steady, groups = timed_cycles(db)
            print(f"{n:>10} {groups:>10} {1000 * first:>10.0f} ms {1000 * steady:>10.0f} ms")
        finally:
            Postgres(settings).drop_database(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
