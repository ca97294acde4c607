"""RegistrationTrainer.step on 2 gloo ranks (CPU) against one process on the same batches.

Every rank passes the same batch and takes a contiguous share (5 pairs: 3 + 2); the hinge
perturbations are drawn for the whole batch from the shared generator. Tolerance ``rtol=1e-4``:
the network has no batch statistics, so only the float32 summation order differs (each share's
mean, then the sum over ranks), about 1e-7 relative per step, amplified a little by the unrolled
Gauss-Newton solve over 3 Adam steps. Every check on 2 ranks runs in one spawn.
"""

from __future__ import annotations

import math

import torch

from beyondgd.registration import PointNetRegistration, RegistrationTrainer, random_rotations

RTOL = 1e-4
LOSSES = ("dlc", "prise")


def _batch(step, b=5, n=32):
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(b, n, 3, generator=gen) * torch.tensor([1.0, 0.5, 0.25])
    r = random_rotations(b, angles=torch.full((b,), 0.6), generator=gen)
    return x, x @ r.transpose(1, 2), r


def _train(loss, init_seed=0):
    torch.manual_seed(init_seed)
    model = PointNetRegistration((8, 16))
    trainer = RegistrationTrainer(model, loss=loss, n_samples=2, n_unroll=2, lr=1e-2)
    gen = torch.Generator().manual_seed(7)
    stats = [trainer.step(*_batch(step), generator=gen) for step in range(3)]
    return stats, [p.detach().clone() for p in model.parameters()]


def _on_ranks(rank, world_size):
    # rank 1 starts from other weights: the first step must broadcast rank 0's
    out = {loss: _train(loss, init_seed=rank) for loss in LOSSES}
    try:
        RegistrationTrainer(PointNetRegistration((8, 16))).step(*_batch(0, b=1))
    except ValueError as err:
        out["small_batch"] = str(err)
    return out


def test_two_ranks_match_one_process_on_the_whole_batch(run_ranks):
    ranks = run_ranks(_on_ranks, world_size=2, timeout=180)
    for loss in LOSSES:
        one_stats, one_params = _train(loss)
        two_stats, two_params = ranks[0][loss]
        for p, q, r in zip(one_params, two_params, ranks[1][loss][1]):
            torch.testing.assert_close(p, q, rtol=RTOL, atol=1e-6)
            assert torch.equal(q, r)  # the ranks hold the same weights
        for a, b in zip(one_stats, two_stats):
            assert a.keys() == b.keys()
            assert a["evaluations"] == b["evaluations"]  # the whole batch's cost, summed
            for key in a:
                assert math.isclose(a[key], b[key], rel_tol=RTOL, abs_tol=1e-6), (key, a, b)
    assert "fewer than the 2 ranks" in ranks[0]["small_batch"]
