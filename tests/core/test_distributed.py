import pytest
import torch
import torch.distributed as dist

from beyondgd.core import (
    all_ranks_agree,
    all_reduce_sum,
    any_rank,
    is_distributed,
    rank,
    world_size,
)


def test_helpers_are_noops_without_a_process_group():
    assert not is_distributed()
    assert (world_size(), rank()) == (1, 0)
    x = torch.tensor([1.0, -2.0])
    assert all_reduce_sum(x) is x
    assert torch.equal(x, torch.tensor([1.0, -2.0]))
    assert any_rank(True) is True and any_rank(False) is False
    assert any_rank(torch.tensor(True)) is True
    assert all_ranks_agree(torch.tensor([1.0, float("nan")])) is True
    assert all_ranks_agree(2.5) is True


def test_helpers_validate_their_input():
    with pytest.raises(TypeError, match="tensor"):
        all_reduce_sum([1.0])
    with pytest.raises(TypeError, match="flag"):
        any_rank("yes")
    with pytest.raises(ValueError, match="flag"):
        any_rank(torch.tensor([True, False]))
    with pytest.raises(TypeError, match="value"):
        all_ranks_agree("1.0")


def _helpers_on_ranks(r, n):
    out = {"distributed": is_distributed(), "world_size": world_size(), "rank": rank()}
    out["sum"] = all_reduce_sum(torch.tensor([float(r), 1.0], dtype=torch.float64))
    out["any_one"] = any_rank(r == 1)  # only rank 1 raises the flag
    out["any_none"] = any_rank(False)
    out["agree_same"] = all_ranks_agree(torch.tensor([1.0, float("nan"), 3.0]))
    out["agree_float"] = all_ranks_agree(0.25)
    out["agree_differ"] = all_ranks_agree(torch.tensor([1.0, 2.0 + r * 1e-12], dtype=torch.float64))
    out["agree_nan_one_rank"] = all_ranks_agree(torch.tensor([float("nan") if r else 1.0]))
    out["agree_sizes"] = all_ranks_agree(torch.zeros(2 + r))
    out["agree_ints"] = all_ranks_agree(torch.tensor([3, 4 + r]))
    # the group still works after every helper: the collectives matched on both ranks
    t = torch.ones(1)
    dist.all_reduce(t)
    out["after"] = t.item()
    return out


def test_helpers_under_two_ranks(run_ranks):
    results = run_ranks(_helpers_on_ranks, world_size=2)
    for r, out in enumerate(results):
        assert out["distributed"] and out["world_size"] == 2 and out["rank"] == r
        assert torch.equal(out["sum"], torch.tensor([1.0, 2.0], dtype=torch.float64))
        assert out["any_one"] is True and out["any_none"] is False
        assert out["agree_same"] is True and out["agree_float"] is True
        assert out["agree_differ"] is False
        assert out["agree_nan_one_rank"] is False
        assert out["agree_sizes"] is False
        assert out["agree_ints"] is False
        assert out["after"] == 2.0


def _sleep_forever(r, n):
    import time

    if r == 1:
        time.sleep(3600)
    dist.barrier()  # rank 0 waits for rank 1 in a collective: a hang


def _raise_on_rank_one(r, n):
    if r == 1:
        raise RuntimeError("boom on rank one")
    dist.barrier()


def test_run_ranks_fails_on_a_hang_and_on_an_error(run_ranks):
    with pytest.raises(pytest.fail.Exception, match="did not finish"):
        run_ranks(_sleep_forever, timeout=6)
    with pytest.raises(pytest.fail.Exception, match="boom on rank one"):
        run_ranks(_raise_on_rank_one, timeout=60)
