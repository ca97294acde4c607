"""Non-finite losses and gradients: never a NaN parameter, progress anyway (pytorch #5953)."""

from __future__ import annotations

import math

import pytest
import torch

from beyondgd.optim import FUSE, AfterEpochs, strong_wolfe
from beyondgd.optim.lbfgs import cubic_interpolate

F64 = torch.float64


def bounded_quadratic(x, bad="nan", bound=1.2):
    """sum (x - 1)^2, but a non-finite loss (and gradient) wherever some x_i > bound."""

    def closure():
        x.grad = None
        if bool((x > bound).any()):
            loss = x.sum() * float(bad)
        else:
            loss = ((x - 1) ** 2).sum()
        loss.backward()
        return loss.detach()

    return closure


@pytest.mark.parametrize("bad", ["nan", "inf"])
@pytest.mark.parametrize("line_search", ["strong_wolfe", None])
def test_lbfgs_never_leaves_nonfinite_parameters_and_still_converges(bad, line_search):
    x = torch.full((3,), -3.0, dtype=F64, requires_grad=True)
    closure = bounded_quadratic(x, bad)
    start = float(closure())
    # lbfgs_lr=5 makes the first trial of every memory step overshoot past the bound
    opt = FUSE(
        [x], switch=AfterEpochs(0), lbfgs_lr=5.0, max_iter=1, max_eval=6, line_search=line_search
    )
    losses = []
    for _ in range(30):
        opt.step(closure)
        assert bool(torch.isfinite(x).all())
        losses.append(opt.last_loss)
    assert opt.n_nonfinite_evals > 0  # the bad region was really hit
    assert all(math.isfinite(v) for v in losses)
    final = float(closure())
    assert final < 1e-2 * start
    if line_search == "strong_wolfe":
        assert final < 1e-12
        assert all(b <= a for a, b in zip(losses, losses[1:]))  # monotone, best iterate kept


def test_torch_lbfgs_breaks_where_fuse_does_not():
    """The same problem sends torch.optim.LBFGS to NaN (documents the bug the test guards)."""
    x = torch.full((3,), -3.0, dtype=F64, requires_grad=True)
    opt = torch.optim.LBFGS([x], lr=5.0, max_iter=1, max_eval=6, line_search_fn="strong_wolfe")
    closure = bounded_quadratic(x, "nan")
    for _ in range(10):
        opt.step(closure)
    if bool(torch.isfinite(x).all()):
        pytest.skip("this torch version no longer produces NaN here")
    assert not bool(torch.isfinite(x).all())


def test_failures_shrink_the_step_and_reset_the_memory():
    # One trial per line search (max_ls=1) and a huge initial step: the trial is always
    # non-finite until the halving after consecutive failures brings it back in range.
    x = torch.full((2,), -1.0, dtype=F64, requires_grad=True)
    closure = bounded_quadratic(x, "inf", bound=1.5)
    opt = FUSE([x], switch=AfterEpochs(0), lbfgs_lr=1e4, max_failures=2, max_ls=1)
    start = float(closure())
    for _ in range(60):
        opt.step(closure)
        assert bool(torch.isfinite(x).all())
    assert opt.n_line_search_failures >= 2 and opt.n_memory_resets >= 1
    assert float(closure()) < 1e-3 * start


def test_line_search_recovers_from_a_huge_step_without_failing():
    # With the default 25 trials the NaN-safe bisection finds a finite, decreasing point itself.
    x = torch.full((2,), -1.0, dtype=F64, requires_grad=True)
    closure = bounded_quadratic(x, "inf", bound=1.5)
    opt = FUSE([x], switch=AfterEpochs(0), lbfgs_lr=1e4)
    start = float(closure())
    for _ in range(20):
        opt.step(closure)
        assert bool(torch.isfinite(x).all())
    assert opt.n_line_search_failures == 0 and opt.n_nonfinite_evals > 0
    assert float(closure()) < 1e-6 * start


def test_nonfinite_start_of_lbfgs_step_is_skipped():
    x = torch.zeros(2, dtype=F64, requires_grad=True)
    poison = {"on": False}

    def closure():
        x.grad = None
        loss = ((x - 1) ** 2).sum() * (math.nan if poison["on"] else 1.0)
        loss.backward()
        return loss.detach()

    opt = FUSE([x], switch=AfterEpochs(0), lbfgs_mode="minibatch", max_eval=4)
    opt.step(closure)
    before = x.detach().clone()
    n_mem = len(opt.memory)
    poison["on"] = True
    opt.step(closure)
    assert torch.equal(x, before) and opt.n_skipped == 1 and len(opt.memory) == n_mem
    poison["on"] = False
    opt.step(closure)
    assert bool(torch.isfinite(x).all()) and not torch.equal(x, before)


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_adam_phase_skips_nonfinite_steps_without_poisoning_moments(where):
    torch.manual_seed(0)
    w = torch.randn(5, dtype=F64, requires_grad=True)
    w_ref = w.detach().clone().requires_grad_()
    target = torch.randn(5, dtype=F64)
    bad_step = 3

    def make(p, opt_steps):
        def closure():
            p.grad = None
            loss = ((p - target) ** 2).sum()
            loss.backward()
            if opt_steps() == bad_step:
                if where == "loss":
                    return loss.detach() * math.inf
                p.grad[1] = math.nan
            return loss.detach()

        return closure

    opt = FUSE([w], lr=0.1, switch=lambda o: False)
    ref = torch.optim.Adam([w_ref], lr=0.1)
    closure = make(w, lambda: opt.n_steps)
    ref_closure = make(w_ref, lambda: -1)
    for k in range(8):
        opt.step(closure)
        if k != bad_step:  # the reference simply does not take the bad step
            ref.step(ref_closure)
        assert bool(torch.isfinite(w).all())
        assert bool(torch.isfinite(opt.state[w]["exp_avg"]).all())
    assert opt.n_skipped == 1 and opt.state[w]["step"] == 7
    torch.testing.assert_close(w, w_ref, rtol=0, atol=1e-12)


def test_strong_wolfe_bisects_instead_of_interpolating_through_nan():
    # f(t) = (t - 2)^2 along d = 1 from 0, NaN for t > 3; first trial t = 8.
    d = torch.ones(1, dtype=F64)
    trials = []

    def obj(t):
        trials.append(t)
        if t > 3:
            return math.nan, torch.full((1,), math.nan, dtype=F64)
        return (t - 2.0) ** 2, torch.tensor([2.0 * (t - 2.0)], dtype=F64)

    res = strong_wolfe(obj, 8.0, d, 4.0, torch.tensor([-4.0], dtype=F64), -4.0, max_ls=10)
    assert res.success and res.wolfe and math.isfinite(res.f) and res.f < 4.0
    assert res.n_nonfinite >= 1 and trials[1] == 4.0  # midpoint of [0, 8]
    assert all(math.isfinite(t) for t in trials)


def test_strong_wolfe_failure_returns_start_and_best_trial_kept():
    d = torch.ones(1, dtype=F64)
    g0 = torch.tensor([-1.0], dtype=F64)

    def all_nan(t):
        return math.nan, torch.full((1,), math.nan, dtype=F64)

    res = strong_wolfe(all_nan, 1.0, d, 1.0, g0, -1.0, max_ls=5)
    assert not res.success and res.t == 0.0 and res.f == 1.0 and res.g is g0

    # budget of one trial: accepted only if it lowers the loss (torch's max_ls=0 behaviour)
    def dec(t):
        return 1.0 - 0.5 * t, torch.tensor([-0.5], dtype=F64)

    res = strong_wolfe(dec, 1.0, d, 1.0, g0, -1.0, max_ls=0)
    assert res.success and res.t == 1.0 and res.f == 0.5 and res.n_evals == 1


def test_cubic_interpolate_falls_back_to_bisection():
    assert cubic_interpolate(0.0, 1.0, -1.0, 2.0, math.inf, math.nan) == 1.0
    assert cubic_interpolate(0.0, 1.0, -1.0, 2.0, 1.0, 1.0, bounds=(0.5, 1.5)) == 1.0
    # an exact quadratic is minimized exactly: f = (t - 1)^2
    assert cubic_interpolate(0.0, 1.0, -2.0, 3.0, 4.0, 4.0) == pytest.approx(1.0)
