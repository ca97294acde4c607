"""L-BFGS memory and where FUSE's curvature pairs come from in each mode."""

from __future__ import annotations

import math

import pytest
import torch

from beyondgd.optim import FUSE, AfterEpochs, LBFGSMemory

F64 = torch.float64


def least_squares_batches(seed=0, n=8, dim=3):
    """Two batches of per-sample least-squares data, f_S(x) = mean_S 0.5 (a_i.x - b_i)^2."""
    gen = torch.Generator().manual_seed(seed)
    a0 = torch.randn(n, dim, generator=gen, dtype=F64)
    a1 = a0 + 0.3 * torch.randn(n, dim, generator=gen, dtype=F64)
    b0 = torch.randn(n, generator=gen, dtype=F64)
    b1 = b0 + 0.3 * torch.randn(n, generator=gen, dtype=F64)
    return [(a0, b0), (a1, b1)]


def grad_on(batch, x):
    a, b = batch
    return a.T @ (a @ x - b) / a.shape[0]


def closure_on(x, batch):
    a, b = batch

    def closure():
        x.grad = None
        loss = 0.5 * ((a @ x - b) ** 2).mean()
        loss.backward()
        return loss.detach()

    return closure


def two_steps(mode):
    batches = least_squares_batches()
    x = torch.zeros(3, dtype=F64, requires_grad=True)
    opt = FUSE([x], switch=AfterEpochs(0), lbfgs_mode=mode, max_iter=1, max_eval=4, history_size=5)
    xs = [x.detach().clone()]
    for k in range(2):
        opt.step(closure_on(x, batches[k]))
        xs.append(x.detach().clone())
    return opt, batches, xs


def test_overlap_mode_pairs_use_the_same_batch_at_both_points():
    opt, batches, xs = two_steps("overlap")
    assert len(opt.memory) == 2
    for k in range(2):
        s_hand = xs[k + 1] - xs[k]
        y_hand = grad_on(batches[k], xs[k + 1]) - grad_on(batches[k], xs[k])
        torch.testing.assert_close(opt.memory.s[k], s_hand, rtol=0, atol=1e-14)
        torch.testing.assert_close(opt.memory.y[k], y_hand, rtol=0, atol=1e-14)
    # least squares: y = (A^T A / n) s on the same batch exactly
    a0 = batches[0][0]
    torch.testing.assert_close(
        opt.memory.y[0], a0.T @ a0 @ opt.memory.s[0] / 8, rtol=1e-10, atol=1e-14
    )


def test_minibatch_mode_pairs_mix_two_batches_like_torch():
    opt, batches, xs = two_steps("minibatch")
    # the pair of step 0 is formed at the start of step 1, with step 1's batch
    assert len(opt.memory) == 1 and opt._lb["pair_pending"]
    s_hand = xs[1] - xs[0]
    y_mixed = grad_on(batches[1], xs[1]) - grad_on(batches[0], xs[0])
    y_same = grad_on(batches[0], xs[1]) - grad_on(batches[0], xs[0])
    torch.testing.assert_close(opt.memory.s[0], s_hand, rtol=0, atol=1e-14)
    torch.testing.assert_close(opt.memory.y[0], y_mixed, rtol=0, atol=1e-14)
    assert not torch.allclose(opt.memory.y[0], y_same)


def test_minibatch_mode_equals_torch_lbfgs_on_alternating_batches():
    batches = least_squares_batches()
    x1 = torch.zeros(3, dtype=F64, requires_grad=True)
    x2 = torch.zeros(3, dtype=F64, requires_grad=True)
    opt = FUSE(
        [x1],
        switch=AfterEpochs(0),
        lbfgs_mode="minibatch",
        max_iter=3,
        max_eval=5,
        tolerance_grad=1e-7,
        tolerance_change=1e-9,
    )
    ref = torch.optim.LBFGS(
        [x2], max_iter=3, max_eval=5, history_size=10, line_search_fn="strong_wolfe"
    )
    for k in range(6):
        opt.step(closure_on(x1, batches[k % 2]))
        ref.step(closure_on(x2, batches[k % 2]))
        torch.testing.assert_close(x1, x2, rtol=0, atol=1e-12)
    assert opt.n_evals == ref.state[x2]["func_evals"]


def test_overlap_mode_costs_no_extra_closure_calls():
    counts = {}
    for mode in ("overlap", "minibatch"):
        opt, _, _ = two_steps(mode)
        counts[mode] = opt.n_evals
    assert counts["overlap"] == counts["minibatch"]


def test_memory_two_loop_recovers_inverse_hessian_of_a_quadratic():
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(4, 4, generator=gen, dtype=F64)
    h = m @ m.T + 4 * torch.eye(4, dtype=F64)
    mem = LBFGSMemory(history_size=4)
    for _ in range(4):  # 4 independent pairs in 4-D
        s = torch.randn(4, generator=gen, dtype=F64)
        assert mem.update(s, h @ s)
    g = torch.randn(4, generator=gen, dtype=F64)
    d = mem.direction(g)
    assert float(g @ d) < 0  # descent
    # H_k satisfies the latest secant equation exactly
    torch.testing.assert_close(mem.direction(-(h @ mem.s[-1])), mem.s[-1], rtol=1e-10, atol=1e-12)


def test_memory_rejects_bad_pairs_and_drops_oldest():
    mem = LBFGSMemory(history_size=2)
    s = torch.tensor([1.0, 0.0], dtype=F64)
    assert not mem.update(s, -s)  # negative curvature
    assert not mem.update(s, torch.tensor([math.nan, 1.0], dtype=F64))
    assert not mem.update(s, torch.tensor([0.0, 1.0], dtype=F64))  # y^T s = 0
    # tiny but well-scaled pairs are kept (torch's absolute 1e-10 test would reject this one)
    assert mem.update(1e-7 * s, 2e-7 * s)
    for k in range(3):
        assert mem.update((k + 1.0) * s, 2.0 * (k + 1.0) * s)
    assert len(mem) == 2 and float(mem.s[0][0]) == 2.0
    assert float(mem.h_diag) == pytest.approx(0.5)
    mem.reset()
    assert len(mem) == 0 and mem.h_diag == 1.0


def test_non_descent_direction_resets_memory():
    x = torch.zeros(2, dtype=F64, requires_grad=True)

    def closure():
        x.grad = None
        loss = ((x - 1) ** 2).sum()
        loss.backward()
        return loss.detach()

    opt = FUSE([x], switch=AfterEpochs(0), max_iter=1, max_eval=4, lbfgs_mode="minibatch")
    opt.step(closure)
    # corrupt the memory: a pair that makes -H g point uphill
    opt.memory.s = [torch.tensor([1.0, 0.0], dtype=F64)]
    opt.memory.y = [torch.tensor([1.0, 0.0], dtype=F64)]
    opt.memory.rho = [torch.tensor(1.0, dtype=F64)]
    opt.memory.h_diag = torch.tensor(-1.0, dtype=F64)
    opt._lb["pair_pending"] = False
    resets = opt.n_memory_resets
    opt.step(closure)
    assert opt.n_memory_resets == resets + 1
    assert bool(torch.isfinite(x).all()) and opt.last_loss < opt.last_start_loss
