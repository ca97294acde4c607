"""The trainers' helpers in core.distributed: shares, variable-size gathers, buffer and weight
broadcasts, summed gradients, the DDP wrapper's batch-norm rule, and joining torchrun's group."""

from __future__ import annotations

import socket
import warnings

import pytest
import torch
import torch.distributed as dist

from beyondgd.core.distributed import (
    all_gather_cat,
    all_reduce_gradients,
    broadcast_buffers,
    broadcast_parameters,
    data_parallel,
    is_distributed,
    process_group_from_env,
    shard_range,
    world_size,
)


def test_shares_are_contiguous_cover_everything_once_and_differ_by_at_most_one():
    for n in range(0, 12):
        for w in range(1, 5):
            shares = [shard_range(n, rank_=r, world_size_=w) for r in range(w)]
            covered = [i for s in shares for i in range(n)[s]]
            assert covered == list(range(n))
            sizes = [s.stop - s.start for s in shares]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    assert shard_range(5) == slice(0, 5)  # alone: everything
    with pytest.raises(ValueError, match="n must be"):
        shard_range(-1)
    with pytest.raises(ValueError, match="rank_"):
        shard_range(3, rank_=2, world_size_=2)


def test_helpers_are_noops_alone():
    x = torch.arange(3)
    assert all_gather_cat(x) is x
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    before = [t.clone() for t in net.state_dict().values()]
    broadcast_buffers(net)
    broadcast_parameters(net)
    net(torch.randn(4, 2)).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    all_reduce_gradients(net.parameters())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, net.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(before[:2], list(net.state_dict().values())[:2]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert data_parallel(net) is net
    with pytest.raises(TypeError, match="module"):
        data_parallel("net")
    with pytest.raises(TypeError, match="tensor"):
        all_gather_cat(torch.tensor(1.0))


def test_process_group_from_env_joins_and_leaves(monkeypatch):
    with process_group_from_env() as joined:  # no WORLD_SIZE: nothing
        assert not joined and not is_distributed()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for key, value in {**env, "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RuntimeError, match="inside"):
        with process_group_from_env(backend="gloo") as joined:
            assert joined and is_distributed() and world_size() == 1
            assert dist.get_backend() == "gloo"
            raise RuntimeError("inside")
    assert not is_distributed()  # destroyed, also after an error


def _on_ranks(rank, world_size_):
    out = {}
    # uneven shares, an empty one included: 3 rows on rank 0, none on rank 1
    rows = torch.arange(3 * (1 - rank) * 2).reshape(-1, 2) + 100 * rank
    out["gathered"] = all_gather_cat(rows)
    out["gathered_bool"] = all_gather_cat(torch.full((rank + 1,), rank == 1))
    torch.manual_seed(rank)  # different weights and statistics on each rank
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    net(torch.randn(4, 2))
    broadcast_parameters(net)
    broadcast_buffers(net)
    out["state"] = {k: v.clone() for k, v in net.state_dict().items()}
    net.zero_grad()
    (net[0].weight.sum() * (rank + 1)).backward()  # rank r's gradient: (r + 1) everywhere
    all_reduce_gradients(net.parameters())  # bias and BN get zeros where they had no gradient
    out["grad"] = net[0].weight.grad.clone()
    out["bias_grad"] = net[0].bias.grad.clone()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = data_parallel(net)
    out["wrapped"] = type(wrapped).__name__
    out["warnings"] = [str(w.message) for w in caught]
    with process_group_from_env() as joined:  # a group exists: nothing to join
        out["joined"] = joined
    return out


def test_helpers_on_two_ranks(run_ranks):
    ranks = run_ranks(_on_ranks, world_size=2, timeout=120)
    for out in ranks:
        assert torch.equal(out["gathered"], torch.arange(6).reshape(3, 2))
        assert out["gathered_bool"].tolist() == [False, True, True]
        assert torch.equal(out["grad"], torch.full((2, 2), 3.0))
        assert torch.equal(out["bias_grad"], torch.zeros(2))
        assert out["wrapped"] == "DistributedDataParallel" and out["joined"] is False
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key  # rank 0's weights and buffers
    assert any("SyncBatchNorm needs CUDA" in m for m in ranks[0]["warnings"])
    assert not ranks[1]["warnings"]  # said once, by rank 0
