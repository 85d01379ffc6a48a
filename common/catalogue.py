"""Metric catalogues: which metrics a fleet emits (the product's schema), its threshold rules,
and, optionally, how the simulator generates such a fleet.

A catalogue is one YAML file (catalogues/<name>.yaml, or any path): `name`, `metrics` (each a
lower-case name, with optional unit, description, plausible min/max, the CSV column it comes
from), optional `rules`, and an optional `simulation` section (device `kinds` and failure
`scenarios`) that only the simulator reads. The Flink job, training and evaluation take their
metric names from it through common.features; `python -m training.onboard` writes one from a
folder of CSVs. Loading validates everything and names the file and field at fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path

import yaml

from common.settings import REPO_ROOT, SettingsError

CATALOGUE_DIR = REPO_ROOT / "catalogues"
SCENARIO_TYPES = (
    "spike",
    "dip",
    "level_shift",
    "drift",
    "stuck",
    "missing",
    "composite",
    "cascade",
)
# Scenarios whose episode length needs a metric to act on.
_NEEDS_METRICS = ("spike", "dip", "level_shift", "drift", "stuck")
# The agents' inputs a catalogue can name metrics for (README, Agents), beside the flat event.
AGENT_INPUTS = ("collectd", "telegraf", "otlp")
INPUTS = ("flat", *AGENT_INPUTS)
_AGENT_NAME = re.compile(r"([^{}\s]+)(?:\{([^{}]*)\})?")


class CatalogueError(SettingsError):
    pass


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    description: str
    min: float | None = None
    max: float | None = None
    decimals: int = 4
    # Column holding this metric in a replayed dataset, if it differs from the name.
    source_column: str | None = None
    # A running total (bytes sent, packets, CPU time): the job scores its rate per second
    # (jvm/ CounterRates). Agents that say so themselves (collectd's derive, OTLP's monotonic
    # cumulative sums) must agree, or their points are dead letters that say so.
    counter: bool = False
    # What each agent input calls this metric (AGENT_INPUTS): a name, and for Telegraf and
    # OpenTelemetry optionally the tags a point must carry, `cpu.usage_user{cpu=cpu-total}`.
    agents: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = ()


@dataclass(frozen=True)
class MetricModel:
    """How one metric of one kind behaves: ranges the per-device parameters are drawn from."""

    mean: tuple[float, float]
    stddev: tuple[float, float]
    window: int = 1
    recalibration: float = 0.3
    # Seasons: the level rises and falls over the day by this share of the baseline (peak in
    # the afternoon, UTC), and on weekends and holidays is this multiple of the weekday level.
    daily: tuple[float, float] = (0.0, 0.0)
    weekend: tuple[float, float] = (1.0, 1.0)
    # Benign level shifts (a migration, a new release, a re-balanced load): this many per
    # device-day on average, each multiplying the level by a factor from the range. Normal
    # behaviour: not labelled anomalous.
    shifts_per_day: float = 0.0
    shift_factor: tuple[float, float] = (1.0, 1.0)

    @property
    def seasonal(self) -> bool:
        return self.daily != (0.0, 0.0) or self.weekend != (1.0, 1.0)


@dataclass(frozen=True)
class Kind:
    name: str
    share: float
    metrics: dict[str, MetricModel]
    links: int = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    type: str
    weight: float
    samples: tuple[int, int]
    metrics: tuple[str, ...] = ()
    magnitude: float = 0.0
    kinds: tuple[str, ...] = ()
    effects: dict[str, tuple[float, float]] = field(default_factory=dict)
    neighbour_effects: dict[str, tuple[float, float]] = field(default_factory=dict)
    failure_share: float = 0.0
    failure_effects: dict[str, tuple[float, float]] = field(default_factory=dict)


# Window aggregates a rule can test (the feature suffixes of common/features.py).
RULE_AGGREGATES = ("mean", "std", "min", "max", "count")


# Where a rule's threshold comes from: a number in the catalogue, the device's own limit (the
# devices table), or the device's limit for the time of day the window falls in (the segment
# limits table: one row per device and segment of the day).
RULE_REFERENCES = {"reference": "device", "segment_reference": "segment"}


@dataclass(frozen=True)
class Rule:
    """A threshold rule beside the model: fires on a window when the metric's aggregate is
    above (or below) a fixed value, the device's own limit from the devices table
    (``reference == "device"``), or the device's limit for the window's time-of-day segment
    (``reference == "segment"``); a limit is column <metric>_high for above, <metric>_low
    for below."""

    name: str
    metric: str
    aggregate: str
    direction: str  # "above" or "below"
    threshold: float | None
    severity: float
    # None (a fixed threshold), "device" or "segment".
    reference: str | None = None

    @property
    def feature(self) -> str:
        return f"{self.metric}_{self.aggregate}"

    @property
    def limit_column(self) -> str:
        return f"{self.metric}_{'high' if self.direction == 'above' else 'low'}"


@dataclass(frozen=True)
class Catalogue:
    name: str
    description: str
    interval_ms: int
    metrics: tuple[Metric, ...]
    kinds: tuple[Kind, ...]
    scenarios: tuple[Scenario, ...]
    path: Path
    rules: tuple[Rule, ...] = ()
    # Days (UTC dates) the simulator treats as weekend days.
    holidays: tuple[date, ...] = ()

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    def agent_mapping(self, agent: str) -> dict:
        """What the telemetry-json format reads for an agent input (jvm/ AgentMapping):
        ``names``, [name, {tag: value}, metric] per metric the input names, and ``counters``."""
        return {
            "names": [
                [name, dict(tags), m.name]
                for m in self.metrics
                for input_, name, tags in m.agents
                if input_ == agent
            ],
            "counters": [m.name for m in self.metrics if m.counter],
        }

    @property
    def counters(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics if m.counter)

    @property
    def source_columns(self) -> dict[str, str]:
        """CSV column -> metric name, for reading datasets of this catalogue's metrics."""
        return {m.source_column or m.name: m.name for m in self.metrics}

    def require_simulation(self) -> None:
        if not self.kinds:
            raise CatalogueError(
                f"catalogue {self.name!r} ({self.path}) has no `simulation` section (device "
                "kinds): it describes real metrics only, so there is nothing to simulate; "
                "replay your data with `python -m simulator.replay` instead"
            )

    def scenario(self, name: str) -> Scenario:
        for s in self.scenarios:
            if s.name == name:
                return s
        raise CatalogueError(
            f"catalogue {self.name!r} has no scenario {name!r}; it has "
            f"{[s.name for s in self.scenarios]}"
        )


def catalogue_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate
    return CATALOGUE_DIR / f"{name_or_path}.yaml"


def available() -> list[str]:
    return sorted(p.stem for p in CATALOGUE_DIR.glob("*.yaml"))


@cache
def load(name_or_path: str | Path) -> Catalogue:
    path = catalogue_path(name_or_path)
    if not path.is_file():
        raise CatalogueError(
            f"no catalogue {str(name_or_path)!r} ({path} does not exist); "
            f"shipped catalogues: {', '.join(available())}"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CatalogueError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return _parse(raw, path)
    except CatalogueError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogueError(f"{path}: {exc!r}") from exc


def _agent_names(raw: object, where: str):
    """`agents: {collectd: load.load.shortterm, telegraf: "cpu.usage_user{cpu=cpu-total}"}`
    as (input, name, ((tag, value), ...)) triples."""
    if not isinstance(raw, dict):
        raise CatalogueError(f"{where}: `agents` must map an input ({AGENT_INPUTS}) to a name")
    names = []
    for agent, spec in raw.items():
        if agent not in AGENT_INPUTS:
            raise CatalogueError(f"{where}: agents.{agent}: no such input; inputs: {AGENT_INPUTS}")
        match = _AGENT_NAME.fullmatch(str(spec).strip())
        if match is None:
            raise CatalogueError(
                f"{where}: agents.{agent}: {spec!r} is not `name` or `name{{tag=value,...}}`"
            )
        tags = []
        for pair in filter(None, (p.strip() for p in (match.group(2) or "").split(","))):
            tag, sep, value = pair.partition("=")
            if not sep or not tag.strip():
                raise CatalogueError(f"{where}: agents.{agent}: {pair!r} is not tag=value")
            tags.append((tag.strip(), value.strip()))
        if tags and agent == "collectd":
            raise CatalogueError(
                f"{where}: agents.collectd: collectd names carry no tags "
                "(plugin-instance.type-instance.dsname)"
            )
        names.append((agent, match.group(1), tuple(sorted(tags))))
    return tuple(names)


def _pair(value: object, where: str) -> tuple[float, float]:
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise CatalogueError(f"{where}: expected [low, high], got {value!r}")
    low, high = float(value[0]), float(value[1])
    return low, high


def _parse(raw: dict, path: Path) -> Catalogue:
    if not isinstance(raw, dict):
        raise CatalogueError(f"{path}: expected a mapping at the top level")
    for key in ("name", "metrics"):
        if key not in raw:
            raise CatalogueError(f"{path}: missing required field {key!r}")
    simulation = raw.get("simulation") or {}
    if not isinstance(simulation, dict):
        raise CatalogueError(f"{path}: `simulation` must be a mapping (kinds, scenarios)")
    if "kinds" in raw or "scenarios" in raw:
        raise CatalogueError(
            f"{path}: `kinds` and `scenarios` belong in the `simulation` section now (indent "
            "them under a line `simulation:`)"
        )
    metrics = tuple(
        Metric(
            name=str(m["name"]),
            unit=str(m.get("unit", "")),
            description=str(m.get("description", "")),
            min=None if m.get("min") is None else float(m["min"]),
            max=None if m.get("max") is None else float(m["max"]),
            decimals=int(m.get("decimals", 4)),
            source_column=m.get("source_column"),
            counter=bool(m.get("counter", False)),
            agents=_agent_names(m.get("agents") or {}, f"{path}: metric {m.get('name')}"),
        )
        for m in raw["metrics"]
    )
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise CatalogueError(f"{path}: metric names repeat: {names}")
    for n in names:
        if not n.isidentifier() or n.lower() != n:
            raise CatalogueError(f"{path}: metric name {n!r} must be a lower-case identifier")

    kinds = []
    for kind_name, k in (simulation.get("kinds") or {}).items():
        where = f"{path}: kinds.{kind_name}"
        models = {}
        for metric in names:
            if metric not in k.get("metrics", {}):
                raise CatalogueError(f"{where}: no behaviour given for metric {metric!r}")
            m = k["metrics"][metric]
            models[metric] = MetricModel(
                mean=_pair(m["mean"], f"{where}.metrics.{metric}.mean"),
                stddev=_pair(m["stddev"], f"{where}.metrics.{metric}.stddev"),
                window=int(m.get("window", 1)),
                recalibration=float(m.get("recalibration", 0.3)),
                daily=_pair(m.get("daily", [0, 0]), f"{where}.metrics.{metric}.daily"),
                weekend=_pair(m.get("weekend", [1, 1]), f"{where}.metrics.{metric}.weekend"),
                shifts_per_day=float(m.get("shifts_per_day", 0.0)),
                shift_factor=_pair(
                    m.get("shift_factor", [1, 1]), f"{where}.metrics.{metric}.shift_factor"
                ),
            )
            model = models[metric]
            if model.window < 1 or not 0 <= model.recalibration <= 1:
                raise CatalogueError(
                    f"{where}.metrics.{metric}: window must be >= 1, recalibration in [0, 1]"
                )
            if not (0 <= model.daily[0] <= model.daily[1] < 1):
                raise CatalogueError(f"{where}.metrics.{metric}.daily: need 0 <= low <= high < 1")
            if not (0 < model.weekend[0] <= model.weekend[1]):
                raise CatalogueError(f"{where}.metrics.{metric}.weekend: need 0 < low <= high")
            if model.shifts_per_day < 0 or not 0 < model.shift_factor[0] <= model.shift_factor[1]:
                raise CatalogueError(
                    f"{where}.metrics.{metric}: shifts_per_day must be >= 0 and shift_factor "
                    "0 < low <= high"
                )
        unknown = set(k.get("metrics", {})) - set(names)
        if unknown:
            raise CatalogueError(f"{where}: metrics {sorted(unknown)} are not in `metrics`")
        kinds.append(Kind(kind_name, float(k.get("share", 1.0)), models, int(k.get("links", 0))))
    if kinds and sum(k.share for k in kinds) <= 0:
        raise CatalogueError(f"{path}: kinds need positive shares")

    scenarios = []
    for sc_name, s in (simulation.get("scenarios") or {}).items():
        where = f"{path}: scenarios.{sc_name}"
        sc_type = s.get("type", sc_name)
        if sc_type not in SCENARIO_TYPES:
            raise CatalogueError(f"{where}: type {sc_type!r} is not one of {SCENARIO_TYPES}")
        low, high = _pair(s.get("samples", [1, 1]), f"{where}.samples")

        def effects(key: str, s: dict = s, where: str = where) -> dict[str, tuple[float, float]]:
            out = {m: _pair(v, f"{where}.{key}.{m}") for m, v in (s.get(key) or {}).items()}
            bad = set(out) - set(names)
            if bad:
                raise CatalogueError(f"{where}.{key}: unknown metrics {sorted(bad)}")
            return out

        scenario = Scenario(
            name=sc_name,
            type=sc_type,
            weight=float(s.get("weight", 1.0)),
            samples=(int(low), int(high)),
            metrics=tuple(s.get("metrics", ())),
            magnitude=float(s.get("magnitude", 0.0)),
            kinds=tuple(s.get("kinds", ())),
            effects=effects("effects"),
            neighbour_effects=effects("neighbour_effects"),
            failure_share=float(s.get("failure_share", 0.0)),
            failure_effects=effects("failure_effects"),
        )
        if not 1 <= scenario.samples[0] <= scenario.samples[1]:
            raise CatalogueError(f"{where}.samples: need 1 <= low <= high")
        if sc_type in _NEEDS_METRICS and not scenario.metrics:
            raise CatalogueError(f"{where}: a {sc_type} scenario needs `metrics`")
        if set(scenario.metrics) - set(names):
            raise CatalogueError(f"{where}.metrics: unknown {set(scenario.metrics) - set(names)}")
        if set(scenario.kinds) - {k.name for k in kinds}:
            raise CatalogueError(f"{where}.kinds: unknown {set(scenario.kinds)}")
        scenarios.append(scenario)

    return Catalogue(
        name=str(raw["name"]),
        description=str(raw.get("description", "")),
        interval_ms=int(raw.get("interval_ms", 1000)),
        metrics=metrics,
        kinds=tuple(kinds),
        scenarios=tuple(scenarios),
        path=path,
        rules=tuple(_rules(raw.get("rules") or {}, names, path)),
        holidays=_holidays(simulation.get("holidays") or [], path),
    )


def _holidays(raw: list, path: Path) -> tuple[date, ...]:
    out = []
    for value in raw:
        try:
            out.append(value if isinstance(value, date) else date.fromisoformat(str(value)))
        except ValueError as exc:
            raise CatalogueError(f"{path}: holidays: {value!r} is not a date (YYYY-MM-DD)") from exc
    return tuple(out)


def _rules(raw: dict, metric_names: list[str], path: Path) -> list[Rule]:
    rules = []
    for name, r in raw.items():
        where = f"{path}: rules.{name}"
        if not str(name).isidentifier() or str(name).lower() != str(name):
            raise CatalogueError(f"{where}: a rule name must be a lower-case identifier")
        if r.get("metric") not in metric_names:
            raise CatalogueError(f"{where}: metric {r.get('metric')!r} is not in `metrics`")
        aggregate = r.get("aggregate", "mean")
        if aggregate not in RULE_AGGREGATES:
            raise CatalogueError(
                f"{where}: aggregate {aggregate!r} is not one of {RULE_AGGREGATES}"
            )
        directions = [d for d in ("above", "below") if d in r]
        if len(directions) != 1:
            raise CatalogueError(f"{where}: give exactly one of `above` or `below`")
        value = r[directions[0]]
        reference = RULE_REFERENCES.get(value) if isinstance(value, str) else None
        if reference is not None:
            threshold = None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            threshold = float(value)
        else:
            raise CatalogueError(
                f"{where}: {directions[0]} must be a number, 'reference' (the device's limit) "
                "or 'segment_reference' (the device's limit for the window's time of day)"
            )
        severity = float(r.get("severity", 75))
        if not 0 < severity <= 100:
            raise CatalogueError(f"{where}: severity must be in (0, 100]")
        rules.append(
            Rule(str(name), r["metric"], aggregate, directions[0], threshold, severity, reference)
        )
    return rules
