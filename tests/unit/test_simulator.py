from __future__ import annotations

import json

import pytest

from common.features import METRIC_NAMES
from simulator.__main__ import main as simulator_main
from simulator.generator import SCENARIOS, SimulatorConfig, TelemetryGenerator


def events_of(config: SimulatorConfig, ticks: int) -> list[dict]:
    return [e for tick in TelemetryGenerator(config).events(1_700_000_000_000, ticks) for e in tick]


def test_same_seed_same_events_other_seed_other_events():
    cfg = SimulatorConfig(devices=20, seed=5, anomaly_rate=0.05)
    assert events_of(cfg, 50) == events_of(cfg, 50)
    assert events_of(cfg, 50) != events_of(SimulatorConfig(devices=20, seed=6), 50)


def test_events_carry_all_metrics_in_range_and_ground_truth():
    events = events_of(SimulatorConfig(devices=30, seed=1, anomaly_rate=0.05), 100)
    assert len(events) == 3000
    assert {e["device_id"] for e in events} == {f"dev-{i:05d}" for i in range(30)}
    for e in events:
        assert set(METRIC_NAMES) <= e.keys()
        assert 0 <= e["cpu_utilization"] <= 100 and 0 <= e["packet_loss_pct"] <= 100
        assert e["latency_ms"] > 0 and e["throughput_mbps"] >= 0
        assert e["is_anomaly"] == (e["scenario"] is not None)
    anomalous = [e for e in events if e["is_anomaly"]]
    assert anomalous, "an anomaly rate of 5% over 3000 samples must inject episodes"
    assert {e["scenario"] for e in anomalous} <= {s.name for s in SCENARIOS}


def test_overload_scenario_pushes_cpu_up():
    events = events_of(SimulatorConfig(devices=50, seed=2, anomaly_rate=0.05), 200)
    overload = [e["cpu_utilization"] for e in events if e["scenario"] == "overload"]
    normal = [e["cpu_utilization"] for e in events if not e["is_anomaly"]]
    assert min(overload) > max(normal)


def test_event_time_advances_by_interval():
    events = events_of(SimulatorConfig(devices=2, interval_ms=250), 4)
    assert [e["ts_ms"] - 1_700_000_000_000 for e in events[::2]] == [0, 250, 500, 750]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"devices": 0}, "devices"),
        ({"interval_ms": 0}, "interval_ms"),
        ({"anomaly_rate": 2.0}, "anomaly_rate"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimulatorConfig(**kwargs)


def test_cli_writes_a_jsonl_dump(tmp_path, capsys):
    path = tmp_path / "dump.jsonl"
    rc = simulator_main(
        [
            "--devices",
            "3",
            "--duration-s",
            "5",
            "--output",
            "file",
            "--path",
            str(path),
            "--start-ms",
            "0",
        ]
    )
    assert rc == 0
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 15 and lines[0]["ts_ms"] == 0 and lines[-1]["ts_ms"] == 4000
    assert '"events": 15' in capsys.readouterr().err
