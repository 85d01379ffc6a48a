"""The one-node ONNX export of IsolationForest against scikit-learn and, as a reference,
skl2onnx's own converter."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from sklearn.ensemble import IsolationForest

from training.onnx_export import average_path_length, float32_floor, isolation_forest_to_onnx
from udfs.onnx_scorer import OnnxModel  # noqa: F401  (the UDF's loader must accept the graph)


def run(model_proto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    s = ort.InferenceSession(
        model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    label, scores = s.run(["label", "scores"], {"X": x.astype(np.float32)})
    return label.ravel(), scores.ravel()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(3000, 8)) * [1, 5, 0.1, 100, 1, 1, 2, 3]
    test = rng.normal(size=(4000, 8)) * [1, 5, 0.1, 100, 1, 1, 2, 3]
    test[:40] *= 6  # far outliers
    return train.astype(np.float32), test.astype(np.float32)


@pytest.mark.parametrize("max_features", [1.0, 0.5])
@pytest.mark.parametrize("max_samples", [256, "auto", 37])
def test_scores_and_labels_equal_scikit_learn(data, max_features, max_samples):
    train, test = data
    model = IsolationForest(
        n_estimators=60,
        max_features=max_features,
        max_samples=max_samples,
        contamination=0.01,
        random_state=3,
    ).fit(train)
    label, scores = run(isolation_forest_to_onnx(model, train.shape[1]), test)
    np.testing.assert_allclose(scores, model.decision_function(test), atol=1e-5, rtol=0)
    assert (label == model.predict(test)).all()
    assert (label[:40] == -1).sum() >= 35


def test_points_exactly_on_thresholds_go_the_same_way(data):
    """Test rows made of the trees' own thresholds: the float32 rounding must not flip them."""
    train, _ = data
    model = IsolationForest(n_estimators=20, random_state=1).fit(train)
    thresholds = np.concatenate(
        [e.tree_.threshold[e.tree_.feature >= 0] for e in model.estimators_]
    )
    rows = np.tile(train[:1], (len(thresholds), 1))
    features = np.concatenate([e.tree_.feature[e.tree_.feature >= 0] for e in model.estimators_])
    rows[np.arange(len(rows)), features] = thresholds.astype(np.float32)
    label, scores = run(isolation_forest_to_onnx(model, train.shape[1]), rows)
    np.testing.assert_allclose(scores, model.decision_function(rows), atol=1e-5, rtol=0)
    assert (label == model.predict(rows)).all()


def test_agrees_with_the_skl2onnx_reference(data):
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    train, test = data
    model = IsolationForest(n_estimators=20, random_state=2).fit(train)
    reference = to_onnx(
        model,
        initial_types=[("X", FloatTensorType([None, 8]))],
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    ours = isolation_forest_to_onnx(model, 8)
    ref_label, ref_scores = run(reference, test)
    label, scores = run(ours, test)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5, rtol=0)
    assert (label == ref_label).all()
    assert len(ours.graph.node) < 15 < len(reference.graph.node)


def test_graph_is_one_tree_ensemble_and_valid(data):
    train, _ = data
    proto = isolation_forest_to_onnx(IsolationForest(n_estimators=30).fit(train), 8)
    onnx.checker.check_model(proto)
    kinds = [n.op_type for n in proto.graph.node]
    assert kinds.count("TreeEnsembleRegressor") == 1
    assert [o.name for o in proto.graph.output] == ["label", "scores", "score"]


def test_score_output_is_the_negated_decision_in_double(data):
    import onnxruntime as ort

    train, test = data
    model = IsolationForest(n_estimators=40, contamination=0.01, random_state=4).fit(train)
    s = ort.InferenceSession(isolation_forest_to_onnx(model, 8).SerializeToString())
    (score,) = s.run(["score"], {"X": test})
    assert score.dtype == np.float64
    # The tree ensemble sums path lengths in float32: agreement to ~1e-7.
    np.testing.assert_allclose(score.ravel(), -model.decision_function(test), atol=1e-6, rtol=0)


def test_float32_floor_keeps_comparisons_exact():
    rng = np.random.default_rng(5)
    t = rng.normal(size=20_000) * 10.0 ** rng.integers(-3, 4, 20_000)
    f = float32_floor(t)
    assert (f.astype(np.float64) <= t).all()
    assert (np.nextafter(f, np.float32(np.inf)).astype(np.float64) > t).all()
    x = (t + rng.normal(size=t.size) * 1e-7 * np.abs(t)).astype(np.float32)
    assert ((x.astype(np.float64) <= t) == (x <= f)).all()


def test_average_path_length_matches_known_values():
    np.testing.assert_allclose(
        average_path_length([0, 1, 2, 3, 256]),
        [
            0,
            0,
            1,
            2 * (np.log(2) + np.euler_gamma) - 4 / 3,
            2 * (np.log(255) + np.euler_gamma) - 2 * 255 / 256,
        ],
    )


def test_a_forest_of_one_sample_is_refused():
    with pytest.raises(ValueError, match="fewer than 2 samples"):
        isolation_forest_to_onnx(IsolationForest(n_estimators=2).fit([[1.0, 2.0]]), 2)
