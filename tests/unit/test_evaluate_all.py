"""`python -m training.evaluate all`: every dataset at once. Its parts on bounded inputs, and one
real run (a small ops fleet: simulator, onboarding, the CSV evaluation with Flink's batch SQL)
whose table must hold exactly what that dataset's own command reported."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from common.settings import read_env_file
from training import evaluate_all as ea
from training.onboard import DEPLOYMENT_KEYS, settings_env


def test_simulator_events_become_one_csv_per_device_with_their_labels(tmp_path):
    events = [
        {"device_id": "b", "ts_ms": 600, "value": 2.5, "is_anomaly": True, "scenario": "spike"},
        {"device_id": "a", "ts_ms": 300, "value": 1.0, "is_anomaly": False, "scenario": None},
        {"device_id": "a", "ts_ms": 0, "value": 0.5, "is_anomaly": True, "scenario": "dip"},
    ]
    dump = tmp_path / "d.jsonl"
    dump.write_text("".join(json.dumps(e) + "\n" for e in events))
    assert ea.events_to_csvs(dump, tmp_path / "out") == 2
    a = pd.read_csv(tmp_path / "out" / "a.csv")
    assert a.columns.tolist() == ["ts_ms", "value", "label"]
    assert a.values.tolist() == [[0, 0.5, 1], [300, 1.0, 0]]  # in time order
    assert pd.read_csv(tmp_path / "out" / "b.csv").values.tolist() == [[600, 2.5, 1]]


def test_each_dataset_runs_without_the_loaded_deployments_settings(tmp_path, monkeypatch):
    # Every key a deployment's file sets is one the runner leaves out.
    text, _ = settings_env("shop", tmp_path / "shop.yaml", 7200, 0)
    written = read_env_file(_write(tmp_path / "shop.env", text))
    assert written["ANOMALY_WINDOW_SECONDS"] == "7200"
    assert set(written) <= set(DEPLOYMENT_KEYS)
    for key in written:
        monkeypatch.setenv(key, written[key])
    monkeypatch.setenv("ANOMALY_PG_HOST", "db.example")
    env = ea.base_env()
    assert not set(written) & set(env)
    assert env["ANOMALY_PG_HOST"] == "db.example" and env["PATH"] == os.environ["PATH"]


def test_table_rows_leave_event_wise_columns_blank_where_not_computed():
    skab = {"method": "m", "f1": 0.791, "far_pct": 15.69, "mar_pct": 25.85}
    skab |= {"events": 34, "events_detected": 32}
    (row,) = ea.rows_of("skab", {"results": [skab]})
    assert row == {
        "dataset": "skab",
        "method": "m",
        "F1": "0.79",
        "FAR %": "15.69",
        "MAR %": "25.85",
        "events found": "32/34",
    }
    csv = skab | {"false_alarms_per_day": 0.034, "normal_alarmed_median_pct": 0.0}
    csv |= {"normal_alarmed_worst_pct": 2.5, "devices_noisy": 0, "devices": 40}
    csv |= {"devices_never_alarm": 1, "devices_labelled": 39}
    (row,) = ea.rows_of("ops", {"results": [csv]})
    assert (row["FA/day"], row["normal alarmed %"], row["noisy"], row["silent"]) == (
        "0.034",
        "0.0 / 2.5",
        "0/40",
        "1/39",
    )


def test_against_an_earlier_run_names_what_moved_and_counts_the_rest():
    def row(dataset, method, **columns):
        return {"dataset": dataset, "method": method, "F1": "0.50", "FA/day": "0.100", **columns}

    before = [row("kpi14", "ours"), row("kpi14", "base"), row("ops", "ours"), row("old", "x")]
    after = [
        row("kpi14", "ours", **{"FA/day": "0.097", "events found": "544/785"}),
        row("kpi14", "base"),
        row("ops", "ours"),
        row("new", "x"),
        row("new", "y"),
    ]
    assert ea.compare_rows(before, after) == [
        "  kpi14 ours: events found  -> 544/785, FA/day 0.100 -> 0.097",
        "  2 of 5 rows unchanged",
        "  only in this run: new (2 rows)",
        "  only in the run before: old (1 row)",
    ]
    assert ea.compare_rows(after, after) == ["  5 of 5 rows unchanged"]


def test_against_a_file_that_is_not_a_run_stops_before_any_dataset(tmp_path, capsys):
    bad = tmp_path / "before.json"
    bad.write_text('{"datasets": ["ops"], "rows": []}')  # no reports
    with pytest.raises(SystemExit):
        ea.main(["--only", "ops", "--against", str(bad)])
    err = capsys.readouterr().err
    assert f"--against {bad}: not a JSON this command wrote" in err
    assert "(1/1) ops" not in err  # nothing ran


def test_unknown_datasets_are_named(capsys):
    with pytest.raises(SystemExit):
        ea.main(["--only", "ops,nab"])
    assert "no dataset nab (there are: skab, simulator, ops, ops_hourly)" in capsys.readouterr().err


def test_a_small_ops_fleet_runs_end_to_end_and_the_table_is_its_own_report(tmp_path, capsys):
    out = tmp_path / "all.json"
    args = ["--only", "ops", "--ops-devices", "3", "--ops-days", "5"]
    assert ea.main([*args, "--workdir", str(tmp_path / "w"), "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    own = json.loads((tmp_path / "w" / "ops.json").read_text())  # the csv command's report
    assert result["datasets"] == ["ops"] and result["reports"]["ops"] == own
    assert result["rows"] == ea.rows_of("ops", own)
    # The fleet as simulated: 3 devices, 5 days of 5-minute samples, onboarded to 1 h windows.
    csvs = sorted((tmp_path / "w" / "ops").glob("*.csv"))
    assert len(csvs) == own["devices"] == 3 and own["window_seconds"] == 3600
    rows = sum(len(pd.read_csv(f)) for f in csvs)
    assert own["rows"] == rows and 0.95 * 3 * 5 * 288 <= rows <= 3 * 5 * 288  # a few dropped
    methods = [r["method"] for r in own["results"]]
    assert methods[:2] == ["pca-t2q context check auto (ours)", "pca-t2q context check off (ours)"]
    assert sum("baseline" in m for m in methods) == 2
    printed = capsys.readouterr().out
    assert all(r["method"] in printed for r in own["results"])
    # Beside the report, each of our models' scored windows (--windows-out): their flags give
    # the report's window-wise figures, and each score is the largest of its parts.
    windows = pd.read_csv(tmp_path / "w" / "ops.windows.csv")
    ours = [r for r in own["results"] if r["method"].endswith("(ours)")]
    assert list(windows["method"].unique()) == [r["method"] for r in ours] == methods[:2]
    for r in ours:
        w = windows[windows["method"] == r["method"]]
        assert len(w) == own["windows_scored"] and w["flagged"].notna().all()
        flagged, labelled = w["flagged"].astype(bool), w["labelled"].astype(bool)
        assert (flagged == (w["score_over_threshold"] > 1)).all()
        assert round(100 * (flagged & ~labelled).sum() / (~labelled).sum(), 2) == r["far_pct"]
        assert round(100 * (labelled & ~flagged).sum() / labelled.sum(), 2) == r["mar_pct"]
        parts = w.filter(like="reading_")
        np.testing.assert_allclose(w["score_over_threshold"], parts.max(axis=1), rtol=1e-12)
    # The context check's readings where it is on; the model's own score alone where it is off.
    checked, off = (windows[windows["method"] == m] for m in methods[:2])
    assert checked["reading_level"].notna().all() and checked["reading_spike"].notna().all()
    assert off["reading_model"].notna().all() and off["reading_level"].isna().all()


def _write(path, text):
    path.write_text(text)
    return path


def test_yahoo_a1_series_become_hourly_csvs_with_their_labels(tmp_path, capsys):
    from training import public_sets

    a1 = tmp_path / "A1Benchmark"
    a1.mkdir()
    pd.DataFrame(
        {"timestamp": [1, 2, 3], "value": [0.5, 12345.25, 7.0], "is_anomaly": [0, 1, 0]}
    ).to_csv(a1 / "real_10.csv", index=False)
    pd.DataFrame({"timestamp": [1, 2], "value": [1.0, 2.0], "is_anomaly": [0, 0]}).to_csv(
        a1 / "real_2.csv", index=False
    )
    (a1 / "real_3.csv").write_text("timestamp,value\n1,2\n")  # no labels: skipped
    assert public_sets.main([str(a1), str(tmp_path / "out")]) == 0
    assert "real_3.csv: skipped" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out" / "yahoo").iterdir()) == [
        "real_10.csv",
        "real_2.csv",
    ]
    frame = pd.read_csv(tmp_path / "out" / "yahoo" / "real_10.csv")
    assert frame.to_dict("list") == {
        "timestamp": ["2026-01-05T00:00:00Z", "2026-01-05T01:00:00Z", "2026-01-05T02:00:00Z"],
        "value": [0.5, 12345.25, 7.0],
        "label": [0, 1, 0],
    }
    # Neither source's files: a clear error.
    assert public_sets.main([str(tmp_path / "out"), str(tmp_path / "x")]) == 2


def test_minutes_become_five_minute_samples_labelled_where_any_minute_is():
    from training.public_sets import binned

    minutes = pd.DataFrame(
        {
            "timestamp": [f"2026-01-05T00:{m:02d}:00Z" for m in range(11)],
            "value": [float(m) for m in range(11)],
            "label": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
        }
    )
    assert binned(minutes).to_dict("list") == {
        "timestamp": ["2026-01-05T00:00:00Z", "2026-01-05T00:05:00Z", "2026-01-05T00:10:00Z"],
        "value": [2.0, 7.0, 10.0],
        "label": [1, 0, 0],
    }
    already = minutes.iloc[::5].reset_index(drop=True)
    assert binned(already).to_dict("list") == already.to_dict("list")


def test_slower_pieces_bin_five_minute_samples_and_gaps_leave_out_and_move_samples():
    from training.public_sets import GAP_JITTER_S, GAP_OUTAGE_ROWS, binned, with_gaps

    times = pd.date_range("2026-01-05", periods=2000, freq="5min", tz="UTC")
    five = pd.DataFrame(
        {
            "timestamp": times.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "value": np.arange(2000.0),
            "label": (np.arange(2000) == 7).astype(int),
        }
    )
    half_hours = binned(five.head(12), "30min")
    assert half_hours.to_dict("list") == {
        "timestamp": ["2026-01-05T00:00:00Z", "2026-01-05T00:30:00Z"],
        "value": [2.5, 8.5],
        "label": [0, 1],
    }
    gaps = with_gaps(five, seed=3)
    assert gaps.equals(with_gaps(five, seed=3))  # seeded: the same folder on every run
    kept = gaps["value"].to_numpy().astype(int)  # each sample's own row, as the value says
    assert 0.8 * 2000 < len(gaps) < 0.9 * 2000 - GAP_OUTAGE_ROWS / 2
    assert np.diff(kept).max() > GAP_OUTAGE_ROWS  # the outage
    moved = (pd.to_datetime(gaps["timestamp"]) - times[kept]).abs().max()
    assert pd.Timedelta(0) < moved <= pd.Timedelta(seconds=GAP_JITTER_S)
    assert pd.to_datetime(gaps["timestamp"]).is_monotonic_increasing
    assert (gaps["label"].to_numpy() == five["label"].to_numpy()[kept]).all()


def test_aiops_kpis_keep_their_times_and_are_sorted_by_their_sampling(tmp_path, capsys):
    from training import public_sets

    kpis = tmp_path / "dataset2_split"
    kpis.mkdir()
    # The split files: no header, unix seconds, CRLF; rows not necessarily in time order.
    (kpis / "aaa-5min.csv").write_bytes(
        b"1469376600,0.066226516,0\r\n1469376000,0.832818391,0\r\n1469376300,-0.04,1\r\n"
    )
    (kpis / "bbb-1min.csv").write_bytes(b"1493568000,1.5,0\r\n1493568060,2.0,1\r\n")
    (kpis / "ccc-quiet.csv").write_bytes(b"1493568000,1.5,0\r\n1493568060,2.0,0\r\n")
    (kpis / "ddd-other.csv").write_text("timestamp,value\n2026-01-05,1\n")
    assert public_sets.main([str(kpis), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "ccc-quiet.csv: skipped" in out and "ddd-other.csv: skipped" in out
    assert pd.read_csv(tmp_path / "out" / "kpi5" / "aaa-5min.csv").to_dict("list") == {
        "timestamp": ["2016-07-24T16:00:00Z", "2016-07-24T16:05:00Z", "2016-07-24T16:10:00Z"],
        "value": [0.832818391, -0.04, 0.066226516],
        "label": [0, 1, 0],
    }
    assert pd.read_csv(tmp_path / "out" / "kpi1" / "bbb-1min.csv").to_dict("list") == {
        "timestamp": ["2017-04-30T16:00:00Z", "2017-04-30T16:01:00Z"],
        "value": [1.5, 2.0],
        "label": [0, 1],
    }
    # Both span minutes: no two-week piece.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "kpi1",
        "kpi14",
        "kpi14gap",
        "kpi30",
        "kpi5",
        "kpi60",
    ]
    assert not any((tmp_path / "out" / "kpi14").iterdir())


def test_aiops_kpis_are_cut_into_two_week_pieces_at_five_minutes(tmp_path):
    from training import public_sets

    kpis = tmp_path / "dataset2_split"
    kpis.mkdir()
    # 30 days and 5 minutes of one sample a minute (the value: its minute), one minute labelled.
    seconds = 1493568000 + 60 * np.arange(30 * 1440 + 5)
    labels = (np.arange(len(seconds)) == 14 * 1440 + 7).astype(int)
    lines = [f"{s},{i},{y}" for i, (s, y) in enumerate(zip(seconds, labels, strict=True))]
    (kpis / "kpi.csv").write_text("\n".join(lines) + "\n")
    assert public_sets.main([str(kpis), str(tmp_path / "out")]) == 0
    # Pieces 0 and 1 (14 days each); the last 2 days and 5 minutes are left out.
    assert sorted(p.name for p in (tmp_path / "out" / "kpi14").iterdir()) == [
        "kpi-0.csv",
        "kpi-1.csv",
    ]
    first = pd.read_csv(tmp_path / "out" / "kpi14" / "kpi-0.csv")
    second = pd.read_csv(tmp_path / "out" / "kpi14" / "kpi-1.csv")
    assert len(first) == len(second) == 14 * 288
    assert first["timestamp"].iloc[0] == "2017-04-30T16:00:00Z"
    assert second["timestamp"].iloc[0] == "2017-05-14T16:00:00Z"
    # Each row is the mean of its five minutes, labelled where one of them is.
    assert first["value"].iloc[:2].tolist() == [2.0, 7.0]
    assert second["label"].sum() == 1 and second["label"].iloc[1] == 1
    assert first["label"].sum() == 0
    # The same pieces at 30 and 60 minutes, and with gaps.
    for folder, rows in (("kpi30", 14 * 48), ("kpi60", 14 * 24)):
        slower = pd.read_csv(tmp_path / "out" / folder / "kpi-1.csv")
        assert len(slower) == rows and slower["label"].tolist().index(1) == 0
    gaps = pd.read_csv(tmp_path / "out" / "kpi14gap" / "kpi-1.csv")
    assert 0.8 * len(second) < len(gaps) < 0.9 * len(second)
