"""Shared test problems of the sparse tests."""

import numpy as np


def well_conditioned(seed=0, m=200, n=20):
    """A regression with unit-scaled columns (``||X_j||^2 = m``) and a 5-sparse truth."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n))
    X *= np.sqrt(m) / np.linalg.norm(X, axis=0)
    w = np.zeros(n)
    w[:5] = rng.choice([-1, 1], 5) * rng.uniform(1, 2, 5)
    y = X @ w + 0.05 * rng.standard_normal(m)
    return X, y, w
