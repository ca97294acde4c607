"""Solvers of 1/2||Ax - y||^2 + lam P(Dx): stationarity, scikit-learn/skglm agreement, batching."""

import copy

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso
from sparse_problems import make_problem, well_conditioned

from beyondgd.penalties import L1, MCP, SCAD, WEEP, LogSum, QuadEnvelopeL0
from beyondgd.sparse import (
    GeometricContinuation,
    first_difference_matrix,
    solve,
    squared_spectral_norm,
)

F64 = torch.float64


def stationarity(A, y, pen, lam, x):
    """Independent recomputation of the stopping measure (see beyondgd.sparse.solvers)."""
    gf = A.T @ (A @ x - y)
    if np.isfinite(pen.smoothness):
        return float((gf + lam * pen.grad(x)).abs().max())
    L = float(torch.linalg.matrix_norm(A, 2) ** 2)
    return float((L * (x - pen.prox(x - gf / L, lam / L))).abs().max())


CASES = [
    ("fista", L1(1.0), 0.02, 1e-8),
    ("prox-grad", L1(1.0), 0.02, 1e-6),
    ("fista", MCP(0.05, 3.0), 1.0, 1e-8),
    ("prox-grad", SCAD(0.05, 3.7), 1.0, 1e-6),
    ("fista", LogSum(0.005, 0.1), 1.0, 1e-8),
    ("fista", QuadEnvelopeL0(0.002), 1.0, 1e-8),
    ("fista", WEEP(10.0, 0.05), 0.02, 1e-8),
    ("prox-grad", WEEP(10.0, 0.05), 0.02, 1e-6),
    ("gd", WEEP(10.0, 0.05), 0.02, 1e-6),
    ("lbfgs", WEEP(10.0, 0.05), 0.02, 1e-10),
]


@pytest.mark.parametrize("method,pen,lam,tol", CASES, ids=lambda v: str(v)[:24])
def test_solvers_reach_the_stationarity_tolerance(method, pen, lam, tol):
    A, y, _ = make_problem()
    res = solve(A, y, pen, lam, method=method, tol=tol, max_iter=20000)
    assert res.converged
    scale = float((A.T @ y).abs().max())
    assert res.tol_scale == pytest.approx(tol * scale)
    assert stationarity(A, y, pen, lam, res.x) <= tol * scale
    assert res.stationarity <= tol * scale
    assert res.objective_history.shape == (res.n_iter + 1,) or method == "fista"
    # the objective history ends at the objective of x
    obj = 0.5 * float(((A @ res.x - y) ** 2).sum()) + lam * float(pen.value(res.x).sum())
    assert float(res.objective_history[-1]) == pytest.approx(obj, rel=1e-10)


def test_adam_reaches_a_loose_tolerance_on_an_easy_problem():
    A, y, _ = make_problem(m=60, n=20, k=4)
    pen = WEEP(2.0, 0.05)
    res = solve(A, y, pen, 0.05, method="adam", lr=0.03, tol=1e-4, max_iter=3000)
    assert res.converged and res.n_iter < 3000
    assert stationarity(A, y, pen, 0.05, res.x) <= 1e-4 * float((A.T @ y).abs().max())


def test_monotone_methods_decrease_the_objective():
    A, y, _ = make_problem()
    for method in ("gd", "prox-grad", "lbfgs"):
        res = solve(A, y, WEEP(10.0, 0.05), 0.02, method=method, tol=1e-8, max_iter=3000)
        h = res.objective_history
        assert torch.all(h[1:] <= h[:-1] + 1e-12), method


@pytest.mark.parametrize("method", ["fista", "prox-grad"])
def test_l1_equals_scikit_learn_lasso(method):
    A, y, _ = make_problem()
    m = A.shape[0]
    lam = 0.02
    # sklearn: 1/(2m)||y - Aw||^2 + alpha ||w||_1  ==  (1/m) [1/2||Aw - y||^2 + lam ||w||_1]
    lasso = Lasso(alpha=lam / m, fit_intercept=False, tol=1e-12, max_iter=100_000)
    lasso.fit(A.numpy(), y.numpy())
    res = solve(A, y, L1(1.0), lam, method=method, tol=1e-9, max_iter=50_000)
    assert res.converged
    assert np.allclose(res.x.numpy(), lasso.coef_, atol=1e-6)
    assert (res.x.numpy() != 0).tolist() == (lasso.coef_ != 0).tolist()  # same support


def test_mcp_matches_skglm():
    skglm = pytest.importorskip("skglm", reason="skglm (extra 'sparse') is not installed")
    from skglm.datafits import Quadratic
    from skglm.penalties import MCPenalty
    from skglm.solvers import AndersonCD

    X, y, w_true = well_conditioned()
    m = X.shape[0]
    alpha, gamma = 0.1, 3.0
    # (1/2m)||Xw - y||^2 + MCP(w) has a unique minimizer here: lambda_min(X^T X/m) > 1/gamma
    assert np.linalg.eigvalsh(X.T @ X / m)[0] > 1 / gamma
    ref = skglm.MCPRegression(alpha=alpha, gamma=gamma, fit_intercept=False, tol=1e-10).fit(X, y)
    glm = skglm.GeneralizedLinearEstimator(
        Quadratic(), MCPenalty(alpha, gamma), AndersonCD(tol=1e-10, fit_intercept=False)
    ).fit(X, y)
    assert np.allclose(ref.coef_, glm.coef_, atol=1e-10)
    A, b = torch.from_numpy(X), torch.from_numpy(y)
    for method in ("fista", "prox-grad"):
        res = solve(A, b, MCP(alpha, gamma), m, method=method, tol=1e-10, max_iter=20_000)
        assert res.converged
        assert np.allclose(res.x.numpy(), ref.coef_, atol=1e-8), method
        assert (res.x.numpy() != 0).tolist() == (ref.coef_ != 0).tolist()
    assert (ref.coef_ != 0).tolist() == (w_true != 0).tolist()


BATCH_CASES = [
    ("fista", L1(1.0), 0.02),
    ("prox-grad", MCP(0.05, 3.0), 1.0),
    ("gd", WEEP(5.0, 0.05), 0.02),
    ("lbfgs", WEEP(5.0, 0.05), 0.02),
    ("adam", WEEP(5.0, 0.05), 0.02),
    ("admm", L1(1.0), 0.02),
]


@pytest.mark.parametrize("method,pen,lam", BATCH_CASES, ids=lambda v: str(v)[:20])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-A", "batched-A"])
def test_batched_solve_equals_looping_single_solves(method, pen, lam, shared):
    B = 3
    A, Y, _ = make_problem(m=40, n=60, k=4, B=B)
    As = A if shared else torch.stack([A * (1 + 0.1 * i) for i in range(B)])
    max_iter = 300 if method == "adam" else 3000
    kw = dict(method=method, tol=1e-7, max_iter=max_iter, lr=0.02)
    batch = solve(As, Y, pen, lam, **kw)
    assert batch.x.shape == (B, 60) and batch.n_iter.shape == (B,)
    for i in range(B):
        single = solve(A if shared else As[i], Y[i], pen, lam, **kw)
        assert int(batch.n_iter[i]) == single.n_iter
        assert bool(batch.converged[i]) == single.converged
        assert torch.allclose(batch.x[i], single.x, atol=1e-9, rtol=0)
        hist = batch.objective_history[: single.n_iter + 1, i]
        assert torch.allclose(hist[-1], single.objective_history[-1], rtol=1e-10)
    # problems stop on their own: different problems need different iteration counts
    if method != "adam":
        assert batch.converged.all()


def test_batched_solve_with_a_shared_warm_start_and_per_problem_warm_starts():
    A, Y, X = make_problem(m=40, n=60, k=4, B=2)
    res = solve(A, Y, L1(1.0), 0.02, x0=X, tol=1e-8)
    res_shared = solve(A, Y, L1(1.0), 0.02, x0=X[0], tol=1e-8)
    assert torch.allclose(res.x, res_shared.x, atol=1e-7)


def test_warm_start_from_the_solution_needs_no_iteration():
    A, y, _ = make_problem()
    pen = WEEP(10.0, 0.05)
    first = solve(A, y, pen, 0.02, method="lbfgs", tol=1e-9)
    again = solve(A, y, pen, 0.02, method="lbfgs", tol=1e-9, x0=first.x)
    assert again.converged and again.n_iter == 0
    assert torch.equal(again.x, first.x)
    cold = solve(A, y, pen, 0.02, method="fista", tol=1e-9)
    warm = solve(A, y, pen, 0.02, method="fista", tol=1e-9, x0=cold.x + 1e-3)
    assert warm.n_iter < cold.n_iter


def test_geometric_continuation_schedule():
    sched = GeometricContinuation(start=1.0, n_stages=4, stage_iter=50)
    vals = sched.values(1000.0)
    assert vals[0] == 1.0 and vals[-1] == 1000.0
    assert np.allclose(np.diff(np.log(vals)), np.log(10.0))
    assert sched.values(0.5) == [0.5]  # nothing to grow
    with pytest.raises(ValueError, match="n_stages"):
        GeometricContinuation(n_stages=0)


@pytest.mark.parametrize("method", ["lbfgs", "fista", "gd"])
def test_continuation_in_a_ends_at_the_target_penalty(method):
    A, y, _ = make_problem()
    pen = WEEP(50.0, 0.05)
    before = copy.deepcopy(pen.state_dict()), pen.a
    sched = GeometricContinuation(start=1.0, n_stages=4, stage_iter=100)
    res = solve(A, y, pen, 0.02, method=method, tol=1e-8, max_iter=20_000, continuation=sched)
    assert res.converged
    assert pen.a == before[1]  # the penalty itself is not modified
    # stationary for the target penalty (a = 50), not for a stage's
    assert stationarity(A, y, pen, 0.02, res.x) <= 1e-8 * float((A.T @ y).abs().max())
    # one record per iteration plus one starting record per stage (FISTA records its returned
    # point in place of the last starting record)
    assert res.n_iter <= res.objective_history.shape[0] - 3 <= res.n_iter + 1
    with pytest.raises(ValueError, match="'a'"):
        solve(A, y, L1(1.0), 0.02, continuation=sched)


def test_admm_matches_fista_on_plain_l1():
    A, y, _ = make_problem()
    a = solve(A, y, L1(1.0), 0.02, method="admm", tol=1e-9, max_iter=5000)
    f = solve(A, y, L1(1.0), 0.02, method="fista", tol=1e-10, max_iter=5000)
    assert a.converged and f.converged
    assert torch.allclose(a.x, f.x, atol=1e-7)


def test_admm_total_variation_matches_gradient_methods():
    gen = torch.Generator().manual_seed(3)
    m, n = 160, 64
    A = torch.randn(m, n, generator=gen, dtype=F64) / m**0.5
    x_true = torch.repeat_interleave(torch.tensor([0.0, 1.0, -0.5, 2.0], dtype=F64), 16)
    y = A @ x_true + 0.02 * torch.randn(m, generator=gen, dtype=F64)
    D = first_difference_matrix(n)
    pen, lam = WEEP(2.0, 0.05), 0.02
    # m > n and a small lam: the objective is strongly convex, one minimizer for every method
    assert float(torch.linalg.eigvalsh(A.T @ A)[0]) > lam * 4 * pen.weak_convexity
    admm = solve(A, y, pen, lam, method="admm", D=D, tol=1e-9, max_iter=5000)
    lbfgs = solve(A, y, pen, lam, method="lbfgs", D=D, tol=1e-10, max_iter=5000)
    gd = solve(A, y, pen, lam, method="gd", D=D, tol=1e-9, max_iter=20000)
    assert admm.converged and lbfgs.converged and gd.converged
    assert torch.allclose(admm.x, lbfgs.x, atol=1e-6)
    assert torch.allclose(gd.x, lbfgs.x, atol=1e-7)
    # TV-L1 through ADMM recovers the piecewise-constant signal
    tv = solve(A, y, L1(1.0), lam, method="admm", D=D, tol=1e-8, max_iter=5000)
    assert tv.converged
    assert float((tv.x - x_true).norm() / x_true.norm()) < 0.1


def test_first_difference_matrix():
    D = first_difference_matrix(5)
    x = torch.tensor([1.0, 3.0, 2.0, 2.0, 7.0], dtype=F64)
    assert torch.equal(D @ x, torch.tensor([2.0, -1.0, 0.0, 5.0], dtype=F64))
    assert float(squared_spectral_norm(first_difference_matrix(200))) <= 4.0
    with pytest.raises(ValueError, match="n"):
        first_difference_matrix(1)


def test_squared_spectral_norm_exact_and_power_iteration():
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(30, 50, generator=gen, dtype=F64)
    exact = float(torch.linalg.matrix_norm(A, 2) ** 2)
    assert float(squared_spectral_norm(A)) == pytest.approx(exact, rel=1e-10)
    power = float(squared_spectral_norm(A, exact_below=0))
    assert exact <= power <= 1.011 * exact  # never below: 1/L stays a safe step
    batch = squared_spectral_norm(torch.stack([A, 2 * A]))
    assert torch.allclose(batch, torch.tensor([exact, 4 * exact], dtype=F64), rtol=1e-10)


def test_float32_and_result_layout():
    A, y, _ = make_problem()
    res = solve(A.float(), y.float(), WEEP(10.0, 0.05), 0.02, method="fista", tol=1e-4)
    assert res.x.dtype == torch.float32 and res.converged
    assert isinstance(res.n_iter, int) and isinstance(res.stationarity, float)
    assert res.objective == pytest.approx(float(res.objective_history[-1]))


def test_adam_is_deterministic():
    A, y, _ = make_problem()
    r1 = solve(A, y, WEEP(10.0, 0.05), 0.02, method="adam", max_iter=200, lr=0.03)
    r2 = solve(A, y, WEEP(10.0, 0.05), 0.02, method="adam", max_iter=200, lr=0.03)
    assert torch.equal(r1.x, r2.x)


def test_callback_sees_every_iterate_and_can_stop_the_solve():
    A, y, _ = make_problem()
    seen = []

    def callback(x):
        seen.append(x.clone())
        return len(seen) == 5

    res = solve(A, y, L1(1.0), 0.02, method="prox-grad", tol=1e-12, callback=callback)
    assert len(seen) == 5 and res.n_iter == 4 and not res.converged
    assert torch.equal(seen[-1], res.x) and seen[0].shape == (A.shape[1],)
    assert torch.equal(seen[0], torch.zeros_like(seen[0]))  # the starting point first
