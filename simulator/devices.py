"""Reference data of the simulated fleet (site, region, kind, criticality, owner, per-metric
limits) and its links, written to the devices and device_links tables that the streaming job
and the link_health view read.

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


# A device's own limits: its baseline plus or minus this many of its standard deviations
# (within the metric's physical range), for the catalogue's `reference` rules.
LIMIT_SPREADS = 15.0


def fleet_inventory(config: SimulatorConfig) -> tuple[list[dict], list[tuple[str, str]]]:
    """The simulated fleet's reference rows (one per device, with per-metric limits) and its
    links (a device of a kind with `links` to each of its neighbours)."""
    gen = TelemetryGenerator(config)
    rows = []
    for d, device in enumerate(gen.device_ids):
        kind = gen.catalogue.kinds[int(gen.kind[d])].name
        region = REGIONS[d % len(REGIONS)]
        row = {
            "device_id": device,
            "site": f"{region}-{(d // len(REGIONS)) % SITES_PER_REGION + 1:02d}",
            "region": region,
            "kind": kind,
            "criticality": CRITICALITY.get(kind, "low"),
            "owner": OWNER.get(kind, "operations"),
        }
        for j, metric in enumerate(gen.metrics):
            base, sd = float(gen.baseline[j, d]), float(gen.stddev[j, d])
            low, high = base - LIMIT_SPREADS * sd, base + LIMIT_SPREADS * sd
            if metric.min is not None:
                low = max(low, metric.min)
            if metric.max is not None:
                high = min(high, metric.max)
            row[f"{metric.name}_low"] = round(low, 6)
            row[f"{metric.name}_high"] = round(high, 6)
        rows.append(row)
    links = sorted(
        (gen.device_ids[d], gen.device_ids[int(n)])
        for d, neighbours in gen.neighbours.items()
        for n in neighbours
    )
    return rows, links


def segment_limits(rows: list[dict], segment_seconds: int) -> list[dict]:
    """Each device's limits for every time-of-day segment (for `segment_reference` rules).
    The simulator has no daily cycle, so a device's limits are the same in every segment;
    an inventory with daily profiles writes one row per segment of its own."""
    limits = [c for c in (rows[0] if rows else {}) if c.endswith(("_low", "_high"))]
    return [
        {"device_id": r["device_id"], "segment": segment, **{c: r[c] for c in limits}}
        for r in rows
        for segment in range(86_400 // segment_seconds)
    ]


def _upsert(cur, table: str, rows: list[dict], key: tuple[str, ...]) -> None:
    from psycopg2 import sql
    from psycopg2.extras import execute_values

    columns = tuple(rows[0])
    statement = sql.SQL(
        "INSERT INTO {} ({}) VALUES %s ON CONFLICT ({}) DO UPDATE SET {}, updated_at = now()"
    ).format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(map(sql.Identifier, key)),
        sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in columns if c not in key
        ),
    )
    execute_values(cur, statement, [tuple(r[c] for c in columns) for r in rows], page_size=5000)


def upsert_devices(
    settings,
    rows: list[dict],
    links: list[tuple[str, str]] = (),
    segments: list[dict] = (),
) -> int:
    """Insert or update the rows in the devices table (and the links, and the limits per
    time-of-day segment); returns how many device rows were written."""
    from psycopg2 import sql
    from psycopg2.extras import execute_values

    from common.db import connect

    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            if rows:
                _upsert(cur, settings.devices_table, rows, ("device_id",))
            if segments:
                key = ("device_id", "segment")
                _upsert(cur, settings.segment_limits_table, list(segments), key)
            if links:
                insert_links = sql.SQL(
                    "INSERT INTO {} (device_a, device_b) VALUES %s ON CONFLICT DO NOTHING"
                ).format(sql.Identifier(settings.links_table))
                execute_values(cur, insert_links, list(links))
    finally:
        conn.close()
    return len(rows)


def write_fleet(settings, config: SimulatorConfig) -> str:
    """Write the simulated fleet's reference rows, links and segment limits; returns a
    one-line summary."""
    rows, links = fleet_inventory(config)
    segments = segment_limits(rows, settings.reference_segment_seconds)
    written = upsert_devices(settings, rows, links, segments)
    return (
        f"{written} device rows in table {settings.devices_table}, {len(links)} links, "
        f"{len(segments)} segment limits in {settings.segment_limits_table}"
    )


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
    if a.print:
        for r in fleet_inventory(config)[0]:
            print("\t".join(str(v) for v in r.values()))
        return 0
    try:
        summary = write_fleet(settings, config)
    except Exception as exc:  # connection or schema problems: say what to do
        print(f"simulator.devices: cannot write to PostgreSQL: {exc} (is `make up` running?)",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"simulator.devices: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
