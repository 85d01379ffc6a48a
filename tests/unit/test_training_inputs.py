"""Training refuses bad input with an error that names the problem, and writes nothing."""

from __future__ import annotations

import json

from common.features import METRIC_NAMES
from common.settings import Settings
from training.train import main as train_main


def test_missing_events_file(tmp_path, capsys):
    assert train_main(["--events", str(tmp_path / "nope.jsonl")]) == 1
    assert "no events at" in capsys.readouterr().err


def test_too_few_windows(tmp_path, capsys, monkeypatch):
    dump = tmp_path / "tiny.jsonl"
    event = {"device_id": "d", "ts_ms": 1_700_000_000_000, **dict.fromkeys(METRIC_NAMES, 1.0)}
    dump.write_text(json.dumps(event) + "\n")
    monkeypatch.setenv("ANOMALY_MODELS_DIR", str(tmp_path / "models"))
    assert train_main(["--events", str(dump)]) == 1
    assert "only 1 complete windows" in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_job_refuses_a_model_for_other_features(tmp_path, capsys):
    from jobs.score_telemetry import main as job_main

    (tmp_path / "model.onnx").write_bytes(b"not used")
    (tmp_path / "card.json").write_text(
        json.dumps({"version": "v", "feature_names": ["x"], "window_seconds": 10})
    )
    assert Settings().window_seconds == 10
    assert job_main(["--model-dir", str(tmp_path)]) == 2
    assert "retrain" in capsys.readouterr().err
