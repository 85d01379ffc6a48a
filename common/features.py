"""The one definition of metrics and window features.

Metric names come from the active metric catalogue (common.catalogue). The simulator emits
these metrics, the Flink SQL aggregates them into these features, training fits on them in this
order, and the PostgreSQL schema stores them in these columns. Everything that names a metric
or a feature reads it from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from common.catalogue import Metric
from common.catalogue import load as load_catalogue
from common.settings import Settings

# The metrics of the active catalogue (ANOMALY_CATALOGUE, default network): one deployment
# scores one catalogue's metrics.
_SETTINGS = Settings.from_env()
CATALOGUE = load_catalogue(_SETTINGS.catalogue)
METRICS: tuple[Metric, ...] = CATALOGUE.metrics
METRIC_NAMES: tuple[str, ...] = CATALOGUE.metric_names


@dataclass(frozen=True)
class Aggregate:
    suffix: str
    # Flink SQL expression over one metric column; {col} is replaced by the quoted column name,
    # {interval_ms} by the catalogue's sampling interval (a BIGINT literal).
    flink_sql: str
    sql_type: str
    # Whether the model sees this aggregate. Counts depend on the sending rate rather than
    # on the device's behaviour, so they are stored for analysis but not scored.
    modelled: bool = True


# Population standard deviation: a window with one sample has spread 0, not NULL. Flink
# computes STDDEV_POP from sums of squares, which leaves a residue (~1e-7) on constant input;
# a flat window (a stuck sensor) must read exactly 0, so min = max short-circuits to 0.
AGGREGATES: tuple[Aggregate, ...] = (
    Aggregate("mean", "AVG({col})", "DOUBLE"),
    Aggregate(
        "std",
        "CASE WHEN MIN({col}) = MAX({col}) THEN CAST(0 AS DOUBLE) ELSE STDDEV_POP({col}) END",
        "DOUBLE",
    ),
    Aggregate("min", "MIN({col})", "DOUBLE"),
    Aggregate("max", "MAX({col})", "DOUBLE"),
    Aggregate("count", "COUNT({col})", "BIGINT", modelled=False),
)
# Of a one-metric catalogue, also each window's steps: the sizes of the differences between its
# consecutive samples in time order (jvm/ Steps, STEP_MAX and STEP_RMS, registered in every
# table environment by common.flink_env), the largest ("step") and their root mean square
# ("steprms"); NULL for a window of one sample. Stored, not modelled: the context check's step
# reading (udfs.calibration.ContextCheck) reads the largest against the device's recent
# windows' steprms (STEP_STATS). A step up and back down within a window, on a series that
# moves smoothly or by small steps, is far larger than its usual steps, where the window's
# mean, spread and extremes (a trend within the hour) hide it.
# A step across missing samples (more than the catalogue's interval_ms between its samples)
# counts at its size over the square root of the intervals it spans (jvm/ Steps): an agent's
# gaps do not read as steps, nor raise the usual step.
STEP_AGGREGATES: tuple[Aggregate, ...] = (
    Aggregate("step", "STEP_MAX(`ts_ms`, {col}, {interval_ms})", "DOUBLE", modelled=False),
    Aggregate("steprms", "STEP_RMS(`ts_ms`, {col}, {interval_ms})", "DOUBLE", modelled=False),
)


@dataclass(frozen=True)
class Horizon:
    """A longer horizon of context around each window, named with its size ("1m", "1h").

    Its statistics are taken over the device's window means in the ``seconds`` before the
    window (sql/flink/window_context.sql).
    """

    name: str
    seconds: int
    # Whether the model sees this horizon's deviations (ANOMALY_CONTEXT_MODELLED).
    modelled: bool = True


# Statistics of each metric over a horizon: the mean ("avg") and population spread ("sd") of
# the device's window means, and the window mean's deviation from that mean ("dev", 0 where the
# device has no context yet). The model sees the deviation (of the horizons in
# ANOMALY_CONTEXT_MODELLED); the mean and spread are stored (the "typical" band of a metric).
CONTEXT_STATS: tuple[tuple[str, bool], ...] = (("avg", False), ("sd", False), ("dev", True))
# Of a one-metric catalogue, over the longest horizon only: the mean ("stdavg") and population
# spread ("stdsd") of the device's window spreads (their std), and how many windows they come
# from ("windows"). Stored, not modelled: the context check's spread reading uses them
# (udfs.calibration.ContextCheck). Where many metrics give the model a joint structure, the
# context check is off by default, and these are not computed (each costs state and time).
SPREAD_STATS: tuple[str, ...] = ("stdavg", "stdsd", "windows")
# Of those, the ones over the windows' std (the rest count windows with a mean).
STD_STATS: tuple[str, ...] = ("stdavg", "stdsd")
# Of a one-metric catalogue, over the longest horizon only: the mean of the device's windows'
# steprms (STEP_AGGREGATES). Stored, not modelled: the step reading's scale.
STEP_STATS: tuple[str, ...] = ("stepavg",)
# Of a one-metric catalogue with horizons: each window's change ("change"), the size of the
# difference between its mean and the device's previous window's, where that window is the one
# just before (NULL otherwise: the device's first window, or one after a gap), computed over
# the window rows before the context (common.sql, ``window_changes``); and over the longest
# horizon, the root mean square of the device's windows' changes ("changerms"). Stored, not
# modelled: the context check's change reading (udfs.calibration.ContextCheck) reads a window
# of one sample (a slow series: one sample every hour in 1 h windows), which has no step of its
# own, by its change over the recent windows' usual change.
CHANGE_STATS: tuple[str, ...] = ("change",)
CHANGE_CONTEXT_STATS: tuple[str, ...] = ("changerms",)
# Of a one-metric catalogue with two horizons or more, over the shortest horizon: how many
# windows its avg and sd come from ("windows"). Stored, not modelled: the context check's stuck
# reading (udfs.calibration.ContextCheck) reads the shortest horizon's avg, sd and windows (a
# value that has not moved over it, where the longest horizon's windows vary).
RECENT_STATS: tuple[str, ...] = ("windows",)
# Of a one-metric catalogue whose window is 10 minutes or longer (a shorter one would keep too
# many slots per device), the seasonal readings' parts (udfs.calibration.ContextCheck), per
# SEASON (below): "seasres", the window mean's residual against the mean of the same time of
# the season's period on its previous periods (at least min_periods of them present), less the
# mean of that residual over the day before the window; "seassd", the population spread of
# those de-biased residuals over the week before (at least a day's windows of them). NULL until
# the history is there. A spike within a daily or weekly swing stands out of it where a
# horizon's spread, which holds the swing, hides it; a benign level shift moves every
# residual, and the day's mean follows it. Named with the season's span ("28d", "7d").
SEASON_STATS: tuple[str, ...] = ("seasres", "seassd")
SEASON_WEEKS = 4
SEASON_MIN_WINDOW_SECONDS = 600
DAY_SECONDS = 86_400
WEEK_SECONDS = 7 * DAY_SECONDS


@dataclass(frozen=True)
class Season:
    """A seasonal profile: each window against the same time of the period on the previous
    ``periods`` periods, read where at least ``min_periods`` of them hold a window."""

    period_seconds: int
    periods: int
    min_periods: int

    @property
    def name(self) -> str:
        return f"{self.periods * self.period_seconds // DAY_SECONDS}d"


# The time of the week over 4 weeks (all present), and the time of the day over the week
# before (3 of its 7 days at least: a daily swing is read from a device's fourth day, where the
# week's profile needs five weeks; a day of the week unlike the others, e.g. a weekend, shows
# in the daily profile's spread). Measured (README, Accuracy).
SEASONS: tuple[Season, ...] = (
    Season(WEEK_SECONDS, SEASON_WEEKS, SEASON_WEEKS),
    Season(DAY_SECONDS, 7, 3),
)


_CONTEXT_NAME = re.compile(
    r"_(?:"
    + "|".join(
        sorted(
            {stat for stat, _ in CONTEXT_STATS}
            | {*SPREAD_STATS, *STEP_STATS, *RECENT_STATS, *SEASON_STATS, *CHANGE_CONTEXT_STATS},
            key=len,
        )[::-1]
    )
    + r")([0-9]+[smhd])$"
)


def context_horizon_of(feature_name: str) -> str | None:
    """The horizon a context feature's name carries ("cpu_dev1h" -> "1h"); None otherwise."""
    match = _CONTEXT_NAME.search(feature_name)
    return match.group(1) if match else None


def horizons(settings: Settings) -> tuple[Horizon, ...]:
    modelled = settings.context_modelled_names
    return tuple(Horizon(*h, modelled=h[0] in modelled) for h in settings.context_horizon_seconds)


@dataclass(frozen=True)
class Feature:
    """A model input or stored column, always named ``<metric>_<aggregate>`` where the
    aggregate part has no underscore (explanations group features by metric this way)."""

    name: str
    metric: str
    sql_type: str
    modelled: bool
    # A window feature: the aggregate over the window's events.
    aggregate: Aggregate | None = None
    # A context feature: the statistic over the horizon.
    horizon: Horizon | None = None
    stat: str = ""

    @property
    def flink_expression(self) -> str:
        assert self.aggregate is not None, self.name
        interval = f"CAST({CATALOGUE.interval_ms} AS BIGINT)"
        return self.aggregate.flink_sql.format(col=f"`{self.metric}`", interval_ms=interval)


def longest_horizon(horizon_list) -> Horizon | None:
    """The horizon whose context the scorer reads and the band shows: the longest."""
    return max(horizon_list, key=lambda h: h.seconds, default=None)


def recent_horizon(metric_names, horizon_list) -> Horizon | None:
    """The horizon whose RECENT_STATS are computed and whose context the stuck reading reads:
    the shortest, for one metric with two horizons or more; else None."""
    shortest = min(horizon_list, key=lambda h: h.seconds, default=None)
    if len(metric_names) != 1 or shortest is None or shortest == longest_horizon(horizon_list):
        return None
    return shortest


def spread_stats(metric_names) -> tuple[str, ...]:
    """The SPREAD_STATS a catalogue of these metrics computes: all for one metric, else none."""
    return SPREAD_STATS if len(metric_names) == 1 else ()


def step_aggregates(metric_names) -> tuple[Aggregate, ...]:
    """The STEP_AGGREGATES a catalogue of these metrics computes: for one metric, else none."""
    return STEP_AGGREGATES if len(metric_names) == 1 else ()


def step_stats(metric_names) -> tuple[str, ...]:
    """The STEP_STATS a catalogue of these metrics computes: for one metric, else none."""
    return STEP_STATS if len(metric_names) == 1 else ()


def change_metrics(metric_names, horizon_list) -> tuple[str, ...]:
    """The metrics whose CHANGE_STATS and CHANGE_CONTEXT_STATS are computed: of one metric with
    context horizons; else none."""
    return tuple(metric_names) if len(metric_names) == 1 and horizon_list else ()


def season_horizon(season: Season) -> Horizon:
    return Horizon(season.name, season.periods * season.period_seconds, modelled=False)


def seasons_of(metric_names, horizon_list, window_seconds: int) -> tuple[Season, ...]:
    """The SEASONS whose SEASON_STATS are computed: for one metric with context horizons (the
    context check reads them) and a window of 10 minutes or more that divides the period;
    else none."""
    if len(metric_names) != 1 or not horizon_list:
        return ()
    if window_seconds < SEASON_MIN_WINDOW_SECONDS:
        return ()
    return tuple(s for s in SEASONS if s.period_seconds % window_seconds == 0)


def season_of(horizon: Horizon) -> Season:
    """The season a SEASON_STATS feature's horizon names."""
    return next(s for s in SEASONS if s.name == horizon.name)


def features_of(metric_names, horizon_list, window_seconds: int = 0) -> tuple[Feature, ...]:
    """Every feature of these metrics: the window aggregates, then each horizon's context."""
    window = tuple(
        Feature(f"{metric}_{agg.suffix}", metric, agg.sql_type, agg.modelled, aggregate=agg)
        for metric in metric_names
        for agg in (*AGGREGATES, *step_aggregates(metric_names))
    )
    context = tuple(
        Feature(
            f"{metric}_{stat}{h.name}",
            metric,
            "DOUBLE",
            modelled and h.modelled,
            horizon=h,
            stat=stat,
        )
        for metric in metric_names
        for h in horizon_list
        for stat, modelled in CONTEXT_STATS
    )
    longest = longest_horizon(horizon_list)
    spread = tuple(
        Feature(
            f"{metric}_{stat}{longest.name}",
            metric,
            "BIGINT" if stat == "windows" else "DOUBLE",
            False,
            horizon=longest,
            stat=stat,
        )
        for metric in metric_names
        if longest is not None
        for stat in (*spread_stats(metric_names), *step_stats(metric_names))
    )
    recent = recent_horizon(metric_names, horizon_list)
    recent_features = tuple(
        Feature(f"{metric}_{stat}{recent.name}", metric, "BIGINT", False, horizon=recent, stat=stat)
        for metric in metric_names
        if recent is not None
        for stat in RECENT_STATS
    )
    season = tuple(
        Feature(
            f"{metric}_{stat}{season.name}",
            metric,
            "DOUBLE",
            False,
            horizon=season_horizon(season),
            stat=stat,
        )
        for metric in metric_names
        for season in seasons_of(metric_names, horizon_list, window_seconds)
        for stat in SEASON_STATS
    )
    change = tuple(
        Feature(f"{metric}_{stat}", metric, "DOUBLE", False, stat=stat)
        for metric in change_metrics(metric_names, horizon_list)
        for stat in CHANGE_STATS
    ) + tuple(
        Feature(
            f"{metric}_{stat}{longest.name}", metric, "DOUBLE", False, horizon=longest, stat=stat
        )
        for metric in change_metrics(metric_names, horizon_list)
        for stat in CHANGE_CONTEXT_STATS
    )
    return window + context + spread + recent_features + season + change


HORIZONS: tuple[Horizon, ...] = horizons(_SETTINGS)
FEATURES: tuple[Feature, ...] = features_of(METRIC_NAMES, HORIZONS, _SETTINGS.window_seconds)
WINDOW_FEATURES: tuple[Feature, ...] = tuple(f for f in FEATURES if f.aggregate is not None)
# Each window's change from the window before (CHANGE_STATS): neither an aggregate of the
# window's events nor a statistic over a horizon.
CHANGE_FEATURES: tuple[Feature, ...] = tuple(f for f in FEATURES if f.stat in CHANGE_STATS)
CONTEXT_FEATURES: tuple[Feature, ...] = tuple(f for f in FEATURES if f.horizon is not None)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
# The model's input columns, in order. Stored in each model card and checked when it loads.
MODEL_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.modelled)


def scorer_context_names(metric_names, horizon_list, window_seconds: int = 0) -> tuple[str, ...]:
    """The context the scorer reads beside the model's features (udfs.calibration.ContextCheck):
    each metric's level and spread (avg, sd) over the longest horizon, and for one metric its
    SPREAD_STATS, then the shortest horizon's avg, sd and RECENT_STATS where computed, then its
    SEASON_STATS where computed, then the window's own sample count (its first metric's:
    udfs.calibration.PartialWindows's, and for one metric the spike reading's), then for one
    metric its largest step and the longest horizon's STEP_STATS (the step reading's), then
    its CHANGE_STATS and the longest horizon's CHANGE_CONTEXT_STATS (the change reading's);
    none without horizons. The longest horizon's come first."""
    longest = longest_horizon(horizon_list)
    if longest is None:
        return ()
    stats = ("avg", "sd", *spread_stats(metric_names))
    recent = recent_horizon(metric_names, horizon_list)
    seasons = seasons_of(metric_names, horizon_list, window_seconds)
    return (
        tuple(f"{m}_{stat}{longest.name}" for m in metric_names for stat in stats)
        + tuple(
            f"{m}_{stat}{recent.name}"
            for m in metric_names
            if recent is not None
            for stat in ("avg", "sd", *RECENT_STATS)
        )
        + tuple(
            f"{m}_{stat}{season.name}"
            for m in metric_names
            for season in seasons
            for stat in SEASON_STATS
        )
        + (f"{metric_names[0]}_count",)
        + tuple(
            name
            for m in metric_names
            if step_stats(metric_names)
            for name in (f"{m}_step", *(f"{m}_{stat}{longest.name}" for stat in STEP_STATS))
        )
        + tuple(
            name
            for m in change_metrics(metric_names, horizon_list)
            for name in (
                *(f"{m}_{stat}" for stat in CHANGE_STATS),
                *(f"{m}_{stat}{longest.name}" for stat in CHANGE_CONTEXT_STATS),
            )
        )
    )


# Passed to the scoring UDF after the model features, whatever the model: a model that checks
# windows against their recent context uses them, others ignore them (a new model version
# must not need another UDF call).
SCORER_CONTEXT_NAMES: tuple[str, ...] = scorer_context_names(
    METRIC_NAMES, HORIZONS, _SETTINGS.window_seconds
)

# PostgreSQL column types for Flink SQL types used above.
PG_TYPES = {"DOUBLE": "double precision", "BIGINT": "bigint"}
