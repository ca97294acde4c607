"""Landscape probes on problems with a known answer: a quadratic with a known Hessian."""

import numpy as np
import pytest
import torch
from torch import nn

from beyondgd.landscape import (
    filter_normalized_direction,
    plot_slices_1d,
    plot_slices_2d,
    sharpness,
    slice_1d,
    slice_2d,
)


class Quadratic(nn.Module):
    """loss(w) = 1/2 (w - c)^T H (w - c) with w a (3, 4) matrix (three 'filters') and a bias."""

    def __init__(self, eigenvalues, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        n = len(eigenvalues)
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        self.h = q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T
        self.c = torch.randn(n, generator=gen, dtype=torch.float64)
        self.w = nn.Parameter(torch.randn(3, 4, generator=gen, dtype=torch.float64))
        self.bias = nn.Parameter(torch.ones(2, dtype=torch.float64))

    def loss(self):
        d = self.w.reshape(-1) - self.c
        return 0.5 * d @ self.h @ d + 0.0 * self.bias.sum()


EIGS = [9.0, 4.0, 3.0, 2.5, 2.0, 1.0, 0.5, 0.2, 0.1, -0.3, 0.05, 0.01]


def _loss(model):
    return model.loss()


@pytest.mark.parametrize("method", ["power", "lanczos"])
def test_sharpness_is_the_top_hessian_eigenvalue(method):
    model = Quadratic(EIGS)
    before = [p.detach().clone() for p in model.parameters()]
    res = sharpness(model, _loss, n_iter=200, tol=1e-8, method=method, seed=0)
    assert res.converged
    assert res.eigenvalue == pytest.approx(9.0, rel=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    v = torch.cat([res.eigenvector[0].reshape(-1)])
    hv = model.h @ v
    torch.testing.assert_close(hv, 9.0 * v, atol=1e-3, rtol=0)
    other = Quadratic([1.0, 5.0, *EIGS[2:]])
    assert sharpness(other, _loss, n_iter=200, tol=1e-8, method=method).eigenvalue == (
        pytest.approx(5.0, rel=1e-6)
    )


def test_slice_1d_is_the_parabola():
    model = Quadratic(EIGS)
    w0 = model.w.detach().clone()
    s = slice_1d(model, _loss, span=2.0, steps=9, seed=1)
    d = s.direction[0].reshape(-1)
    assert torch.equal(s.direction[1], torch.zeros(2, dtype=torch.float64))  # bias: zero
    r = w0.reshape(-1) - model.c
    expected = [float(0.5 * (r + a * d) @ model.h @ (r + a * d)) for a in s.alphas]
    np.testing.assert_allclose(s.losses, expected, rtol=1e-12)
    curvature = np.polyfit(s.alphas, s.losses, 2)[0]
    assert curvature == pytest.approx(float(0.5 * d @ model.h @ d), rel=1e-9)
    assert s.center_loss == pytest.approx(float(0.5 * r @ model.h @ r))
    assert torch.equal(model.w, w0)


def test_slice_2d_grid_and_weights_restored():
    model = Quadratic(EIGS)
    w0 = model.w.detach().clone()
    s = slice_2d(model, _loss, steps=5, seed=2)
    assert s.losses.shape == (5, 5)
    assert s.losses[2, 2] == pytest.approx(s.center_loss)
    d1, d2 = s.directions[0][0].reshape(-1), s.directions[1][0].reshape(-1)
    r = w0.reshape(-1) - model.c
    a, b = s.alphas[4], s.betas[0]
    p = r + a * d1 + b * d2
    assert s.losses[0, 4] == pytest.approx(float(0.5 * p @ model.h @ p))
    assert torch.equal(model.w, w0)


def test_weights_restored_when_loss_raises():
    model = Quadratic(EIGS)
    w0 = model.w.detach().clone()
    calls = {"n": 0}

    def flaky(m):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return m.loss()

    with pytest.raises(RuntimeError, match="boom"):
        slice_1d(model, flaky, steps=5)
    assert torch.equal(model.w, w0)


def test_filter_normalization_and_seeds():
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    params = list(model.parameters())
    d = filter_normalized_direction(params, seed=0)
    for p, di in zip(params, d):
        if p.ndim == 2:
            torch.testing.assert_close(di.norm(dim=1), p.detach().norm(dim=1))
        else:
            assert torch.equal(di, torch.zeros_like(p))
    same = filter_normalized_direction(params, seed=0)
    other = filter_normalized_direction(params, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(d, same))
    assert not torch.equal(d[0], other[0])
    with_bias = filter_normalized_direction(params, seed=0, bias="filter")
    torch.testing.assert_close(with_bias[1].norm(), params[1].detach().norm())


def test_generic_model_data_and_plots(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, generator=gen), torch.randn(32, 1, generator=gen)
    model = nn.Linear(3, 1)

    def loss_fn(m):
        return ((m(x) - y) ** 2).mean()

    s1 = slice_1d(model, loss_fn, steps=7, generator=torch.Generator().manual_seed(0))
    s2 = slice_2d(model, loss_fn, steps=4, seed=0)
    plot_slices_1d(tmp_path / "one.png", {"linear": s1}, logy=True)
    plot_slices_2d(tmp_path / "two.png", {"linear": s2, "again": s2}, ncols=2, title="t")
    assert (tmp_path / "one.png").stat().st_size > 0 and (tmp_path / "two.png").exists()
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        slice_1d(model, None)
    with pytest.raises(ValueError, match="steps must be >= 2"):
        slice_2d(model, loss_fn, steps=1)
    with pytest.raises(ValueError, match="method must be one of"):
        sharpness(model, loss_fn, method="arnoldi")
    with pytest.raises(ValueError, match="direction must hold one tensor"):
        slice_1d(model, loss_fn, direction=[torch.zeros(3)])
