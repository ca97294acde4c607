"""unfolding.Trainer on 2 gloo ranks (CPU) against one process on the union of the shares.

Tolerance ``rtol=1e-4``: DECONET has no batch statistics, so 2 ranks compute the same gradient
as 1 process and only the float32 summation order differs (each rank's share, then the average
over ranks), about 1e-7 relative per step; a few Adam epochs keep the recorded numbers within
1e-4. Every check on 2 ranks runs in one spawn.
"""

from __future__ import annotations

import math

import torch

from beyondgd.unfolding import DECONET, Continued, GaussianCS, Trainer

RTOL = 1e-4
#: (continued, batch_size, min_delta): 9 samples in batches of 4 end with a batch of 1 (an empty
#: share on rank 1); batches of 5 split 3 + 2; min_delta 0.01 stops early after epoch 2
CASES = [(False, 4, 0.0), (True, 5, 0.01)]


def _data():
    op = GaussianCS(6, 12, seed=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(15, 12, generator=gen)
    return op, (op(x[:9]), x[:9]), (op(x[9:]), x[9:])


def _fit(continued, batch_size, min_delta, resume=False, callback=None, **extra):
    op, train, val = _data()
    net = DECONET(op, redundancy=2, layers=2, seed=1)
    model = Continued(net, stages=2) if continued else net
    trainer = Trainer(
        model,
        "log-cosh",
        lr=1e-2,
        batch_size=batch_size,
        max_epochs=3,
        patience=1,
        min_delta=min_delta,
        seed=3,
        **extra,
    )
    result = trainer.fit(train, val=val, resume=resume, callback=callback)
    history = [{k: v for k, v in h.items() if k != "train_seconds"} for h in result.history]
    return history, [p.detach().clone() for p in model.parameters()]


class _Killed(Exception):
    pass


def _kill(record):
    raise _Killed  # after epoch 1's checkpoint


def _on_ranks(rank, world_size, tmp):
    from pathlib import Path

    import beyondgd.unfolding.training as training

    out = {case: _fit(*case) for case in CASES}
    writes = []
    save = training.atomic_torch_save
    training.atomic_torch_save = lambda path, state: (writes.append(path), save(path, state))
    try:
        ckpt = Path(tmp) / "run.ckpt"
        try:
            _fit(*CASES[0], checkpoint=ckpt, callback=_kill)
        except _Killed:
            pass
        out["saved_epochs"] = len(torch.load(ckpt, weights_only=True)["history"])
        out["resumed"] = _fit(*CASES[0], checkpoint=ckpt, resume=True)
    finally:
        training.atomic_torch_save = save
    out["writes"] = len(writes)
    return out


def test_two_ranks_match_one_process_on_the_union(run_ranks, tmp_path):
    ranks = run_ranks(_on_ranks, str(tmp_path), world_size=2, timeout=180)
    for case in CASES:
        one_hist, one_params = _fit(*case)
        two_hist, two_params = ranks[0][case]
        assert ranks[1][case][0] == two_hist  # the ranks record the same numbers
        assert len(two_hist) == len(one_hist) == (2 if case[2] else 3)  # early stops agree
        assert two_hist[-1]["samples"] == one_hist[-1]["samples"]
        for a, b in zip(one_hist, two_hist):
            for key, value in a.items():
                if isinstance(value, float):
                    assert math.isclose(value, b[key], rel_tol=RTOL, abs_tol=1e-7), (key, a, b)
        for p, q in zip(one_params, two_params):
            torch.testing.assert_close(p, q, rtol=RTOL, atol=1e-6)
    # killed after epoch 1 and resumed on 2 ranks: the uninterrupted numbers and weights;
    # rank 0 alone wrote the checkpoint (once per epoch)
    for r in ranks:
        assert r["saved_epochs"] == 1
        assert r["resumed"][0] == ranks[0][CASES[0]][0]
        assert all(torch.equal(p, q) for p, q in zip(r["resumed"][1], ranks[0][CASES[0]][1]))
    epochs = len(ranks[0]["resumed"][0])  # 1 before the kill, the rest after the resume
    assert ranks[0]["writes"] == epochs and ranks[1]["writes"] == 0
