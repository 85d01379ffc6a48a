"""The benchmark commands still run (tiny N); their figures are not judged here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.simulator_throughput import main as bench_main

pytestmark = pytest.mark.stack


def test_simulator_bench_runs_and_writes_its_json(stack, tmp_path, capsys):
    out = tmp_path / "simulator.json"
    rc = bench_main(
        ["--devices", "200", "--events", "4000", "--processes", "1,2", "--json-out", str(out)]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    assert [(r["processes"], r["output"]) for r in result["runs"]] == [
        (1, "null"),
        (1, "kafka"),
        (2, "null"),
        (2, "kafka"),
    ]
    assert all(r["events"] == 4000 and r["delivery_errors"] == 0 for r in result["runs"])
    assert "where the time goes" in capsys.readouterr().out


def test_format_bench_runs_both_formats_over_every_message(tmp_path, capsys):
    from bench.format import main as format_bench_main

    out = tmp_path / "format.json"
    args = ["--events", "2000", "--devices", "50", "--rounds", "3", "--json-out", str(out)]
    assert format_bench_main(args) == 0
    result = json.loads(out.read_text())
    assert [r["round"] for r in result["rounds"]] == [0, 1, 2]
    # Every simulator message is a good event: one row each from the telemetry-json format.
    assert all(r["rows"] == 2000 for r in result["rounds"])
    summary = result["summary"]
    assert summary["rounds_counted"] == 2 and summary["ours_ns_per_message"] > 0
    assert "ours_over_flink_json" in capsys.readouterr().out


def test_onnx_scoring_bench_runs_and_checks_parity(tmp_path, capsys):
    from bench.onnx_scoring import main as onnx_bench_main

    out = tmp_path / "onnx.json"
    assert (
        onnx_bench_main(
            ["--trees", "5", "--features", "4", "--seconds", "0.05", "--json-out", str(out)]
        )
        == 0
    )
    result = json.loads(out.read_text())
    names = [r["name"] for r in result["results"]]
    assert names == ["scikit-learn", "onnx one-node (ours)", "onnx skl2onnx"]
    assert all(r["max_abs_diff"] < 1e-5 for r in result["results"])


def test_scoring_udf_bench_runs_and_agrees_across_variants(tmp_path, capsys):
    from bench.scoring_udf import main as udf_bench_main

    out = tmp_path / "udf.json"
    args = ["--devices", "50", "--rows", "2000", "--seconds", "0.05", "--json-out", str(out)]
    assert udf_bench_main(args) == 0
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["results"]][:3] == [
        "vectorized ONNX (the UDF)",
        "per-row ONNX",
        "per-row scikit-learn",
    ]
    assert result["max_abs_score_diff"] < 1e-5 and result["flagged"] > 0
    assert "vectorized is x faster" in capsys.readouterr().out


def test_scoring_udf_bench_of_a_one_metric_fleet_scores_with_the_context_check(tmp_path):
    """In a one-metric catalogue (its own process: the catalogue is read at import) the
    model is context-checked, every variant agrees, and the readings' cost is measured."""
    out = tmp_path / "udf.json"
    args = ["--devices", "50", "--rows", "2000", "--seconds", "0.05", "--json-out", str(out)]
    env = {**os.environ, "ANOMALY_CATALOGUE": "ops", "ANOMALY_WINDOW_SECONDS": "3600"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.scoring_udf", *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert (result["catalogue"], result["context_check"], result["features"]) == ("ops", True, 4)
    assert [r["variant"] for r in result["results"]][-2:] == [
        "vectorized ONNX, scoring alone",
        "  the same without the readings",
    ]
    assert result["max_abs_score_diff"] < 1e-5 and result["flagged"] > 0
    assert "with the context check, catalogue ops" in done.stdout


def test_the_bench_command_runs_every_part(stack, trained, tmp_path, monkeypatch, capsys):
    from bench.pipeline import main as bench_main

    monkeypatch.setenv("ANOMALY_MODELS_DIR", str(trained[1].models_dir))
    out = tmp_path / "bench.json"
    args = ["--events", "3000", "--devices", "60", "--realtime-s", "20", "--rate", "600"]
    # Per-row scoring is left out here for time (tests/unit/test_udf.py holds it to the
    # vectorized rows).
    args += ["--warmup-s", "0", "--baseline-events", "300", "--no-per-row"]
    assert bench_main([*args, "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    runs = {r["label"]: r for r in result["runs"]}
    main = ("scoring-off 60 p1", "scoring-on 60 p1")
    assert set(runs) == {"bare-engine 60 p1", *main}
    assert runs[main[0]]["windows"] == runs[main[1]]["windows"] > 0
    assert runs["scoring-off 60 p1"]["flagged"] == 0
    assert all(runs[m]["first_row_s"] for m in main)
    assert all(r["tm_rss_peak_mb"] > 0 and r["job_s"] > 0 for r in runs.values())
    # Each part's CPU seconds: the TaskManager worked in every run, the Python workers only
    # where the job scores. (PostgreSQL's share of 300 windows rounds to 0 here.)
    parts = ("taskmanager", "python", "postgresql", "kafka")
    assert all(list(r["cpu_s"]) == list(parts) for r in runs.values())
    assert all(r["cpu_s"]["taskmanager"] > 0 for r in runs.values())
    assert runs[main[1]]["cpu_s"]["python"] > 0
    assert runs["bare-engine 60 p1"]["cpu_s"]["python"] == runs[main[0]]["cpu_s"]["python"] == 0
    # Of the TaskManager's seconds, its JIT compilers' and garbage collector's: a part of the
    # whole (both rounded to 0.1 s), and each job's new code gets compiled.
    jvm = {label: r["tm_jvm_cpu_s"] for label, r in runs.items()}
    assert all(list(used) == ["jit", "gc"] for used in jvm.values())
    assert all(
        0 <= sum(jvm[label].values()) <= r["cpu_s"]["taskmanager"] + 0.2
        for label, r in runs.items()
    )
    assert any(used["jit"] > 0 for used in jvm.values())
    # 3,000 events give no steady state to speak of: only that a rate is reported.
    assert all(r["steady_events_per_s"] >= 0 for r in runs.values())
    assert "full_over_bare_60_p1" in result["ratios"]
    assert result["baseline"]["events"] == result["baseline"]["stored"] >= 300
    latency = result["latency"]
    assert latency["windows_measured"] > 0 and latency["visible_after_window_end_s"]["p50"] > 0
    assert result["machine"]["cores"] and "scoring_cost_60_p1" in result["ratios"]
    assert "baseline (kafka-python loop" in capsys.readouterr().out
