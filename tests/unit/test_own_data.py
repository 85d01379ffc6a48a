"""Users' own data: the CSV rules (common.datasets), onboarding, and the evaluation's metrics
on bounded inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.catalogue import load as load_catalogue
from common.datasets import CsvOptions, DatasetError, parse_time, read_datasets
from training import evaluate_csv as ev
from training.onboard import main as onboard_main
from training.onboard import propose_window, split_unit

# --- the CSV rules ----------------------------------------------------------------------------


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "header, cells, expected_ms",
    [
        ("Timestamp", ["2026-01-01T00:00:00Z", "2026-01-01T00:05:00+00:00"], [0, 300_000]),
        ("datetime", ["2026-01-01 01:00:00+01:00", "2026-01-01 00:05:00"], [0, 300_000]),
        ("ts", ["1767225600", "1767225900"], [0, 300_000]),  # epoch seconds
        ("TS_MS", ["1767225600000", "1767225900000"], [0, 300_000]),  # epoch milliseconds
    ],
)
def test_the_time_column_is_found_and_read_by_one_rule(tmp_path, header, cells, expected_ms):
    base = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    f = write(tmp_path / "d" / "a.csv", f"{header},x\n{cells[1]},2\n{cells[0]},1\n")
    (data,) = read_datasets([f], CsvOptions(), None)
    assert (data.ts_ms - base).tolist() == expected_ms  # sorted by time
    assert data.metrics["x"].tolist() == [1.0, 2.0]
    assert data.device_id == "d-a"


def test_device_ids_come_from_a_column_or_from_folder_and_file(tmp_path):
    f = write(
        tmp_path / "site" / "all.csv",
        "time,device,cpu\n2026-01-01,r1,1\n2026-01-01,r2,2\n2026-01-02,r1,3\n",
    )
    by_column = read_datasets([f], CsvOptions(device_column="device"), None)
    assert {d.device_id: d.metrics["cpu"].tolist() for d in by_column} == {
        "r1": [1.0, 3.0],
        "r2": [2.0],
    }
    write(tmp_path / "other" / "all.csv", "time,cpu\n2026-01-01,1\n")
    write(tmp_path / "x" / "site" / "all.csv", "time,cpu\n2026-01-01,1\n")
    with pytest.raises(DatasetError, match="both give device 'site-all'"):
        read_datasets([tmp_path], CsvOptions(), {"cpu": "cpu"})


def test_time_ranges_cut_each_device(tmp_path):
    rows = "".join(f"2026-01-01T00:{m:02d}:00Z,{m}\n" for m in range(20))
    f = write(tmp_path / "d" / "a.csv", "timestamp,v\n" + rows)
    first = read_datasets([f], CsvOptions(fraction=0.15), None)[0]
    assert first.metrics["v"].tolist() == [0.0, 1.0, 2.0]
    window = CsvOptions(since=parse_time("2026-01-01T00:05"), until=parse_time("2026-01-01T00:08"))
    assert read_datasets([f], window, None)[0].metrics["v"].tolist() == [5.0, 6.0, 7.0]
    with pytest.raises(DatasetError, match=r"no rows .* within the time range"):
        read_datasets([f], CsvOptions(since=parse_time("2027-01-01")), None)


# --- onboarding -------------------------------------------------------------------------------


def test_units_come_from_headers_and_windows_hold_enough_samples():
    assert split_unit("Temp (C)") == ("Temp", "C")
    assert split_unit("latency[ms]") == ("latency", "ms")
    assert split_unit("cpu") == ("cpu", "")
    assert propose_window(1000) == 10  # 1 s samples: the demo's 10 s window
    assert propose_window(60_000) == 600
    assert propose_window(300_000) == 3600  # 5-minute samples: 12 per hour
    # Slow series: at most an hour, unless one sample takes longer.
    assert propose_window(900_000) == 3600
    assert propose_window(3_600_000) == 3600
    assert propose_window(7_200_000) == 7200
    assert propose_window(86_400_000) == 86_400
    assert propose_window(3_600_000, samples=1) == 3600


def test_onboarding_writes_a_catalogue_that_loads_and_settings_that_fit(tmp_path, capsys):
    ts = pd.date_range("2026-01-01", periods=100, freq="5min", tz="UTC")
    (tmp_path / "data").mkdir()
    for i in range(2):
        pd.DataFrame(
            {
                "Timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "CPU (%)": np.linspace(1, 90, 100),
                "Latency[ms]": np.linspace(-1, 3, 100) * (i + 1),
                "fan": 1.0,  # constant: left out
                "label": 0,
            }
        ).to_csv(tmp_path / "data" / f"h{i}.csv", index=False)
    args = [str(tmp_path / "data"), "--name", "shop", "--label-column", "label"]
    dirs = ["--catalogue-dir", str(tmp_path / "cat"), "--env-dir", str(tmp_path)]
    assert onboard_main([*args, *dirs]) == 0
    out = capsys.readouterr().out
    assert "window 1h (12 samples per window; context horizons 6h,15d)" in out
    assert "left out as constant or empty: fan" in out
    cat = load_catalogue(tmp_path / "cat" / "shop.yaml")
    assert cat.metric_names == ("cpu", "latency")
    assert cat.source_columns == {"CPU (%)": "cpu", "Latency[ms]": "latency"}
    cpu, latency = cat.metrics
    assert (cpu.unit, cpu.min, cpu.max) == ("%", 0.0, 100.0)
    assert (latency.unit, latency.min, latency.max) == ("ms", None, None)  # seen below 0
    assert cat.interval_ms == 300_000 and cat.kinds == ()
    env = dict(
        line.split("=", 1)
        for line in (tmp_path / "shop.env").read_text().splitlines()
        if not line.startswith("#")
    )
    assert env["ANOMALY_WINDOW_SECONDS"] == "3600"
    assert env["ANOMALY_EVENTS_TOPIC"] == "shop-events"
    assert env["ANOMALY_PG_DATABASE"] == "anomaly_shop"
    assert onboard_main([*args, *dirs]) == 2  # no overwrite without --force
    assert "exists; pass --force" in capsys.readouterr().err


def test_a_catalogue_without_simulation_cannot_be_simulated(tmp_path):
    from common.catalogue import CatalogueError

    path = write(tmp_path / "real.yaml", "name: real\nmetrics:\n  - {name: cpu}\n")
    with pytest.raises(CatalogueError, match="no `simulation` section"):
        load_catalogue(path).require_simulation()
    old = write(tmp_path / "old.yaml", "name: old\nmetrics:\n  - {name: cpu}\nkinds: {}\n")
    with pytest.raises(CatalogueError, match="belong in the `simulation` section"):
        load_catalogue(old)


# --- the evaluation's metrics -----------------------------------------------------------------


def test_device_scores_count_events_false_alarm_episodes_and_gaps():
    w = 10
    starts = np.array([0, 10, 20, 30, 40, 50, 60, 90, 100, 110])  # a gap after 60
    labels = np.array([0, 1, 1, 0, 0, 0, 1, 1, 0, 0], bool)
    flags = np.array([1, 0, 1, 0, 1, 1, 0, 0, 1, 0], bool)
    s = ev.device_score("d", starts, labels, flags, w)
    # events: [10, 20] (detected), [60] and [90] (a gap splits them; neither flagged)
    assert (s.events, s.events_detected) == (3, 1)
    # false-alarm episodes: [0], [40, 50], [100]; the flag at 20 lies in an event
    assert s.false_alarm_episodes == 3
    assert (s.normal_windows, s.flagged_normal) == (6, 4)
    assert (s.anomaly_windows, s.flagged_anomaly) == (4, 1)
    assert s.days == pytest.approx(120 / ev.DAY_MS)
    quiet = ev.device_score("q", starts, labels, np.zeros(10, bool), w)
    r = ev.summary("m", [s, quiet], 0.0)
    assert (r["events"], r["events_detected"], r["devices_never_alarm"]) == (6, 1, 1)
    assert r["normal_alarmed_worst_pct"] == pytest.approx(100 * 4 / 6, abs=0.01)
    assert r["devices_noisy"] == 1
    assert r["far_pct"] == pytest.approx(100 * 4 / 12, abs=0.01)
    assert r["mar_pct"] == pytest.approx(100 * 7 / 8, abs=0.01)


def test_baselines_flag_rows_out_of_their_band_causally():
    from common.datasets import Dataset

    rng = np.random.default_rng(0)
    x = rng.normal(10, 1, 600)
    x[500] = 30.0  # a spike
    ts = np.arange(600) * 1000
    d = Dataset("d", ts, {"x": x}, None)
    sigma = ev.three_sigma_flags(d, split_ms=300_000)
    assert sigma[500] and sigma.sum() < 10
    gauss = ev.gaussian_flags(d, rows=100)
    assert gauss[500] and not gauss[:50].any()  # too little history: no flag
    # causal: the spike's own value does not widen its band, later rows are judged with it
    y = x.copy()
    y[501:] = 10.0
    assert ev.gaussian_flags(Dataset("d", ts, {"x": y}, None), rows=100)[500]
    assert ev.windows_of_rows(d, sigma, 10_000) >= {("d", 500_000)}


# --- calibration on few windows ---------------------------------------------------------------


def test_auto_calibration_holds_windows_out_when_devices_have_few(tmp_path):
    from training.detectors import DetectorParams
    from training.train import calibration_of, fit_model

    rng = np.random.default_rng(3)
    features = 12
    few_ids = np.repeat(["a", "b", "c"], 18)  # 18 windows per device: 1.5 per feature
    many_ids = np.repeat(["a", "b"], 200)
    auto = DetectorParams()
    assert calibration_of(auto, few_ids, features) == "out-of-fold"
    assert calibration_of(auto, many_ids, features) == "in-sample"
    assert calibration_of(DetectorParams(calibration="in-sample"), few_ids, 12) == "in-sample"

    # On few windows of pure noise, the in-sample threshold flags new noise often; the
    # held-out one (never lower) much less.
    train_x = rng.normal(size=(len(few_ids), features))
    new_x = rng.normal(size=(3000, features))
    new_ids = np.resize(["a", "b", "c"], 3000)
    flagged = {}
    for calibration in ("in-sample", "out-of-fold"):
        result = fit_model(
            few_ids.astype(object),
            train_x,
            feature_names=tuple(f"f{i}_mean" for i in range(features)),
            window_seconds=3600,
            params=DetectorParams(calibration=calibration),
            models_dir=tmp_path / calibration,
            training={"source": "test"},
            log=lambda m: None,
        )
        _, flags = result.reference_scores(new_ids.astype(object), new_x)
        flagged[calibration] = flags.mean()
    assert flagged["in-sample"] > 0.05, flagged
    assert flagged["out-of-fold"] < flagged["in-sample"] / 3, flagged
    print(f"share of new noise windows flagged: {flagged}")
