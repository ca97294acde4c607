"""state_dict round trips: a fresh FUSE loaded with the state takes the same steps, bit for bit."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from beyondgd.optim import FUSE, AfterEpochs, GradNormBelow, make_closure

F64 = torch.float64


def setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))
    model = model.to(F64)
    gen = torch.Generator().manual_seed(seed + 1)
    batches = [torch.randn(16, 3, generator=gen, dtype=F64) for _ in range(3)]
    batches = [(b, b.sum(1, keepdim=True).sin()) for b in batches]
    return model, batches


def closure_for(model, batches, k):
    x, y = batches[k % len(batches)]
    return make_closure(model, torch.nn.functional.mse_loss, x, y)


def make_opt(model, mode, **kw):
    kw.setdefault("reuse_last_eval", mode == "full")  # exercise the reused evaluation too
    return FUSE(
        model.parameters(),
        lr=1e-2,
        switch=AfterEpochs(3),
        lbfgs_mode=mode,
        max_iter=2,
        max_eval=5,
        history_size=4,
        **kw,
    )


def through_bytes(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf)  # weights_only default: the state holds only plain types


def params_equal(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("mode", ["full", "minibatch", "overlap"])
@pytest.mark.parametrize("n_before", [2, 7])  # Adam phase / L-BFGS phase with memory
@pytest.mark.parametrize("via_bytes", [False, True])
def test_fresh_optimizer_loaded_takes_same_next_steps(mode, n_before, via_bytes):
    full = mode == "full"
    model, batches = setup()
    opt = make_opt(model, mode)
    for k in range(n_before):
        opt.step(closure_for(model, batches, 0 if full else k))
    if n_before > 3:
        assert opt.phase == "lbfgs" and len(opt.memory) > 0
    else:
        assert opt.phase == "adam"

    state = opt.state_dict()
    if via_bytes:
        state = through_bytes(state)
    model2 = copy.deepcopy(model)
    opt2 = make_opt(model2, mode)
    opt2.load_state_dict(state)
    assert opt2.phase == opt.phase and opt2.n_steps == opt.n_steps and opt2.epoch == opt.epoch

    for k in range(n_before, n_before + 3):
        l1 = opt.step(closure_for(model, batches, 0 if full else k))
        l2 = opt2.step(closure_for(model2, batches, 0 if full else k))
        assert torch.equal(l1, l2)
        assert params_equal(model, model2)
    for attr in ("phase", "switch_step", "n_steps", "n_evals", "n_lbfgs_iters", "epoch"):
        assert getattr(opt, attr) == getattr(opt2, attr), attr
    assert all(torch.equal(a, b) for a, b in zip(opt.memory.y, opt2.memory.y))


def test_loaded_state_is_not_shared_with_the_source():
    model, batches = setup()
    opt = make_opt(model, "full")
    for _ in range(2):
        opt.step(closure_for(model, batches, 0))
    state = opt.state_dict()
    snapshot = copy.deepcopy(state)
    model2 = copy.deepcopy(model)
    opt2 = make_opt(model2, "full")
    opt2.load_state_dict(state)
    opt2.step(closure_for(model2, batches, 0))  # an Adam step: moments change in place
    for idx in state["state"]:
        assert torch.equal(state["state"][idx]["exp_avg"], snapshot["state"][idx]["exp_avg"])
        assert torch.equal(
            opt.state[opt._params[idx]]["exp_avg"], snapshot["state"][idx]["exp_avg"]
        )


def test_criterion_state_and_manual_epoch_pending_observation_survive():
    model, batches = setup()
    kw = dict(switch=GradNormBelow(0.5, smoothing="ema"), steps_per_epoch=None)
    opt = FUSE(model.parameters(), lr=1e-2, **kw)
    for _ in range(3):
        opt.step(closure_for(model, batches, 0))
    state = through_bytes(opt.state_dict())
    model2 = copy.deepcopy(model)
    opt2 = FUSE(
        model2.parameters(),
        lr=1e-2,
        switch=GradNormBelow(0.5, smoothing="ema"),
        steps_per_epoch=None,
    )
    opt2.load_state_dict(state)
    assert opt2.criterion.state_dict() == opt.criterion.state_dict()
    assert opt2._pending == opt._pending is not None
    opt.end_epoch()
    opt2.end_epoch()
    assert opt2.epoch == opt.epoch == 1
    assert opt2.criterion.state_dict() == opt.criterion.state_dict()


def test_deepcopy_of_optimizer_works():
    model, batches = setup()
    opt = make_opt(model, "full")
    for _ in range(5):
        opt.step(closure_for(model, batches, 0))
    opt_copy = copy.deepcopy(opt)
    assert opt_copy.phase == "lbfgs" and len(opt_copy.memory) == len(opt.memory)
    assert opt_copy.memory.s[0] is not opt.memory.s[0]
    assert torch.equal(opt_copy.memory.s[0], opt.memory.s[0])


def test_load_state_dict_rejects_foreign_state():
    model, _ = setup()
    opt = make_opt(model, "full")
    adam_state = torch.optim.Adam(model.parameters()).state_dict()
    with pytest.raises(ValueError, match="fuse"):
        opt.load_state_dict(adam_state)
