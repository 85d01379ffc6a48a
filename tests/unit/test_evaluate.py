"""The SKAB evaluation harness: metrics by hand, detectors on planted faults, the protocol on a
small SKAB-shaped folder, and clear errors."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from common.catalogue import load as load_catalogue
from training.evaluate import (
    DEFAULT_DATA,
    TRAIN_ROWS,
    EvaluationError,
    PcaT2Q,
    PerFile,
    StreamModel,
    ThreeSigma,
    anomaly_events,
    evaluate,
    event_metrics,
    load_skab,
    main,
    point_metrics,
)


def test_point_metrics_by_hand():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1], bool)
    flags = np.array([1, 0, 1, 1, 0, 0, 0, 0], bool)
    m = point_metrics(labels, flags)
    assert (m.tp, m.fp, m.fn, m.tn) == (2, 1, 2, 3)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(0.5)
    assert m.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert m.far_pct == pytest.approx(25.0) and m.mar_pct == pytest.approx(50.0)


def test_events_and_delays_by_hand():
    labels = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 1], bool)
    flags = np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 1], bool)
    assert anomaly_events(labels) == [(1, 4), (6, 8), (9, 10)]
    assert event_metrics(labels, flags) == (3, 2, [2, 0])


def test_three_sigma_flags_a_planted_excursion():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(400, 3))
    test = rng.normal(size=(100, 3))
    test[50, 1] = 8.0
    _, flags = ThreeSigma().fit(train).score(test)
    assert flags[50] and flags.sum() <= 3


def test_pca_catches_a_broken_correlation_that_three_sigma_misses():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(400, 1))
    train = np.hstack(
        [base, base + rng.normal(scale=0.05, size=(400, 1)), rng.normal(size=(400, 1))]
    )
    probe = np.array([[1.5, -1.5, 0.0]])  # each value ordinary, their relation broken
    assert not ThreeSigma().fit(train).score(probe)[1][0]
    assert PcaT2Q().fit(train).score(probe)[1][0]


def write_skab_like(folder, n_files=2, rows=600, fault_at=450, seed=0):
    """SKAB-shaped CSVs (same columns, ';'): normal rows, then a flow collapse at fault_at."""
    rng = np.random.default_rng(seed)
    columns = [m.source_column for m in load_catalogue("skab").metrics]
    for i in range(n_files):
        values = rng.normal(loc=10.0, scale=0.1, size=(rows, len(columns)))
        labels = np.zeros(rows)
        labels[fault_at : fault_at + 60] = 1
        values[fault_at : fault_at + 60, -1] -= 5.0  # Volume Flow RateRMS collapses
        frame = pd.DataFrame(values, columns=columns)
        frame.insert(0, "datetime", pd.date_range("2026-01-01", periods=rows, freq="s"))
        frame["anomaly"] = labels
        frame["changepoint"] = 0.0
        (folder / "valve").mkdir(exist_ok=True)
        frame.to_csv(folder / "valve" / f"{i}.csv", sep=";", index=False)


def test_protocol_trains_on_the_first_rows_and_scores_the_rest(tmp_path):
    write_skab_like(tmp_path)
    files = load_skab(tmp_path)
    assert [name for name, _, _ in files] == ["valve/0.csv", "valve/1.csv"]
    methods = [PerFile(ThreeSigma), PerFile(PcaT2Q), StreamModel("pca-t2q", 10)]
    results, outputs = evaluate(files, methods)
    for r in results:
        assert r["events"] == 2 and r["events_detected"] == 2, r
        assert r["f1"] > 0.85, r
    assert [r["median_delay_s"] for r in results] == [0, 0, 0]
    assert [len(scores) for scores, _ in outputs[methods[2].name]] == [200, 200]
    # Scored rows only: 2 files x (600 - 400); the 120 faulty rows are all after row 400.
    assert sum(len(x) - TRAIN_ROWS for _, x, _ in files) == 400


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.iloc[:300], "needs more than 400"),
        (lambda f: f.drop(columns=["Current"]), "columns ['Current'] missing"),
        (lambda f: f.drop(columns=["anomaly"]), "no label column"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, mutate, message):
    write_skab_like(tmp_path, n_files=1)
    path = tmp_path / "valve" / "0.csv"
    mutate(pd.read_csv(path, sep=";")).to_csv(path, sep=";", index=False)
    with pytest.raises(EvaluationError, match=re.escape(message)):
        load_skab(tmp_path)


def test_cli_reports_a_missing_dataset(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "nothing")]) == 2
    assert "no SKAB CSV files" in capsys.readouterr().err


@pytest.mark.skipif(
    not DEFAULT_DATA.exists(), reason="../shared/datasets/skab is not beside the repo"
)
def test_real_skab_figures_stay_as_measured():
    """Guards the protocol: these detectors are deterministic, so the pooled figures on the real
    dataset must not move unless the protocol or the detectors change on purpose."""
    methods = [PerFile(ThreeSigma), PerFile(PcaT2Q), StreamModel("pca-t2q", 10)]
    results = {r["method"]: r for r in evaluate(load_skab(DEFAULT_DATA), methods)[0]}
    three, pca, ours = (results[m.name] for m in methods)
    assert (three["f1"], three["far_pct"], three["mar_pct"]) == (0.76, 44.12, 15.39)
    assert (pca["f1"], pca["far_pct"], pca["mar_pct"]) == (0.752, 54.57, 11.41)
    # Our streaming model (window features, per-file normalisation, one ONNX model): the
    # issue's goal is F1 >= 0.76 at FAR < 20 %.
    assert (ours["f1"], ours["far_pct"], ours["mar_pct"]) == (0.79, 15.69, 25.85)
    assert three["events"] == pca["events"] == ours["events"] == 34


def test_plot_of_one_file_is_a_png_and_unknown_files_are_named(tmp_path):
    from training.evaluate import plot_file

    write_skab_like(tmp_path, n_files=1)
    files = load_skab(tmp_path)
    methods = [PerFile(ThreeSigma)]
    _, outputs = evaluate(files, methods)
    out = plot_file(files, "valve/0.csv", tmp_path / "plot.png", methods, outputs)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with pytest.raises(EvaluationError, match=re.escape("no file 'valve/9.csv'")):
        plot_file(files, "valve/9.csv", tmp_path / "x.png", methods, outputs)


def test_rolling_features_equal_the_tumbling_features_where_windows_align():
    """The SKAB evaluation's sliding window features are the job's tumbling features at every
    10th row of 1 Hz data (checked against the independent reference of tests/reference.py,
    which the Flink SQL is itself checked against)."""
    from common.features import HORIZONS, METRIC_NAMES, MODEL_FEATURE_NAMES
    from tests import reference
    from training.evaluate import rolling_window_features

    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, len(METRIC_NAMES))) * 10 + 50
    x[20:30, 0] = 7.0  # a flat window: std exactly 0
    events = [
        {
            "device_id": "d",
            "ts_ms": 1_700_000_000_000 + 1000 * i,
            **dict(zip(METRIC_NAMES, row, strict=True)),
        }
        for i, row in enumerate(x.tolist())
    ]
    names, rolling = rolling_window_features(x, METRIC_NAMES, 10, HORIZONS)
    assert names == MODEL_FEATURE_NAMES
    tumbling = reference.window_features(events, 10)[list(names)].to_numpy()
    np.testing.assert_allclose(rolling[9::10], tumbling, rtol=1e-9, atol=1e-12)
    assert rolling[29, names.index(f"{METRIC_NAMES[0]}_std")] == 0.0
