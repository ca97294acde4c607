"""FUSE against its references: torch Adam, torch LBFGS, scipy L-BFGS-B; blend; determinism."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.optimize
import torch
from torch.utils.data import DataLoader, TensorDataset

from beyondgd.optim import FUSE, AfterEpochs, make_closure

F64 = torch.float64


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(
        F64
    )


def data(seed=1, n=32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=gen, dtype=F64)
    return x, torch.sin(x.sum(1, keepdim=True))


def params_equal(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def quadratic(n=20, cond=1e4, seed=0):
    """0.5 (x - c)^T A (x - c) with eigenvalues log-spaced in [1, cond] (minimum value 0)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = q @ np.diag(np.logspace(0, np.log10(cond), n)) @ q.T
    c = rng.standard_normal(n)
    return a, c


def tensor_closure(x, fn):
    def closure():
        x.grad = None
        loss = fn(x)
        loss.backward()
        return loss.detach()

    return closure


# ----------------------------------------------------------------------------- Adam phase


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_never_switching_fuse_equals_torch_adam(weight_decay):
    model = mlp()
    ref = copy.deepcopy(model)
    x, y = data()
    loss_fn = torch.nn.functional.mse_loss
    opt = FUSE(model.parameters(), lr=1e-2, weight_decay=weight_decay, switch=lambda o: False)
    adam = torch.optim.Adam(ref.parameters(), lr=1e-2, weight_decay=weight_decay)
    c1, c2 = make_closure(model, loss_fn, x, y), make_closure(ref, loss_fn, x, y)
    for _ in range(20):
        l1, l2 = opt.step(c1), adam.step(c2)
        assert torch.equal(l1, l2)
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)
    assert opt.phase == "adam" and opt.n_evals == 20 and opt.n_lbfgs_iters == 0


def test_adam_phase_without_closure_and_param_groups():
    model = mlp()
    ref = copy.deepcopy(model)
    x, y = data()

    def groups(m):
        return [
            {"params": m[0].parameters(), "lr": 1e-2},
            {"params": m[2].parameters(), "lr": 3e-3, "betas": (0.8, 0.99)},
        ]

    opt = FUSE(groups(model), switch=lambda o: False)
    adam = torch.optim.Adam(groups(ref))
    for _ in range(10):
        for m, o in ((model, opt), (ref, adam)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            assert o.step() is None
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)


# ----------------------------------------------------------------------------- L-BFGS phase


@pytest.mark.parametrize("reuse", [False, True])
@pytest.mark.parametrize("max_iter,max_eval", [(5, None), (1, 4), (20, 25)])
def test_lbfgs_phase_matches_torch_lbfgs_on_convex_quadratic(max_iter, max_eval, reuse):
    a, c = quadratic(n=12, cond=1e2)
    at, ct = torch.tensor(a), torch.tensor(c)

    def fn(x):
        e = x - ct
        return 0.5 * e @ at @ e

    x1 = torch.zeros(12, dtype=F64, requires_grad=True)
    x2 = torch.zeros(12, dtype=F64, requires_grad=True)
    kw = dict(max_iter=max_iter, max_eval=max_eval, history_size=5, tolerance_grad=1e-7)
    opt = FUSE([x1], switch=AfterEpochs(0), tolerance_change=1e-9, reuse_last_eval=reuse, **kw)
    ref = torch.optim.LBFGS([x2], lr=1, line_search_fn="strong_wolfe", tolerance_change=1e-9, **kw)
    for _ in range(4):
        opt.step(tensor_closure(x1, fn))
        ref.step(tensor_closure(x2, fn))
        torch.testing.assert_close(x1, x2, rtol=0, atol=1e-12)
    assert opt.n_lbfgs_iters == ref.state[x2]["n_iter"]
    if reuse:  # the accepted point's evaluation starts the next step: one call saved per step
        assert opt.n_evals == ref.state[x2]["func_evals"] - 3
    else:
        assert opt.n_evals == ref.state[x2]["func_evals"]


def test_every_step_calls_the_closure_unless_reuse_is_asked():
    x = torch.zeros(3, dtype=F64, requires_grad=True)
    closure = tensor_closure(x, lambda v: ((v - 1) ** 2).sum())
    for reuse, expected_min in ((False, 1), (True, 0)):
        with torch.no_grad():
            x.zero_()
        opt = FUSE([x], switch=AfterEpochs(0), max_iter=5, reuse_last_eval=reuse)
        calls = []
        for _ in range(6):  # converges in the first steps; later steps find nothing to do
            before = opt.n_evals
            opt.step(closure)
            calls.append(opt.n_evals - before)
        assert min(calls) == expected_min


def test_rosenbrock_reaches_scipy_minimum():
    def rosen(v):
        return (1 - v[0]) ** 2 + 100 * (v[1] - v[0] ** 2) ** 2

    x0 = np.array([-1.2, 1.0])
    ref = scipy.optimize.minimize(
        scipy.optimize.rosen,
        x0,
        jac=scipy.optimize.rosen_der,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-15},
    )
    x = torch.tensor(x0, requires_grad=True)
    opt = FUSE([x], lr=1e-2, switch=AfterEpochs(5), max_iter=1, max_eval=4)
    closure = tensor_closure(x, rosen)
    for _ in range(150):
        opt.step(closure)
    assert opt.switch_step == 5
    np.testing.assert_allclose(x.detach().numpy(), ref.x, rtol=0, atol=1e-6)
    assert float(closure()) <= ref.fun + 1e-12


def test_ill_conditioned_quadratic_reaches_scipy_minimum():
    a, c = quadratic(n=20, cond=1e4)
    ref = scipy.optimize.minimize(
        lambda v: 0.5 * (v - c) @ a @ (v - c),
        np.zeros(20),
        jac=lambda v: a @ (v - c),
        method="L-BFGS-B",
        options={"gtol": 1e-14, "ftol": 1e-16, "maxiter": 5000},
    )
    at, ct = torch.tensor(a), torch.tensor(c)
    x = torch.zeros(20, dtype=F64, requires_grad=True)
    # absolute stopping tests tightened: the defaults stop near 1e-5 on this scale
    opt = FUSE(
        [x],
        lr=1e-2,
        switch=AfterEpochs(3),
        max_iter=50,
        max_eval=60,
        tolerance_grad=1e-12,
        tolerance_change=1e-20,
    )
    closure = tensor_closure(x, lambda v: 0.5 * (v - ct) @ at @ (v - ct))
    for _ in range(25):
        opt.step(closure)
    np.testing.assert_allclose(x.detach().numpy(), ref.x, rtol=0, atol=1e-6)
    assert float(closure()) <= ref.fun + 1e-12


def test_budget_semantics_max_iter_and_max_eval():
    a, c = quadratic(n=10, cond=1e3)
    at, ct = torch.tensor(a), torch.tensor(c)
    x = torch.zeros(10, dtype=F64, requires_grad=True)
    calls = []
    inner = tensor_closure(x, lambda v: 0.5 * (v - ct) @ at @ (v - ct))

    def closure():
        calls.append(1)
        return inner()

    opt = FUSE([x], switch=AfterEpochs(0), lbfgs_mode="minibatch", max_iter=4, max_eval=6)
    for _ in range(5):
        before_calls, before_iters = len(calls), opt.n_lbfgs_iters
        opt.step(closure)
        assert opt.n_lbfgs_iters - before_iters <= 4
        assert len(calls) - before_calls <= 6 + 1  # the line search always makes one trial
    assert opt.n_evals == len(calls) and opt.n_steps == 5
    assert FUSE([x], max_iter=8).max_eval == 10


# ----------------------------------------------------------------------------- blend


def test_theta_one_equals_adam_and_theta_zero_equals_lbfgs():
    model, x, y = mlp(), *data()
    loss_fn = torch.nn.functional.mse_loss
    m_adam, m_blend = model, copy.deepcopy(model)
    opt_a = torch.optim.Adam(m_adam.parameters(), lr=1e-2)
    opt_b = FUSE(m_blend.parameters(), lr=1e-2, theta=1.0)
    for _ in range(10):
        opt_a.step(make_closure(m_adam, loss_fn, x, y))
        opt_b.step(make_closure(m_blend, loss_fn, x, y))
    assert opt_b.phase == "adam" and opt_b.switch_history == []
    for p, q in zip(m_adam.parameters(), m_blend.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)

    m_l, m_t = mlp(), mlp()
    opt_l = FUSE(m_l.parameters(), switch=AfterEpochs(0), max_iter=3)
    opt_t = FUSE(m_t.parameters(), theta=0.0, max_iter=3)
    for _ in range(5):
        opt_l.step(make_closure(m_l, loss_fn, x, y))
        opt_t.step(make_closure(m_t, loss_fn, x, y))
    assert params_equal(m_l, m_t) and opt_t.phase == "lbfgs" and opt_t.switch_step == 0


def test_theta_schedule_hard_switch_equals_after_epochs():
    x, y = data()
    loss_fn = torch.nn.functional.mse_loss
    m1, m2 = mlp(), mlp()
    o1 = FUSE(m1.parameters(), lr=1e-2, switch=AfterEpochs(3))
    o2 = FUSE(m2.parameters(), lr=1e-2, theta=lambda k: 1.0 if k < 3 else 0.0)
    for _ in range(6):
        o1.step(make_closure(m1, loss_fn, x, y))
        o2.step(make_closure(m2, loss_fn, x, y))
    assert params_equal(m1, m2)
    assert o2.switch_history == [(3, "adam", "lbfgs")] == o1.switch_history


def test_blend_is_convex_combination_of_the_two_steps():
    x, y = data()
    loss_fn = torch.nn.functional.mse_loss
    m_blend, m_adam, m_lbfgs = mlp(), mlp(), mlp()
    FUSE(m_blend.parameters(), lr=0.05, theta=0.25).step(make_closure(m_blend, loss_fn, x, y))
    torch.optim.Adam(m_adam.parameters(), lr=0.05).step(make_closure(m_adam, loss_fn, x, y))
    FUSE(m_lbfgs.parameters(), switch=AfterEpochs(0)).step(make_closure(m_lbfgs, loss_fn, x, y))
    for pb, pa, pl in zip(m_blend.parameters(), m_adam.parameters(), m_lbfgs.parameters()):
        torch.testing.assert_close(pb, 0.25 * pa + 0.75 * pl, rtol=0, atol=1e-12)
    assert not torch.allclose(pa, pl)


def test_blend_phase_reported_and_converges():
    a, c = quadratic(n=6, cond=10)
    at, ct = torch.tensor(a), torch.tensor(c)
    x = torch.zeros(6, dtype=F64, requires_grad=True)
    closure = tensor_closure(x, lambda v: 0.5 * (v - ct) @ at @ (v - ct))
    opt = FUSE([x], lr=0.05, theta=lambda k: max(0.0, 0.5 - 0.1 * k), max_iter=5)
    first = float(closure())
    opt.step(closure)
    assert opt.phase == "blend"
    for _ in range(20):
        opt.step(closure)
    assert opt.phase == "lbfgs" and opt.switch_step == 5
    assert float(closure()) < 1e-10 * first


# ----------------------------------------------------------------------------- determinism


def run_minibatch_training(seed, mode):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(64, 4, generator=gen)
    dataset = TensorDataset(xs, xs.sum(1, keepdim=True).sin())
    loader = DataLoader(dataset, batch_size=16, shuffle=True, generator=gen)
    opt = FUSE(
        model.parameters(),
        lr=1e-2,
        switch=AfterEpochs(2),
        lbfgs_mode=mode,
        steps_per_epoch=len(loader),
        max_iter=2,
        max_eval=4,
    )
    for _ in range(4):
        for xb, yb in loader:
            opt.step(make_closure(model, torch.nn.functional.mse_loss, xb, yb))
    return model, opt


@pytest.mark.parametrize("mode", ["minibatch", "overlap"])
def test_same_seed_same_parameters(mode):
    m1, o1 = run_minibatch_training(3, mode)
    m2, o2 = run_minibatch_training(3, mode)
    assert params_equal(m1, m2)
    assert o1.switch_step == o2.switch_step == 8 and o1.n_evals == o2.n_evals
    m3, _ = run_minibatch_training(4, mode)
    assert not params_equal(m1, m3)


def test_add_param_group_after_lbfgs_steps():
    a = torch.zeros(2, dtype=F64, requires_grad=True)
    b = torch.zeros(3, dtype=F64, requires_grad=True)

    def closure():
        a.grad, b.grad = None, None
        loss = ((a - 1) ** 2).sum() + ((b + 2) ** 2).sum()
        loss.backward()
        return loss.detach()

    opt = FUSE([a], switch=AfterEpochs(0), max_iter=5)
    opt.step(closure)
    assert len(opt.memory) > 0
    opt.add_param_group({"params": [b]})
    assert len(opt.memory) == 0
    for _ in range(3):
        opt.step(closure)
    torch.testing.assert_close(b, torch.full((3,), -2.0, dtype=F64))
