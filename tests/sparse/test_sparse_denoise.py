"""Matrix-free image operators (2-D finite differences, Haar) and analysis-penalty denoising
(beyondgd.sparse.solve_denoise) against dense solves, scipy and autograd."""

import numpy as np
import pytest
import torch
from scipy import optimize

from beyondgd.data.patches import load_crop
from beyondgd.penalties import L1, WEEP
from beyondgd.sparse import solve, solve_denoise
from beyondgd.unfolding import FiniteDifference2D, Haar2D, haar_analysis_matrix


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(2, 2), (3, 5), (8, 8)])
def test_finite_difference_adjoint(shape):
    op = FiniteDifference2D(*shape)
    x, y = _rand(4, op.in_features), _rand(4, op.out_features, seed=1)
    lhs = (op(x) * y).sum(-1)
    rhs = (x * op.adjoint(y)).sum(-1)
    torch.testing.assert_close(lhs, rhs)
    assert op.check_adjoint(dtype=torch.float64) < 1e-13
    assert op.norm(dtype=torch.float64) ** 2 <= op.squared_norm_bound + 1e-9


def test_finite_difference_shifted_solve_is_exact():
    op = FiniteDifference2D(6, 7)
    rhs = _rand(3, 42)
    x = op.solve_shifted(rhs, 0.8)
    torch.testing.assert_close(x + 0.8 * op.adjoint(op(x)), rhs)
    M = torch.eye(42, dtype=torch.float64) + 0.8 * op.to_matrix(
        dtype=torch.float64
    ).T @ op.to_matrix(dtype=torch.float64)
    torch.testing.assert_close(x, torch.linalg.solve(M, rhs.T).T)


@pytest.mark.parametrize("shape,levels", [((4, 4), 2), ((8, 4), 2), ((16, 16), 3), ((6, 6), 1)])
def test_haar_is_orthonormal_and_matches_the_matrix(shape, levels):
    W = Haar2D(*shape, levels)
    x = _rand(3, W.in_features)
    torch.testing.assert_close(W.adjoint(W(x)), x)  # perfect reconstruction
    torch.testing.assert_close(W(x).norm(dim=-1), x.norm(dim=-1))  # orthogonality
    M = W.to_matrix(dtype=torch.float64)
    torch.testing.assert_close(M, haar_analysis_matrix(*shape, levels, dtype=torch.float64))
    assert int((~W.detail_mask()).sum()) == (shape[0] >> levels) * (shape[1] >> levels)
    with pytest.raises(ValueError):
        Haar2D(6, 6, 2)


def test_gradcheck_of_the_analysis_penalty():
    op = FiniteDifference2D(3, 4)
    pen = WEEP(2.0, 0.3, 0.1)
    x = _rand(12).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: pen(op(v)), (x,))


def _scipy_reference(y, pen, lam, op):
    def f(v):
        t = torch.from_numpy(v).requires_grad_(True)
        val = 0.5 * ((t - y) ** 2).sum() + lam * pen(op(t))
        val.backward()
        return float(val.detach()), t.grad.numpy()

    res = optimize.minimize(
        f,
        y.numpy(),
        jac=True,
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 5000},
    )
    return torch.from_numpy(res.x)


@pytest.mark.parametrize("method", ["admm", "lbfgs", "gd", "adam"])
def test_weep_tv_denoising_against_scipy(method):
    op = FiniteDifference2D(4, 4)
    y = _rand(16, seed=3)
    pen, lam = WEEP(1.0, 0.5, 0.05), 0.3  # lam * weak convexity * ||D||^2 < 1: strictly convex
    ref = _scipy_reference(y, pen, lam, op)
    opts = {"adam": {"lr": 0.01, "max_iter": 20000}}.get(method, {"max_iter": 20000})
    res = solve_denoise(y, pen, lam, op, method, tol=1e-10, **opts)
    torch.testing.assert_close(res.x, ref, atol=1e-5 if method == "adam" else 1e-6, rtol=0)


def test_l1_tv_admm_matches_the_dense_solver_and_brute_force():
    op = FiniteDifference2D(3, 3)
    y = _rand(2, 9, seed=4)
    res = solve_denoise(y, L1(1.0), 0.2, op, "admm", tol=1e-12, max_iter=20000)
    assert bool(res.converged.all())
    D = op.to_matrix(dtype=torch.float64)
    dense = solve(
        torch.eye(9, dtype=torch.float64),
        y,
        L1(1.0),
        0.2,
        method="admm",
        D=D,
        tol=1e-12,
        max_iter=20000,
        rho=1.0,
    )
    torch.testing.assert_close(res.x, dense.x, atol=1e-7, rtol=0)

    def obj(v, yy):
        return 0.5 * np.sum((v - yy) ** 2) + 0.2 * np.abs(D.numpy() @ v).sum()

    for b in range(2):  # the ADMM point is not beaten by a derivative-free search around it
        best = optimize.minimize(
            obj,
            res.x[b].numpy(),
            args=(y[b].numpy(),),
            method="Powell",
            options={"xtol": 1e-10, "ftol": 1e-14},
        )
        assert obj(res.x[b].numpy(), y[b].numpy()) <= best.fun + 1e-8


def test_solve_denoise_validates():
    op = FiniteDifference2D(2, 2)
    with pytest.raises(ValueError):
        solve_denoise(torch.zeros(5, dtype=torch.float64), L1(1.0), 0.1, op)
    with pytest.raises(TypeError):
        solve_denoise(torch.zeros(4, dtype=torch.float64), L1(1.0), 0.1, Haar2D(2, 2), "admm")


def test_load_crop_centre_and_random():
    a = load_crop("camera", 64)
    b = load_crop("camera", 64, seed=1)
    assert a.shape == b.shape == (64, 64) and not np.array_equal(a, b)
    np.testing.assert_array_equal(b, load_crop("camera", 64, seed=1))
    with pytest.raises(ValueError):
        load_crop("nope", 64)
