"""Reference data of the simulated fleet (site, region, kind, criticality, owner), written to
the devices table that the streaming job joins to every window.

  python -m simulator.devices --devices 200              # upsert the fleet's rows
  python -m simulator.devices --devices 200 --print      # show them instead

Deterministic for a fleet seed, like the fleet itself: the same device always gets the same
site and region.
"""

from __future__ import annotations

import argparse
import sys

from simulator.generator import SimulatorConfig, TelemetryGenerator

REGIONS = ("eu-west", "eu-central", "us-east", "ap-south")
SITES_PER_REGION = 5
# Criticality and owning team by device kind; kinds a catalogue adds get the defaults.
CRITICALITY = {"router": "critical", "switch": "high", "server": "medium"}
OWNER = {"router": "netops", "switch": "netops", "server": "platform"}


def fleet_reference(config: SimulatorConfig) -> list[dict]:
    """One reference row per device of the simulated fleet."""
    gen = TelemetryGenerator(config)
    rows = []
    for d, device in enumerate(gen.device_ids):
        kind = gen.catalogue.kinds[int(gen.kind[d])].name
        region = REGIONS[d % len(REGIONS)]
        rows.append(
            {
                "device_id": device,
                "site": f"{region}-{(d // len(REGIONS)) % SITES_PER_REGION + 1:02d}",
                "region": region,
                "kind": kind,
                "criticality": CRITICALITY.get(kind, "low"),
                "owner": OWNER.get(kind, "operations"),
            }
        )
    return rows


def upsert_devices(settings, rows: list[dict]) -> int:
    """Insert or update the rows in the devices table; returns how many were written."""
    from psycopg2 import sql
    from psycopg2.extras import execute_values

    from common.db import connect

    columns = ("device_id", "site", "region", "kind", "criticality", "owner")
    statement = sql.SQL(
        "INSERT INTO {} ({}) VALUES %s ON CONFLICT (device_id) DO UPDATE SET {}, updated_at = now()"
    ).format(
        sql.Identifier(settings.devices_table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns[1:]
        ),
    )
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            execute_values(cur, statement, [tuple(r[c] for c in columns) for r in rows])
    finally:
        conn.close()
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    from common.settings import Settings

    p = argparse.ArgumentParser(
        prog="python -m simulator.devices", description=__doc__.splitlines()[0]
    )
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--catalogue", default=None, help="metric catalogue (default: settings)")
    p.add_argument("--fleet-seed", type=int, default=0)
    p.add_argument("--print", action="store_true", help="print the rows instead of writing")
    a = p.parse_args(argv)
    settings = Settings.from_env()
    config = SimulatorConfig(
        catalogue=a.catalogue or settings.catalogue, devices=a.devices, fleet_seed=a.fleet_seed
    )
    rows = fleet_reference(config)
    if a.print:
        for r in rows:
            print("\t".join(str(v) for v in r.values()))
        return 0
    try:
        written = upsert_devices(settings, rows)
    except Exception as exc:  # connection or schema problems: say what to do
        print(f"simulator.devices: cannot write to PostgreSQL: {exc} (is `make up` running?)",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"simulator.devices: {written} device rows in table {settings.devices_table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
