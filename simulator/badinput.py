"""Bad input on demand: corrupt a chosen share of events, each kind at its own rate.

Every corrupted event is also returned as a ground-truth record (kind, device, times), so that
tests can check that each one reached a dead letter, a late-event table or the right window.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

# What each kind does to one valid event.
KINDS = {
    "malformed": "cut the JSON text in half (not parseable)",
    "missing_field": "drop device_id, ts_ms or a metric",
    "wrong_type": "a metric or ts_ms as a non-numeric string",
    "nan_inf": "a metric as NaN, Infinity or -Infinity (non-standard JSON tokens)",
    "absurd": "a metric far outside its physical range (e.g. -1e9)",
    "duplicate": "send the same event twice",
    "out_of_order": "event time moved back by less than the allowed lateness",
    "late": "event time moved back beyond the allowed lateness and the window",
    "unknown_device": "a device id that is not in the fleet",
    "oversized": "a 200 KiB padding field",
}


@dataclass(frozen=True)
class BadInputConfig:
    rates: dict[str, float]
    # Allowed out-of-orderness of the job (its watermark delay) and its window, in ms.
    lateness_ms: int = 5_000
    window_ms: int = 10_000

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown bad-input kinds {sorted(unknown)}; known: {sorted(KINDS)}")
        if any(not 0 <= r <= 1 for r in self.rates.values()) or sum(self.rates.values()) > 1:
            raise ValueError(f"bad-input rates must be within [0, 1] and sum to <= 1: {self.rates}")

    @property
    def total_rate(self) -> float:
        return sum(self.rates.values())


def parse_rates(specs: list[str]) -> dict[str, float]:
    """``["malformed=0.001", "late=0.01"]`` -> ``{"malformed": 0.001, "late": 0.01}``."""
    rates: dict[str, float] = {}
    for spec in specs:
        kind, sep, value = spec.partition("=")
        try:
            rates[kind.strip()] = float(value) if sep else float("nan")
        except ValueError:
            raise ValueError(f"--bad {spec!r}: expected KIND=RATE, e.g. malformed=0.001") from None
        if rates[kind.strip()] != rates[kind.strip()]:
            raise ValueError(f"--bad {spec!r}: expected KIND=RATE, e.g. malformed=0.001")
    return rates


class BadInput:
    def __init__(self, config: BadInputConfig, metric_names: tuple[str, ...], seed: int):
        self.config = config
        self.metrics = metric_names
        self.rng = np.random.default_rng(seed)
        self.kinds = list(config.rates)
        total = config.total_rate
        self.p = np.array([config.rates[k] / total for k in self.kinds]) if total else None
        self.counts = dict.fromkeys(KINDS, 0)

    def apply(self, messages: list[tuple[bytes, bytes]]) -> tuple[list, list[dict]]:
        """Corrupt some of ``messages`` in place of the originals; returns (messages, records)."""
        if not self.config.total_rate or not messages:
            return messages, []
        chosen = np.flatnonzero(self.rng.random(len(messages)) < self.config.total_rate)
        if len(chosen) == 0:
            return messages, []
        kinds = self.rng.choice(len(self.kinds), size=len(chosen), p=self.p)
        out = list(messages)
        records = []
        extra: list[tuple[int, tuple[bytes, bytes]]] = []
        for i, k in zip(chosen.tolist(), kinds.tolist(), strict=True):
            kind = self.kinds[k]
            key, value = out[i]
            event = json.loads(value)
            record = {
                "type": "bad_input",
                "kind": kind,
                "device_id": event["device_id"],
                "ts_ms": event["ts_ms"],
            }
            new_key, new_value = key, value
            if kind == "malformed":
                new_value = value[: len(value) // 2]
            elif kind == "missing_field":
                field = self.rng.choice(["device_id", "ts_ms", *self.metrics])
                del event[str(field)]
                record["field"] = str(field)
                new_value = json.dumps(event).encode()
            elif kind == "wrong_type":
                field = str(self.rng.choice(["ts_ms", *self.metrics]))
                event[field] = "n/a"
                record["field"] = field
                new_value = json.dumps(event).encode()
            elif kind == "nan_inf":
                field = str(self.rng.choice(self.metrics))
                event[field] = float(self.rng.choice([np.nan, np.inf, -np.inf]))
                record["field"] = field
                new_value = json.dumps(event, allow_nan=True).encode()
            elif kind == "absurd":
                field = str(self.rng.choice(self.metrics))
                event[field] = -1e9
                record["field"] = field
                new_value = json.dumps(event).encode()
            elif kind == "duplicate":
                extra.append((i, (key, value)))
            elif kind == "out_of_order":
                shift = int(self.rng.integers(1, max(2, self.config.lateness_ms)))
                event["ts_ms"] -= shift
                record["ts_ms"], record["original_ts_ms"] = event["ts_ms"], event["ts_ms"] + shift
                new_value = json.dumps(event).encode()
            elif kind == "late":
                shift = self.config.lateness_ms + self.config.window_ms + 60_000
                event["ts_ms"] -= shift
                record["ts_ms"], record["original_ts_ms"] = event["ts_ms"], event["ts_ms"] + shift
                new_value = json.dumps(event).encode()
            elif kind == "unknown_device":
                event["device_id"] = f"unknown-{int(self.rng.integers(1_000_000)):06d}"
                record["device_id"] = event["device_id"]
                new_key, new_value = event["device_id"].encode(), json.dumps(event).encode()
            elif kind == "oversized":
                event["padding"] = "x" * (200 * 1024)
                new_value = json.dumps(event).encode()
            out[i] = (new_key, new_value)
            self.counts[kind] += 1
            records.append(record)
        for offset, (i, message) in enumerate(extra):
            out.insert(i + 1 + offset, message)
        return out, records
