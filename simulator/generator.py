"""Deterministic, labelled telemetry for a fleet of network devices.

Each device has its own baseline per metric and wanders around it (AR(1) noise). Anomaly
episodes start at random, last a few samples and push several metrics at once, the way a real
fault does. Every event carries its ground truth (``is_anomaly``, ``scenario``).

The generator is pure: the same config and seed give the same events, whatever the sink.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from common.features import METRIC_NAMES

# Per-metric: (low, high) of device baselines, relative noise, valid range.
_BASELINES = {
    "cpu_utilization": ((15.0, 55.0), 0.08, (0.0, 100.0)),
    "latency_ms": ((5.0, 40.0), 0.06, (0.1, None)),
    "throughput_mbps": ((100.0, 900.0), 0.05, (0.0, None)),
    "packet_loss_pct": ((0.0, 0.3), 0.30, (0.0, 100.0)),
}
# AR(1) coefficient: how much of the last deviation carries into the next sample.
_PHI = 0.7


@dataclass(frozen=True)
class Scenario:
    name: str
    # Per metric: (multiplier of the baseline, absolute offset).
    effects: dict[str, tuple[float, float]]


SCENARIOS: tuple[Scenario, ...] = (
    # CPU saturates, queues build: latency and loss climb.
    Scenario(
        "overload",
        {
            "cpu_utilization": (0.0, 97.0),
            "latency_ms": (6.0, 20.0),
            "packet_loss_pct": (1.0, 8.0),
        },
    ),
    # The uplink degrades: traffic collapses and most packets are lost.
    Scenario(
        "link_failure",
        {
            "throughput_mbps": (0.03, 0.0),
            "packet_loss_pct": (1.0, 45.0),
            "latency_ms": (3.0, 50.0),
        },
    ),
)


@dataclass(frozen=True)
class SimulatorConfig:
    devices: int = 50
    # Each device sends one event per interval.
    interval_ms: int = 1000
    # Chance per device and sample that an anomaly episode starts.
    anomaly_rate: float = 0.002
    anomaly_samples: int = 15
    # Noise and anomaly episodes.
    seed: int = 42
    # The fleet itself (each device's baselines): training history and the live stream share
    # a fleet while differing in seed.
    fleet_seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= 1_000_000:
            raise ValueError(f"devices must be between 1 and 1,000,000, got {self.devices}")
        if self.interval_ms < 1:
            raise ValueError(f"interval_ms must be at least 1, got {self.interval_ms}")
        if not 0.0 <= self.anomaly_rate <= 1.0:
            raise ValueError(f"anomaly_rate must be within [0, 1], got {self.anomaly_rate}")
        if self.anomaly_samples < 1:
            raise ValueError(f"anomaly_samples must be at least 1, got {self.anomaly_samples}")

    @property
    def events_per_second(self) -> float:
        return self.devices * 1000.0 / self.interval_ms


def device_id(index: int) -> str:
    return f"dev-{index:05d}"


class TelemetryGenerator:
    """Yields one tick (one event per device) at a time."""

    def __init__(self, config: SimulatorConfig):
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        fleet = np.random.default_rng(config.fleet_seed)
        n = config.devices
        self.device_ids = [device_id(i) for i in range(n)]
        self.baseline = {m: fleet.uniform(lo, hi, n) for m, ((lo, hi), _, _) in _BASELINES.items()}
        self.noise = {
            m: np.maximum(self.baseline[m] * rel, 0.01) for m, (_, rel, _) in _BASELINES.items()
        }
        self.deviation = {m: np.zeros(n) for m in METRIC_NAMES}
        self.remaining = np.zeros(n, dtype=np.int64)  # samples left in the current episode
        self.scenario = np.full(n, -1, dtype=np.int64)

    def tick_values(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Metric values of every device for the next sample, and the scenario index (-1: none)."""
        n = self.config.devices
        starts = (self.remaining == 0) & (self.rng.random(n) < self.config.anomaly_rate)
        self.scenario[starts] = self.rng.integers(0, len(SCENARIOS), int(starts.sum()))
        self.remaining[starts] = self.config.anomaly_samples
        active = self.remaining > 0
        scenario = np.where(active, self.scenario, -1)

        values: dict[str, np.ndarray] = {}
        for m in METRIC_NAMES:
            shock = self.rng.standard_normal(n) * np.sqrt(1 - _PHI**2)
            self.deviation[m] = _PHI * self.deviation[m] + shock
            v = self.baseline[m] + self.noise[m] * self.deviation[m]
            for k, sc in enumerate(SCENARIOS):
                if m in sc.effects:
                    mul, add = sc.effects[m]
                    hit = scenario == k
                    v[hit] = v[hit] * mul + add
            lo, hi = _BASELINES[m][2]
            values[m] = np.clip(v, lo, hi)
        self.remaining[active] -= 1
        return values, scenario

    def events(self, start_ms: int, ticks: int | None = None) -> Iterator[list[dict]]:
        """Lists of events, one list per tick, with event time ``start_ms + k * interval``."""
        k = 0
        while ticks is None or k < ticks:
            ts_ms = start_ms + k * self.config.interval_ms
            yield self.tick_events(ts_ms)
            k += 1

    def tick_events(self, ts_ms: int) -> list[dict]:
        values, scenario = self.tick_values()
        rounded = {m: np.round(values[m], 4).tolist() for m in METRIC_NAMES}
        sc_list = scenario.tolist()
        out = []
        for i, dev in enumerate(self.device_ids):
            event: dict = {"device_id": dev, "ts_ms": ts_ms}
            for m in METRIC_NAMES:
                event[m] = rounded[m][i]
            sc = sc_list[i]
            event["is_anomaly"] = sc >= 0
            event["scenario"] = SCENARIOS[sc].name if sc >= 0 else None
            out.append(event)
        return out
