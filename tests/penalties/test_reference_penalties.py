"""Reference penalties: closed-form prox vs brute force, gradients, constants, module behaviour."""

import math

import pytest
import torch

from beyondgd.penalties import (
    L1,
    MCP,
    SCAD,
    WEEP,
    CappedL1,
    LogSum,
    Penalty,
    PenaltyProtocol,
    QuadEnvelopeL0,
)

F64 = torch.float64


def brute_force_prox(pen, y, tau, half_width, n_grid=10_001):
    """Global minimizer of p(u) + (u - y)^2 / (2 tau): grid search, refined around the best."""
    u = torch.linspace(-half_width, half_width, n_grid, dtype=F64)  # contains 0
    h = float(u[1] - u[0])
    obj = pen.value(u)[None, :] + (u[None, :] - y[:, None]) ** 2 / (2 * tau)
    u0 = u[torch.argmin(obj, dim=1)]
    fine = u0[:, None] + torch.linspace(-2 * h, 2 * h, 801, dtype=F64)[None, :]
    fobj = pen.value(fine) + (fine - y[:, None]) ** 2 / (2 * tau)
    return fine.gather(1, torch.argmin(fobj, dim=1, keepdim=True)).squeeze(1)


def check_prox(pen, tau, y):
    p = pen.prox(y, tau)
    bf = brute_force_prox(pen, y, tau, float(y.abs().max()) + 1.0)

    def obj(u):
        return pen.value(u) + (u - y) ** 2 / (2 * tau)

    assert torch.all(obj(p) <= obj(bf) + 1e-11)
    ok = ((p - bf).abs() < 1e-4) | ((obj(p) - obj(bf)).abs() < 1e-7)
    assert torch.all(ok), (y[~ok], p[~ok], bf[~ok])


Y = torch.linspace(-6.0, 6.0, 97, dtype=F64)

# (penalty, steps inside the range where the classical formula applies, steps beyond it)
CASES = [
    (L1(0.7), [0.1, 1.0, 5.0], []),
    (MCP(alpha=1.0, gamma=3.0), [0.2, 1.0, 2.9], [3.0, 5.0]),
    (MCP(alpha=0.5, gamma=1.5), [0.5, 1.4], [2.0]),
    (SCAD(alpha=1.0, gamma=3.7), [0.2, 1.0, 2.5], [2.7, 4.0]),
    (CappedL1(alpha=1.0, theta=1.5), [0.3, 1.0, 3.0], []),
    (LogSum(alpha=1.0, eps=0.5), [0.1, 0.5, 1.0, 3.0], []),
    (QuadEnvelopeL0(mu=0.8), [0.3, 0.9], [1.0, 2.0]),
]


@pytest.mark.parametrize("pen,inside,beyond", CASES, ids=lambda v: repr(v)[:30])
def test_prox_equals_brute_force_minimizer(pen, inside, beyond):
    for tau in inside + beyond:
        check_prox(pen, tau, Y)


def test_classical_thresholding_formulas():
    y = torch.tensor([-4.0, -1.5, 0.5, 2.0, 5.0], dtype=F64)
    # MCP firm thresholding, tau = 1 < gamma = 3
    assert torch.allclose(
        MCP(1.0, 3.0).prox(y, 1.0), torch.tensor([-4.0, -0.75, 0.0, 1.5, 5.0], dtype=F64)
    )
    # SCAD, Fan & Li's rule at tau = 1 (gamma = 3.7)
    mid = ((3.7 - 1) * 3.0 - 3.7) / (3.7 - 2)
    assert torch.allclose(
        SCAD(1.0, 3.7).prox(torch.tensor([1.5, 3.0], dtype=F64), 1.0),
        torch.tensor([0.5, mid], dtype=F64),
    )
    assert torch.allclose(L1(1.0).prox(y, 1.0), torch.tensor([-3.0, -0.5, 0, 1, 4], dtype=F64))
    # Q1-L0 with tau >= 1 is hard thresholding at sqrt(2 mu tau)-ish: never in (0, sqrt(2 mu))
    q = QuadEnvelopeL0(mu=0.5).prox(Y, 1.5)
    assert torch.all((q == 0) | (q.abs() >= 1.0))


SMOOTH_POINTS = {
    # points away from the kinks of each penalty
    "L1": (L1(0.7), [-2.0, -0.3, 0.4, 3.0]),
    "MCP": (MCP(1.0, 3.0), [-4.0, -1.0, 0.5, 2.0, 3.5]),
    "SCAD": (SCAD(1.0, 3.7), [-5.0, -2.0, -0.5, 0.7, 1.5, 3.0, 4.0]),
    "CappedL1": (CappedL1(1.0, 1.5), [-2.0, -0.5, 0.7, 3.0]),
    "LogSum": (LogSum(1.0, 0.5), [-2.0, -0.1, 0.05, 1.0]),
    "QuadEnvelopeL0": (QuadEnvelopeL0(0.8), [-2.0, -0.6, 0.3, 1.0]),
    "WEEP": (WEEP(3.0, 0.8, 0.2), [-2.0, -0.6, -0.1, 0.0, 0.3, 1.0, 5.0]),
}


@pytest.mark.parametrize("name", sorted(SMOOTH_POINTS))
def test_gradcheck_at_smooth_points(name):
    pen, pts = SMOOTH_POINTS[name]
    x = torch.tensor(pts, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: pen.value(z), (x,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(pen, (x,), eps=1e-6, atol=1e-7)  # forward = sum
    # grad() is the derivative of value()
    (g,) = torch.autograd.grad(pen.value(x).sum(), x)
    assert torch.allclose(pen.grad(x.detach()), g, atol=1e-12)


def test_minimum_norm_subgradient_at_kinks():
    zero = torch.zeros(1, dtype=F64)
    for pen, _, _ in CASES:
        assert float(pen.grad(zero)) == 0.0  # [-alpha, alpha] (or similar) contains 0
    assert float(CappedL1(1.0, 1.5).grad(torch.tensor([1.5]))) == 0.0  # conv{1, 0} contains 0


@pytest.mark.parametrize("pen,inside,beyond", CASES, ids=lambda v: repr(v)[:30])
def test_weak_convexity_constant(pen, inside, beyond):
    rho = pen.weak_convexity
    x = torch.linspace(-8, 8, 16001, dtype=F64)
    if math.isinf(rho):  # capped L1: p + r/2 x^2 is never convex (concave kink at theta)
        assert isinstance(pen, CappedL1)
        return
    f = pen.value(x) + 0.5 * rho * x * x
    second = f[2:] - 2 * f[1:-1] + f[:-2]
    assert float(second.min()) >= -1e-9
    if rho > 0:  # and no smaller modulus works
        g = pen.value(x) + 0.5 * 0.9 * rho * x * x
        assert float((g[2:] - 2 * g[1:-1] + g[:-2]).min()) < 0
    assert math.isinf(pen.smoothness)


def test_quad_envelope_is_mcp_with_gamma_one():
    mu = 0.8
    q, m = QuadEnvelopeL0(mu), MCP(alpha=math.sqrt(2 * mu), gamma=1.0)
    assert torch.allclose(q.value(Y), m.value(Y), atol=1e-14)
    for tau in (0.5, 1.0, 2.0):
        assert torch.allclose(q.prox(Y, tau), m.prox(Y, tau))


@pytest.mark.parametrize("pen", [c[0] for c in CASES] + [WEEP(2.0, 0.5)], ids=repr)
def test_module_behaviour(pen):
    assert isinstance(pen, Penalty) and isinstance(pen, torch.nn.Module)
    assert isinstance(pen, PenaltyProtocol)
    params = [torch.randn(3, 4, requires_grad=True), torch.randn(5, requires_grad=True)]
    total = pen(params)
    ref = sum(pen.value(p.detach()).sum() for p in params)
    assert torch.allclose(total, ref, atol=1e-6)
    total.backward()
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(10, dtype=dtype)
        for out in (pen.value(x), pen.grad(x), pen.prox(x, 0.5)):
            assert out.dtype == dtype and out.shape == x.shape
    x = torch.tensor([0.0, 1e-3, -2.0])
    assert pen.support(x, threshold=0.0).tolist() == [False, True, True]
