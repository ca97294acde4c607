"""The numba-compiled FISTA (one CPU problem) against the torch loop it replaces."""

import math

import pytest
import torch
from sparse_problems import make_problem

from beyondgd.penalties import L1, MCP, SCAD, WEEP
from beyondgd.sparse import solve
from beyondgd.sparse import solvers as S

pytest.importorskip("numba")
from beyondgd.sparse import _fista_compiled as C  # noqa: E402

F64 = torch.float64


@pytest.fixture
def torch_path(monkeypatch):
    """Runs ``solve`` without the compiled FISTA (as without numba)."""

    def run(*args, **kw):
        with monkeypatch.context() as patch:
            patch.setattr(S, "_compiled_fista", lambda: None)
            return solve(*args, **kw)

    return run


def spy_compiled(monkeypatch):
    calls = []
    original = C.fista

    def fista(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(C, "fista", fista)
    return calls


# the penalties the kernel knows, with lam giving prox steps tau = lam / L < 1 and, for the last
# of each, tau > 1 (WEEP's and MCP's nonconvex prox branches: the better of two candidates)
CASES = [
    ("l1", L1(1.0), 0.02),
    ("mcp", MCP(0.05, 3.0), 1.0),
    ("mcp-hard", MCP(0.05, 0.5), 40.0),
    ("weep", WEEP(10.0, 0.05), 0.02),
    ("weep-c", WEEP(2.0, 0.05, 0.1), 0.5),
    ("weep-tau>1", WEEP(1.0, 0.02), 40.0),
]


@pytest.mark.parametrize("name,pen,lam", CASES, ids=[c[0] for c in CASES])
def test_compiled_fista_takes_the_torch_iterations(name, pen, lam, torch_path, monkeypatch):
    A, y, _ = make_problem(m=40, n=100, k=4)
    kw = dict(method="fista", tol=1e-9, max_iter=5000)
    calls = spy_compiled(monkeypatch)
    res = solve(A, y, pen, lam, **kw)
    assert len(calls) == 1  # this one ran compiled
    ref = torch_path(A, y, pen, lam, **kw)
    if name.endswith("tau>1"):
        assert lam / squared_norm(A) > 1.0
    assert res.converged == ref.converged
    assert res.n_iter == ref.n_iter
    assert res.info["products"] == ref.info["products"]
    assert torch.allclose(res.x, ref.x, atol=1e-12, rtol=0)
    assert res.objective_history.shape == ref.objective_history.shape
    assert torch.allclose(res.objective_history, ref.objective_history, rtol=1e-12, atol=0)
    assert torch.allclose(res.stationarity_history, ref.stationarity_history, rtol=1e-9, atol=1e-13)
    assert res.stationarity == pytest.approx(ref.stationarity, rel=1e-9, abs=1e-13)


def squared_norm(A):
    return float(torch.linalg.matrix_norm(A, 2) ** 2)


@pytest.mark.parametrize("name,pen,lam", CASES, ids=[c[0] for c in CASES])
def test_compiled_penalty_maps_equal_the_torch_penalties(name, pen, lam):
    kind, params = C.penalty_spec(pen)
    xs = torch.linspace(-3, 3, 601, dtype=F64)
    # the breakpoints themselves, and either side
    for v in [getattr(pen, "_x1", 0.0), getattr(pen, "_x2", 0.0), 0.05, 0.15]:
        xs = torch.cat([xs, torch.tensor([v, -v, v * (1 + 1e-9), v * (1 - 1e-9)], dtype=F64)])
    for tau in (0.1, 0.5, 0.999, 1.0, 1.5, 4.0):
        prox = torch.tensor([C._prox(kind, params, float(x), tau) for x in xs], dtype=F64)
        assert torch.allclose(prox, pen.prox(xs, tau), atol=1e-12, rtol=0), tau
    value = torch.tensor([C._value(kind, params, float(x)) for x in xs], dtype=F64)
    grad = torch.tensor([C._grad(kind, params, float(x)) for x in xs], dtype=F64)
    assert torch.allclose(value, pen.value(xs), atol=1e-12, rtol=0)
    assert torch.allclose(grad, pen.grad(xs), atol=1e-12, rtol=0)


def test_compiled_fista_in_float32_reaches_the_same_solution(torch_path, monkeypatch):
    A, y, _ = make_problem(m=60, n=200, k=5, dtype=torch.float32)
    pen, lam = WEEP(10.0, 0.05), 0.02
    calls = spy_compiled(monkeypatch)
    res = solve(A, y, pen, lam, method="fista", tol=1e-5)
    ref = torch_path(A, y, pen, lam, method="fista", tol=1e-5)
    assert len(calls) == 1 and res.x.dtype == torch.float32
    assert res.converged and ref.converged
    assert abs(res.n_iter - ref.n_iter) <= 3  # float32 rounding may move the stop by a step
    assert torch.allclose(res.x, ref.x, atol=1e-4, rtol=0)


def test_compiled_fista_stops_at_max_iter_like_the_torch_loop(torch_path):
    A, y, _ = make_problem(m=40, n=100, k=4)
    kw = dict(method="fista", tol=1e-14, max_iter=7)
    res = solve(A, y, MCP(0.05, 3.0), 1.0, **kw)
    ref = torch_path(A, y, MCP(0.05, 3.0), 1.0, **kw)
    assert not res.converged and not ref.converged
    assert res.n_iter == ref.n_iter == 7
    assert res.objective_history.shape == ref.objective_history.shape == (8,)
    assert torch.allclose(res.x, ref.x, atol=1e-12, rtol=0)


def test_compiled_fista_history_grows_past_its_first_buffer():
    A, y, _ = make_problem(m=40, n=100, k=4)
    # a tolerance no iterate meets: 1500 records, more than the kernel's first buffer of 1024
    res = solve(A, y, WEEP(10.0, 0.05), 0.02, method="fista", tol=0.0, max_iter=1500)
    assert res.n_iter == 1500 and res.objective_history.shape == (1501,)
    assert bool(torch.isfinite(res.objective_history).all())


def test_warm_start_from_the_solution_stops_at_once(monkeypatch):
    A, y, _ = make_problem(m=40, n=100, k=4)
    pen, lam = L1(1.0), 0.02
    first = solve(A, y, pen, lam, method="fista", tol=1e-10)
    calls = spy_compiled(monkeypatch)
    again = solve(A, y, pen, lam, method="fista", tol=1e-10, x0=first.x)
    assert len(calls) == 1 and again.converged and again.n_iter <= 1
    assert torch.allclose(again.x, first.x, atol=1e-10, rtol=0)


@pytest.mark.parametrize(
    "case",
    ["callback", "anderson", "other-penalty", "subclass", "batched-working-set-smooth"],
)
def test_the_torch_loop_runs_where_the_kernel_does_not_apply(case, monkeypatch):
    A, y, _ = make_problem(m=40, n=100, k=4)
    pen, lam = WEEP(10.0, 0.05), 0.02
    kw = dict(method="fista", tol=1e-8)
    if case == "callback":
        kw["callback"] = lambda x: False
    elif case == "batched-working-set-smooth":  # the batch shares one backtracked L
        y = torch.stack([y, 2 * y])
        kw["working_set"] = True
    elif case == "anderson":
        kw["anderson"] = 5
    elif case == "other-penalty":
        pen, lam = SCAD(0.05, 3.7), 1.0
    elif case == "subclass":

        class Scaled(L1):  # may change the maps: not the kernel's L1
            def _value(self, x):
                return 2.0 * super()._value(x)

        pen = Scaled(1.0)
    calls = spy_compiled(monkeypatch)
    res = solve(A, y, pen, lam, **kw)
    if case == "batched-working-set-smooth":  # only a set of every column runs compiled
        assert all(call[0].shape[1] == A.shape[1] for call in calls)
    else:
        assert calls == []
    assert bool(torch.as_tensor(res.converged).all())


def test_working_sets_of_a_nonsmooth_penalty_run_their_sub_problems_compiled(monkeypatch):
    A, y, _ = make_problem(m=40, n=300, k=4)
    calls = spy_compiled(monkeypatch)
    res = solve(A, y, MCP(0.05, 3.0), 1.0, method="fista", tol=1e-8, working_set=True)
    assert res.converged and len(calls) >= 1
    assert max(call[0].shape[1] for call in calls) < 300  # sub-problems on the sets' columns
    full = solve(A, y, MCP(0.05, 3.0), 1.0, method="fista", tol=1e-8)
    assert torch.allclose(res.x, full.x, atol=1e-6, rtol=0)


@pytest.mark.parametrize("penalty", ["weep", "mcp"])
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
def test_working_sets_backtrack_in_the_kernel_as_in_the_torch_loop(
    penalty, dtype, torch_path, monkeypatch
):
    """The sub-problems of working sets start from a low ``L`` and grow it by backtracking,
    compiled: the same sets, iterations and solution as the torch loop."""
    A, y, _ = make_problem(m=100, n=1000, k=10, dtype=dtype)
    A = A * 100**0.5  # weep_speed's scaling
    alpha = 0.05 * float((A.T @ y).abs().max()) / 100
    if penalty == "weep":
        pen, lam = WEEP(100.0, (3 * alpha) ** 2 / 2), 100 / 3
    else:
        pen, lam = MCP(alpha, 3.0), 100.0
    tol = 1e-8 if dtype == F64 else 1e-4
    kw = dict(method="fista", tol=tol, max_iter=50_000, working_set=True)
    calls = spy_compiled(monkeypatch)
    res = solve(A, y, pen, lam, **kw)
    ref = torch_path(A, y, pen, lam, **kw)
    assert res.converged and ref.converged
    backtracked = [call for call in calls if call[10]]  # the backtrack flag
    assert backtracked and all(call[0].shape[1] < 1000 for call in backtracked)
    # the kernel's L grew from the set's largest squared column norm, as in the torch loop
    assert min(call[3] for call in backtracked) < 0.5 * squared_norm(A)
    if dtype == F64:
        assert res.info["working_set_sizes"] == ref.info["working_set_sizes"]
        assert res.n_iter == ref.n_iter
        assert res.info["products"] == pytest.approx(ref.info["products"], rel=1e-12)
        assert torch.allclose(res.x, ref.x, atol=1e-12, rtol=0)
    else:
        assert torch.allclose(res.x, ref.x, atol=1e-2, rtol=0)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-A", "batched-A"])
@pytest.mark.parametrize("name,pen,lam", CASES[:4], ids=[c[0] for c in CASES[:4]])
def test_a_batch_runs_compiled_problem_by_problem_as_the_torch_loop(
    name, pen, lam, shared, torch_path, monkeypatch
):
    A, Y, _ = make_problem(m=40, n=100, k=4, B=3)
    As = A if shared else torch.stack([A * (1 + 0.2 * i) for i in range(3)])
    kw = dict(method="fista", tol=1e-9, max_iter=5000)
    calls = spy_compiled(monkeypatch)
    res = solve(As, Y, pen, lam, **kw)
    assert len(calls) == 3
    ref = torch_path(As, Y, pen, lam, **kw)
    assert torch.equal(res.n_iter, ref.n_iter) and torch.equal(res.converged, ref.converged)
    assert len(set(res.n_iter.tolist())) > 1  # the problems stop at different iterations
    assert torch.allclose(res.x, ref.x, atol=1e-12, rtol=0)
    # histories (T, B): a stopped problem repeats its last record, as in the torch loop
    assert res.objective_history.shape == ref.objective_history.shape
    assert torch.allclose(res.objective_history, ref.objective_history, rtol=1e-12, atol=0)
    assert torch.allclose(res.stationarity_history, ref.stationarity_history, rtol=1e-9, atol=1e-13)
    # and each problem's solution is its single solve's
    for i in range(3):
        single = solve(A if shared else As[i], Y[i], pen, lam, **kw)
        assert torch.allclose(res.x[i], single.x, atol=1e-12, rtol=0)
        assert int(res.n_iter[i]) == single.n_iter


def test_the_kernel_is_deterministic():
    A, y, _ = make_problem(m=40, n=100, k=4)
    a = solve(A, y, WEEP(10.0, 0.05), 0.02, method="fista", tol=1e-9)
    b = solve(A, y, WEEP(10.0, 0.05), 0.02, method="fista", tol=1e-9)
    assert torch.equal(a.x, b.x) and torch.equal(a.objective_history, b.objective_history)
    assert math.isfinite(a.objective)
