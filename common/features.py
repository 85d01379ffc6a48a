"""The one definition of metrics and window features.

Metric names come from the active metric catalogue (common.catalogue). The simulator emits
these metrics, the Flink SQL aggregates them into these features, training fits on them in this
order, and the PostgreSQL schema stores them in these columns. Everything that names a metric
or a feature reads it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.catalogue import Metric
from common.catalogue import load as load_catalogue
from common.settings import Settings

# The metrics of the active catalogue (ANOMALY_CATALOGUE, default network): one deployment
# scores one catalogue's metrics.
CATALOGUE = load_catalogue(Settings.from_env().catalogue)
METRICS: tuple[Metric, ...] = CATALOGUE.metrics
METRIC_NAMES: tuple[str, ...] = CATALOGUE.metric_names


@dataclass(frozen=True)
class Aggregate:
    suffix: str
    # Flink SQL expression over one metric column; {col} is replaced by the quoted column name.
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


@dataclass(frozen=True)
class Feature:
    name: str
    metric: str
    aggregate: Aggregate

    @property
    def flink_expression(self) -> str:
        return self.aggregate.flink_sql.format(col=f"`{self.metric}`")


FEATURES: tuple[Feature, ...] = tuple(
    Feature(f"{metric}_{agg.suffix}", metric, agg) for metric in METRIC_NAMES for agg in AGGREGATES
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
# The model's input columns, in order. Stored in each model card and checked when it loads.
MODEL_FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.aggregate.modelled)

# PostgreSQL column types for Flink SQL types used above.
PG_TYPES = {"DOUBLE": "double precision", "BIGINT": "bigint"}
