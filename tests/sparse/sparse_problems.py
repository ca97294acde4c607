"""Shared test problems of the sparse tests."""

import numpy as np
import torch


def well_conditioned(seed=0, m=200, n=20):
    """A regression with unit-scaled columns (``||X_j||^2 = m``) and a 5-sparse truth."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n))
    X *= np.sqrt(m) / np.linalg.norm(X, axis=0)
    w = np.zeros(n)
    w[:5] = rng.choice([-1, 1], 5) * rng.uniform(1, 2, 5)
    y = X @ w + 0.05 * rng.standard_normal(m)
    return X, y, w


def make_problem(m=80, n=200, k=8, noise=0.01, seed=0, B=None, dtype=torch.float64):
    """A Gaussian sensing matrix ``(m, n)`` and ``B`` (or one) k-sparse signals with their
    noisy measurements, drawn in float64 and returned in ``dtype``."""
    f64 = torch.float64
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=gen, dtype=f64) / m**0.5
    shape = (n,) if B is None else (B, n)
    x = torch.zeros(shape, dtype=f64)
    amp = (1 + torch.rand(shape[:-1] + (k,), generator=gen, dtype=f64)) * torch.sign(
        torch.randn(shape[:-1] + (k,), generator=gen, dtype=f64)
    )
    x[..., :k] = amp
    y = x @ A.T + noise * torch.randn(shape[:-1] + (m,), generator=gen, dtype=f64)
    return A.to(dtype), y.to(dtype), x
