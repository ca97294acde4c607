"""What a new user meets first with FUSE: ordinary mini-batch loops, broken closures, torch's
line-search budget and torch's optimizer conventions (one test per trap)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from beyondgd.optim import FUSE, AfterEpochs, full_batch_closure


def _data(n=40):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=gen)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5]])


def _minibatches(x, y, size=4):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


# ---------------------------------------------------------------- the mini-batch trap
def test_ordinary_minibatch_loop_does_not_switch_before_five_real_epochs():
    x, y = _data()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = FUSE(model.parameters(), lr=1e-2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):  # 4 epochs of 10 mini-batches: 40 steps, still Adam
            for xb, yb in _minibatches(x, y):
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(xb), yb).backward()
                opt.step()
            opt.end_epoch()
    told = [w for w in caught if "mini-batch loop" in str(w.message)]
    assert len(told) == 1 and "end_epoch" in str(told[0].message)
    assert told[0].filename == __file__  # points at the user's line, not at FUSE
    assert opt.phase == "adam" and opt.epoch == 4 and opt.n_steps == 40
    for xb, yb in _minibatches(x, y):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(xb), yb).backward()
        opt.step()
    opt.end_epoch()  # the fifth epoch ends: L-BFGS from the next step
    assert opt.phase == "lbfgs" and opt.switch_step == 50
    with pytest.raises(ValueError, match="full_batch_closure"):
        opt.step()
    loader = _minibatches(x, y)
    closure = full_batch_closure(model, torch.nn.functional.mse_loss, loader)
    before = closure().item()
    opt.step(closure)
    assert closure().item() < before


def test_minibatch_loop_with_steps_per_epoch_counts_epochs_without_warning():
    x, y = _data()
    model = torch.nn.Linear(3, 1)
    opt = FUSE(model.parameters(), lr=1e-2, steps_per_epoch=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(5):
            for xb, yb in _minibatches(x, y):
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(xb), yb).backward()
                opt.step()
    assert opt.epoch == 5 and opt.phase == "lbfgs" and opt.switch_step == 50


def test_full_batch_closure_steps_still_count_one_epoch_each():
    x = torch.zeros(2, requires_grad=True)

    def closure():
        x.grad = None
        loss = (x - 1).square().sum()
        loss.backward()
        return loss

    opt = FUSE([x], lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(6):
            opt.step(closure)
    assert opt.switch_step == 5 and opt.epoch == 6


def test_auto_epoch_mode_survives_state_dict():
    x = torch.zeros(2, requires_grad=True)
    opt = FUSE([x], lr=0.1)
    x.grad = torch.ones(2)
    with pytest.warns(UserWarning, match="mini-batch loop"):
        opt.step()
    fresh = FUSE([x], lr=0.1)
    fresh.load_state_dict(opt.state_dict())
    fresh.end_epoch()  # allowed: epochs end at end_epoch() now
    assert fresh.epoch == 1


# ---------------------------------------------------------------- broken closures
@pytest.mark.parametrize("phase", ["adam", "lbfgs"])
@pytest.mark.parametrize("zero", ["none", "zeros"])
def test_closure_without_backward_is_an_error(phase, zero):
    x = torch.zeros(2, requires_grad=True)
    x.grad = torch.ones(2)
    opt = FUSE([x], switch=AfterEpochs(0 if phase == "lbfgs" else 5))

    def closure():
        if zero == "none":
            x.grad = None
        return (x - 1).square().sum()  # forgot loss.backward()

    with pytest.raises(RuntimeError, match=r"backward\(\)"):
        opt.step(closure)


@pytest.mark.parametrize("phase", ["adam", "lbfgs"])
def test_all_nan_closure_is_counted_and_warned_once(phase):
    x = torch.zeros(2, requires_grad=True)
    opt = FUSE([x], switch=AfterEpochs(0 if phase == "lbfgs" else 50))

    def closure():
        x.grad = None
        loss = (x * math.nan).sum()
        loss.backward()
        return loss

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            opt.step(closure)
    nonfinite = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(nonfinite) == 1 and "non-finite" in str(nonfinite[0].message)
    assert opt.n_nonfinite_evals == 3 and opt.n_skipped == 3
    assert torch.equal(x.detach(), torch.zeros(2))


@pytest.mark.parametrize(
    "returned, error, match",
    [
        (lambda loss: loss.reshape(1).expand(3), ValueError, r"shape \(3,\)"),
        (lambda loss: None, TypeError, "returned None"),
        (lambda loss: "loss", TypeError, "got str"),
    ],
)
def test_closure_must_return_a_scalar_loss(returned, error, match):
    x = torch.zeros(3, requires_grad=True)
    opt = FUSE([x])

    def closure():
        x.grad = None
        loss = (x - 1).square().sum()
        loss.backward()
        return returned(loss)

    with pytest.raises(error, match=match):
        opt.step(closure)


def test_one_element_loss_is_accepted_as_in_torch():
    x = torch.zeros(3, requires_grad=True)
    opt = FUSE([x], switch=AfterEpochs(0))

    def closure():
        x.grad = None
        loss = (x - 1).square().sum().reshape(1)
        loss.backward()
        return loss

    opt.step(closure)
    assert float((x.detach() - 1).square().sum()) < 3.0


# ---------------------------------------------------------------- torch's line-search budget
def _rosenbrock_run(make, steps):
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    calls = [0]

    def closure():
        calls[0] += 1
        x.grad = None
        loss = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        loss.backward()
        return loss

    opt = make([x])
    out = []
    for _ in range(steps):
        before = calls[0]
        opt.step(closure)
        out.append((calls[0] - before, x.detach().clone()))
    return out


@pytest.mark.parametrize(
    "lr, max_iter, max_eval", [(1.0, 1, 2), (1.0, 2, 3), (1e-4, 1, 2), (1e-4, 2, 3)]
)
def test_strict_max_eval_matches_torch_lbfgs_where_the_budget_binds(lr, max_iter, max_eval):
    common = dict(max_iter=max_iter, max_eval=max_eval, history_size=10)
    common.update(tolerance_grad=1e-7, tolerance_change=1e-9)
    ref = _rosenbrock_run(
        lambda p: torch.optim.LBFGS(p, lr=lr, line_search_fn="strong_wolfe", **common), 40
    )
    strict = _rosenbrock_run(
        lambda p: FUSE(p, switch=AfterEpochs(0), lbfgs_lr=lr, strict_max_eval=True, **common),
        40,
    )
    loose = _rosenbrock_run(lambda p: FUSE(p, switch=AfterEpochs(0), lbfgs_lr=lr, **common), 40)
    for k, ((n_ref, x_ref), (n, x)) in enumerate(zip(ref, strict)):
        assert n == n_ref, f"step {k}: {n} closure calls, torch {n_ref}"
        torch.testing.assert_close(x, x_ref, rtol=0, atol=1e-12, msg=f"step {k}")
    assert max(n for n, _ in strict) <= max_eval + 1
    # the budget binds: without the cap FUSE's line searches take more calls than torch's
    assert max(n for n, _ in loose) > max(n for n, _ in ref)


def test_per_step_call_bounds_with_and_without_the_cap():
    # a first line search from a tiny trial step needs many extrapolations
    steps = 10
    loose = _rosenbrock_run(
        lambda p: FUSE(p, switch=AfterEpochs(0), lbfgs_lr=1e-6, max_iter=1, max_eval=5), steps
    )
    strict = _rosenbrock_run(
        lambda p: FUSE(
            p, switch=AfterEpochs(0), lbfgs_lr=1e-6, max_iter=1, max_eval=5, strict_max_eval=True
        ),
        steps,
    )
    max_ls = 25
    assert max(n for n, _ in loose) > 6  # the uncapped line search overruns max_eval
    assert max(n for n, _ in loose) <= min(1 * (max_ls + 1) + 1, max(5, 2) + max_ls)
    assert max(n for n, _ in strict) <= 5 + 1


# ---------------------------------------------------------------- torch's conventions
def test_groups_with_frozen_parameters_are_accepted_and_left_alone():
    a = torch.zeros(2, requires_grad=True)
    frozen = torch.full((2,), 3.0)
    opt = FUSE([{"params": [a, frozen]}], lr=0.1, switch=AfterEpochs(2))

    def closure():
        a.grad = None
        loss = (a - 1).square().sum() + frozen.sum()
        loss.backward()
        return loss

    for _ in range(4):  # Adam, then L-BFGS
        opt.step(closure)
    assert torch.equal(frozen, torch.full((2,), 3.0))
    assert float((a - 1).abs().max()) < 0.5
    again = FUSE([{"params": [a, frozen]}], lr=0.1, switch=AfterEpochs(2))
    again.load_state_dict(opt.state_dict())
    assert again.phase == "lbfgs"


def test_tensor_lr_is_a_value_error_as_in_torch():
    with pytest.raises(ValueError, match="lr must be a Python float"):
        FUSE([torch.zeros(1, requires_grad=True)], lr=torch.tensor(0.01))


def test_infinite_tolerances_are_accepted_and_stop_each_step_at_its_start():
    x = torch.zeros(2, requires_grad=True)
    calls = []

    def closure():
        calls.append(1)
        x.grad = None
        loss = (x - 1).square().sum()
        loss.backward()
        return loss

    opt = FUSE(
        [x], switch=AfterEpochs(0), tolerance_grad=math.inf, tolerance_change=math.inf, max_iter=5
    )
    opt.step(closure)
    assert len(calls) == 1 and torch.equal(x.detach(), torch.zeros(2))
    with pytest.raises(ValueError, match="tolerance_grad"):
        FUSE([x], tolerance_grad=-math.inf)
    with pytest.raises(ValueError, match="tolerance_change"):
        FUSE([x], tolerance_change=math.nan)
