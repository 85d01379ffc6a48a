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
                "--all-columns",
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
        ("when,x\n2026-01-01,1\n", [], "no time column (none of timestamp, datetime, time"),
        ("when,x\n2026-01-01,1\n", ["--timestamp-column", "at"], "no timestamp column 'at'"),
        ("datetime,x\nyesterday-ish,1\n", [], "unparseable"),
        ("datetime,x\n2026-01-01,1\n", ["--label-column", "anomaly"], "no label column"),
        ("datetime,name\n2026-01-01,abc\n", [], "no numeric columns"),
    ],
)
def test_bad_datasets_name_the_problem(tmp_path, capsys, content, args, message):
    path = tmp_path / "d.csv"
    path.write_text(content)
    assert replay_main([str(path), "--all-columns", "--output", "null", *args]) == 2
    assert message in capsys.readouterr().err


# --- the hostile-input campaign against CSV input (replay, evaluation) ------------------------


def _hostile_csvs():
    """CSV files as users' exports can be: any bytes, or a header and rows whose cells hold
    any Unicode, numbers at every edge, timestamps in any form, quotes and separators."""
    from hypothesis import strategies as st

    from tests import hostile

    cell = st.one_of(
        hostile.nasty_text(),
        st.sampled_from(hostile.EDGE_NUMBER_TEXTS),
        st.sampled_from(["2026-12-02 10:00:00", "2026-12-02T10:00:00+05:00", "1700000000",
                         "0", "-1", "9999-12-31", "0001-01-01", "NaT", "yesterday", ""]),
        st.sampled_from(['"', '""', ",", ";", "\n", "\r\n", '"a,b"', "#"]),
    )  # fmt: skip
    header = st.lists(
        st.one_of(st.sampled_from(["timestamp", "label", "value", "cpu"]), hostile.nasty_text()),
        min_size=1,
        max_size=4,
    )

    @st.composite
    def table(draw) -> bytes:
        columns = draw(header)
        rows = draw(st.lists(st.lists(cell, min_size=len(columns), max_size=len(columns)),
                             max_size=6))  # fmt: skip
        sep = draw(st.sampled_from([",", ";", "\t"]))
        text = "\n".join(sep.join(r) for r in [columns, *rows])
        return text.encode("utf-8", errors="surrogatepass")

    @st.composite
    def nearly_valid(draw) -> bytes:
        """Good timestamps, hostile values and labels."""
        n = draw(st.integers(1, 6))
        values = draw(st.lists(st.sampled_from(hostile.EDGE_NUMBER_TEXTS), min_size=n,
                               max_size=n))  # fmt: skip
        labels = draw(st.lists(st.one_of(st.sampled_from(["0", "1", ""]), hostile.nasty_text()),
                               min_size=n, max_size=n))  # fmt: skip
        lines = ["timestamp,value,label"] + [
            f"2026-12-02 10:{i:02d}:00,{json.dumps(v)},{json.dumps(lab)}"
            for i, (v, lab) in enumerate(zip(values, labels, strict=True))
        ]
        return "\n".join(lines).encode("utf-8", errors="surrogatepass")

    return st.one_of(st.binary(max_size=300), table(), nearly_valid())


def test_hostile_csv_files_give_a_dataset_or_a_clear_error(tmp_path):
    """read_dataset (replay and evaluation read CSVs with it) on any file: a dataset whose
    events are JSON, or DatasetError naming the file; never another exception."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from common.datasets import DatasetError, read_dataset
    from simulator.replay import events
    from tests.hostile import CAMPAIGN

    path = tmp_path / "series.csv"
    outcomes = {"dataset": 0, "error": 0}

    @settings(CAMPAIGN, max_examples=300)
    @given(content=_hostile_csvs(), label=st.sampled_from([None, "label", "value"]))
    def read(content: bytes, label: str | None) -> None:
        path.write_bytes(content)
        try:
            data = read_dataset(
                path, timestamp_column="timestamp", label_column=label, sep=None, columns=None
            )
        except DatasetError as exc:
            assert str(path) in str(exc)
            outcomes["error"] += 1
            return
        for _, key, value in events(data):
            assert json.loads(value)["device_id"] == key.decode()
        outcomes["dataset"] += 1

    read()
    assert outcomes["dataset"] > 0 and outcomes["error"] > 0, outcomes


def test_replay_refuses_a_hostile_file_with_one_line_and_no_traceback(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"timestamp,label,value\n\xff\xfe\x00,yes,1\n2026-12-02,\x00,NaN\n")
    proc = subprocess.run(
        [sys.executable, "-m", "simulator.replay", str(bad), "--label-column", "label",
         "--timestamp-column", "timestamp", "--output", "null"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("replay: "), proc.stderr
