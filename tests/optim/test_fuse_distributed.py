"""FUSE under torch.distributed: 2 gloo ranks on CPU, each spawn bounded by run_ranks' timeout.

Each spawn costs seconds, so one rank function packs several checks and returns what the parent
compares.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from beyondgd.core import CostMeter
from beyondgd.optim import (
    FUSE,
    AfterEpochs,
    LossBelow,
    distributed_full_batch_closure,
    full_batch_closure,
    make_closure,
)

ROOT = Path(__file__).resolve().parents[2]
N_SAMPLES, SHARD0 = 37, 25  # uneven shards: rank 0 gets 25 samples, rank 1 gets 12
BATCH = 8


def _data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N_SAMPLES, 3, generator=gen, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True)) + 0.1 * torch.randn(
        N_SAMPLES, 1, generator=gen, dtype=torch.float64
    )
    return x, y


def _net(seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def _batches(x, y):
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def _shard(rank, world_size, x, y):
    """Rank 0 gets the first SHARD0 samples, the other ranks split the rest (uneven shards)."""
    if rank == 0:
        return x[:SHARD0], y[:SHARD0]
    parts = torch.arange(SHARD0, len(x)).tensor_split(world_size - 1)
    return x[parts[rank - 1]], y[parts[rank - 1]]


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def _fuse(params):
    # three Adam steps, then L-BFGS steps of up to 5 iterations each
    return FUSE(params, lr=1e-2, switch=AfterEpochs(3), max_iter=5, history_size=5)


N_STEPS, SAVE_AT = 8, 5


def _train_full(model, closure, opt, n_steps):
    trace = []
    for _ in range(n_steps):
        opt.step(closure)
        trace.append(_flat(model))
    return trace


def _full_mode_on_ranks(rank, world_size):
    """Full-batch FUSE on a DDP model with uneven shards (and a different number of batches per
    rank): parameters per step, the switch, counters, and a save/resume halfway."""
    x, y = _shard(rank, world_size, *_data())
    model = DDP(_net())
    meter = CostMeter(dataset_size=N_SAMPLES)
    closure = distributed_full_batch_closure(model, nn.functional.mse_loss, _batches(x, y), meter)
    opt = _fuse(model.parameters())
    trace = _train_full(model, closure, opt, SAVE_AT)
    saved_params, saved_state = _flat(model), opt.state_dict()
    trace += _train_full(model, closure, opt, N_STEPS - SAVE_AT)
    # resume: a fresh model and optimizer from the checkpoint, on both ranks
    resumed = DDP(_net(seed=99))
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(saved_params, resumed.parameters())
    opt2 = _fuse(resumed.parameters())
    opt2.load_state_dict(saved_state)
    closure2 = distributed_full_batch_closure(resumed, nn.functional.mse_loss, _batches(x, y))
    resumed_trace = _train_full(resumed, closure2, opt2, N_STEPS - SAVE_AT)
    return {
        "trace": trace,
        "resumed": resumed_trace,
        "switch_step": opt.switch_step,
        "switch_history": opt.switch_history,
        "n_evals": opt.n_evals,
        "n_lbfgs_iters": opt.n_lbfgs_iters,
        "samples": meter.samples,
        "evaluations": meter.evaluations,
        "last_loss": opt.last_loss,
    }


def test_full_batch_fuse_is_identical_on_ranks_and_matches_one_process(run_ranks):
    r0, r1 = run_ranks(_full_mode_on_ranks)
    # bitwise the same on both ranks: the Adam steps, the switch and the L-BFGS steps
    assert r0["switch_step"] == r1["switch_step"] == 3
    assert r0["switch_history"] == r1["switch_history"]
    assert r0["n_evals"] == r1["n_evals"] and r0["n_lbfgs_iters"] == r1["n_lbfgs_iters"]
    assert r0["n_lbfgs_iters"] > N_STEPS - 3  # more than one iteration per L-BFGS step
    for a, b in zip(r0["trace"], r1["trace"]):
        assert torch.equal(a, b)
    # the meter counts the global samples, one evaluation per closure call
    assert r0["samples"] == r1["samples"] == N_SAMPLES * r0["n_evals"]
    assert r0["evaluations"] == r0["n_evals"]
    # a state_dict saved under DDP resumes identically
    for a, b in zip(r0["trace"][SAVE_AT:], r0["resumed"]):
        assert torch.equal(a, b)
    for a, b in zip(r1["resumed"], r0["resumed"]):
        assert torch.equal(a, b)

    # one process on the concatenated data: the same iterates to rounding
    x, y = _data()
    model = _net()
    closure = full_batch_closure(model, nn.functional.mse_loss, _batches(x, y))
    opt = _fuse(model.parameters())
    single = _train_full(model, closure, opt, N_STEPS)
    assert opt.switch_step == 3 and opt.n_evals == r0["n_evals"]
    for k, (a, b) in enumerate(zip(single, r0["trace"])):
        assert (a - b).abs().max() <= 1e-10, f"step {k}"
    assert abs(opt.last_loss - r0["last_loss"]) <= 1e-12


def _minibatch_modes_on_ranks(rank, world_size, nan_steps, nan_trial_step):
    """Mini-batch and overlap modes on a DDP model, each rank its own batches (rank-local losses,
    DDP-averaged gradients), switching on a loss threshold; rank 1's closure returns a NaN loss
    (its gradients stay finite) at the start of the steps in ``nan_steps`` and at the first
    line-search trial of step ``nan_trial_step``."""
    x, y = _data()
    out = {}
    for mode in ("minibatch", "overlap"):
        model = DDP(_net())
        gen = torch.Generator().manual_seed(10 + rank)  # different batches on each rank
        meter = CostMeter()
        opt = FUSE(
            model.parameters(),
            lr=3e-2,
            switch=LossBelow(0.45, smoothing="none"),
            lbfgs_mode=mode,
            max_iter=3,
            history_size=4,
        )
        trace, phases = [], []
        for step in range(14):
            idx = torch.randperm(N_SAMPLES, generator=gen)[:10]
            inner = make_closure(model, nn.functional.mse_loss, x[idx], y[idx], meter)

            calls = [0]

            def closure(inner=inner, step=step, calls=calls):
                loss = inner()
                calls[0] += 1
                first, trial = calls[0] == 1, calls[0] == 2
                if rank == 1 and (
                    (first and step in nan_steps) or (trial and step == nan_trial_step)
                ):
                    return loss * float("nan")
                return loss

            opt.step(closure)
            trace.append(_flat(model))
            phases.append(opt.phase)
        out[mode] = {
            "trace": trace,
            "phases": phases,
            "switch_step": opt.switch_step,
            "n_skipped": opt.n_skipped,
            "n_nonfinite": opt.n_nonfinite_evals,
            "n_line_search_failures": opt.n_line_search_failures,
            "n_evals": opt.n_evals,
            "samples": meter.samples,
        }
    return out


def test_minibatch_and_overlap_modes_take_the_same_decisions_on_both_ranks(run_ranks):
    nan_steps = (1, 9)  # one Adam step and one L-BFGS step see a NaN on rank 1 only
    nan_trial_step = 11  # and a line-search trial of an L-BFGS step
    r0, r1 = run_ranks(_minibatch_modes_on_ranks, nan_steps, nan_trial_step)
    for mode in ("minibatch", "overlap"):
        a, b = r0[mode], r1[mode]
        # the loss switch fires on the same step although each rank sees its own batch losses
        assert a["switch_step"] == b["switch_step"] is not None, mode
        assert 2 < a["switch_step"] < 9, mode  # so step 9 is an L-BFGS step
        assert a["phases"] == b["phases"]
        # the NaN on rank 1 skips the step on both ranks
        assert a["n_skipped"] == b["n_skipped"] == len(nan_steps), mode
        # the failed trial is seen on both ranks (a NaN trial is bisected, not a skipped step)
        assert a["n_nonfinite"] == b["n_nonfinite"] == len(nan_steps) + 1, mode
        assert a["n_line_search_failures"] == b["n_line_search_failures"]
        for s in nan_steps:
            assert torch.equal(a["trace"][s], a["trace"][s - 1]), (mode, s)
        for pa, pb in zip(a["trace"], b["trace"]):
            assert torch.equal(pa, pb), mode
        assert a["n_evals"] == b["n_evals"]
        assert a["samples"] == b["samples"] == 2 * 10 * a["n_evals"]  # both ranks' samples


class _WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1).double()
        self.unused = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, x):
        return self.lin(x)


def _errors_and_edge_cases_on_ranks(rank, world_size):
    x, y = _shard(rank, world_size, *_data())
    out = {}
    # 1. parameters that differ across ranks: a clear error at the first step, on every rank
    model = _net(seed=rank)  # no DDP: each rank its own init
    opt = _fuse(model.parameters())
    closure = distributed_full_batch_closure(model, nn.functional.mse_loss, _batches(x, y))
    try:
        opt.step(closure)
        out["differ"] = None
    except RuntimeError as exc:
        out["differ"] = str(exc)
    # 2. full_batch_closure on a DDP model points to the distributed closure
    ddp = DDP(_net())
    try:
        full_batch_closure(ddp, nn.functional.mse_loss, _batches(x, y))
        out["ddp_full"] = None
    except TypeError as exc:
        out["ddp_full"] = str(exc)
    # 3. dropout in training mode: the closure is not a fixed function
    drop = DDP(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 1)).double())
    try:
        distributed_full_batch_closure(drop, nn.functional.mse_loss, _batches(x, y))
        out["dropout"] = None
    except ValueError as exc:
        out["dropout"] = str(exc)
    drop.eval()
    closure = distributed_full_batch_closure(drop, nn.functional.mse_loss, _batches(x, y))
    closure()
    drop.train()  # switched back on after the closure was made: the next call refuses
    try:
        closure()
        out["dropout_later"] = None
    except ValueError as exc:
        out["dropout_later"] = str(exc)
    # 4. a NaN in rank 1's shard skips the full-batch step on both ranks
    ybad = y.clone()
    if rank == 1:
        ybad[0] = float("nan")
    model = DDP(_net())
    opt = _fuse(model.parameters())
    before = _flat(model)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        opt.step(distributed_full_batch_closure(model, nn.functional.mse_loss, _batches(x, ybad)))
    out["nan_skipped"] = opt.n_skipped
    out["nan_unchanged"] = torch.equal(before, _flat(model))
    # 5. an empty shard on rank 1: the global loss is rank 0's
    batches = _batches(x, y) if rank == 0 else []
    model = DDP(_net())
    out["empty_loss"] = distributed_full_batch_closure(model, nn.functional.mse_loss, batches)()
    out["empty_grad"] = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    # 6. distributed=False: FUSE on one rank only makes no collective (no hang)
    if rank == 0:
        model = _net(seed=5)
        opt = FUSE(model.parameters(), switch=AfterEpochs(1), max_iter=3, distributed=False)
        closure = full_batch_closure(model, nn.functional.mse_loss, _batches(x, y))
        for _ in range(3):
            opt.step(closure)
        out["one_rank_only"] = opt.n_lbfgs_iters
    else:
        out["one_rank_only"] = None
    # 7. a parameter no rank's loss reaches keeps grad None, as with full_batch_closure
    model = _WithUnused()
    distributed_full_batch_closure(model, nn.functional.mse_loss, _batches(x, y))()
    out["unused_none"] = model.unused.grad is None and model.lin.weight.grad is not None
    dist.barrier()
    return out


def test_error_cases_and_uneven_edge_cases_under_two_ranks(run_ranks):
    r0, r1 = run_ranks(_errors_and_edge_cases_on_ranks)
    for r in (r0, r1):
        assert "parameters differ across the 2 ranks" in r["differ"]
        assert "distributed_full_batch_closure" in r["ddp_full"]
        assert "dropout in training mode" in r["dropout"]
        assert "dropout in training mode" in r["dropout_later"]
        assert r["nan_skipped"] == 1 and r["nan_unchanged"]
        assert r["unused_none"]
    assert r0["one_rank_only"] > 0 and r1["one_rank_only"] is None
    assert torch.equal(r0["empty_loss"], r1["empty_loss"])
    assert torch.equal(r0["empty_grad"], r1["empty_grad"])
    x, y = _data()
    model = _net()
    loss = full_batch_closure(model, nn.functional.mse_loss, _batches(x[:SHARD0], y[:SHARD0]))()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert torch.allclose(r0["empty_loss"], loss, rtol=0, atol=1e-14)
    assert torch.allclose(r0["empty_grad"], grad, rtol=0, atol=1e-14)


def test_distributed_closure_without_a_process_group_is_the_full_batch_closure():
    x, y = _data()
    batches = _batches(x, y)
    a, b = _net(), _net()
    meter = CostMeter()
    la = full_batch_closure(a, nn.functional.mse_loss, batches)()
    closure = distributed_full_batch_closure(b, nn.functional.mse_loss, batches, meter)
    lb = closure()
    assert closure.rank_consistent and meter.samples == N_SAMPLES
    assert torch.equal(la, lb)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p.grad, q.grad)
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double()
    with pytest.raises(ValueError, match="batch norm in training mode"):
        distributed_full_batch_closure(bn, nn.functional.mse_loss, batches)
    bn.eval()
    distributed_full_batch_closure(bn, nn.functional.mse_loss, batches)()  # frozen: fine
    with pytest.raises(TypeError, match="loader must be re-iterable"):
        distributed_full_batch_closure(a, nn.functional.mse_loss, iter(batches))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        distributed_full_batch_closure(lambda t: t, nn.functional.mse_loss, batches)
    with pytest.raises(ValueError, match="distributed must be None"):
        FUSE(a.parameters(), distributed=True)


def test_torchrun_example_runs_on_two_ranks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    example = ROOT / "examples" / "fuse_torchrun.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(example), "--epochs", "5", "--switch-after", "2", "--samples", "500"]
    # a session of its own, so that a hang kills torchrun and both workers
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish within 180 s (a hang?)\n{out}\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    assert "ranks agree: True" in out, out
    assert "lbfgs" in out and "world size 2" in out, out
