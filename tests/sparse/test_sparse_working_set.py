"""Working sets and Anderson acceleration in sparse.solve: same solutions, less work."""

import numpy as np
import pytest
import sparse_problems
import torch
from sparse_problems import well_conditioned

from beyondgd.penalties import L1, MCP, SCAD, WEEP, CappedL1, LogSum, QuadEnvelopeL0
from beyondgd.sparse import solve, squared_spectral_norm

F64 = torch.float64


def make_problem(m=60, n=300, k=6, **kwargs):
    return sparse_problems.make_problem(m, n, k, **kwargs)


def stationarity(A, y, pen, lam, x):
    """Independent recomputation of the stopping measure (prox-gradient mapping, exact L)."""
    A, y, x = A.double(), y.double(), x.double()
    gf = A.T @ (A @ x - y)
    L = float(torch.linalg.matrix_norm(A, 2) ** 2)
    return float((L * (x - pen.prox(x - gf / L, lam / L))).abs().max())


# every penalty with a prox; lam chosen so that the solution is sparse
PENALTIES = [
    ("l1", L1(1.0), 0.05),
    ("mcp", MCP(0.05, 3.0), 1.0),
    ("scad", SCAD(0.05, 3.7), 1.0),
    ("logsum", LogSum(0.005, 0.1), 1.0),
    ("l0-envelope", QuadEnvelopeL0(0.002), 1.0),
    ("capped-l1", CappedL1(0.05, 1.0), 1.0),
    ("weep", WEEP(10.0, 0.05), 0.02),
]


# Nonconvex penalties with many critical points: the working set may stop at a different one
# (both meet the tolerance). This is why working sets are not the default of solve().
NOT_UNIQUE = {"l0-envelope"}


@pytest.mark.parametrize("name,pen,lam", PENALTIES, ids=[p[0] for p in PENALTIES])
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
def test_same_solution_as_the_full_solver(name, pen, lam, dtype):
    A, y, _ = make_problem(dtype=dtype)
    tol = 1e-8 if dtype == F64 else 1e-4
    scale = float((A.T @ y).abs().max())
    kw = dict(method="fista", tol=tol, max_iter=20_000)
    full = solve(A, y, pen, lam, **kw)
    assert full.converged
    for opts in (dict(working_set=True), dict(working_set=True, anderson=5), dict(anderson=5)):
        res = solve(A, y, pen, lam, **kw, **opts)
        assert res.converged, opts
        assert res.stationarity <= tol * scale
        # the full problem's stationarity, recomputed independently (float64, exact ||A||^2)
        assert stationarity(A, y, pen, lam, res.x) <= 1.05 * tol * scale, opts
        if name in NOT_UNIQUE:  # compare only where the critical point is unique enough
            continue
        atol = 1e-6 if dtype == F64 else 1e-2  # f32: tol 1e-4 leaves that much
        diff = float((res.x - full.x).abs().max())
        assert diff <= atol, (opts, diff)
        assert res.objective == pytest.approx(full.objective, rel=1e-9 if dtype == F64 else 1e-3)


def test_working_set_can_stop_at_another_critical_point_of_a_nonconvex_penalty():
    # documents the difference that keeps working_set=False the default
    A, y, _ = make_problem()
    pen, lam, tol = QuadEnvelopeL0(0.002), 1.0, 1e-8
    full = solve(A, y, pen, lam, tol=tol, max_iter=20_000)
    ws = solve(A, y, pen, lam, tol=tol, max_iter=20_000, working_set=True)
    assert full.converged and ws.converged
    assert float((ws.x - full.x).abs().max()) > 0.1


@pytest.mark.parametrize("method", ["prox-grad", "fista"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-A", "batched-A"])
def test_batched_working_set_equals_single_full_solves(method, shared):
    B = 4
    A, Y, _ = make_problem(m=40, n=200, k=4, B=B)
    As = A if shared else torch.stack([A * (1 + 0.1 * i) for i in range(B)])
    pen, lam, tol = MCP(0.05, 3.0), 1.0, 1e-8
    batch = solve(
        As, Y, pen, lam, method=method, tol=tol, max_iter=20_000, working_set=True, anderson=5
    )
    assert batch.x.shape == (B, 200) and batch.converged.all()
    for i in range(B):
        Ai = A if shared else As[i]
        single = solve(Ai, Y[i], pen, lam, method=method, tol=tol, max_iter=20_000)
        scale = float((Ai.T @ Y[i]).abs().max())
        assert stationarity(Ai, Y[i], pen, lam, batch.x[i]) <= 1.05 * tol * scale
        assert torch.allclose(batch.x[i], single.x, atol=1e-6, rtol=0)


def test_against_skglm_mcp_l1_and_scad():
    skglm = pytest.importorskip("skglm", reason="skglm (extra 'sparse') is not installed")
    from skglm.datafits import Quadratic
    from skglm.penalties import SCAD as SkSCAD
    from skglm.solvers import AndersonCD

    X, y, w_true = well_conditioned(m=400, n=60)
    m = X.shape[0]
    alpha, gamma = 0.1, 3.0
    # strongly convex objective: a unique minimizer for both solvers
    assert np.linalg.eigvalsh(X.T @ X / m)[0] > 1 / gamma
    A, b = torch.from_numpy(X), torch.from_numpy(y)
    cases = [
        (
            skglm.MCPRegression(alpha=alpha, gamma=gamma, fit_intercept=False, tol=1e-10),
            MCP(alpha, gamma),
        ),
        (skglm.Lasso(alpha=alpha, fit_intercept=False, tol=1e-10), L1(alpha)),
        (
            skglm.GeneralizedLinearEstimator(
                Quadratic(), SkSCAD(alpha, 3.7), AndersonCD(tol=1e-10, fit_intercept=False)
            ),
            SCAD(alpha, 3.7),
        ),
    ]
    for est, pen in cases:
        ref = est.fit(X, y).coef_
        for method in ("fista", "prox-grad"):
            res = solve(
                A,
                b,
                pen,
                m,
                method=method,
                tol=1e-10,
                max_iter=20_000,
                working_set=True,
                anderson=5,
            )
            assert res.converged
            assert np.allclose(res.x.numpy(), ref, atol=1e-8), (type(pen).__name__, method)
            assert (res.x.numpy() != 0).tolist() == (ref != 0).tolist()
            assert max(res.info["working_set_sizes"]) < X.shape[1]  # the sets were smaller


@pytest.mark.parametrize("pen,lam", [(L1(1.0), 0.05), (MCP(0.05, 3.0), 1.0)], ids=["l1", "mcp"])
def test_working_set_needs_fewer_products_with_A(pen, lam):
    A, y, _ = make_problem(m=100, n=2000, k=8)
    kw = dict(method="fista", tol=1e-8, max_iter=20_000)
    full = solve(A, y, pen, lam, **kw)
    ws = solve(A, y, pen, lam, **kw, working_set=True)
    both = solve(A, y, pen, lam, **kw, working_set=True, anderson=5)
    assert full.converged and ws.converged and both.converged
    # full products: two per FISTA iteration; the working set does most of its work on few columns
    assert full.info["products"] >= 2 * full.n_iter
    assert ws.info["products"] < 0.5 * full.info["products"]
    assert both.info["products"] < 0.5 * full.info["products"]
    assert max(ws.info["working_set_sizes"]) < 2000


@pytest.mark.parametrize(
    "pen,lam",
    [(L1(1.0), 0.05), (MCP(0.05, 3.0), 1.0), (WEEP(10.0, 0.05), 0.02)],
    ids=["l1", "mcp", "weep"],
)
def test_anderson_never_increases_the_objective(pen, lam):
    A, y, _ = make_problem(m=80, n=200)
    # proximal gradient at step 1/L is monotone; an extrapolation is kept only where it lowers
    # the objective, so the history stays monotone with Anderson on
    res = solve(A, y, pen, lam, method="prox-grad", tol=1e-9, max_iter=20_000, anderson=5)
    h = res.objective_history
    assert res.converged
    assert torch.all(h[1:] <= h[:-1] + 1e-12 * h[0].abs())
    assert res.info["anderson_tried"] > 0 and res.info["anderson_accepted"] > 0
    plain = solve(A, y, pen, lam, method="prox-grad", tol=1e-9, max_iter=20_000)
    assert res.n_iter < plain.n_iter


def test_determinism():
    A, Y, _ = make_problem(m=40, n=200, k=4, B=3)
    kw = dict(method="fista", tol=1e-8, working_set=True, anderson=5)
    r1 = solve(A, Y, MCP(0.05, 3.0), 1.0, **kw)
    r2 = solve(A, Y, MCP(0.05, 3.0), 1.0, **kw)
    assert torch.equal(r1.x, r2.x) and torch.equal(r1.n_iter, r2.n_iter)
    assert torch.equal(r1.objective_history, r2.objective_history)


def test_callback_sees_full_iterates_and_can_stop():
    A, y, _ = make_problem()
    seen = []

    def callback(x):
        seen.append(x.clone())
        return len(seen) >= 5

    res = solve(A, y, L1(1.0), 0.05, tol=1e-10, working_set=True, callback=callback)
    assert len(seen) == 5 and all(x.shape == (300,) for x in seen)
    assert not res.converged


def test_bad_inputs_name_the_argument():
    A, y, _ = make_problem(m=10, n=20)
    with pytest.raises(TypeError, match="working_set"):
        solve(A, y, L1(1.0), 0.1, working_set=1)
    with pytest.raises(ValueError, match="anderson"):
        solve(A, y, L1(1.0), 0.1, anderson=-1)
    with pytest.raises(ValueError, match="anderson"):
        solve(A, y, L1(1.0), 0.1, anderson=1)
    with pytest.raises((TypeError, ValueError), match="anderson"):
        solve(A, y, L1(1.0), 0.1, anderson=2.5)
    with pytest.raises(ValueError, match="ws_start"):
        solve(A, y, L1(1.0), 0.1, working_set=True, ws_start=0)
    with pytest.raises(ValueError, match="working_set"):
        solve(A, y, WEEP(1.0, 0.1), 0.1, method="lbfgs", working_set=True)
    with pytest.raises(ValueError, match="anderson"):
        solve(A, y, WEEP(1.0, 0.1), 0.1, method="adam", anderson=5)
    with pytest.raises(ValueError, match="safety"):
        squared_spectral_norm(A, safety=0.9)
    with pytest.raises(ValueError, match="rtol"):
        squared_spectral_norm(A, rtol=-1.0)


@pytest.mark.parametrize(
    "shape", [(300, 800), (800, 300), (2, 200, 500)], ids=["wide", "tall", "batched"]
)
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
def test_lanczos_lipschitz_constant_is_a_valid_step(shape, dtype):
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(*shape, generator=gen, dtype=F64)
    A = A / torch.linalg.vector_norm(A, dim=-2, keepdim=True)  # unit columns, as in recovery
    true = np.linalg.norm(A.numpy(), 2, axis=(-2, -1)) ** 2
    est = squared_spectral_norm(A.to(dtype), exact_below=0).double().numpy()
    assert np.all(est >= true) and np.all(est <= 1.011 * true)


def test_lanczos_with_clustered_top_eigenvalues():
    # a repeated top singular value and a slowly decaying spectrum: power iteration's worst case
    gen = torch.Generator().manual_seed(2)
    U, _ = torch.linalg.qr(torch.randn(600, 600, generator=gen, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(900, 600, generator=gen, dtype=F64))
    s = torch.linspace(1.0, 0.999, 600, dtype=F64)
    s[:3] = 1.0
    A = U @ torch.diag(s) @ V.T
    est = float(squared_spectral_norm(A, exact_below=0))
    assert 1.0 <= est <= 1.011


def test_lanczos_does_not_stop_early_on_a_benchmark_sized_matrix():
    # with a loose stop (rtol=1e-4) Lanczos stalls 1.2% below ||A||^2 on this matrix, more than
    # the 1.01 safety factor covers; the default stop must not
    rng = np.random.default_rng(5)
    A = rng.standard_normal((1000, 5000))
    A /= np.linalg.norm(A, axis=0)
    true = np.linalg.norm(A, 2) ** 2
    est = float(squared_spectral_norm(torch.from_numpy(A).float(), exact_below=0))
    assert true <= est <= 1.011 * true
    loose = float(squared_spectral_norm(torch.from_numpy(A), exact_below=0, rtol=1e-4))
    assert loose < true  # the reason for the strict default


# A smooth penalty (WEEP) has no exact zeros: outside the working set the coordinates take
# prox-gradient steps inside the penalty's quadratic zone instead of being held at 0.
def _weep_as_mcp(A, y, alpha=0.05, gamma=3.0):
    """WEEP at a = 100 with MCP's threshold (weep_speed's instance), and its weight ``lam``."""
    m = A.shape[-2]
    alpha_sk = alpha * float((A.T @ y).abs().max()) / m if y.dim() == 1 else alpha
    return WEEP(100.0, (gamma * alpha_sk) ** 2 / 2), m / gamma


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
def test_smooth_penalty_working_sets_stay_small_and_reach_the_full_solution(dtype):
    A, y, _ = make_problem(m=100, n=1000, k=10, dtype=dtype)
    A, y = A * 100**0.5, y  # skglm's scaling (columns of squared norm ~m), as in weep_speed
    pen, lam = _weep_as_mcp(A, y)
    tol = 1e-8 if dtype == F64 else 1e-4
    kw = dict(method="fista", tol=tol, max_iter=50_000)
    full = solve(A, y, pen, lam, **kw)
    ws = solve(A, y, pen, lam, **kw, working_set=True)
    assert full.converged and ws.converged
    scale = float((A.T @ y).abs().max())
    assert stationarity(A, y, pen, lam, ws.x) <= 1.05 * tol * scale
    assert max(ws.info["working_set_sizes"]) < 1000 // 2  # the sets stayed small
    assert ws.info["products"] < 0.5 * full.info["products"]
    # no exact zeros: the coordinates outside the sets moved too
    assert int((ws.x == 0).sum()) < 10
    atol = 1e-6 if dtype == F64 else 1e-2
    assert float((ws.x - full.x).abs().max()) <= atol
    assert ws.objective == pytest.approx(full.objective, rel=1e-9 if dtype == F64 else 1e-4)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-A", "batched-A"])
def test_smooth_penalty_batched_working_sets_equal_single_solves(shared):
    B = 3
    A, Y, _ = make_problem(m=60, n=400, k=6, B=B)
    A = A * 60**0.5
    As = A if shared else torch.stack([A * (1 + 0.1 * i) for i in range(B)])
    pen, lam = _weep_as_mcp(A, Y[0])
    kw = dict(method="fista", tol=1e-8, max_iter=50_000)
    batch = solve(As, Y, pen, lam, **kw, working_set=True)
    assert batch.converged.all() and max(batch.info["working_set_sizes"]) < 400 // 2
    for i in range(B):
        Ai = A if shared else As[i]
        single = solve(Ai, Y[i], pen, lam, **kw)
        assert torch.allclose(batch.x[i], single.x, atol=1e-6, rtol=0)


def test_step_outside_the_working_set_descends_and_grows_a_too_small_lipschitz():
    from beyondgd.sparse.solvers import _Problem, _step_outside

    A, y, _ = make_problem(m=50, n=200, k=5)
    pen, lam = WEEP(100.0, 0.02), 0.5
    true_L = float(torch.linalg.matrix_norm(A, 2) ** 2)
    # far too small: below every column's squared norm, so any move is steeper than L says
    small = 0.02 * true_L
    assert small < float(A.square().sum(0).min())
    prob = _Problem(A, y[None], lam, pen, None, small)
    x = torch.zeros(1, 200, dtype=F64)
    Ax = prob.matvec(x)
    gf = prob.rmatvec(Ax - prob.y)
    W = gf.abs().topk(5, dim=-1).indices.sort(dim=-1).values
    x_new, Ax_new = _step_outside(prob, x, Ax, gf, W, torch.ones(1, dtype=torch.bool))
    d = x_new - x
    assert float(d.abs().max()) > 0 and bool((d.gather(1, W) == 0).all())  # W stays
    assert prob.L_data > small  # grew to at least the curvature of the move
    assert float((A @ d[0]).square().sum()) <= prob.L_data * float(d.square().sum())
    assert torch.allclose(Ax_new, x_new @ A.T)
    assert float(prob.objective(x_new, Ax_new - prob.y)) < float(prob.objective(x, Ax - prob.y))
    assert not bool(pen.support(x_new).any())  # moves only inside the quadratic zone


def test_smooth_penalty_working_sets_in_float32_at_a_tight_tolerance():
    """Near convergence in float32, ``A d`` of an outside step is mostly rounding: its curvature
    must not be taken at face value (it once grew L a million-fold and stalled the solve)."""
    rng = np.random.default_rng(0)  # benchmarks/weep_speed.py's instance at (160, 400)
    m, n = 160, 400
    A = rng.standard_normal((m, n))
    A /= np.linalg.norm(A, axis=0)
    w = np.zeros(n)
    support = rng.choice(n, 20, replace=False)
    w[support] = rng.choice([-1.0, 1.0], 20) * rng.uniform(1, 2, 20)
    y = A @ w + 0.02 * rng.standard_normal(m)
    A, b = torch.from_numpy(np.sqrt(m) * A).float(), torch.from_numpy(y).float()
    pen, lam = _weep_as_mcp(A, b)
    kw = dict(method="fista", tol=1e-6, max_iter=20_000)
    plain = solve(A, b, pen, lam, **kw)
    ws = solve(A, b, pen, lam, **kw, working_set=True)
    assert plain.converged and ws.converged
    assert ws.info["products"] < 2 * plain.info["products"]


@pytest.mark.parametrize("method", ["fista", "prox-grad"])
def test_backtracking_grows_a_too_small_lipschitz_and_reaches_the_solution(method):
    """With ``backtrack``, FISTA and prox-grad start from an ``L`` far below ``||A||^2`` (their
    steps would diverge unchecked) and still reach the solution of an exact-``L`` run."""
    from beyondgd.sparse.solvers import _RUNNERS, _Problem, _Recorder

    A, y, _ = make_problem(m=50, n=120, k=5)
    pen, lam = WEEP(10.0, 0.05), 0.05
    true_L = float(torch.linalg.matrix_norm(A, 2) ** 2)
    reference = solve(A, y, pen, lam, method="fista", tol=1e-10, max_iter=50_000)
    small = 0.01 * true_L

    def run(backtrack):
        prob = _Problem(A, y[None], lam, pen, None, small)
        prob.backtrack = backtrack
        tol_abs = torch.tensor([1e-9 * float((A.T @ y).abs().max())], dtype=F64)
        rec = _Recorder(tol_abs, torch.tensor([20_000]))
        x = _RUNNERS[method](prob, torch.zeros(1, 120, dtype=F64), rec, {"anderson": 0})
        return prob, rec, x

    prob, rec, x = run(True)
    assert bool(rec.converged.all())
    assert small < prob.L_data <= 1.02 * true_L  # grew to the curvature seen, not beyond
    assert torch.allclose(x[0], reference.x, atol=1e-7, rtol=0)
    _, rec_unchecked, x_unchecked = run(False)  # the same start without the test diverges
    assert not bool(rec_unchecked.converged.all()) or not torch.isfinite(x_unchecked).all()


def test_smooth_working_sets_start_from_a_lower_bound_of_the_lipschitz_constant():
    from beyondgd.sparse.solvers import _rayleigh_lower_bound

    A, Y, _ = make_problem(m=40, n=90, k=4, B=3)
    exact = float(torch.linalg.matrix_norm(A, 2) ** 2)
    q = _rayleigh_lower_bound(A, Y, Y @ A)
    assert q.shape == () and 0 < float(q) <= exact
    assert float(q) == pytest.approx(float(((Y @ A).square().sum(-1) / Y.square().sum(-1)).max()))
    # batched matrices: one bound each; a zero right-hand side falls back to the column norms
    As = torch.stack([A, 2 * A, 3 * A])
    Y0 = Y.clone()
    Y0[1] = 0
    q = _rayleigh_lower_bound(As, Y0, torch.bmm(Y0.unsqueeze(1), As).squeeze(1))
    assert q.shape == (3,) and bool((q > 0).all())
    assert float(q[1]) == pytest.approx(float((2 * A).square().sum(0).max()))
    for i in range(3):
        assert float(q[i]) <= (i + 1) ** 2 * exact * (1 + 1e-12)
