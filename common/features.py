"""The one definition of metrics and window features.

The simulator emits these metrics, the Flink SQL aggregates them into these features, training
fits on them in this order, and the PostgreSQL schema stores them in these columns. Everything
that names a metric or a feature reads it from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    description: str


# Network / server telemetry, one JSON event per device per sample.
METRICS: tuple[Metric, ...] = (
    Metric("cpu_utilization", "%", "CPU busy share of the device, 0-100"),
    Metric("latency_ms", "ms", "round-trip latency to the device's upstream"),
    Metric("throughput_mbps", "Mbit/s", "traffic through the device's uplink"),
    Metric("packet_loss_pct", "%", "share of packets lost, 0-100"),
)
METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)


@dataclass(frozen=True)
class Aggregate:
    suffix: str
    # Flink SQL expression over one metric column; {col} is replaced by the quoted column name.
    flink_sql: str
    sql_type: str
    # Whether the model sees this aggregate. Counts depend on the sending rate rather than
    # on the device's behaviour, so they are stored for analysis but not scored.
    modelled: bool = True


# Population standard deviation: a window with one sample has spread 0, not NULL.
AGGREGATES: tuple[Aggregate, ...] = (
    Aggregate("mean", "AVG({col})", "DOUBLE"),
    Aggregate("std", "STDDEV_POP({col})", "DOUBLE"),
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
