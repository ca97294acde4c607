"""The WEEP penalty for skglm: its pieces, and skglm's AndersonCD vs beyondgd's own solver."""

import sys

import numpy as np
import pytest
import torch

from beyondgd.penalties import WEEP
from beyondgd.penalties import skglm as plugin
from beyondgd.sparse import solve

F64 = torch.float64


def test_missing_skglm_gives_an_import_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "skglm", None)
    with pytest.raises(ImportError, match=r'pip install "beyondgd\[sparse\]"'):
        plugin._require_skglm()
    assert plugin.skglm_available() is False


def test_plugin_methods_match_the_torch_penalty():
    pytest.importorskip("skglm", reason="skglm (extra 'sparse') is not installed")
    alpha, a, b, c = 0.7, 3.0, 0.5, 0.2
    pen = plugin.WEEPPenalty(alpha, a, b, c)
    ref = WEEP(a, b, c)
    assert (pen.x1, pen.x2) == (ref.x1, ref.x2)
    w = np.linspace(-4, 4, 801)
    wt = torch.from_numpy(w)
    assert pen.value(w) == pytest.approx(alpha * float(ref.value(wt).sum()), rel=1e-12)
    assert np.allclose(pen.gradient(w), alpha * ref.grad(wt).numpy(), atol=1e-14)
    for step in (0.1, 1.0 / alpha, 3.0):  # tau = step * alpha below, at and above 1
        prox = np.array([pen.prox_1d(v, step, 0) for v in w])
        assert np.allclose(prox, ref.prox(wt, step * alpha).numpy(), atol=1e-14)
    grad = np.linspace(-1, 1, w.size)
    ws = np.arange(w.size)
    dist = pen.subdiff_distance(w, grad, ws)
    assert np.allclose(dist, np.abs(grad + alpha * ref.grad(wt).numpy()), atol=1e-14)
    assert pen.is_penalized(5).all()
    assert pen.generalized_support(np.array([0.0, 1e-9])).tolist() == [False, True]
    assert pen.params_to_dict() == dict(alpha=alpha, a=a, b=b, c=c)
    with pytest.raises(ValueError, match="a must"):
        plugin.WEEPPenalty(alpha, 0.0, b, c)


def test_skglm_anderson_cd_with_weep_matches_own_solver():
    pytest.importorskip("skglm", reason="skglm (extra 'sparse') is not installed")
    from skglm import GeneralizedLinearEstimator
    from skglm.datafits import Quadratic
    from skglm.solvers import AndersonCD

    rng = np.random.default_rng(0)
    m, n = 200, 20
    X = rng.standard_normal((m, n))
    X *= np.sqrt(m) / np.linalg.norm(X, axis=0)  # unit-scale columns: X^T X / m has diag 1
    w_true = np.zeros(n)
    w_true[:5] = rng.choice([-1, 1], 5) * rng.uniform(1, 2, 5)
    y = X @ w_true + 0.05 * rng.standard_normal(m)
    alpha, a, b = 0.2, 5.0, 0.05
    # the objective (1/2m)||Xw - y||^2 + alpha WEEP(w) is strongly convex here
    # (lambda_min(X^T X / m) > alpha * weak_convexity), so the minimizer is unique
    assert np.linalg.eigvalsh(X.T @ X / m)[0] > alpha * 1.0
    est = GeneralizedLinearEstimator(
        Quadratic(),
        plugin.WEEPPenalty(alpha, a, b),
        AndersonCD(tol=1e-10, fit_intercept=False, max_iter=100),
    ).fit(X, y)
    res = solve(
        torch.from_numpy(X), torch.from_numpy(y), WEEP(a, b), alpha * m, method="lbfgs", tol=1e-10
    )
    assert res.converged
    assert np.allclose(est.coef_, res.x.numpy(), atol=1e-7)
    # the recovered support (|w| > x1) is the true one
    assert (np.abs(est.coef_) > WEEP(a, b).x1).tolist() == (w_true != 0).tolist()
