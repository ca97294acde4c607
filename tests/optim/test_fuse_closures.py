"""Closure helpers and the overlapping batch sampler."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from beyondgd.core import CostMeter
from beyondgd.optim import OverlappingBatchSampler, full_batch_closure, make_closure

F64 = torch.float64


def model_and_data(n=10):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    model = model.to(F64)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 3, generator=gen, dtype=F64)
    y = torch.randn(n, 2, generator=gen, dtype=F64)
    return model, x, y


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("batch_size", [1, 3, 4, 10])
def test_full_batch_closure_equals_one_big_batch(batch_size):
    model, x, y = model_and_data()
    loss_fn = torch.nn.functional.mse_loss
    big = make_closure(model, loss_fn, x, y)()
    g_big = grads(model)
    meter = CostMeter(dataset_size=10)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)  # uneven last batch
    closure = full_batch_closure(model, loss_fn, loader, meter)
    for call in range(2):  # re-iterable, gradients zeroed each call
        loss = closure()
        torch.testing.assert_close(loss, big, rtol=1e-12, atol=1e-14)
        for g, gb in zip(grads(model), g_big):
            torch.testing.assert_close(g, gb, rtol=1e-12, atol=1e-14)
        assert meter.samples == 10 * (call + 1) and meter.evaluations == call + 1
    assert meter.epochs == 2.0


def test_full_batch_closure_accepts_list_of_batches_and_rejects_iterators():
    model, x, y = model_and_data()
    batches = [(x[:7], y[:7]), (x[7:], y[7:])]
    loss = full_batch_closure(model, torch.nn.functional.mse_loss, batches)()
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(model(x), y).detach())
    with pytest.raises(TypeError, match="loader"):
        full_batch_closure(model, torch.nn.functional.mse_loss, iter(batches))
    with pytest.raises(TypeError, match="loader"):
        full_batch_closure(model, torch.nn.functional.mse_loss, 3)
    with pytest.raises(ValueError, match="no samples"):
        full_batch_closure(model, torch.nn.functional.mse_loss, [])()


def test_make_closure_counts_samples_and_zeroes_gradients():
    model, x, y = model_and_data()
    meter = CostMeter()
    closure = make_closure(model, torch.nn.functional.mse_loss, x, y, meter)
    closure()
    first = grads(model)
    loss = closure()
    for g, g1 in zip(grads(model), first):
        assert torch.equal(g, g1)  # not accumulated
    assert not loss.requires_grad
    assert meter.samples == 20 and meter.evaluations == 2


def test_closure_argument_validation():
    model, x, y = model_and_data()
    with pytest.raises(TypeError, match="model"):
        make_closure(lambda t: t, torch.nn.functional.mse_loss, x, y)
    with pytest.raises(TypeError, match="loss_fn"):
        make_closure(model, "mse", x, y)
    with pytest.raises(TypeError, match="meter"):
        make_closure(model, torch.nn.functional.mse_loss, x, y, meter=10)


@pytest.mark.parametrize("n,batch_size,overlap", [(10, 4, 2), (11, 5, 1), (7, 7, 3), (9, 3, 0)])
def test_overlapping_batches_share_exactly_overlap_indices(n, batch_size, overlap):
    sampler = OverlappingBatchSampler(n, batch_size, overlap, torch.Generator().manual_seed(0))
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(set().union(*map(set, batches))) == list(range(n))
    for a, b in zip(batches, batches[1:]):
        assert len(a) == batch_size and len(set(a)) == len(a)
        assert a[-overlap:] == b[:overlap] if overlap else not set(a) & set(b)
        assert len(set(a) & set(b)) == overlap
    assert len(batches[-1]) > overlap


def test_overlapping_sampler_is_deterministic_and_works_with_dataloader():
    def run(seed):
        sampler = OverlappingBatchSampler(12, 5, 2, torch.Generator().manual_seed(seed))
        loader = DataLoader(TensorDataset(torch.arange(12)), batch_sampler=sampler)
        return [b[0].tolist() for b in loader]

    assert run(0) == run(0) and run(0) != run(1)
    with pytest.raises(ValueError, match="overlap"):
        OverlappingBatchSampler(10, 4, 4)
    with pytest.raises(ValueError, match="batch_size"):
        OverlappingBatchSampler(10, 11, 0)
    with pytest.raises(ValueError, match="n"):
        OverlappingBatchSampler(0, 1, 0)
    with pytest.raises(TypeError, match="generator"):
        OverlappingBatchSampler(10, 4, 1, generator=0)
