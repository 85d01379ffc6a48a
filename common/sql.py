"""Loading and rendering the SQL files under ``sql/``.

SQL files carry Flyway-style ``${name}`` placeholders for names that live in one place
(settings and ``common.features``): topics, tables, window size, feature columns. Rendering
replaces only those; an unknown placeholder is an error, so a typo cannot reach Flink or
PostgreSQL. Values are names and numbers from settings, never user input.
"""

from __future__ import annotations

import re
from pathlib import Path

from common.features import (
    AGGREGATES,
    CATALOGUE,
    CHANGE_CONTEXT_STATS,
    CHANGE_FEATURES,
    CONTEXT_FEATURES,
    DAY_SECONDS,
    FEATURES,
    HORIZONS,
    METRIC_NAMES,
    METRICS,
    MODEL_FEATURE_NAMES,
    PG_TYPES,
    SCORER_CONTEXT_NAMES,
    SEASON_STATS,
    STD_STATS,
    STEP_STATS,
    WEEK_SECONDS,
    WINDOW_FEATURES,
    Horizon,
    Season,
    longest_horizon,
    season_of,
)
from common.settings import REPO_ROOT, Settings

SQL_DIR = REPO_ROOT / "sql"
_INDENT = ",\n  "
_PLACEHOLDER = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")

# Columns of a telemetry event as Flink SQL reads them from JSON.
EVENT_COLUMNS = (
    ("device_id", "STRING"),
    ("ts_ms", "BIGINT"),
    *((name, "DOUBLE") for name in METRIC_NAMES),
    ("is_anomaly", "BOOLEAN"),
    ("scenario", "STRING"),
)


def interval(seconds: int) -> str:
    """A Flink SQL interval literal of any length (``INTERVAL 'n' SECOND`` stops at 99 s)."""
    days, rest = divmod(int(seconds), 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{secs:02d}' DAY TO SECOND"


def format_limits(metrics=None) -> str:
    """The metrics' ranges for the telemetry-json format (events_kafka.sql): one
    ``name:min:max:minText:maxText`` per metric with a range, the texts as its dead letters
    show them (``below its minimum 0``). ``metrics``: another catalogue's (default: this
    one's)."""
    parts = []
    for m in METRICS if metrics is None else metrics:
        if m.min is None and m.max is None:
            continue
        low = repr(float(m.min)) if m.min is not None else ""
        high = repr(float(m.max)) if m.max is not None else ""
        low_text = f"{m.min:g}" if m.min is not None else ""
        high_text = f"{m.max:g}" if m.max is not None else ""
        parts.append(f"{m.name}:{low}:{high}:{low_text}:{high_text}")
    return ",".join(parts)


# What a text that PostgreSQL cannot store shows instead of the offending characters: NUL
# (no text value may hold it) and lone UTF-16 surrogates (not Unicode; JSON's "\ud800" decodes
# to one, and the driver would write "?" for it).
REPLACEMENT_CHARACTER = "\ufffd"
UNSTORABLE_CHARACTERS = r"[\x{0}\p{Cs}]"


def storable_text(expression: str) -> str:
    """Flink SQL: ``expression`` with every character PostgreSQL cannot store replaced."""
    return f"REGEXP_REPLACE({expression}, '{UNSTORABLE_CHARACTERS}', '{REPLACEMENT_CHARACTER}')"


# The fields of an event the streaming job reads; others (labels, extras) are ignored.
SOURCE_FIELDS = ("device_id", "ts_ms", *METRIC_NAMES)


def limit_columns() -> list[str]:
    """Per-metric limits of a device in the devices table (the `reference` of a rule)."""
    return [f"{m}_{side}" for m in METRIC_NAMES for side in ("low", "high")]


def _number(value: float) -> str:
    return f"CAST({value!r} AS DOUBLE)"


def segment_limit_column(limit_column: str) -> str:
    """The column of enriched_windows holding a device's limit for the window's segment."""
    return f"segment_{limit_column}"


def rule_threshold(rule) -> str:
    """A rule's threshold: its number, the device's limit column, or the device's limit for
    the window's time-of-day segment (a NULL limit: the rule never fires)."""
    if rule.reference == "device":
        return f"`{rule.limit_column}`"
    if rule.reference == "segment":
        return f"`{segment_limit_column(rule.limit_column)}`"
    return _number(rule.threshold)


def segment_placeholders(settings: Settings) -> dict[str, str]:
    """The parts of scored_windows.sql that look up each window's segment limits; empty
    when no catalogue rule reads them (no second lookup join then). The segment is the
    window start's second of the UTC day over the segment length (integers divide to an
    integer in Flink SQL, as in Java)."""
    if not any(r.reference == "segment" for r in CATALOGUE.rules):
        return {"segment_key": "", "segment_join": "", "segment_limit_select": ""}
    second = "HOUR(window_start) * 3600 + MINUTE(window_start) * 60 + SECOND(window_start)"
    length = settings.reference_segment_seconds
    return {
        "segment_key": f",\n    CAST(({second}) / {length} AS INT) AS reference_segment",
        "segment_join": "\nLEFT JOIN segment_limits_lookup FOR SYSTEM_TIME AS OF f.proc_time AS g"
        "\n  ON f.device_id = g.device_id AND f.reference_segment = g.segment",
        "segment_limit_select": "".join(
            f",\n  g.`{c}` AS `{segment_limit_column(c)}`" for c in limit_columns()
        ),
    }


def rule_condition(rule) -> str:
    """The Flink SQL condition under which a rule fires on a row of enriched_windows."""
    op = ">" if rule.direction == "above" else "<"
    return f"`{rule.feature}` {op} {rule_threshold(rule)}"


def rule_flag(rule) -> str:
    """The column of scored_windows saying whether the rule fires on the window."""
    return f"`rule_{rule.name}`"


def rule_flag_columns() -> str:
    """Each rule's condition, evaluated once per window in scored_windows.sql (FALSE where a
    value or limit is missing); everything downstream reads the flag."""
    return "".join(f",\n  ({rule_condition(r)}) IS TRUE AS {rule_flag(r)}" for r in CATALOGUE.rules)


def rule_alerts() -> str:
    """UNION ALL branches of the alerts view (insert_alerts.sql): one per catalogue rule,
    a row for each window it fires on (read from incident_windows)."""
    branches = []
    for rule in CATALOGUE.rules:
        branches.append(
            "UNION ALL\nSELECT device_id, window_start, window_end, window_time, "
            f"CAST('rule:{rule.name}' AS STRING), {_number(rule.severity)}, "
            f"CAST('{rule.metric}' AS STRING), CAST(`{rule.feature}` AS DOUBLE), "
            f"{rule_threshold(rule)}, "
            "CAST(NULL AS STRING), CAST(NULL AS STRING), site, region, criticality, "
            f"incident_start\nFROM incident_windows WHERE {rule_flag(rule)}"
        )
    return "\n".join(branches)


def rule_fires() -> str:
    """Whether any catalogue rule fires on a window."""
    return " OR ".join(["FALSE", *(rule_flag(r) for r in CATALOGUE.rules)])


def rule_severity() -> str:
    """The highest severity of the rules that fire on a window (0 if none)."""
    cases = [
        f"CASE WHEN {rule_flag(r)} THEN {_number(r.severity)} ELSE {_number(0.0)} END"
        for r in CATALOGUE.rules
    ]
    return f"GREATEST({', '.join([_number(0.0), *cases])})"


# --- window features and their context (window_features.sql, window_context.sql) ----------

# Training only: per window, the events its source labels anomalous (name, aggregate, type).
LABEL_COLUMNS = (("labelled_events", "SUM(CASE WHEN is_anomaly THEN 1 ELSE 0 END)", "INT"),)
_MEAN = next(a for a in AGGREGATES if a.suffix == "mean")


def _context_view(h: Horizon) -> str:
    return f"window_context_{h.name}"


def _sums(h: Horizon, metric: str, aggregate: str = _MEAN.suffix) -> tuple[str, str, str]:
    """The columns holding, over a horizon (the window included), how many windows have the
    aggregate (the mean; the std for STD_STATS) of the metric, and the sum and sum of squares
    of those values."""
    tag = "" if aggregate == _MEAN.suffix else aggregate
    return tuple(f"ctx_{part}{tag}{h.name}_{metric}" for part in ("n", "sum", "sumsq"))


def _excluding_own(value: str, count: str, total: str, squares: str = "") -> tuple[str, str, str]:
    """Over an OVER's count, sum and sum of squares of ``value`` (the row's own included): how
    many preceding rows have it, their mean, and their population variance as E[x^2] - E[x]^2,
    as Flink's STDDEV_POP computes it (within ~1e-6 of 0 where it is 0); no variance without
    ``squares``."""
    own = f"COALESCE({value}, 0E0)"
    preceding = f"({count} - CASE WHEN {value} IS NULL THEN 0 ELSE 1 END)"
    avg = f"({total} - {own}) / NULLIF({preceding}, 0)"
    var = (
        f"({squares} - {own} * {own}) / NULLIF({preceding}, 0) - POWER({avg}, 2)" if squares else ""
    )
    return preceding, avg, var


# A window's start in seconds: what Flink's batch OVERs, which cannot range over timestamps,
# range over.
_START_SECONDS = "TIMESTAMPDIFF(SECOND, TIMESTAMP '2000-01-01 00:00:00', window_start)"


def _with_start_seconds(source: str, order: str) -> str:
    """``source`` with its windows' start in seconds as the column ``order`` (batch OVERs)."""
    return f"(SELECT *, {_START_SECONDS} AS {order} FROM {source})"  # noqa: S608


def _range_window(partition: str, batch: bool, seconds: int, order: str = "`ctx_second`") -> str:
    """The OVER window ``w`` of every view on the window rows: per ``partition``, each row with
    the rows of the ``seconds`` before it, by ``window_time`` (batch: by ``order``, the
    windows' start in seconds, _with_start_seconds)."""
    by, bound = (order, str(seconds)) if batch else ("window_time", interval(seconds))
    return (
        f"WINDOW w AS (\n  PARTITION BY {partition} ORDER BY {by}\n"
        f"  RANGE BETWEEN {bound} PRECEDING AND CURRENT ROW\n)"
    )


# The view the context is computed over: the window aggregates, with each window's change
# (CHANGE_FEATURES) where the features have it.
_AGGREGATES_VIEW = "window_aggregates"
CHANGES_VIEW = "window_changes"


def windows_view() -> str:
    """The view of the window rows the context reads (the stream's WindowContext too)."""
    return CHANGES_VIEW if CHANGE_FEATURES else _AGGREGATES_VIEW


def _change_view(batch: bool, window_seconds: int) -> list[str]:
    """The view that adds CHANGE_FEATURES to the window aggregates: the size of the difference
    between a window's mean and the device's window just before (an OVER ranging one window
    back holds both: their MAX - MIN, exact); NULL where that window is not there. None where
    the features have no change."""
    if not CHANGE_FEATURES:
        return []
    order = "`ctx_csecond`"
    source = _with_start_seconds(_AGGREGATES_VIEW, order) if batch else _AGGREGATES_VIEW
    changes = []
    for f in CHANGE_FEATURES:
        mean = f"`{f.metric}_{_MEAN.suffix}`"
        changes.append(
            f"CASE WHEN {mean} IS NOT NULL AND COUNT({mean}) OVER w = 2 "
            f"THEN MAX({mean}) OVER w - MIN({mean}) OVER w END AS `{f.name}`"
        )
    return [
        f"CREATE TEMPORARY VIEW {CHANGES_VIEW} AS\nSELECT *,\n  {_INDENT.join(changes)}\n"
        f"FROM {source}\n" + _range_window("device_id", batch, window_seconds, order)
    ]


def _windows_per_day(window_seconds: int) -> int:
    return max(1, 86_400 // window_seconds)


def _season_parts(metric: str, season: Season) -> dict[str, str]:
    """The columns of the seasonal views (one metric, one season)."""
    return {
        part: f"`ctx_{part}{season.name}_{metric}`"
        for part in ("sn", "ssum", "sr", "srn", "srsum", "srr", "srrn", "srrsum", "srrsq")
    }


def _season_views(source: str, batch: bool, window_seconds: int) -> tuple[list[str], str]:
    """The views that compute the SEASON_STATS (common.features) over ``source``, and the last
    one's name; none where the features have none. Each is an OVER on the window rows, as the
    horizons' views are: per season, the same time of its period on its previous periods (a
    partition per device and time of the period); then for every season at once, the
    residual's mean over the day before, the de-biased residuals' spread over the week before;
    each leaves the window's own value out."""
    features = [f for f in CONTEXT_FEATURES if f.stat in SEASON_STATS]
    pairs = sorted({(f.metric, season_of(f.horizon)) for f in features}, key=str)
    if not pairs:
        return [], source

    def over(partition: str, seconds: int) -> str:
        return _range_window(partition, batch, seconds)

    per_day = _windows_per_day(window_seconds)
    seasons = sorted({season for _, season in pairs}, key=lambda x: -x.period_seconds)
    slots = ", ".join(
        f"MOD({_START_SECONDS}, {season.period_seconds}) AS `ctx_slot{season.name}`"
        for season in seasons
    )
    steps = [f"SELECT *, {slots} FROM {{source}}"]  # noqa: S608
    profiles, residual, day, debiased, week = [], [], [], [], []
    for season in seasons:
        profile = []
        for metric in (m for m, s in pairs if s == season):
            c = _season_parts(metric, season)
            profile += [
                f"COUNT(`{metric}_{_MEAN.suffix}`) OVER w AS {c['sn']}",
                f"SUM(`{metric}_{_MEAN.suffix}`) OVER w AS {c['ssum']}",
            ]
        profiles.append(
            f"SELECT *,\n  {_INDENT.join(profile)}\nFROM {{source}}\n"
            + over(f"device_id, `ctx_slot{season.name}`", season.periods * season.period_seconds)
        )
    for metric, season in pairs:
        c, mean = _season_parts(metric, season), f"`{metric}_{_MEAN.suffix}`"
        residual.append(
            f"CASE WHEN {mean} IS NOT NULL AND {c['sn']} - 1 >= {season.min_periods} "
            f"THEN {mean} - ({c['ssum']} - {mean}) / ({c['sn']} - 1) END AS {c['sr']}"
        )
        day += [f"COUNT({c['sr']}) OVER w AS {c['srn']}", f"SUM({c['sr']}) OVER w AS {c['srsum']}"]
        preceding, avg, _ = _excluding_own(c["sr"], c["srn"], c["srsum"])
        debiased.append(
            f"CASE WHEN {c['sr']} IS NOT NULL AND {preceding} >= {max(2, per_day // 2)} "
            f"THEN {c['sr']} - {avg} END AS {c['srr']}"
        )
        week += [
            f"COUNT({c['srr']}) OVER w AS {c['srrn']}",
            f"SUM({c['srr']}) OVER w AS {c['srrsum']}",
            f"SUM({c['srr']} * {c['srr']}) OVER w AS {c['srrsq']}",
        ]
    steps += [
        *profiles,
        f"SELECT *,\n  {_INDENT.join(residual)}\nFROM {{source}}",
        f"SELECT *,\n  {_INDENT.join(day)}\nFROM {{source}}\n" + over("device_id", DAY_SECONDS),
        f"SELECT *,\n  {_INDENT.join(debiased)}\nFROM {{source}}",
        f"SELECT *,\n  {_INDENT.join(week)}\nFROM {{source}}\n" + over("device_id", WEEK_SECONDS),
    ]
    views = []
    for k, step in enumerate(steps):
        name = f"window_season_{k}"
        views.append(f"CREATE TEMPORARY VIEW {name} AS\n{step.format(source=source)};")
        source = name
    return views, source


def _season_feature(f, window_seconds: int) -> str:
    c = _season_parts(f.metric, season_of(f.horizon))
    if f.stat == "seasres":
        return c["srr"]
    preceding, _, var = _excluding_own(c["srr"], c["srrn"], c["srrsum"], c["srrsq"])
    per_day = _windows_per_day(window_seconds)
    return f"CASE WHEN {preceding} >= {per_day} THEN SQRT(GREATEST({var}, 0)) END"


def _context_feature(f, window_seconds: int = 0) -> str:
    """A context feature from its horizon's sums, the window's own value left out: the mean and
    population spread of the preceding windows' means (NULL if there are none), and the
    window mean's deviation from that mean (0 then; NULL if the window has no mean). The
    STD_STATS are the same over the windows' std; "windows" (SPREAD_STATS, RECENT_STATS) is
    the number of preceding windows with a mean; the SEASON_STATS come from their own views
    (_season_views)."""
    if f.stat in SEASON_STATS:
        return _season_feature(f, window_seconds)
    if f.stat in CHANGE_CONTEXT_STATS:  # the root mean square of the preceding windows' changes
        value = f"`{f.metric}_change`"
        count, _, squares = (f"`{name}`" for name in _sums(f.horizon, f.metric, "change"))
        preceding = f"({count} - CASE WHEN {value} IS NULL THEN 0 ELSE 1 END)"
        own = f"COALESCE({value}, 0E0)"
        return f"SQRT(GREATEST(({squares} - {own} * {own}) / NULLIF({preceding}, 0), 0E0))"
    aggregate = _MEAN.suffix
    if f.stat in STD_STATS:
        aggregate = "std"
    elif f.stat in STEP_STATS:
        aggregate = "steprms"
    h, mean = f.horizon, f"`{f.metric}_{aggregate}`"
    sums = (f"`{name}`" for name in _sums(h, f.metric, aggregate))
    preceding, avg, var = _excluding_own(mean, *sums)
    if f.stat == "windows":
        return preceding
    if f.stat in ("avg", "stdavg", "stepavg"):
        return avg
    if f.stat in ("sd", "stdsd"):
        # Exactly 0 for a single window.
        return f"CASE WHEN {preceding} = 1 THEN 0E0 ELSE SQRT(GREATEST({var}, 0)) END"
    return f"{mean} - COALESCE({avg}, {mean})"


def context_sums(h: Horizon) -> list[tuple[str, tuple[str, str, str]]]:
    """Per column whose context a horizon holds (each metric's window mean, its std where the
    features have STD_STATS, its steprms where they have STEP_STATS and its change where they
    have CHANGE_CONTEXT_STATS), the names of its count, sum and sum of squares over the
    horizon, the window included (unquoted)."""
    spread = {f.metric for f in CONTEXT_FEATURES if f.horizon == h and f.stat in STD_STATS}
    steps = {f.metric for f in CONTEXT_FEATURES if f.horizon == h and f.stat in STEP_STATS}
    changes = {
        f.metric for f in CONTEXT_FEATURES if f.horizon == h and f.stat in CHANGE_CONTEXT_STATS
    }
    return [
        (f"{metric}_{aggregate}", _sums(h, metric, aggregate))
        for metric in METRIC_NAMES
        for aggregate in (
            _MEAN.suffix,
            *(("std",) if metric in spread else ()),
            *(("steprms",) if metric in steps else ()),
            *(("change",) if metric in changes else ()),
        )
    ]


def context_placeholders(
    labelled: bool,
    batch: bool = False,
    context_table: str | None = None,
    window_seconds: int = 0,
) -> dict[str, str]:
    """The generated parts of window_context.sql (see its header for the design). ``batch``:
    for Flink's batch mode (training), which cannot range over timestamps; its OVERs range
    over the windows' start in seconds instead (the same windows)."""
    indent = ",\n  "
    labels = "".join(f",\n  `{name}`" for name, _, _ in LABEL_COLUMNS) if labelled else ""
    views, source = [], windows_view()
    if batch:
        source = _with_start_seconds(source, "`ctx_second`")
    # The longest horizon first: its OVER keeps the most rows, so it gets the narrowest ones.
    for h in sorted(HORIZONS, key=lambda h: -h.seconds):
        sums = []
        for column, (count, total, squares) in context_sums(h):
            value = f"`{column}`"
            sums += [
                f"COUNT({value}) OVER w AS `{count}`",
                f"SUM({value}) OVER w AS `{total}`",
                f"SUM({value} * {value}) OVER w AS `{squares}`",
            ]
        views.append(
            f"CREATE TEMPORARY VIEW {_context_view(h)} AS\n"
            f"SELECT\n  *,\n  {indent.join(sums)}\nFROM {source}\n"
            + _range_window("device_id", batch, h.seconds)
            + ";"
        )
        source = _context_view(h)
    if context_table is not None:
        views, source = [], context_table
    season, source = _season_views(source, batch, window_seconds)
    return {
        "context_views": "\n\n".join([*views, *season]),
        "context_source": source,
        "context_features": indent.join(
            f"{_context_feature(f, window_seconds)} AS `{f.name}`" for f in CONTEXT_FEATURES
        ),
        "window_feature_list": indent.join(
            f"`{f.name}`" for f in (*WINDOW_FEATURES, *CHANGE_FEATURES)
        ),
        "label_list": labels,
        "label_columns": "".join(f",\n  {expr} AS `{n}`" for n, expr, _ in LABEL_COLUMNS)
        if labelled
        else "",
    }


def window_feature_statements(
    settings: Settings,
    *,
    labelled: bool = False,
    batch: bool = False,
    context_table: str | None = None,
) -> list[str]:
    """The statements that define the ``window_features`` view over ``telemetry_events``:
    window aggregates, then (with context horizons) their context. ``labelled`` adds the
    training labels of LABEL_COLUMNS. ``context_table``: the horizons' sums (context_sums)
    come from that table, which the caller registers over ``window_aggregates`` before the
    context's statements (window_feature_parts), instead of from the OVER views."""
    aggregates, context = window_feature_parts(
        settings, labelled=labelled, batch=batch, context_table=context_table
    )
    return aggregates + context


def window_feature_parts(
    settings: Settings,
    *,
    labelled: bool = False,
    batch: bool = False,
    context_table: str | None = None,
) -> tuple[list[str], list[str]]:
    """window_feature_statements in two parts: those up to ``window_aggregates``, and the
    context's; a ``context_table`` is registered between them."""
    extra = context_placeholders(labelled, batch, context_table, settings.window_seconds)
    aggregates = statements(render("flink/window_features.sql", settings, **extra))
    if HORIZONS:
        aggregates += _change_view(batch, settings.window_seconds)
        return aggregates, statements(render("flink/window_context.sql", settings, **extra))
    return aggregates, ["CREATE TEMPORARY VIEW window_features AS SELECT * FROM window_aggregates"]


def _metric_case(column: str) -> str:
    """A CASE over the query layer's p_metric picking the metric's column of a scores row
    (``column`` names it from {metric}); NULL for a column that does not exist."""
    names = {f.name for f in FEATURES}
    branches = " ".join(
        f"WHEN '{m}' THEN s.{column.format(metric=m)}"
        for m in METRIC_NAMES
        if column.format(metric=m) in names
    )
    return f"CASE p_metric {branches} END" if branches else "NULL::double precision"


def band_horizon() -> Horizon | None:
    """The context whose mean and spread give a metric its typical band: the longest."""
    return longest_horizon(HORIZONS)


def query_layer_placeholders() -> dict[str, str]:
    """The catalogue-dependent parts of R__query_layer.sql."""
    band = band_horizon()
    suffix = band.name if band else "none"
    return {
        "metric_names_array": "ARRAY[" + ", ".join(f"'{m}'" for m in METRIC_NAMES) + "]::text[]",
        "metric_case_mean": _metric_case("{metric}_mean"),
        "metric_case_min": _metric_case("{metric}_min"),
        "metric_case_max": _metric_case("{metric}_max"),
        "metric_case_typical": _metric_case(f"{{metric}}_avg{suffix}"),
        "metric_case_spread": _metric_case(f"{{metric}}_sd{suffix}"),
        "band_horizon": band.name if band else "(no context horizon: NULL)",
        # Every good event has every metric: one metric's sample count is the event count.
        "events_count_column": f"{METRIC_NAMES[0]}_count",
    }


def _pg_add_limit_columns(table: str) -> str:
    return (
        f"ALTER TABLE {table}\n  "
        + ",\n  ".join(f"ADD COLUMN IF NOT EXISTS {c} double precision" for c in limit_columns())
        + ";"
    )


def context(settings: Settings, **extra: object) -> dict[str, str]:
    """Placeholder values shared by every SQL file."""
    indent = ",\n  "
    pg_columns = [f"{f.name} {PG_TYPES[f.sql_type]}" for f in FEATURES]
    values: dict[str, object] = {
        "events_topic": settings.events_topic,
        "kafka_bootstrap": settings.kafka_bootstrap,
        "kafka_group_id": settings.kafka_group_id,
        "window_seconds": settings.window_seconds,
        "watermark_delay_seconds": settings.watermark_delay_seconds,
        "scores_table": settings.scores_table,
        "jdbc_url": settings.jdbc_url,
        "dead_letters_table": settings.dead_letters_table,
        "late_events_table": settings.late_events_table,
        "devices_table": settings.devices_table,
        "incidents_table": settings.incidents_table,
        "incident_quiet_interval": interval(settings.incident_quiet_seconds),
        "incident_quiet_seconds": settings.incident_quiet_seconds,
        "device_cache_seconds": settings.device_cache_seconds,
        "device_cache_full_max_rows": settings.device_cache_full_max_rows,
        "alerts_table": settings.alerts_table,
        "health_table": settings.health_table,
        "links_table": settings.links_table,
        "correlated_table": settings.correlated_table,
        "correlation_table": settings.correlation_table,
        "notifications_table": settings.notifications_table,
        "health_seconds": settings.health_seconds,
        "device_limit_columns": indent.join(f"`{c}` DOUBLE" for c in limit_columns()),
        "device_limit_select": indent.join(f"d.`{c}`" for c in limit_columns()),
        "pg_add_device_limit_columns": _pg_add_limit_columns(settings.devices_table),
        "pg_add_segment_limit_columns": _pg_add_limit_columns(settings.segment_limits_table),
        "segment_limits_table": settings.segment_limits_table,
        "reference_segment_seconds": settings.reference_segment_seconds,
        **segment_placeholders(settings),
        **query_layer_placeholders(),
        "models_table": settings.models_table,
        "raw_events_table": settings.raw_events_table,
        "pg_metric_columns": indent.join(f"{m} double precision" for m in METRIC_NAMES),
        "event_metric_columns": indent.join(f"`{m}` DOUBLE" for m in METRIC_NAMES),
        "retention_days": settings.retention_days,
        "raw_events_retention_days": settings.raw_events_retention_days,
        "compress_after_days": settings.compress_after_days,
        "pg_writer_user": settings.pg_writer_user,
        "pg_reader_user": settings.pg_reader_user,
        "drift_psi_retrain": repr(float(settings.drift_psi_retrain)),
        "drift_min_windows": settings.drift_min_windows,
        "rule_alerts": rule_alerts(),
        "rule_severity": rule_severity(),
        "rule_fires": rule_fires(),
        "rule_flag_columns": rule_flag_columns(),
        "window_ms": settings.window_seconds * 1000,
        "window_interval": interval(settings.window_seconds),
        "watermark_interval": interval(settings.watermark_delay_seconds),
        "clock_skew_interval": interval(settings.max_clock_skew_seconds),
        "max_clock_skew_seconds": settings.max_clock_skew_seconds,
        "max_device_id_length": settings.max_device_id_length,
        "event_columns": indent.join(f"`{name}` {typ}" for name, typ in EVENT_COLUMNS),
        # The telemetry-json format's checks of each metric's range (events_kafka.sql).
        "metric_limits": format_limits(),
        "event_metric_names": indent.join(f"`{m}`" for m in METRIC_NAMES),
        # Dead letters (insert_rejects.sql): what they keep of a message, storable.
        "storable_parsed_payload": storable_text(
            "JSON_OBJECT("
            + ", ".join(f"KEY '{name}' VALUE `{name}`" for name in SOURCE_FIELDS)
            + ")"
        ),
        "storable_device_id": "SUBSTRING("
        + storable_text("`device_id`")
        + f" FROM 1 FOR {settings.max_device_id_length})",
        "storable_payload_text": storable_text("DECODE(payload, 'UTF-8')"),
        "feature_expressions": indent.join(
            f"{f.flink_expression} AS `{f.name}`" for f in WINDOW_FEATURES
        ),
        "feature_list": indent.join(f"`{f.name}`" for f in FEATURES),
        "model_feature_list": ", ".join(f"`{name}`" for name in MODEL_FEATURE_NAMES),
        # How insert_scores.sql scores a window (the job swaps in a NULL row when scoring is
        # off).
        "score_call": "score_window(device_id, "
        + ", ".join(f"`{name}`" for name in (*MODEL_FEATURE_NAMES, *SCORER_CONTEXT_NAMES))
        + ")",
        "flink_feature_columns": indent.join(f"`{f.name}` {f.sql_type}" for f in FEATURES),
        "pg_feature_columns": indent.join(pg_columns),
        "pg_add_feature_columns": f"ALTER TABLE {settings.scores_table}\n  "
        + ",\n  ".join(f"ADD COLUMN IF NOT EXISTS {column}" for column in pg_columns)
        + ";",
    }
    values.update(extra)
    return {key: str(value) for key, value in values.items()}


def render_text(text: str, values: dict[str, str], *, source: str = "<sql>") -> str:
    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"{source}: unknown placeholder ${{{key}}}")
        return values[key]

    return _PLACEHOLDER.sub(substitute, text)


def render(relative_path: str, settings: Settings, **extra: object) -> str:
    """Render ``sql/<relative_path>`` with the shared placeholder values."""
    path = SQL_DIR / relative_path
    return render_text(path.read_text(), context(settings, **extra), source=str(path))


def strip_comments(statement: str) -> str:
    """Drop ``--`` comment lines; Flink's ``execute_sql`` takes one bare statement."""
    lines = [line for line in statement.splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(lines).strip().rstrip(";")


def statements(text: str) -> list[str]:
    """The statements of a rendered Flink SQL file, comments dropped: each ends with a line
    ending in ``;`` (or the end of the file)."""
    out, current = [], []
    for line in text.splitlines():
        current.append(line)
        if line.rstrip().endswith(";"):
            out.append(strip_comments("\n".join(current)))
            current = []
    out.append(strip_comments("\n".join(current)))
    return [s for s in out if s]


def postgres_migrations() -> list[Path]:
    """Versioned migrations (NNN_name.sql, once each, in order), then repeatable ones
    (R__name.sql, again whenever their rendered text changes)."""
    folder = SQL_DIR / "postgres"
    return sorted(folder.glob("[0-9][0-9][0-9]_*.sql")) + sorted(folder.glob("R__*.sql"))
