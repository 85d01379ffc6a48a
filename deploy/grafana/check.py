"""Run every Grafana panel, variable and annotation query against the database, as Grafana
would send it (macros and variables expanded, as the read-only role), and check the shape of
what comes back.

  python -m deploy.grafana.check                 the last 6 hours
  python -m deploy.grafana.check --hours 24

Variables take their first value (the site variable: "All"). Prints one line per query and a
summary; the exit code is 1 if any query fails or returns the wrong columns.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import decimal
import sys
from dataclasses import dataclass

from common.settings import Settings
from deploy.grafana import macros
from deploy.grafana.dashboards import DASHBOARDS, Dashboard, Panel

NUMBER = (int, float, decimal.Decimal)


@dataclass
class Result:
    dashboard: str
    name: str
    sql: str
    columns: list[str]
    rows: list[tuple]
    problem: str | None = None


def _run(cur, sql: str) -> tuple[list[str], list[tuple]]:
    cur.execute(sql)
    return [d.name for d in cur.description], cur.fetchall()


def shape_problem(panel: Panel, columns: list[str], rows: list[tuple]) -> str | None:
    """What is wrong with a panel's result for Grafana, or None."""
    if panel.columns and tuple(columns) != panel.columns:
        return f"columns {columns}, expected {list(panel.columns)}"
    if panel.format == "time_series":
        if not columns or columns[0] != "time":
            return "a time series query must return a `time` column first"
        times = [r[0] for r in rows]
        if any(t is None for t in times):
            return "NULL time"
        if times != sorted(times):
            return "rows are not in time order"
        for i, name in enumerate(columns[1:], start=1):
            values = [r[i] for r in rows if r[i] is not None]
            if name != "metric" and not all(isinstance(v, NUMBER) for v in values):
                return f"column {name!r} is not numeric"
    if panel.kind == "stat":
        if len(rows) != 1:
            return f"a stat query must return one row, got {len(rows)}"
        if not all(v is None or isinstance(v, NUMBER) for v in rows[0]):
            return "a stat query must return numbers"
    return None


def check_dashboard(
    cur, d: Dashboard, ctx: macros.QueryContext, choose: dict[str, str] | None = None
) -> list[Result]:
    """Run one dashboard's variables (each takes its first value unless ``choose`` names
    one), annotations and panels."""
    results, variables = [], dict(ctx.variables)
    for v in d.variables:
        sql = macros.render(v.sql, macros.QueryContext(ctx.time_from, ctx.time_to))
        columns, rows = _run(cur, sql)
        problem = None if rows and len(columns) == 1 else "no values" if not rows else "columns"
        results.append(Result(d.uid, f"variable {v.name}", sql, columns, rows, problem))
        if v.custom_all is not None:
            variables[v.name] = macros.Variable(["$__all"], v.multi, True, v.custom_all)
        elif rows:
            value = (choose or {}).get(v.name, str(rows[0][0]))
            variables[v.name] = macros.Variable(value, v.multi, v.include_all)
    ctx = dataclasses.replace(ctx, variables=variables)
    for a in d.annotations:
        sql = macros.render(a.sql, ctx)
        columns, rows = _run(cur, sql)
        need = {"time", "text"}
        problem = None if need <= set(columns) else f"annotation needs {sorted(need)}"
        results.append(Result(d.uid, f"annotation {a.name}", sql, columns, rows, problem))
    for panel in d.panels:
        sql = macros.render(panel.sql, ctx)
        try:
            columns, rows = _run(cur, sql)
        except Exception as exc:  # report the panel, keep checking the others
            cur.connection.rollback()
            results.append(Result(d.uid, panel.title, sql, [], [], f"failed: {exc}".strip()))
            continue
        results.append(
            Result(d.uid, panel.title, sql, columns, rows, shape_problem(panel, columns, rows))
        )
    return results


def check_all(
    settings: Settings,
    time_from: dt.datetime,
    time_to: dt.datetime,
    choose: dict[str, str] | None = None,
) -> list[Result]:
    from common.db import connect

    span = (time_to - time_from).total_seconds()
    # Grafana's $__interval: the range over the panel's width in points (about 1,000 here).
    ctx = macros.QueryContext(time_from, time_to, interval_s=max(10.0, span / 1000))
    conn = connect(settings, role="reader")
    try:
        with conn.cursor() as cur:
            return [r for d in DASHBOARDS for r in check_dashboard(cur, d, ctx, choose)]
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deploy.grafana.check", description=__doc__.splitlines()[0]
    )
    p.add_argument("--hours", type=float, default=6.0, help="the time range: the last N hours")
    a = p.parse_args(argv)
    settings = Settings.from_env()
    end = dt.datetime.now(dt.UTC)
    try:
        results = check_all(settings, end - dt.timedelta(hours=a.hours), end)
    except Exception as exc:
        print(f"grafana check: cannot query {settings.pg_database}: {exc}", file=sys.stderr)
        return 1
    for r in results:
        state = "FAIL" if r.problem else "ok"
        print(
            f"  {state:<4} {r.dashboard:<17} {r.name:<40} {len(r.rows):>6} rows  {r.problem or ''}"
        )
    bad = [r for r in results if r.problem]
    print(f"grafana check: {len(results)} queries, {len(bad)} with problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
