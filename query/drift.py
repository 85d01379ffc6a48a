"""The drift statistic: how far a set of scores has moved from the training scores of the model
that gave them. The same definition as drift_check() in sql/postgres/R__query_layer.sql (the
tests hold the two to each other), for scores that are not in the database yet (a candidate
model's held-out windows)."""

from __future__ import annotations

import numpy as np

# Bins between the training scores' quantiles, and the share of training scores in each.
QUANTILES = ("0.5", "0.9", "0.99", "0.999")
EXPECTED = np.array([0.5, 0.4, 0.09, 0.009, 0.001])
# An empty bin counts as this share, so that the logarithm stays finite.
FLOOR = 1e-4


def psi(scores: np.ndarray, quantiles: dict[str, float]) -> float:
    """Population stability index of ``scores`` over the bins of the training quantiles:
    sum of (actual - expected) * ln(actual / expected). Below 0.1 the distribution is
    stable, 0.1-0.25 a moderate shift, above 0.25 a large one."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        raise ValueError("no scores to compare")
    edges = [float(quantiles[q]) for q in QUANTILES]
    counts = np.histogram(scores, bins=[-np.inf, *edges, np.inf])[0]
    actual = np.maximum(counts / len(scores), FLOOR)
    return float(np.sum((actual - EXPECTED) * np.log(actual / EXPECTED)))
