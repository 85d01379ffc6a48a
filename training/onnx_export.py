"""Fast ONNX export of scikit-learn's IsolationForest: one tree-ensemble node for the forest.

skl2onnx exports each tree as its own subgraph (27,010 nodes for 1000 trees), which is slow to
convert, slow to load and slow to run. Here the whole forest is ONE ``ai.onnx.ml``
TreeEnsembleRegressor whose leaf values are the leaves' path lengths, summed over the trees,
followed by the few arithmetic nodes of scikit-learn's score:

    path(leaf)     = depth(leaf) + c(n_samples(leaf)) - 1      (depth of the root is 1)
    score_samples  = -2 ** (-sum_over_trees(path) / (n_trees * c(max_samples)))
    decision       = score_samples - offset_                    ("scores" output)
    label          = -1 if decision < 0 else 1                  ("label" output)
    score          = -decision, in double                       ("score" output)

with c(n) the average path length of an unsuccessful search in a binary search tree of n nodes.
Input and the outputs "label" and "scores" have the names and meaning of skl2onnx's export;
"score" is the output every model of training/detectors.py has (higher = more anomalous).
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest

ML_OPSET = 3
ONNX_OPSET = 17


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): scikit-learn's _average_path_length, for an array of sample counts."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def float32_floor(values: np.ndarray) -> np.ndarray:
    """The largest float32 <= each value: for float32 x, x <= t exactly when x <= floor32(t)."""
    f = values.astype(np.float32)
    above = f.astype(np.float64) > values
    f[above] = np.nextafter(f[above], np.float32(-np.inf))
    return f


def isolation_forest_to_onnx(model: IsolationForest, n_features: int, input_name: str = "X"):
    """The ONNX ModelProto of a fitted IsolationForest (see the module docstring)."""
    from onnx import TensorProto, helper

    if model._max_samples < 2:
        raise ValueError("an IsolationForest fitted on fewer than 2 samples cannot be exported")
    subsample = model._max_features != n_features
    tree_ids, node_ids, feature_ids, thresholds, modes = [], [], [], [], []
    true_ids, false_ids = [], []
    target_tree_ids, target_node_ids, target_weights = [], [], []
    for t, (estimator, features) in enumerate(
        zip(model.estimators_, model.estimators_features_, strict=True)
    ):
        tree = estimator.tree_
        count = tree.node_count
        left, right = tree.children_left, tree.children_right
        leaf = left == -1
        feature = np.where(leaf, 0, tree.feature)
        if subsample:
            feature = np.where(leaf, 0, np.asarray(features)[np.maximum(tree.feature, 0)])
        path = tree.compute_node_depths() + average_path_length(tree.n_node_samples) - 1.0
        tree_ids += [t] * count
        node_ids += list(range(count))
        feature_ids += feature.astype(np.int64).tolist()
        thresholds += np.where(leaf, 0.0, float32_floor(tree.threshold)).tolist()
        modes += ["LEAF" if is_leaf else "BRANCH_LEQ" for is_leaf in leaf.tolist()]
        true_ids += np.where(leaf, 0, left).tolist()
        false_ids += np.where(leaf, 0, right).tolist()
        leaves = np.flatnonzero(leaf)
        target_tree_ids += [t] * len(leaves)
        target_node_ids += leaves.tolist()
        target_weights += path[leaves].tolist()

    denominator = len(model.estimators_) * float(average_path_length([model._max_samples])[0])
    ensemble = helper.make_node(
        "TreeEnsembleRegressor",
        [input_name],
        ["path_sum"],
        domain="ai.onnx.ml",
        n_targets=1,
        aggregate_function="SUM",
        post_transform="NONE",
        nodes_treeids=tree_ids,
        nodes_nodeids=node_ids,
        nodes_featureids=feature_ids,
        nodes_values=thresholds,
        nodes_modes=modes,
        nodes_truenodeids=true_ids,
        nodes_falsenodeids=false_ids,
        target_treeids=target_tree_ids,
        target_nodeids=target_node_ids,
        target_ids=[0] * len(target_node_ids),
        target_weights=target_weights,
    )

    def const(name: str, value: float, dtype=TensorProto.FLOAT):
        return helper.make_tensor(name, dtype, [], [value])

    nodes = [
        ensemble,
        helper.make_node("Cast", ["path_sum"], ["path_sum64"], to=TensorProto.DOUBLE),
        helper.make_node("Div", ["path_sum64", "denominator"], ["mean_path"]),
        helper.make_node("Neg", ["mean_path"], ["neg_mean_path"]),
        helper.make_node("Pow", ["two", "neg_mean_path"], ["anomaly"]),
        helper.make_node("Neg", ["anomaly"], ["score_samples"]),
        helper.make_node("Sub", ["score_samples", "offset"], ["decision"]),
        helper.make_node("Cast", ["decision"], ["scores"], to=TensorProto.FLOAT),
        helper.make_node("Neg", ["decision"], ["score"]),
        helper.make_node("Less", ["decision", "zero"], ["is_outlier"]),
        helper.make_node("Where", ["is_outlier", "minus_one", "one"], ["label"]),
    ]
    graph = helper.make_graph(
        nodes,
        "isolation_forest",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None, 1]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("score", TensorProto.DOUBLE, [None, 1]),
        ],
        initializer=[
            const("denominator", denominator, TensorProto.DOUBLE),
            const("two", 2.0, TensorProto.DOUBLE),
            const("offset", float(model.offset_), TensorProto.DOUBLE),
            const("zero", 0.0, TensorProto.DOUBLE),
            const("minus_one", -1, TensorProto.INT64),
            const("one", 1, TensorProto.INT64),
        ],
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", ONNX_OPSET),
            helper.make_opsetid("ai.onnx.ml", ML_OPSET),
        ],
        producer_name="flink-anomaly training.onnx_export",
    )
    onnx_model.ir_version = 8  # readable by every onnxruntime that supports opset 17
    return onnx_model
