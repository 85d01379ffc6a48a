"""Deterministic, labelled telemetry for a fleet described by a metric catalogue.

Every device has a kind (router, server, sensor, ...) and its own baseline and noise per metric.
Values follow a mean-reverting random walk over the device's last few values, towards a level
that may follow daily and weekly seasons (weekends and holidays apart) and shift now and then
for benign reasons (unlabelled, recorded as `level_change` records). Failure episodes
(spikes, dips, level shifts, drifts, stuck values, missing data, composite faults, cascades that
spread to a router's neighbours) start at random and are labelled on every event they touch
and recorded as ground-truth episodes.

The generator is pure: the same config gives the same events, whatever the sink or the number of
producer processes (each process computes the whole fleet and sends only its shard).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import numpy as np

from common.catalogue import Catalogue, Scenario
from common.catalogue import load as load_catalogue


@dataclass(frozen=True)
class SimulatorConfig:
    catalogue: str = "network"
    devices: int = 50
    # Each device sends one event per interval; None: the catalogue's interval.
    interval_ms: int | None = None
    # Chance per device and sample that a failure episode starts.
    anomaly_rate: float = 0.002
    # Only these scenarios (names in the catalogue); None: all of them.
    scenarios: tuple[str, ...] | None = None
    # Noise and failure episodes.
    seed: int = 42
    # The fleet itself (kinds, baselines, links): training history and the live stream share a
    # fleet while differing in seed.
    fleet_seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= 1_000_000:
            raise ValueError(f"devices must be between 1 and 1,000,000, got {self.devices}")
        if self.interval_ms is not None and self.interval_ms < 1:
            raise ValueError(f"interval_ms must be at least 1, got {self.interval_ms}")
        if not 0.0 <= self.anomaly_rate <= 1.0:
            raise ValueError(f"anomaly_rate must be within [0, 1], got {self.anomaly_rate}")


DAY_MS = 86_400_000
EPOCH_DAY = date(1970, 1, 1)


def device_id(index: int) -> str:
    return f"dev-{index:05d}"


class TelemetryGenerator:
    """Yields the fleet's values one tick (one sample per device) at a time."""

    def __init__(self, config: SimulatorConfig, catalogue: Catalogue | None = None):
        self.config = config
        self.catalogue = cat = catalogue or load_catalogue(config.catalogue)
        cat.require_simulation()
        self.interval_ms = config.interval_ms or cat.interval_ms
        self.metrics = cat.metrics
        self.metric_index = {m.name: i for i, m in enumerate(cat.metrics)}
        n, n_metrics = config.devices, len(cat.metrics)
        self.rng = np.random.default_rng(config.seed)
        fleet = np.random.default_rng(config.fleet_seed)

        # --- the fleet: kinds, per-device parameters, links ---------------------------------
        shares = np.array([k.share for k in cat.kinds], dtype=float)
        self.kind = fleet.choice(len(cat.kinds), size=n, p=shares / shares.sum())
        self.device_ids = [device_id(i) for i in range(n)]
        shape = (n_metrics, n)
        self.baseline, self.stddev = np.zeros(shape), np.zeros(shape)
        self.window = np.ones(shape, dtype=np.int64)
        self.recal = np.zeros(shape)
        for k, kind in enumerate(cat.kinds):
            members = self.kind == k
            count = int(members.sum())
            for j, metric in enumerate(cat.metrics):
                model = kind.metrics[metric.name]
                self.baseline[j, members] = fleet.uniform(*model.mean, count)
                self.stddev[j, members] = fleet.uniform(*model.stddev, count)
                self.window[j, members] = model.window
                self.recal[j, members] = model.recalibration
        # Noise per step such that window 1 has a long-run spread of `stddev` (an AR(1) with
        # pull r has variance step^2 / (r (2 - r))); a pure walk (r = 0) steps by `stddev`.
        r = self.recal
        self.step = self.stddev * np.where(r > 0, np.sqrt(r * (2 - r)), 1.0)
        self.neighbours: dict[int, np.ndarray] = {}
        for k, kind in enumerate(cat.kinds):
            if kind.links and n > 1:
                for d in np.flatnonzero(self.kind == k):
                    # Distinct devices other than d: draw from n - 1 slots, skip over d.
                    picks = fleet.choice(n - 1, size=min(kind.links, n - 1), replace=False)
                    self.neighbours[int(d)] = picks + (picks >= d)
        self._seasons_and_shifts(config, cat, shape)
        self.lo = np.array([-np.inf if m.min is None else m.min for m in cat.metrics])[:, None]
        self.hi = np.array([np.inf if m.max is None else m.max for m in cat.metrics])[:, None]

        # --- walk state: the last `max window` values of every metric of every device -----------
        self.max_window = int(self.window.max())
        self.ring = np.repeat(self.baseline[None, :, :], self.max_window, axis=0)
        self.ring_pos = 0

        # --- scenarios -------------------------------------------------------------------------
        names = config.scenarios
        self.scenarios: tuple[Scenario, ...] = (
            cat.scenarios if names is None else tuple(cat.scenario(s) for s in names)
        )
        self.ep_scenario = np.full(n, -1, dtype=np.int64)  # index into self.scenarios
        self.ep_len = np.zeros(n, dtype=np.int64)
        self.ep_pos = np.zeros(n, dtype=np.int64)
        self.ep_metric = np.zeros(n, dtype=np.int64)
        self.ep_sign = np.ones(n)
        self.ep_value = np.zeros(n)
        # Scenario names as the JSON value of `scenario`, precomputed per index (-1 -> null).
        self.scenario_json = ["null", *(json.dumps(s.name) for s in self.scenarios)]

    def _seasons_and_shifts(self, config: SimulatorConfig, cat: Catalogue, shape) -> None:
        """Per-device seasons and benign level shifts of the kinds that have them, drawn from
        their own random streams (a catalogue without them gives exactly the same values)."""
        models = [(k, j, kind.metrics[m.name]) for k, kind in enumerate(cat.kinds)
                  for j, m in enumerate(cat.metrics)]  # fmt: skip
        self.seasonal = any(model.seasonal for _, _, model in models)
        self.shifting = any(model.shifts_per_day > 0 for _, _, model in models)
        if not (self.seasonal or self.shifting):
            return
        fleet = np.random.default_rng([config.fleet_seed, 1])
        self.daily_amp, self.weekend = np.zeros(shape), np.ones(shape)
        self.shift_rate, self.shift_lo, self.shift_hi = (np.zeros(shape) for _ in range(3))
        for k, j, model in models:
            members = self.kind == k
            count = int(members.sum())
            self.daily_amp[j, members] = fleet.uniform(*model.daily, count)
            self.weekend[j, members] = fleet.uniform(*model.weekend, count)
            self.shift_rate[j, members] = model.shifts_per_day
            self.shift_lo[j, members], self.shift_hi[j, members] = model.shift_factor
        # The daily peak: early to mid afternoon (UTC), per device and metric.
        self.peak = fleet.uniform(0.5, 0.65, shape)
        self.level = np.ones(shape)
        self.shift_rng = np.random.default_rng([config.seed, 1])
        self.off_days = {(d - EPOCH_DAY).days for d in cat.holidays}

    def _target(self, ts_ms: int) -> np.ndarray:
        """The level each value is pulled towards at ``ts_ms``: the baseline, through the
        seasons and the benign level shifts so far."""
        if not (self.seasonal or self.shifting):
            return self.baseline
        day, time_of_day = divmod(ts_ms, DAY_MS)
        daily = 1.0 + self.daily_amp * np.cos(2 * np.pi * (time_of_day / DAY_MS - self.peak))
        off = (day + 3) % 7 >= 5 or day in self.off_days  # 1970-01-01 was a Thursday
        return self.baseline * self.level * daily * (self.weekend if off else 1.0)

    def _shift_levels(self, ts_ms: int) -> list[dict]:
        """Start the benign level shifts due now; returns their (unlabelled) records."""
        if not self.shifting:
            return []
        due = self.shift_rng.random(self.level.shape) < self.shift_rate * self.interval_ms / DAY_MS
        records = []
        for j, d in zip(*np.nonzero(due), strict=True):
            factor = float(self.shift_rng.uniform(self.shift_lo[j, d], self.shift_hi[j, d]))
            self.level[j, d] *= factor
            records.append(
                {
                    "type": "level_change",
                    "device_id": self.device_ids[d],
                    "metric": self.metrics[j].name,
                    "ts_ms": ts_ms,
                    "factor": round(factor, 4),
                }
            )
        return records

    # ------------------------------------------------------------------------------------------
    def _walk(self, target: np.ndarray) -> np.ndarray:
        """Advance every metric of every device by one step towards ``target``; returns the
        normal values."""
        anchor = np.zeros_like(self.baseline)
        for k in range(self.max_window):
            sample = self.ring[(self.ring_pos - k) % self.max_window]
            anchor += np.where(k < self.window, sample, 0.0)
        anchor /= self.window
        shock = self.rng.standard_normal(self.baseline.shape)
        values = anchor + self.recal * (target - anchor) + self.step * shock
        self.ring_pos = (self.ring_pos + 1) % self.max_window
        self.ring[self.ring_pos] = values
        return values

    def _start_episodes(self, ts_ms: int, normal: np.ndarray) -> list[dict]:
        """Start new failure episodes; returns their ground-truth records."""
        if not self.scenarios or self.config.anomaly_rate <= 0:
            return []
        n = self.config.devices
        candidates = np.flatnonzero(
            (self.ep_scenario < 0) & (self.rng.random(n) < self.config.anomaly_rate)
        )
        records = []
        weights = np.array([s.weight for s in self.scenarios], dtype=float)
        for d in candidates:
            kind_name = self.catalogue.kinds[self.kind[d]].name
            allowed = np.array(
                [not s.kinds or kind_name in s.kinds for s in self.scenarios], dtype=bool
            )
            if not allowed.any():
                continue
            w = np.where(allowed, weights, 0.0)
            s_idx = int(self.rng.choice(len(self.scenarios), p=w / w.sum()))
            sc = self.scenarios[s_idx]
            length = int(self.rng.integers(sc.samples[0], sc.samples[1] + 1))
            self.ep_scenario[d], self.ep_len[d], self.ep_pos[d] = s_idx, length, 0
            record = {
                "type": "episode",
                "device_id": self.device_ids[d],
                "scenario": sc.name,
                "scenario_type": sc.type,
                "start_ts_ms": ts_ms,
                "end_ts_ms": ts_ms + (length - 1) * self.interval_ms,
            }
            if sc.metrics:
                m = self.metric_index[sc.metrics[int(self.rng.integers(len(sc.metrics)))]]
                self.ep_metric[d] = m
                self.ep_value[d] = normal[m, d]
                record["metric"] = self.metrics[m].name
            if sc.type in ("level_shift", "drift"):
                self.ep_sign[d] = 1.0 if self.rng.random() < 0.5 else -1.0
            else:
                self.ep_sign[d] = -1.0 if sc.type == "dip" else 1.0
            if sc.type == "cascade":
                record["neighbours"] = [self.device_ids[x] for x in self.neighbours.get(int(d), [])]
            records.append(record)
        return records

    @staticmethod
    def _effect(value: float, effect: tuple[float, float], progress: float = 1.0) -> float:
        mul, add = effect
        return value * (1.0 + (mul - 1.0) * progress) + add * progress

    def tick(self, ts_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        """One sample of every device.

        Returns (values[metric, device], present[device], label[device] as scenario index or
        -1, ground-truth records of the episodes that start now).
        """
        changes = self._shift_levels(ts_ms)
        normal = self._walk(self._target(ts_ms))
        records = self._start_episodes(ts_ms, normal) + changes
        values = normal.copy()
        present = np.ones(self.config.devices, dtype=bool)
        label = np.where(self.ep_scenario >= 0, self.ep_scenario, -1)
        for d in np.flatnonzero(self.ep_scenario >= 0):
            sc = self.scenarios[self.ep_scenario[d]]
            m = self.ep_metric[d]
            pos, length = self.ep_pos[d], self.ep_len[d]
            sd = self.stddev[m, d]
            if sc.type in ("spike", "dip", "level_shift"):
                values[m, d] += self.ep_sign[d] * sc.magnitude * sd
            elif sc.type == "drift":
                values[m, d] += self.ep_sign[d] * sc.magnitude * sd * (pos + 1) / length
            elif sc.type == "stuck":
                values[m, d] = self.ep_value[d]
            elif sc.type == "missing":
                present[d] = False
            elif sc.type == "composite":
                for name, eff in sc.effects.items():
                    j = self.metric_index[name]
                    values[j, d] = self._effect(values[j, d], eff)
            elif sc.type == "cascade":
                progress = (pos + 1) / length
                for name, eff in sc.effects.items():
                    j = self.metric_index[name]
                    values[j, d] = self._effect(values[j, d], eff, progress)
                for x in self.neighbours.get(int(d), []):
                    for name, eff in sc.neighbour_effects.items():
                        j = self.metric_index[name]
                        values[j, x] = self._effect(values[j, x], eff, progress)
                    if label[x] < 0:
                        label[x] = self.ep_scenario[d]
                if progress > 1.0 - sc.failure_share:
                    for name, eff in sc.failure_effects.items():
                        j = self.metric_index[name]
                        values[j, d] = self._effect(values[j, d], eff)
        np.clip(values, self.lo, self.hi, out=values)
        # Advance and end episodes.
        active = self.ep_scenario >= 0
        self.ep_pos[active] += 1
        ended = active & (self.ep_pos >= self.ep_len)
        self.ep_scenario[ended] = -1
        return values, present, label, records

    # --- encoding ------------------------------------------------------------------------------
    def json_template(self, ts_ms: int) -> str:
        fields = ",".join(f'"{m.name}":%s' for m in self.metrics)
        return (
            '{"device_id":"%s","ts_ms":'
            + str(ts_ms)
            + ","
            + fields
            + ',"is_anomaly":%s,"scenario":%s}'
        )

    def encode(
        self,
        ts_ms: int,
        values: np.ndarray,
        present: np.ndarray,
        label: np.ndarray,
        devices: np.ndarray | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """(key, JSON value) per present device (of ``devices``, default all), device order."""
        idx = np.arange(self.config.devices) if devices is None else devices
        idx = idx[present[idx]]
        columns = []
        for j, metric in enumerate(self.metrics):
            col = np.round(values[j, idx], metric.decimals)
            columns.append(col.astype(np.int64).tolist() if metric.decimals == 0 else col.tolist())
        labels = label[idx]
        flags = np.where(labels >= 0, "true", "false").tolist()
        scen = [self.scenario_json[x + 1] for x in labels.tolist()]
        ids = [self.device_ids[i] for i in idx.tolist()]
        fmt = self.json_template(ts_ms)
        return [
            (row[0].encode(), (fmt % row).encode())
            for row in zip(ids, *columns, flags, scen, strict=True)
        ]

    # --- convenience for tests and small dumps ---------------------------------------------------
    def events(self, start_ms: int, ticks: int | None = None) -> Iterator[list[dict]]:
        """Lists of event dicts, one list per tick, with event time ``start_ms + k * interval``."""
        k = 0
        while ticks is None or k < ticks:
            yield self.tick_events(start_ms + k * self.interval_ms)
            k += 1

    def tick_messages(self, ts_ms: int) -> list[tuple[bytes, bytes]]:
        """One tick of every device as (key, JSON value) messages, ready for Kafka."""
        values, present, label, _ = self.tick(ts_ms)
        return self.encode(ts_ms, values, present, label)

    def run_messages(self, start_ms: int, ticks: int) -> tuple[list, list[dict]]:
        """``ticks`` ticks from ``start_ms`` as Kafka messages, with the ground-truth records
        of the failure episodes that started in them."""
        messages, records = [], []
        for k in range(ticks):
            ts = start_ms + k * self.interval_ms
            values, present, label, started = self.tick(ts)
            records += started
            messages += self.encode(ts, values, present, label)
        return messages, records

    def tick_events(self, ts_ms: int) -> list[dict]:
        return [json.loads(v) for _, v in self.tick_messages(ts_ms)]
