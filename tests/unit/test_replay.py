from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from common.catalogue import load as load_catalogue
from simulator.replay import main as replay_main

SKAB = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "skab" / "data"
SKAB_FILE = SKAB / "valve1" / "0.csv"


@pytest.mark.skipif(not SKAB_FILE.exists(), reason="../shared/datasets/skab is not beside the repo")
def test_skab_file_replays_as_catalogue_metrics_with_labels(tmp_path):
    out = tmp_path / "skab.jsonl"
    assert (
        replay_main(
            [
                "--catalogue",
                "skab",
                "--label-column",
                "anomaly",
                str(SKAB_FILE),
                "--output",
                "file",
                "--path",
                str(out),
            ]
        )
        == 0
    )
    source = pd.read_csv(SKAB_FILE, sep=";")
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(events) == len(source)
    metrics = load_catalogue("skab").metrics
    first = events[0]
    assert first["device_id"] == "valve1-0"
    for m in metrics:
        assert first[m.name] == pytest.approx(source[m.source_column].iloc[0])
    assert sum(e["is_anomaly"] for e in events) == int(source["anomaly"].sum())
    assert first["ts_ms"] == int(
        pd.Timestamp(source["datetime"].iloc[0], tz="UTC").timestamp() * 1000
    )
    assert [e["ts_ms"] for e in events] == sorted(e["ts_ms"] for e in events)


def test_generic_csv_without_labels_and_files_merged_in_time_order(tmp_path):
    (tmp_path / "a.csv").write_text(
        "timestamp,Temp (C),load\n2026-01-01 00:00:00,1.5,3\n2026-01-01 00:00:02,2.5,\n"
    )
    (tmp_path / "b.csv").write_text("timestamp,Temp (C),load\n2026-01-01 00:00:01,9,9\n")
    out = tmp_path / "out.jsonl"
    assert (
        replay_main(
            [
                "--timestamp-column",
                "timestamp",
                str(tmp_path / "a.csv"),
                str(tmp_path / "b.csv"),
                "--output",
                "file",
                "--path",
                str(out),
            ]
        )
        == 0
    )
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["device_id"] for e in events] == [
        f"{tmp_path.name}-a",
        f"{tmp_path.name}-b",
        f"{tmp_path.name}-a",
    ]
    assert events[0]["temp_c"] == 1.5 and events[0]["load"] == 3
    assert "load" not in events[2]  # an empty cell is left out, not sent as NaN
    assert "is_anomaly" not in events[0]


@pytest.mark.parametrize(
    "content, args, message",
    [
        ("time,x\n2026-01-01,1\n", [], "no timestamp column 'datetime'"),
        ("datetime,x\nyesterday-ish,1\n", [], "unparseable"),
        ("datetime,x\n2026-01-01,1\n", ["--label-column", "anomaly"], "no label column"),
        ("datetime,name\n2026-01-01,abc\n", [], "no numeric columns"),
    ],
)
def test_bad_datasets_name_the_problem(tmp_path, capsys, content, args, message):
    path = tmp_path / "d.csv"
    path.write_text(content)
    assert replay_main([str(path), "--output", "null", *args]) == 2
    assert message in capsys.readouterr().err
