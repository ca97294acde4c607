"""DECONET: first layer, convergence to the smoothed problem, options, gradients, warm starts."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from beyondgd.unfolding import DECONET, GaussianCS, haar_analysis_matrix


def _problem(n=12, m=6, rows=24, seed=0):
    op = GaussianCS(m, n, seed=seed + 1, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed + 2)
    w = torch.randn(rows, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    y = op(torch.randn(n, generator=gen, dtype=torch.float64))
    return op, w, y


def test_first_layer_is_adjoint_of_measurements():
    op = GaussianCS(10, 30, seed=0)
    y = torch.randn(4, 10)
    net = DECONET(op, redundancy=3, layers=1)
    assert torch.equal(net(y), op.adjoint(y))  # zero duals: x_hat = x0 = A^T y
    x0 = torch.randn(4, 30)
    assert torch.equal(net(y, x0=x0), x0)
    deep = DECONET(op, redundancy=3, layers=4)
    assert not torch.allclose(deep(y), op.adjoint(y))


def _reference_solution(op, w, y, eps, mu):
    """Smoothed analysis BPDN by SLSQP on the split form min 1's + mu/2||x-x0||^2,
    -s <= W x <= s, ||A x - y||^2 <= eps^2."""
    a, wn, yn = op.matrix.numpy(), w.numpy(), y.numpy()
    n, rows = a.shape[1], wn.shape[0]
    x0 = a.T @ yn

    def f(v):
        return v[n:].sum() + mu / 2 * ((v[:n] - x0) ** 2).sum()

    def grad(v):
        return np.concatenate([mu * (v[:n] - x0), np.ones(rows)])

    eye = np.eye(rows)
    cons = [
        {
            "type": "ineq",
            "fun": lambda v: v[n:] - wn @ v[:n],
            "jac": lambda v: np.hstack([-wn, eye]),
        },
        {
            "type": "ineq",
            "fun": lambda v: v[n:] + wn @ v[:n],
            "jac": lambda v: np.hstack([wn, eye]),
        },
        {
            "type": "ineq",
            "fun": lambda v: eps**2 - ((a @ v[:n] - yn) ** 2).sum(),
            "jac": lambda v: np.concatenate([-2 * a.T @ (a @ v[:n] - yn), np.zeros(rows)])[None],
        },
    ]
    start = np.concatenate([x0, np.abs(wn @ x0) + 1])
    res = minimize(
        f,
        start,
        jac=grad,
        constraints=cons,
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    return res.x[:n]


@pytest.mark.parametrize("seed", [0, 1])
def test_deep_network_with_fixed_w_solves_the_smoothed_problem(seed):
    op, w, y = _problem(seed=seed)
    eps = 0.1 * float(y.norm())  # an active constraint
    k = torch.cat([w, op.matrix])
    mu = float(torch.linalg.matrix_norm(k, ord=2)) ** 2  # dual step 1 is then 1/L
    x_ref = _reference_solution(op, w, y, eps, mu)
    x0 = op.adjoint(y).numpy()

    def objective(x):
        return np.abs(w.numpy() @ x).sum() + mu / 2 * ((x - x0) ** 2).sum()

    # a = b = 1, t1 = 1, theta = 1, exact block prox: one dual proximal-gradient step per layer.
    net = DECONET(
        op,
        layers=1000,
        mu=mu,
        a=1.0,
        b=1.0,
        lipschitz=None,
        eps=eps,
        block_soft_threshold=True,
        analysis=w,
        learn_analysis=False,
    )
    x = net(y).numpy()
    assert np.linalg.norm(op.matrix.numpy() @ x - y.numpy()) <= eps * (1 + 1e-6)
    assert objective(x) == pytest.approx(objective(x_ref), rel=1e-7)
    assert np.linalg.norm(x - x_ref) <= 1e-5 * np.linalg.norm(x_ref)
    # a shallow net is not there yet, so the test can fail
    shallow = DECONET(
        op,
        layers=5,
        mu=mu,
        a=1.0,
        b=1.0,
        lipschitz=None,
        eps=eps,
        block_soft_threshold=True,
        analysis=w,
        learn_analysis=False,
    )
    assert np.linalg.norm(shallow(y).numpy() - x_ref) > 1e-3 * np.linalg.norm(x_ref)


def test_block_soft_threshold_is_the_prox_of_the_l2_norm():
    net = DECONET(GaussianCS(4, 8), redundancy=1, layers=1, block_soft_threshold=True)
    v = torch.tensor([[3.0, 4.0, 0.0, 0.0], [0.3, 0.4, 0.0, 0.0]])
    out = net._shrink(v, 1.0)
    torch.testing.assert_close(out[0], v[0] * (1 - 1 / 5))
    torch.testing.assert_close(out[1], torch.zeros(4))
    elementwise = DECONET(GaussianCS(4, 8), redundancy=1, layers=1)._shrink(v, 1.0)
    torch.testing.assert_close(elementwise[0], torch.tensor([2.0, 3.0, 0.0, 0.0]))


def test_redundancy_sets_the_analysis_operator_and_it_learns():
    op = GaussianCS(8, 20, seed=0)
    net = DECONET(op, redundancy=4, layers=3, seed=5)
    assert net.W.shape == (80, 20) and net.W.requires_grad
    assert torch.equal(net.W, DECONET(op, redundancy=4, layers=3, seed=5).W)
    fixed = DECONET(op, analysis=haar_analysis_matrix(4, 5, levels=0), learn_analysis=False)
    assert fixed.W.shape == (20, 20) and not fixed.W.requires_grad
    assert "W" in dict(fixed.named_buffers())
    y = op(torch.randn(5, 20))
    net(y).pow(2).sum().backward()
    assert net.W.grad is not None and float(net.W.grad.abs().sum()) > 0


def test_detach_affine_changes_the_gradient():
    op = GaussianCS(8, 20, seed=0, dtype=torch.float64)
    y = op(torch.randn(5, 20, dtype=torch.float64))
    grads = {}
    for detach in (False, True):
        net = DECONET(op, redundancy=2, layers=4, detach_affine=detach, seed=1)
        net(y).pow(2).sum().backward()
        grads[detach] = net.W.grad.clone()
    assert not torch.allclose(grads[False], grads[True])


def test_clamp_uses_the_given_range():
    op = GaussianCS(8, 20, seed=0)
    y = 100 * torch.randn(3, 8)
    out = DECONET(op, redundancy=1, layers=3, clamp=(-0.5, 2.0))(y).detach()
    assert float(out.min()) >= -0.5 and float(out.max()) <= 2.0


def test_warm_start_and_duals_round_trip():
    op = GaussianCS(8, 20, seed=0)
    net = DECONET(op, redundancy=2, layers=3)
    y = torch.randn(6, 8)
    x, duals = net(y, return_duals=True)
    assert duals.z1.shape == (6, 40) and duals.z2.shape == (6, 8)
    x2 = net(y, x0=x, duals=duals)
    assert x2.shape == x.shape and not torch.equal(x2, x)
    single = net(y[0])
    torch.testing.assert_close(single, x[0])
    x_per, _ = net(y, eps=torch.full((6,), 0.1), return_duals=True)
    assert x_per.shape == (6, 20)


def test_runs_in_the_operator_dtype():
    op = GaussianCS(8, 20, seed=0, dtype=torch.float64)
    net = DECONET(op, redundancy=2, layers=2)
    assert net.W.dtype == torch.float64
    assert net(torch.randn(2, 8, dtype=torch.float64)).dtype == torch.float64
    net32 = net.to(torch.float32)
    assert net32(torch.randn(2, 8)).dtype == torch.float32
