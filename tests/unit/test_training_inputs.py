"""Training: its inputs (event dump, CSV), refusals that name the problem and write nothing,
the model card's contents, and reproducible versions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from common.features import CATALOGUE, METRIC_NAMES, MODEL_FEATURE_NAMES
from common.settings import Settings
from training.detectors import DetectorParams
from training.train import (
    MIN_WINDOWS,
    MIN_WINDOWS_PER_FEATURE,
    TrainingDataError,
    fit_model,
    usable_windows,
)
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


def windows(n: int = 200, devices: int = 4, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(50, 5, size=(n, len(MODEL_FEATURE_NAMES))),
                         columns=list(MODEL_FEATURE_NAMES))  # fmt: skip
    frame.insert(0, "device_id", [f"d{i % devices}" for i in range(n)])
    frame.insert(1, "window_start", pd.date_range("2026-01-01", periods=n, freq="10s", tz="UTC"))
    return frame


def test_windows_with_missing_features_or_labels_are_left_out():
    frame = windows()
    frame.loc[3, MODEL_FEATURE_NAMES[0]] = np.nan
    frame["labelled_events"] = 0
    frame.loc[[5, 6], "labelled_events"] = 3
    kept = usable_windows(frame, "test", log=lambda m: None)
    assert len(kept) == 197 and not {3, 5, 6} & set(kept.index)


NEEDED = max(MIN_WINDOWS, MIN_WINDOWS_PER_FEATURE * len(MODEL_FEATURE_NAMES))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.assign(**{MODEL_FEATURE_NAMES[2]: np.nan}),
         f"feature(s) ['{MODEL_FEATURE_NAMES[2]}'] are missing (NaN/inf) in every window"),
        (lambda f: f.drop(columns=[MODEL_FEATURE_NAMES[1]]),
         f"feature columns missing from the training data: ['{MODEL_FEATURE_NAMES[1]}']"),
        (lambda f: f.iloc[:0], "holds no windows"),
        (lambda f: f.iloc[:NEEDED - 10],
         f"only {NEEDED - 10} complete windows in test: training needs at least {NEEDED}"),
    ],
)  # fmt: skip
def test_unusable_windows_name_the_problem(mutate, message):
    with pytest.raises(TrainingDataError) as err:
        usable_windows(mutate(windows()), "test", log=lambda m: None)
    assert message in str(err.value)


def fit(tmp_path, frame: pd.DataFrame, params: DetectorParams):
    return fit_model(
        frame["device_id"].to_numpy(dtype=object),
        frame[list(MODEL_FEATURE_NAMES)].to_numpy(),
        feature_names=MODEL_FEATURE_NAMES,
        window_seconds=10,
        params=params,
        models_dir=tmp_path,
        training={"source": "test"},
        log=lambda m: None,
    )


@pytest.mark.parametrize("model", ["isolation-forest", "pca-t2q"])
def test_same_data_and_seed_give_the_same_version(tmp_path, model):
    params = DetectorParams(model=model, n_estimators=30)
    a = fit(tmp_path / "a", windows(), params)
    b = fit(tmp_path / "b", windows(), params)
    assert a.version == b.version
    assert (a.model_dir / "model.onnx").read_bytes() == (b.model_dir / "model.onnx").read_bytes()
    other_data = fit(tmp_path / "c", windows(seed=1), params)
    assert other_data.version != a.version
    if model == "isolation-forest":
        other_seed = fit(tmp_path / "d", windows(), DetectorParams(model=model, n_estimators=30,
                                                                   random_state=7))  # fmt: skip
        assert other_seed.version != a.version


def test_card_holds_what_the_stream_and_an_auditor_need(tmp_path):
    result = fit(tmp_path, windows(), DetectorParams(model="pca-t2q"))
    card = json.loads((result.model_dir / "card.json").read_text())
    assert card["version"] == result.version == result.model_dir.name
    assert card["model"] == "pca-t2q" and card["window_seconds"] == 10
    assert card["feature_names"] == list(MODEL_FEATURE_NAMES)
    assert set(card["normalisation"]["devices"]) == {"d0", "d1", "d2", "d3"}
    assert len(card["normalisation"]["devices"]["d0"]["center"]) == len(MODEL_FEATURE_NAMES)
    cal = card["calibration"]
    assert cal["threshold"] == result.severity.threshold and cal["knots"][-1][1] == 50
    assert cal["threshold_quantile"] == pytest.approx(1 - 0.00125)
    assert card["training"]["windows"] == 200 and card["training"]["devices"] == 4
    assert card["training"]["source"] == "test"
    assert set(card["libraries"]) >= {"scikit-learn", "onnx", "onnxruntime", "numpy"}
    assert card["onnx_opsets"] == {"": 17, "ai.onnx.ml": 3}
    assert card["parity"]["max_relative_diff_held_out"] <= 1e-5
    assert card["parity"]["held_out_rows"] == 200
    assert card["detector"]["components"] >= 1


def test_classic_isolation_forest_settings_are_the_defaults():
    p = DetectorParams(model="isolation-forest")
    assert (p.n_estimators, p.contamination, p.random_state) == (1000, 0.00125, 42)
    with pytest.raises(ValueError, match="unknown model 'svm'"):
        DetectorParams(model="svm")
    with pytest.raises(ValueError, match="contamination"):
        DetectorParams(contamination=0.0)


def write_csv_dataset(folder, *, rows=900, seed=0, constant=None, drop=None):
    """Two CSV files (one device each) with the active catalogue's metric columns, 1 Hz:
    15 min by default."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    columns = [m.source_column or m.name for m in CATALOGUE.metrics]
    for i in range(2):
        frame = pd.DataFrame(rng.normal(50 + 20 * i, 3, size=(rows, len(columns))),
                             columns=columns)  # fmt: skip
        frame.insert(0, "timestamp", pd.date_range("2026-01-01", periods=rows, freq="s"))
        frame["label"] = 0
        frame.loc[100:119, "label"] = 1  # windows 10 and 11 of each file
        if constant:
            frame[constant] = 1.0
        if drop:
            frame = frame.drop(columns=[drop])
        frame.to_csv(folder / f"site{i}.csv", index=False)
    return folder


def test_csv_dataset_trains_on_its_unlabelled_windows(tmp_path, monkeypatch, capsys):
    folder = write_csv_dataset(tmp_path / "csv")
    monkeypatch.setenv("ANOMALY_MODELS_DIR", str(tmp_path / "models"))
    assert train_main(["--csv", str(folder), "--label-column", "label", "--no-current"]) == 0
    (card_path,) = (tmp_path / "models").glob("*/card.json")
    card = json.loads(card_path.read_text())
    # 2 files x 900 s = 180 windows of 10 s; the 2 labelled windows of each file are left out.
    assert card["training"]["windows_read"] == 180 and card["training"]["windows"] == 176
    assert set(card["normalisation"]["devices"]) == {"csv-site0", "csv-site1"}
    assert (
        "left out 0 windows with a missing feature and 4 windows with events labelled anomalous"
        in capsys.readouterr().out
    )


def test_a_modelled_horizon_that_never_varies_is_refused(tmp_path):
    """A horizon whose deviation is 0 in every training window (e.g. one window per device):
    a model fitted so would alarm on any context later."""
    rng = np.random.default_rng(0)
    names = (*MODEL_FEATURE_NAMES, f"{METRIC_NAMES[0]}_dev1h")
    x = rng.normal(size=(200, len(names)))
    x[:, -1] = 0.0
    with pytest.raises(TrainingDataError) as info:
        fit_model(
            np.array(["d"] * 200, dtype=object),
            x,
            feature_names=names,
            window_seconds=10,
            params=DetectorParams(),
            models_dir=tmp_path,
            training={"source": "test"},
            log=lambda m: None,
        )
    assert "context horizon(s) ['1h']: their features never vary" in str(info.value)
    assert "ANOMALY_CONTEXT_MODELLED" in str(info.value)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"constant": "cpu_utilization"}, "['cpu_utilization'] are constant over every row"),
        ({"drop": "latency_ms"}, "columns ['latency_ms'] missing"),
    ],
)
def test_bad_csv_datasets_name_the_problem(tmp_path, monkeypatch, capsys, kwargs, message):
    if CATALOGUE.name != "network":
        pytest.skip("the column names here are the network catalogue's")
    folder = write_csv_dataset(tmp_path / "csv", **kwargs)
    monkeypatch.setenv("ANOMALY_MODELS_DIR", str(tmp_path / "models"))
    assert train_main(["--csv", str(folder)]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


def test_csv_training_takes_a_time_range_of_each_device(tmp_path, monkeypatch):
    """--fraction and --since/--until select rows of each file: no truncated copies."""
    folder = write_csv_dataset(tmp_path / "csv", rows=1800)  # 30 min per device
    monkeypatch.setenv("ANOMALY_MODELS_DIR", str(tmp_path / "models"))
    base = ["--csv", str(folder), "--label-column", "label", "--no-current"]
    assert train_main([*base, "--fraction", "0.5"]) == 0
    assert train_main([*base, "--since", "2026-01-01T00:10:00", "--until", "2026-01-01T00:20"]) == 0
    cards = [json.loads(p.read_text()) for p in (tmp_path / "models").glob("*/card.json")]
    read = sorted(c["training"]["windows_read"] for c in cards)
    # half: 2 x 90 windows of 10 s; 00:10-00:20: 2 x 60
    assert read == [120, 180], read
    assert any("first 50% of each device's rows" in c["training"]["source"] for c in cards)
