"""What Grafana's PostgreSQL data source does to a panel's SQL before it reaches the database,
so that every panel can be run and checked without Grafana (deploy/grafana/check.py, tests).

Two passes, in Grafana's order:
1. template variables (the browser, templateSrv.replace): ``$var``, ``${var}``,
   ``${var:sqlstring}``, ``${var:csv}``, ``${var:raw}``, ``[[var]]``. A single-valued
   variable without multi-select or "All" is inserted as its text with ``'`` doubled; a
   multi-valued one as a quoted list ``'a','b'``; ``:sqlstring`` always quotes. A custom
   "All" value is inserted verbatim, as Grafana does.
2. the server (pkg/tsdb/grafana-postgresql-datasource/macros.go and sqleng): ``$__interval_ms``
   and ``$__interval``, then the macros ``$__time``, ``$__timeEpoch``, ``$__timeFilter``,
   ``$__timeFrom``, ``$__timeTo``, ``$__timeGroup``, ``$__timeGroupAlias``,
   ``$__unixEpochFilter``, ``$__unixEpochGroup``(``Alias``). Times render as RFC 3339 in UTC;
   ``$__timeFilter`` is ``BETWEEN`` both ends; ``$__timeGroup`` floors epoch seconds (with
   ``jsonData.timescaledb`` on, ``time_bucket``). An unknown macro is an error, as in Grafana.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


class MacroError(ValueError):
    pass


@dataclass(frozen=True)
class Variable:
    value: str | list[str]
    multi: bool = False
    include_all: bool = False
    # A custom "All" value, inserted verbatim when selected.
    custom_all: str | None = None


@dataclass(frozen=True)
class QueryContext:
    time_from: datetime
    time_to: datetime
    interval_s: float = 60.0
    variables: dict[str, Variable] = field(default_factory=dict)
    timescaledb: bool = False


def rfc3339(t: datetime) -> str:
    """Go's time.RFC3339Nano in UTC: no trailing zeros of the fraction, 'Z' for UTC."""
    t = t.astimezone(UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += ("." + f"{t.microsecond:06d}").rstrip("0")
    return text + "Z"


def parse_interval(text: str) -> float:
    """Seconds of an interval such as '5m', "'1h'", '1m30s' (gtime.ParseInterval)."""
    text = text.strip().strip("'")
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise MacroError(f"invalid interval {text!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def format_interval(seconds: float) -> str:
    """gtime.FormatInterval: the largest whole unit, truncated (90 s -> '1m')."""
    ms = int(seconds * 1000)
    for unit, size in (("y", 31_536_000_000), ("d", 86_400_000), ("h", 3_600_000)):
        if ms >= size:
            return f"{ms // size}{unit}"
    if ms >= 60_000:
        return f"{ms // 60_000}m"
    if ms >= 1000:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def _number(seconds: float) -> str:
    """Go's %v of a float64: 300 -> '300', 0.5 -> '0.5'."""
    return f"{seconds:g}" if seconds != int(seconds) else str(int(seconds))


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _variable_text(var: Variable, fmt: str | None) -> str:
    values = var.value if isinstance(var.value, list) else [var.value]
    if var.custom_all is not None and values == ["$__all"]:
        return var.custom_all
    if fmt == "csv":
        return ",".join(values)
    if fmt == "raw":
        return ",".join(values)
    if fmt == "sqlstring" or isinstance(var.value, list) or var.multi or var.include_all:
        return ",".join(_quote(v) for v in values)
    return values[0].replace("'", "''")


def interpolate_variables(sql: str, variables: dict[str, Variable]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3) or match.group(4)
        if name.startswith("__"):  # global variables and macros: the server's pass
            return match.group(0)
        if name not in variables:
            raise MacroError(f"template variable ${name} has no value")
        return _variable_text(variables[name], match.group(2))

    return _VARIABLE.sub(replace, sql)


def _group(column: str, interval: str, ctx: QueryContext) -> str:
    seconds = parse_interval(interval)
    if ctx.timescaledb:
        return f"time_bucket('{seconds:.3f}s',{column})"
    n = _number(seconds)
    return f"floor(extract(epoch from {column})/{n})*{n}"


def expand_macros(sql: str, ctx: QueryContext) -> str:
    sql = sql.replace("$__interval_ms", str(int(ctx.interval_s * 1000)))
    sql = sql.replace("$__interval", format_interval(ctx.interval_s))
    sql = sql.replace("$__unixEpochFrom()", str(int(ctx.time_from.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(ctx.time_to.timestamp())))

    def replace(match: re.Match[str]) -> str:
        name, raw_args = match.group(1), match.group(2)
        args = [a.strip() for a in raw_args.split(",")] if raw_args.strip() else []

        def need(n: int) -> None:
            if len(args) < n:
                raise MacroError(f"missing time column argument for macro {match.group(0)}")

        if name == "__time":
            need(1)
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            need(1)
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            need(1)
            return f"{args[0]} BETWEEN '{rfc3339(ctx.time_from)}' AND '{rfc3339(ctx.time_to)}'"
        if name == "__timeFrom":
            return f"'{rfc3339(ctx.time_from)}'"
        if name == "__timeTo":
            return f"'{rfc3339(ctx.time_to)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            need(2)
            group = _group(args[0], args[1], ctx)
            return group + (' AS "time"' if name.endswith("Alias") else "")
        if name == "__unixEpochFilter":
            need(1)
            start, end = int(ctx.time_from.timestamp()), int(ctx.time_to.timestamp())
            return f"{args[0]} >= {start} AND {args[0]} <= {end}"
        if name in ("__unixEpochGroup", "__unixEpochGroupAlias"):
            need(2)
            n = _number(parse_interval(args[1]))
            group = f"floor(({args[0]})/{n})*{n}"
            return group + (' AS "time"' if name.endswith("Alias") else "")
        raise MacroError(f"unknown macro {name!r}")

    # Grafana before 5.3 compatibility: `$__timeGroup(...)` followed by a comma is aliased.
    first = re.search(r"\$__timeGroup\(([^\)]*)\)", sql)
    if first and sql[first.end() :].lstrip().startswith(","):
        sql = sql.replace(
            first.group(0), first.group(0).replace("$__timeGroup", "$__timeGroupAlias")
        )
    return _MACRO.sub(replace, sql)


def render(sql: str, ctx: QueryContext) -> str:
    """The SQL Grafana would send for this panel, time range and variables."""
    return expand_macros(interpolate_variables(sql, ctx.variables), ctx)


def last(duration: timedelta, now: datetime | None = None) -> tuple[datetime, datetime]:
    """A dashboard's "now-<duration> .. now" range."""
    end = now or datetime.now(UTC)
    return end - duration, end
