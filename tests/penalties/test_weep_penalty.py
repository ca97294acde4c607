"""WEEP: closed form vs the envelope construction, smoothness, fused autograd, prox, support."""

import math

import numpy as np
import pytest
import torch

from beyondgd.penalties import WEEP, QuadEnvelopeL0, weep_breakpoints

F64 = torch.float64


def reference_weep(x, a, b, c):
    """Non-fused WEEP straight from the piecewise formula (autograd goes through torch.where)."""
    k = 2 * a + 1
    x1, x2 = weep_breakpoints(a, b, c)
    t = x.abs()
    bridge = k * x1 * t - 0.5 * k * x1**2 - 0.5 * t * t
    return torch.where(t <= x1, a * t * t, torch.where(t < x2, bridge, b + c * t))


def lower_convex_hull_envelope(t, f):
    """Lower convex envelope of the samples (t_i, f_i) evaluated at every t_i (monotone chain)."""
    hull = []
    for i in range(len(t)):
        while len(hull) >= 2:
            i0, i1 = hull[-2], hull[-1]
            cross = (t[i1] - t[i0]) * (f[i] - f[i0]) - (f[i1] - f[i0]) * (t[i] - t[i0])
            if cross <= 0:
                hull.pop()
            else:
                break
        hull.append(i)
    return np.interp(t, t[hull], f[hull])


PARAMS = [(1.0, 3.0, 0.0), (0.3, 0.2, 0.5), (7.0, 1.3, 0.1), (25.0, 0.05, 0.0), (2.5, 0.8, 1.2)]


@pytest.mark.parametrize("seed", range(4))
def test_weep_equals_numerical_weakly_convex_envelope(seed):
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.2, 20.0), rng.uniform(0.05, 3.0), rng.choice([0.0, rng.uniform(0, 2)])
    x1, x2 = weep_breakpoints(a, b, c)
    t = np.linspace(-3 * x2 - 1, 3 * x2 + 1, 120_001)
    base = np.minimum(a * t**2, b + c * np.abs(t))
    env = lower_convex_hull_envelope(t, base + 0.5 * t**2) - 0.5 * t**2
    weep = WEEP(a, b, c).value(torch.from_numpy(t)).numpy()
    h = t[1] - t[0]
    assert np.max(np.abs(weep - env)) < 10 * (1 + a) * h**2
    # and it lies below the base penalty, touching it on the core and the tail
    assert np.all(weep <= base + 1e-12)
    assert np.allclose(weep[np.abs(t) <= x1], base[np.abs(t) <= x1])
    assert np.allclose(weep[np.abs(t) >= x2], base[np.abs(t) >= x2])


def test_weep_breakpoints_closed_form():
    x1, x2 = weep_breakpoints(1.0, 2.0)  # a = 1, c = 0: x1 = sqrt(b/3), x2 = sqrt(3b)
    assert x1 == pytest.approx(math.sqrt(2.0 / 3.0), rel=1e-14)
    assert x2 == pytest.approx(math.sqrt(6.0), rel=1e-14)
    for a, b, c in PARAMS:
        x1, x2 = weep_breakpoints(a, b, c)
        assert 0 < x1 < x2
        pen = WEEP(a, b, c)
        assert (pen.x1, pen.x2) == (x1, x2)


@pytest.mark.parametrize("a,b,c", PARAMS)
def test_weep_is_c1_at_the_breakpoints(a, b, c):
    k = 2 * a + 1
    x1, x2 = weep_breakpoints(a, b, c)
    core = (lambda t: a * t * t, lambda t: 2 * a * t)
    bridge = (lambda t: k * x1 * t - 0.5 * k * x1**2 - 0.5 * t * t, lambda t: k * x1 - t)
    tail = (lambda t: b + c * t, lambda t: c)
    for left, right, p in [(core, bridge, x1), (bridge, tail, x2)]:
        assert left[0](p) == pytest.approx(right[0](p), abs=1e-12)  # value
        assert left[1](p) == pytest.approx(right[1](p), abs=1e-12)  # derivative
    # the implementation: one-sided limits agree (the jump is O(delta) since WEEP' is Lipschitz)
    pen = WEEP(a, b, c)
    for p in (x1, x2, -x1, -x2):
        d = 1e-7
        xs = torch.tensor([p - d, p + d], dtype=F64)
        v, g = pen.value(xs), pen.grad(xs)
        assert abs(float(v[1] - v[0])) < 2 * d * (abs(float(g[0])) + 1)
        assert abs(float(g[1] - g[0])) < 2 * d * pen.smoothness + 1e-12


@pytest.mark.parametrize("a,b,c", PARAMS)
def test_weep_smoothness_and_weak_convexity_constants(a, b, c):
    pen = WEEP(a, b, c)
    x = torch.linspace(-3 * pen.x2, 3 * pen.x2, 20001, dtype=F64)
    g = pen.grad(x)
    slopes = torch.diff(g) / torch.diff(x)
    assert float(slopes.abs().max()) <= pen.smoothness * (1 + 1e-9)
    assert pen.smoothness == max(2 * a, 1)
    # WEEP + x^2/2 is convex (slopes of the derivative >= -1), and -1 is attained (the bridge)
    assert float(slopes.min()) >= -pen.weak_convexity - 1e-9
    assert float(slopes.min()) == pytest.approx(-1.0, abs=1e-6)


def test_weep_approaches_quadratic_envelope_of_l0():
    b = 0.7
    x = torch.linspace(-4, 4, 40001, dtype=F64)
    q = QuadEnvelopeL0(mu=b).value(x)
    closed = b - 0.5 * (math.sqrt(2 * b) - x.abs()).clamp_min(0) ** 2
    assert torch.allclose(q, closed, atol=1e-15)
    errors = []
    for a in (10.0, 100.0, 1000.0):
        err = float((WEEP(a, b).value(x) - q).abs().max())
        assert err <= 1.5 * b / (2 * a)
        assert err >= 0.5 * b / (2 * a)  # the rate is ~ b / (2a), not faster
        errors.append(err)
    assert errors[0] > errors[1] > errors[2]


def test_fused_forward_and_gradient_match_the_reference():
    torch.manual_seed(0)
    for a, b, c in PARAMS:
        pen = WEEP(a, b, c)
        x = (torch.randn(1000, dtype=F64) * 2 * pen.x2).requires_grad_()
        val = pen(x)
        val.backward()
        xr = x.detach().clone().requires_grad_()
        ref = reference_weep(xr, a, b, c).sum()
        ref.backward()
        assert float(val.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
        assert torch.allclose(x.grad, xr.grad, atol=1e-12)
        assert torch.allclose(pen.grad(x.detach()), xr.grad, atol=1e-12)


def test_fused_weep_gradcheck_float64():
    torch.manual_seed(1)
    for a, b, c in PARAMS:
        pen = WEEP(a, b, c)
        x = (torch.randn(40, dtype=F64) * 2 * pen.x2).requires_grad_()
        assert torch.autograd.gradcheck(pen, (x,), eps=1e-6, atol=1e-6)
        # the reference (elementwise value) too
        assert torch.autograd.gradcheck(lambda z, p=pen: p.value(z), (x,), eps=1e-6, atol=1e-6)


def test_fused_backward_scales_with_upstream_gradient():
    pen = WEEP(2.0, 0.5, 0.1)
    x = torch.linspace(-3, 3, 101, dtype=F64, requires_grad=True)
    (3.5 * pen(x)).backward()
    assert torch.allclose(x.grad, 3.5 * pen.grad(x.detach()), atol=1e-12)


def test_weep_over_parameters_and_dtypes():
    pen = WEEP(2.0, 0.5)
    model = torch.nn.Linear(5, 3)
    params = list(model.parameters())
    total = pen(model.parameters())
    assert torch.allclose(total, sum(pen.value(p.detach()).sum() for p in params), atol=1e-6)
    total.backward()
    for p in params:
        assert torch.allclose(p.grad, pen.grad(p.detach()), atol=1e-6)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(64, dtype=dtype)
        assert pen(x).dtype == dtype and pen.value(x).dtype == dtype
        assert pen.prox(x, 0.5).dtype == dtype and pen.grad(x).dtype == dtype
    assert float(pen([])) == 0.0


def brute_force_prox(pen, y, tau, half_width, n_grid=10_001):
    """Global minimizer of p(u) + (u - y)^2 / (2 tau): grid search, refined around the best."""
    u = torch.linspace(-half_width, half_width, n_grid, dtype=F64)  # contains 0
    h = float(u[1] - u[0])
    obj = pen.value(u)[None, :] + (u[None, :] - y[:, None]) ** 2 / (2 * tau)
    u0 = u[torch.argmin(obj, dim=1)]
    fine = u0[:, None] + torch.linspace(-2 * h, 2 * h, 801, dtype=F64)[None, :]
    fobj = pen.value(fine) + (fine - y[:, None]) ** 2 / (2 * tau)
    return fine.gather(1, torch.argmin(fobj, dim=1, keepdim=True)).squeeze(1)


def assert_prox_is_global_min(pen, y, tau, half_width):
    p = pen.prox(y, tau)
    bf = brute_force_prox(pen, y, tau, half_width)

    def obj(u):
        return pen.value(u) + (u - y) ** 2 / (2 * tau)

    # never worse than the brute force (up to rounding), and at the same place unless tied
    assert torch.all(obj(p) <= obj(bf) + 1e-11)
    same_place = (p - bf).abs() < 1e-4
    tie = (obj(p) - obj(bf)).abs() < 1e-7
    assert torch.all(same_place | tie), (p[~(same_place | tie)], bf[~(same_place | tie)])


@pytest.mark.parametrize("tau", [0.05, 0.5, 0.99, 1.0, 1.01, 2.0, 10.0])
@pytest.mark.parametrize("a,b,c", PARAMS)
def test_weep_prox_equals_brute_force(a, b, c, tau):
    pen = WEEP(a, b, c)
    y = torch.linspace(-(pen.x2 + tau * c) * 2.5, (pen.x2 + tau * c) * 2.5, 41, dtype=F64)
    assert_prox_is_global_min(pen, y, tau, float(y.abs().max()) + 1.0)


def test_weep_prox_closed_form_branches():
    pen = WEEP(1.0, 3.0, 0.0)  # x1 = 1, x2 = 3, k = 3
    y = torch.tensor([-1.0, 2.0, 4.0, 10.0], dtype=F64)
    # tau = 1: y / 3 for |y| <= k x1 = 3, else y - c sign(y)
    assert torch.allclose(pen.prox(y, 1.0), torch.tensor([-1 / 3, 2 / 3, 4.0, 10.0], dtype=F64))
    # a tensor of steps gives the same as one step at a time
    taus = torch.tensor([0.3, 1.0, 4.0], dtype=F64).unsqueeze(-1)
    batched = pen.prox(y.expand(3, 4), taus)
    for i, tau in enumerate(taus.flatten().tolist()):
        assert torch.allclose(batched[i], pen.prox(y, tau))


def test_weep_support_threshold():
    pen = WEEP(1.0, 3.0)  # x1 = 1
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, -2.0])
    assert pen.support(x).tolist() == [False, False, False, True, True]
    assert pen.support(x, threshold=0.4).tolist() == [False, True, True, True, True]
    assert WEEP(1.0, 3.0, support_threshold=1.6).support(x).tolist() == [False] * 4 + [True]


def test_weep_parameters_can_be_reassigned_for_continuation():
    pen = WEEP(1.0, 3.0)
    pen.a = 4.0
    assert (pen.x1, pen.x2) == weep_breakpoints(4.0, 3.0)
    assert pen.smoothness == 8.0
    with pytest.raises(ValueError, match="a"):
        pen.a = 0.0
