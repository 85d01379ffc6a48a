from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from common.catalogue import CatalogueError, available
from common.catalogue import load as load_catalogue
from simulator.__main__ import Plan, parse_args, produce_shard
from simulator.__main__ import main as simulator_main
from simulator.badinput import KINDS, BadInput, BadInputConfig, parse_rates
from simulator.generator import SimulatorConfig, TelemetryGenerator

T0 = 1_700_000_000_000


def events_of(config: SimulatorConfig, ticks: int) -> list[dict]:
    return [e for tick in TelemetryGenerator(config).events(T0, ticks) for e in tick]


def by_device(events: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in events:
        out.setdefault(e["device_id"], []).append(e)
    return out


def episodes_of(config: SimulatorConfig, ticks: int) -> tuple[list[dict], list[dict]]:
    messages, records = TelemetryGenerator(config).run_messages(T0, ticks)
    return [json.loads(v) for _, v in messages], records


# --- determinism ------------------------------------------------------------------------------


def test_same_seed_same_events_other_seed_other_events():
    cfg = SimulatorConfig(devices=20, seed=5, anomaly_rate=0.05)
    assert events_of(cfg, 50) == events_of(cfg, 50)
    assert events_of(cfg, 50) != events_of(SimulatorConfig(devices=20, seed=6), 50)


def test_same_fleet_seed_same_baselines():
    a = TelemetryGenerator(SimulatorConfig(devices=30, seed=1, fleet_seed=9))
    b = TelemetryGenerator(SimulatorConfig(devices=30, seed=2, fleet_seed=9))
    assert np.array_equal(a.baseline, b.baseline) and np.array_equal(a.kind, b.kind)


def shard_plan(path: Path, processes: int, count: int | None = None) -> Plan:
    return Plan(
        config=SimulatorConfig(devices=15, seed=3, anomaly_rate=0.05),
        ticks=40,
        count=count,
        start_ms=T0,
        speed=math.inf,
        rate=None,
        output="file",
        path=path,
        bootstrap="",
        topic="",
        bad=None,
        processes=processes,
        progress_s=60,
    )


def test_shards_of_several_processes_add_up_to_one_process(tmp_path):
    reports: list[tuple] = []
    produce_shard(shard_plan(tmp_path / "all.jsonl", 1), 0, reports.append)
    for shard in range(3):
        produce_shard(shard_plan(tmp_path / f"s{shard}.jsonl", 3), shard, reports.append)
    whole = sorted((tmp_path / "all.jsonl").read_bytes().splitlines())
    parts = sorted(b"".join((tmp_path / f"s{s}.jsonl").read_bytes() for s in range(3)).splitlines())
    assert whole == parts and len(whole) > 500


def test_a_paced_run_starts_at_a_window_start_and_waits_for_it(tmp_path):
    """Paced, the first sample is the next window start's: every device's first window holds
    a whole window's samples (a first window of a few samples, every spread near 0, was
    flagged on most devices). The producer sends nothing before that time comes."""
    import dataclasses
    import time

    from common.settings import Settings

    window_ms = Settings.from_env().window_seconds * 1000
    before = time.time() * 1000
    plan, _ = parse_args(["--realtime", "--output", "null"])
    assert plan.start_ms % window_ms == 0, plan.start_ms
    assert before <= plan.start_ms < before + window_ms + 1000
    # A plan starting 1.5 s from now: its first tick waits for it.
    start_ms = int(time.time() * 1000) + 1500
    plan = dataclasses.replace(shard_plan(tmp_path / "paced.jsonl", 1), ticks=1, speed=1.0,
                               start_ms=start_ms)  # fmt: skip
    produce_shard(plan, 0, lambda report: None)
    assert time.time() * 1000 >= start_ms
    (first, *_) = (tmp_path / "paced.jsonl").read_text().splitlines()
    assert json.loads(first)["ts_ms"] == start_ms


def test_count_is_exact_across_shards(tmp_path):
    sent = 0
    for shard in range(2):
        reports: list[tuple] = []
        produce_shard(shard_plan(tmp_path / f"c{shard}.jsonl", 2, count=101), shard, reports.append)
        sent += len((tmp_path / f"c{shard}.jsonl").read_bytes().splitlines())
    assert sent == 101


# --- the fleet and its values -----------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in available() if load_catalogue(n).kinds])
def test_every_shipped_catalogue_generates_valid_events(name):
    cat = load_catalogue(name)
    events = events_of(SimulatorConfig(catalogue=name, devices=40, seed=1, anomaly_rate=0.02), 120)
    assert events
    for e in events:
        assert e.keys() == {"device_id", "ts_ms", *cat.metric_names, "is_anomaly", "scenario"}
        assert e["is_anomaly"] == (e["scenario"] is not None)
        for m in cat.metrics:
            assert math.isfinite(e[m.name])
            assert m.min is None or e[m.name] >= m.min
            assert m.max is None or e[m.name] <= m.max
    assert any(e["is_anomaly"] for e in events)


def test_normal_values_stay_near_each_devices_baseline():
    cfg = SimulatorConfig(devices=50, seed=4, anomaly_rate=0.0)
    gen = TelemetryGenerator(cfg)
    values = np.stack([gen.tick(T0 + k * 1000)[0] for k in range(600)])  # (tick, metric, device)
    j = gen.metric_index["cpu_utilization"]
    mean_error = np.abs(values[:, j, :].mean(axis=0) - gen.baseline[j])
    assert (mean_error < 3 * gen.stddev[j]).all()
    assert (values[:, j, :].std(axis=0) > 0.3 * gen.stddev[j]).all()  # it does move


def test_devices_get_the_catalogues_kinds_and_routers_have_neighbours():
    gen = TelemetryGenerator(SimulatorConfig(devices=200, fleet_seed=1))
    kinds = {gen.catalogue.kinds[k].name for k in gen.kind}
    assert kinds == {"router", "switch", "server"}
    routers = [d for d in range(200) if gen.catalogue.kinds[gen.kind[d]].name == "router"]
    assert routers and all(len(gen.neighbours[d]) == 3 for d in routers)


# --- scenarios and ground truth ---------------------------------------------------------------


def only(
    scenario: str, devices: int = 40, rate: float = 0.02, ticks: int = 200, catalogue="network"
):
    return episodes_of(
        SimulatorConfig(
            catalogue=catalogue, devices=devices, seed=8, anomaly_rate=rate, scenarios=(scenario,)
        ),
        ticks,
    )


def in_episode(events: list[dict], record: dict, device: str | None = None) -> list[dict]:
    device = device or record["device_id"]
    return [
        e
        for e in events
        if e["device_id"] == device and record["start_ts_ms"] <= e["ts_ms"] <= record["end_ts_ms"]
    ]


def test_ground_truth_episodes_match_event_labels():
    events, records = episodes_of(SimulatorConfig(devices=30, seed=2, anomaly_rate=0.02), 150)
    single = [r for r in records if r["scenario_type"] not in ("missing", "cascade")]
    assert len(single) > 10
    for r in single:
        touched = in_episode(events, r)
        assert touched and all(e["scenario"] == r["scenario"] for e in touched), r


def test_spike_exceeds_many_stddevs():
    events, records = only("spike")
    gen = TelemetryGenerator(SimulatorConfig(devices=40, seed=8))
    for r in records[:20]:
        d = int(r["device_id"].split("-")[1])
        j = gen.metric_index[r["metric"]]
        for e in in_episode(events, r):
            m = gen.catalogue.metrics[j]
            if m.max is None or e[r["metric"]] < m.max:  # clipping at 100 % can cap a spike
                assert e[r["metric"]] > gen.baseline[j, d] + 5 * gen.stddev[j, d], (r, e)


def test_stuck_values_do_not_move():
    events, records = only("stuck")
    assert records
    for r in records:
        values = {e[r["metric"]] for e in in_episode(events, r)}
        assert len(values) == 1, r


def test_missing_data_sends_nothing_during_the_episode():
    events, records = only("missing")
    assert records
    for r in records:
        assert in_episode(events, r) == [], r


def test_drift_grows_over_the_episode():
    events, records = only("drift", ticks=300)
    gen = TelemetryGenerator(SimulatorConfig(devices=40, seed=8))
    grew = 0
    for r in records:
        touched = in_episode(events, r)
        if len(touched) < 20:
            continue
        d = int(r["device_id"].split("-")[1])
        base = gen.baseline[gen.metric_index[r["metric"]], d]
        first = np.mean([abs(e[r["metric"]] - base) for e in touched[:5]])
        last = np.mean([abs(e[r["metric"]] - base) for e in touched[-5:]])
        grew += last > first
    assert grew >= 3


def test_cascade_drags_neighbours_and_ends_in_failure():
    events, records = only("cascade", devices=60, rate=0.01, ticks=300)
    full = [r for r in records if r["end_ts_ms"] <= T0 + 299_000]
    assert full, "need a complete cascade episode"
    r = full[0]
    own = in_episode(events, r)
    assert own[-1]["interface_up"] == 0 and own[-1]["throughput_mbps"] == 0
    assert own[0]["interface_up"] == 1
    for n in r["neighbours"]:
        assert any(e["scenario"] == "cascade" for e in in_episode(events, r, n)), n


def test_scenario_filter_and_unknown_scenario():
    events, _ = only("overload")
    assert {e["scenario"] for e in events} <= {None, "overload"}
    with pytest.raises(CatalogueError, match="no scenario 'meteor'"):
        TelemetryGenerator(SimulatorConfig(scenarios=("meteor",)))


# --- catalogue validation ---------------------------------------------------------------------


def test_catalogue_errors_name_the_problem(tmp_path):
    good = (load_catalogue("iot").path).read_text()
    cases = {
        "no_metric.yaml": (
            good.replace("      sound_level_db: {mean", "      sound_lvl: {mean"),
            "no behaviour given for metric 'sound_level_db'",
        ),
        "bad_type.yaml": (good.replace("type: spike", "type: meteor"), "type 'meteor'"),
        "bad_yaml.yaml": ("name: [unclosed", "not valid YAML"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(CatalogueError, match=message):
            load_catalogue(str(path))
    with pytest.raises(CatalogueError, match="shipped catalogues"):
        load_catalogue("no-such-catalogue")


@pytest.mark.parametrize(
    "rule, message",
    [
        ("{metric: pressure, above: 5}", "metric .pressure. is not in"),
        ("{metric: temperature_c, aggregate: median, above: 5}", "aggregate 'median'"),
        ("{metric: temperature_c, above: 5, below: 1}", "exactly one of `above` or `below`"),
        ("{metric: temperature_c, above: warm}", "a number, 'reference' .* or 'segment_refer"),
        ("{metric: temperature_c, above: 5, severity: 0}", r"severity must be in \(0, 100\]"),
    ],
)
def test_catalogue_rule_errors_name_the_problem(tmp_path, rule, message):
    good = (load_catalogue("iot").path).read_text()
    path = tmp_path / "rules.yaml"
    path.write_text(f"{good}\nrules:\n  hot: {rule}\n")
    with pytest.raises(CatalogueError, match=rf"rules\.hot: .*{message}"):
        load_catalogue(str(path))


def test_catalogue_rules_parse_fixed_and_reference_thresholds(tmp_path):
    good = (load_catalogue("iot").path).read_text()
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"{good}\nrules:\n  hot: {{metric: temperature_c, aggregate: max, above: 80}}\n"
        "  cold: {metric: temperature_c, below: reference, severity: 60}\n"
        "  night: {metric: sound_level_db, above: segment_reference}\n"
    )
    hot, cold, night = load_catalogue(str(path)).rules
    assert (hot.feature, hot.direction, hot.threshold, hot.severity) == (
        "temperature_c_max",
        "above",
        80.0,
        75.0,
    )
    assert (cold.feature, cold.threshold, cold.limit_column) == (
        "temperature_c_mean",
        None,
        "temperature_c_low",
    )
    assert (hot.reference, cold.reference, night.reference) == (None, "device", "segment")
    assert (night.threshold, night.limit_column) == (None, "sound_level_db_high")


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_bad_input_kind_does_what_it_says(kind):
    gen = TelemetryGenerator(SimulatorConfig(devices=200, seed=1, anomaly_rate=0))
    values, present, label, _ = gen.tick(T0)
    clean = gen.encode(T0, values, present, label)
    bad = BadInput(
        BadInputConfig({kind: 0.1}, lateness_ms=5000, window_ms=10000),
        gen.catalogue.metric_names,
        seed=1,
    )
    out, records = bad.apply(clean)
    assert 5 <= len(records) <= 40 and bad.counts[kind] == len(records)
    assert len(out) == len(clean) + (len(records) if kind == "duplicate" else 0)
    changed = [v for _, v in out if (_, v) not in set(clean)]
    if kind == "malformed":
        for v in changed:
            with pytest.raises(json.JSONDecodeError):
                json.loads(v)
    elif kind == "missing_field":
        assert all(len(json.loads(v)) == len(json.loads(clean[0][1])) - 1 for v in changed)
    elif kind == "wrong_type":
        assert all("n/a" in json.loads(v).values() for v in changed)
    elif kind == "nan_inf":
        assert all(
            any(isinstance(x, float) and not math.isfinite(x) for x in json.loads(v).values())
            for v in changed
        )
    elif kind == "duplicate":
        assert changed == [] and len(set(out)) == len(clean)
    elif kind in ("out_of_order", "late"):
        shifts = [r["original_ts_ms"] - r["ts_ms"] for r in records]
        assert all((0 < s < 5000) if kind == "out_of_order" else s > 15000 for s in shifts)
    elif kind == "unknown_device":
        assert all(
            k.startswith(b"unknown-") and json.loads(v)["device_id"] == k.decode()
            for k, v in out
            if k.startswith(b"unknown-")
        )
    elif kind == "oversized":
        assert all(len(v) > 200 * 1024 for v in changed)


def test_bad_rate_specs_are_checked():
    assert parse_rates(["late=0.01", "malformed=0.5"]) == {"late": 0.01, "malformed": 0.5}
    with pytest.raises(ValueError, match="KIND=RATE"):
        parse_rates(["late"])
    with pytest.raises(ValueError, match="unknown bad-input kinds"):
        BadInputConfig({"gremlins": 0.1})
    with pytest.raises(ValueError, match="sum to <= 1"):
        BadInputConfig({"late": 0.7, "malformed": 0.7})


# --- the command line -------------------------------------------------------------------------


def test_cli_writes_dump_and_truth(tmp_path, capsys):
    dump, truth = tmp_path / "dump.jsonl", tmp_path / "truth.jsonl"
    rc = simulator_main(
        [
            "--devices",
            "10",
            "--duration-s",
            "60",
            "--output",
            "file",
            "--path",
            str(dump),
            "--start-ms",
            "0",
            "--anomaly-rate",
            "0.02",
            "--truth-path",
            str(truth),
            "--bad",
            "malformed=0.01",
        ]
    )
    assert rc == 0
    lines = dump.read_bytes().splitlines()
    records = [json.loads(line) for line in truth.read_text().splitlines()]
    summary = json.loads(capsys.readouterr().err.split("done ", 1)[1])
    assert summary["events"] == len(lines)
    assert summary["episodes"] == sum(r["type"] == "episode" for r in records) > 0
    assert summary["bad_input"].get("malformed", 0) == sum(
        r["type"] == "bad_input" for r in records
    )


def test_cli_help_explains_every_bad_kind(capsys):
    with pytest.raises(SystemExit) as exit_info:
        simulator_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(kind in text for kind in KINDS) and "--processes" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--output", "file", "--path", "x.jsonl"], "needs --duration-s or --count"),
        (["--bad", "gremlins=0.1", "--count", "5"], "unknown bad-input kinds"),
        (["--catalogue", "nope", "--count", "5"], "no catalogue"),
        (["--devices", "0", "--count", "5"], "devices must be"),
    ],
)
def test_cli_rejects_bad_options_with_a_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        simulator_main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--bad", "duplicate=0.05"], []])
def test_summary_counts_exactly_what_was_sent(tmp_path, capsys, bad):
    dump = tmp_path / "d.jsonl"
    rc = simulator_main(
        [
            "--devices",
            "7",
            "--count",
            "333",
            "--output",
            "file",
            "--path",
            str(dump),
            "--anomaly-rate",
            "0.05",
            *bad,
        ]
    )
    assert rc == 0
    events = [json.loads(line) for line in dump.read_text().splitlines()]
    summary = json.loads(capsys.readouterr().err.split("done ", 1)[1])
    assert summary["events"] == len(events) == 333
    assert summary["anomalous_events"] == sum(e["is_anomaly"] for e in events) > 0


# --- the dialects of real ops series (catalogue ops) ------------------------------------------

DAY = 86_400_000


def ops_values(devices: int, days: float, start_ms: int, seed: int = 3, **config):
    """(ticks, devices) normal values of the ops catalogue and the generator's records."""
    gen = TelemetryGenerator(
        SimulatorConfig(catalogue="ops", devices=devices, seed=seed, anomaly_rate=0.0, **config)
    )
    ticks = int(days * DAY / gen.interval_ms)
    rows, records = [], []
    for k in range(ticks):
        values, _, label, started = gen.tick(start_ms + k * gen.interval_ms)
        assert (label < 0).all()
        rows.append(values[0])
        records += started
    return gen, np.array(rows), records


def test_ops_fleet_mixes_units_across_orders_of_magnitude():
    gen, values, _ = ops_values(60, 1, T0)
    levels = np.median(values, axis=0)
    assert levels.max() / levels.min() > 1e6  # key presses of ~0.1 beside bytes in millions
    kinds = {gen.catalogue.kinds[k].name for k in gen.kind}
    assert {"key_presses", "disk_bytes", "office_cpu"} <= kinds


def test_ops_seasons_follow_the_day_and_the_week_and_holidays():
    monday = 1_764_547_200_000  # 2025-12-01 00:00 UTC, a Monday
    gen, values, _ = ops_values(40, 14, monday)
    per_day = int(DAY / gen.interval_ms)
    office = [d for d, k in enumerate(gen.kind) if gen.catalogue.kinds[k].name == "office_cpu"]
    assert office
    days = values[:, office].reshape(14, per_day, len(office))
    # Afternoon above night on weekdays, for every office device.
    afternoon, night = days[:5, per_day * 14 // 24, :], days[:5, per_day * 2 // 24, :]
    assert (afternoon.mean(axis=0) > night.mean(axis=0)).all()
    # Weekend days (5, 6, 12, 13) well below weekdays.
    weekday, weekend = days[[0, 1, 2, 3, 4]].mean(), days[[5, 6, 12, 13]].mean()
    assert weekend < 0.7 * weekday
    # A holiday on a weekday looks like a weekend day: 2026-12-24 is a Thursday.
    thursday = 1_766_534_400_000  # 2025-12-24 is not a holiday in the catalogue
    holiday = 1_766_534_400_000 + 365 * DAY  # 2026-12-24
    _, normal_day, _ = ops_values(40, 1, thursday)
    _, off_day, _ = ops_values(40, 1, holiday)
    assert off_day[:, office].mean() < 0.7 * normal_day[:, office].mean()


def test_benign_level_shifts_move_the_level_unlabelled_and_are_recorded():
    gen, values, records = ops_values(60, 30, T0)
    changes = [r for r in records if r["type"] == "level_change"]
    assert changes and all(r["metric"] == "value" for r in changes)
    # A device shifted once, with a day of history either side, moves to its shifted level
    # (its labels stayed normal: ops_values checks). Machine temperatures never shift.
    per_day = int(DAY / gen.interval_ms)
    tick = {id(r): (r["ts_ms"] - T0) // gen.interval_ms for r in changes}
    per_device = {}
    for r in changes:
        per_device.setdefault(r["device_id"], []).append(r)
    kind = {gen.device_ids[d]: gen.catalogue.kinds[k].name for d, k in enumerate(gen.kind)}
    # Kinds without a weekly season: whole days either side then average the season out.
    lone = [rs[0] for device, rs in per_device.items() if len(rs) == 1
            and kind[device] in ("disk_bytes", "api_latency")
            and per_day <= tick[id(rs[0])] <= len(values) - 2 * per_day]  # fmt: skip
    assert lone
    for r in lone:
        d, k = gen.device_ids.index(r["device_id"]), tick[id(r)]
        before = values[k - per_day : k, d].mean()
        after = values[k + per_day // 2 : k + per_day // 2 + per_day, d].mean()
        assert after / before == pytest.approx(r["factor"], rel=0.15), r
    assert not {d for d in per_device if kind[d] == "machine_temp"}


def test_catalogues_without_seasons_give_the_same_values_as_before():
    # The seasons and shifts draw from streams of their own: a catalogue without them is
    # untouched by their existence (this digest was taken before they were added).
    import hashlib

    h = hashlib.sha256()
    for name in ("network", "iot"):
        gen = TelemetryGenerator(SimulatorConfig(catalogue=name, devices=40, anomaly_rate=0.01))
        for _, value in gen.run_messages(1_700_000_000_000, 300)[0]:
            h.update(value)
    assert h.hexdigest() == "b178934d773b2e2bcdcd8bc7bf290f72b4c00cd62313494ab934aa52c106e298"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("daily: [0.3, 0.6]", "daily: [0.5, 1.2]", "daily: need 0 <= low <= high < 1"),
        ("weekend: [0.3, 0.5]", "weekend: [0, 0.5]", "weekend: need 0 < low <= high"),
        ("shifts_per_day: 0.02, shift_factor: [0.7, 1.5]", "shifts_per_day: -1", "shifts_per_day"),
    ],
)
def test_season_and_shift_errors_name_the_problem(tmp_path, field, value, message):
    text = load_catalogue("ops").path.read_text()
    assert field in text
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(field, value, 1))
    with pytest.raises(CatalogueError, match=message):
        load_catalogue(str(path))
    path.write_text(text.replace("2026-12-24", "Christmas"))
    with pytest.raises(CatalogueError, match="'Christmas' is not a date"):
        load_catalogue(str(path))
