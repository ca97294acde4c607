"""Closures for ``optimizer.step(closure)`` and an overlapping batch sampler.

A closure zeroes the gradients, evaluates the loss, back-propagates and returns the loss, which is
the contract of ``torch.optim.LBFGS`` and :class:`~beyondgd.optim.FUSE`. The helpers here also count
the work in a :class:`~beyondgd.core.CostMeter` (samples whose gradient was evaluated), so that
methods can be compared at equal cost.

References
----------
.. [1] A. S. Berahas, J. Nocedal, M. Takac, "A Multi-Batch L-BFGS Method for Machine Learning",
   NeurIPS 2016 (overlapping batches).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Sampler

from beyondgd.core.cost import CostMeter
from beyondgd.core.distributed import all_reduce_sum, is_distributed
from beyondgd.core.validation import check_int

__all__ = [
    "OverlappingBatchSampler",
    "distributed_full_batch_closure",
    "full_batch_closure",
    "make_closure",
]


def _is_ddp(model: object) -> bool:
    return isinstance(model, nn.parallel.DistributedDataParallel)


def _check_deterministic(model: nn.Module) -> None:
    """A closure that L-BFGS calls several times per step must be a fixed function."""
    for name, module in model.named_modules():
        if not module.training:
            continue
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            kind = "dropout"
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            kind = "batch norm"
        else:
            continue
        raise ValueError(
            f"model has {kind} in training mode ({name or type(module).__name__}: "
            f"{type(module).__name__}), so the full-batch closure is not a fixed function (its "
            "line search would compare different functions, and ranks would disagree). Call "
            "model.eval() (dropout off, batch norm frozen to its running statistics) before "
            "building or calling the closure"
        )


def _check_loader(loader: object) -> None:
    # An iterator would be exhausted after the first call; creating one here could start workers.
    if not isinstance(loader, Iterable):
        raise TypeError(f"loader must be iterable, got {type(loader).__name__}")
    if isinstance(loader, Iterator):
        raise TypeError(
            "loader must be re-iterable (a DataLoader or a list of batches), not an iterator"
        )


def _batch_size(x: Any, name: str) -> int:
    if isinstance(x, Tensor):
        if x.dim() == 0:
            raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
        return int(x.shape[0])
    try:
        return len(x)
    except TypeError:
        raise TypeError(
            f"{name} must be a tensor or a sized batch, got {type(x).__name__}"
        ) from None


def _check_common(model: object, loss_fn: object, meter: object) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if meter is not None and not isinstance(meter, CostMeter):
        raise TypeError(f"meter must be a CostMeter or None, got {type(meter).__name__}")


def make_closure(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    inputs: Any,
    targets: Any,
    meter: CostMeter | None = None,
) -> Callable[[], Tensor]:
    """A closure on one fixed batch: ``loss_fn(model(inputs), targets)`` and its gradient.

    Each call zeroes the model's gradients, evaluates the loss with autograd enabled, calls
    ``backward()``, adds ``len(inputs)`` samples to ``meter`` (one evaluation) and returns the
    loss, detached.

    Parameters
    ----------
    model : torch.nn.Module
    loss_fn : callable
        ``loss_fn(outputs, targets) -> scalar tensor``.
    inputs, targets
        One batch; ``inputs`` needs a first (batch) dimension.
    meter : CostMeter, optional
        Under a process group it counts the samples of every rank's batch (the sizes are summed
        once, by a collective when the closure is made, so every rank must make its closure).

    Returns
    -------
    callable
        ``closure() -> Tensor``.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(3, 1)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> meter = CostMeter(dataset_size=8)
    >>> closure = make_closure(model, torch.nn.functional.mse_loss, x, y, meter)
    >>> loss = closure()
    >>> meter.samples, model.weight.grad is not None
    (8, True)
    """
    _check_common(model, loss_fn, meter)
    n = _batch_size(inputs, "inputs")
    if meter is not None and is_distributed():
        # Each rank its own batch: the meter counts the samples of all ranks (one collective,
        # here at creation, as every rank builds its closure for the step).
        n = int(all_reduce_sum(torch.tensor([float(n)], dtype=torch.float64)).item())

    def closure() -> Tensor:
        model.zero_grad()
        with torch.enable_grad():
            loss = loss_fn(model(inputs), targets)
            loss.backward()
        if meter is not None:
            meter.add(n)
        return loss.detach()

    return closure


def _summed_loss_backward(
    model: nn.Module, loss_fn: Callable[[Any, Any], Tensor], loader: Iterable[Any]
) -> tuple[Tensor | None, int]:
    """Backpropagate the *summed* loss over ``loader`` (each batch's mean loss times its size, so
    the caller divides by N once, N being unknown up front); return that sum (``None`` when no
    batch had samples) and N."""
    total: Tensor | None = None
    n_total = 0
    with torch.enable_grad():
        for batch in loader:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError("loader must yield (inputs, targets) pairs")
            inputs, targets = batch
            n = _batch_size(inputs, "inputs")
            if n == 0:
                continue
            loss = loss_fn(model(inputs), targets)
            (loss * n).backward()
            part = loss.detach() * n
            total = part if total is None else total + part
            n_total += n
    return total, n_total


def full_batch_closure(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    loader: Iterable[Any],
    meter: CostMeter | None = None,
) -> Callable[[], Tensor]:
    r"""A closure on the whole data set, accumulated batch by batch with O(params) memory.

    With per-batch mean losses :math:`\ell_b` on :math:`n_b` samples, it returns
    :math:`L = \sum_b n_b \ell_b / N`, :math:`N = \sum_b n_b`, and leaves :math:`\nabla L` in the
    ``.grad`` fields: the full-data mean loss and its gradient, whatever the batching. Only one
    batch's graph is alive at a time. Each call adds :math:`N` samples (one evaluation) to
    ``meter``.

    Parameters
    ----------
    model : torch.nn.Module
    loss_fn : callable
        ``loss_fn(outputs, targets)``, the *mean* loss over the batch.
    loader : iterable of (inputs, targets)
        Re-iterable (a ``DataLoader``, a list of batches); it is iterated once per call.
    meter : CostMeter, optional

    Returns
    -------
    callable
        ``closure() -> Tensor``.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> model = torch.nn.Linear(3, 1)
    >>> data = TensorDataset(torch.randn(10, 3), torch.randn(10, 1))
    >>> meter = CostMeter(dataset_size=10)
    >>> closure = full_batch_closure(model, torch.nn.functional.mse_loss,
    ...                              DataLoader(data, batch_size=4), meter)
    >>> _ = closure()
    >>> meter.samples, meter.evaluations
    (10, 1)
    """
    _check_common(model, loss_fn, meter)
    if _is_ddp(model):
        raise TypeError(
            "model is wrapped in DistributedDataParallel: full_batch_closure would run a "
            "different number of DDP forwards on each rank (uneven shards, rank-local line "
            "searches) and hang. Use beyondgd.optim.distributed_full_batch_closure(model, "
            "loss_fn, loader), which reduces the loss and gradient over every rank's shard"
        )
    _check_loader(loader)

    def closure() -> Tensor:
        model.zero_grad()
        total, n_total = _summed_loss_backward(model, loss_fn, loader)
        if total is None:
            raise ValueError("loader yielded no samples")
        scale = 1.0 / n_total
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, scale)
        if meter is not None:
            meter.add(n_total)
        return total * scale

    return closure


def distributed_full_batch_closure(
    model: nn.Module,
    loss_fn: Callable[[Any, Any], Tensor],
    loader: Iterable[Any],
    meter: CostMeter | None = None,
) -> Callable[[], Tensor]:
    r"""The full-batch closure over every rank's shard of the data, for ``torch.distributed``.

    Rank :math:`r` holds a shard of :math:`N_r` samples (its ``loader``; shards may differ in
    size, and one may be empty). Each call accumulates, on each rank, the summed loss
    :math:`S_r = \sum_{i \in r} \ell_i` and its gradient, then makes **one** all-reduce of the
    flat vector :math:`[\nabla S_r, S_r, N_r]` (and one flag per parameter: whether it has a
    gradient), so that every rank returns

    .. math::
        L = \frac{\sum_r S_r}{\sum_r N_r}, \qquad \nabla L \text{ in the ``.grad`` fields},

    the mean over all samples (weighted by sample counts, not DDP's mean of per-rank means),
    bit-for-bit the same on every rank. Every rank makes the same collectives per call whatever
    its shard, so L-BFGS line searches that call the closure a data-dependent number of times stay
    in lock-step. A NaN on one rank's shard reaches every rank (the sum is NaN), so
    :class:`~beyondgd.optim.FUSE` skips the step everywhere. The returned closure has the
    attribute ``rank_consistent = True``, which tells FUSE its loss needs no further reduction.

    If ``model`` is a ``DistributedDataParallel``, the forwards run through ``model.module``:
    DDP's own gradient all-reduce never fires (it would fire once per batch, a different number
    of times per rank). Without a process group this is :func:`full_batch_closure` (same
    numbers, no communication).

    The closure must be a fixed function: dropout or batch norm in training mode raise a
    ``ValueError`` (call ``model.eval()``). Parameters must be the same on every rank (DDP
    broadcasts them at construction; FUSE checks at its first step).

    Parameters
    ----------
    model : torch.nn.Module
        The model, possibly wrapped in ``DistributedDataParallel``.
    loss_fn : callable
        ``loss_fn(outputs, targets)``, the *mean* loss over the batch.
    loader : iterable of (inputs, targets)
        This rank's shard; re-iterable (a ``DataLoader`` over a ``Subset`` of disjoint indices,
        a list of batches). A ``DistributedSampler`` pads the shards to one size by repeating
        samples (or drops some, with ``drop_last=True``), so the loss is then not exactly the
        full-data mean; ``Subset(data, range(rank, len(data), world_size))`` is.
    meter : CostMeter, optional
        Gets the global sample count :math:`\sum_r N_r` (one evaluation) per call.

    Returns
    -------
    callable
        ``closure() -> Tensor``, the global mean loss (a 0-d tensor).

    Examples
    --------
    Without a process group it is the ordinary full-batch closure:

    >>> import torch
    >>> model = torch.nn.Linear(3, 1)
    >>> batches = [(torch.randn(4, 3), torch.randn(4, 1)), (torch.randn(2, 3), torch.randn(2, 1))]
    >>> meter = CostMeter(dataset_size=6)
    >>> closure = distributed_full_batch_closure(model, torch.nn.functional.mse_loss, batches,
    ...                                          meter)
    >>> loss = closure()
    >>> closure.rank_consistent, meter.samples
    (True, 6)

    Under ``torchrun``, with ``model = DistributedDataParallel(net)`` and ``loader`` over this
    rank's shard, ``FUSE(model.parameters()).step(closure)`` is the same on every rank; see
    ``examples/fuse_torchrun.py``.
    """
    _check_common(model, loss_fn, meter)
    _check_loader(loader)
    inner = model.module if _is_ddp(model) else model
    if not isinstance(inner, nn.Module):
        raise TypeError(f"model.module must be a torch.nn.Module, got {type(inner).__name__}")
    _check_deterministic(inner)
    params = [p for p in inner.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameter with requires_grad=True")

    if not is_distributed():
        single = full_batch_closure(inner, loss_fn, loader, meter)

        def closure() -> Tensor:
            _check_deterministic(inner)
            return single()

        closure.rank_consistent = True  # type: ignore[attr-defined]
        return closure

    dtype = params[0].dtype
    for p in params[1:]:
        dtype = torch.promote_types(dtype, p.dtype)
    if dtype.itemsize < 4:  # a count or a loss sum in half precision would round
        dtype = torch.float32
    device = params[0].device
    sizes = [p.numel() for p in params]
    n_grad = sum(sizes)

    def closure() -> Tensor:
        _check_deterministic(inner)
        inner.zero_grad()
        local, n_local = _summed_loss_backward(inner, loss_fn, loader)
        total = torch.zeros((), dtype=dtype, device=device)
        if local is not None:
            total = total + local.to(dtype)
        # ONE collective per call, the same on every rank:
        # [grad..., loss sum, count, one "has a gradient" flag per parameter].
        has_grad = [float(p.grad is not None) for p in params]
        flat = torch.cat(
            [
                *(
                    p.grad.detach().reshape(-1).to(dtype)
                    if p.grad is not None
                    else torch.zeros(p.numel(), dtype=dtype, device=device)
                    for p in params
                ),
                total.reshape(1),
                torch.tensor([float(n_local), *has_grad], dtype=dtype, device=device),
            ]
        )
        all_reduce_sum(flat)
        tail = flat[n_grad:].tolist()  # loss sum, count, flags: one device sync
        n_total, flags = tail[1], tail[2:]
        if n_total == 0:
            raise ValueError("the loaders of all ranks yielded no samples")
        flat = flat[: n_grad + 1].div_(n_total)
        for p, g, flag in zip(params, flat[:n_grad].split(sizes), flags):
            if flag == 0:  # no rank's loss reached it: None, as full_batch_closure leaves it
                p.grad = None
            elif p.grad is None:
                p.grad = g.view_as(p).to(p.dtype, copy=True)
            else:
                p.grad.copy_(g.view_as(p))
        if meter is not None:
            meter.add(int(round(n_total)))
        return flat[n_grad].clone()

    closure.rank_consistent = True  # type: ignore[attr-defined]
    return closure


class OverlappingBatchSampler(Sampler[list[int]]):
    """Index batches in which consecutive batches share ``overlap`` indices.

    Each pass draws a permutation :math:`\\pi` of ``range(n)`` and yields
    ``pi[i : i + batch_size]`` for ``i = 0, stride, 2 stride, ...`` with
    ``stride = batch_size - overlap``, until every index has been used; the last batch may be
    shorter. Batch ``k + 1`` starts with the last ``overlap`` indices of batch ``k``, the setting of
    the multi-batch L-BFGS of Berahas, Nocedal and Takac (2016). Use it as
    ``DataLoader(dataset, batch_sampler=OverlappingBatchSampler(...))``. Consecutive passes are
    independent permutations (no overlap guaranteed across the pass boundary).

    Parameters
    ----------
    n : int
        Data set size, ``>= 1``.
    batch_size : int
        In ``[1, n]``.
    overlap : int
        In ``[0, batch_size)``.
    generator : torch.Generator, optional
        Source of the permutations; without one, each pass seeds a fresh generator from torch's
        global RNG (like ``RandomSampler``).

    References
    ----------
    .. [1] A. S. Berahas, J. Nocedal, M. Takac, "A Multi-Batch L-BFGS Method for Machine
       Learning", NeurIPS 2016.

    Examples
    --------
    >>> import torch
    >>> sampler = OverlappingBatchSampler(10, 4, 2, torch.Generator().manual_seed(0))
    >>> batches = list(sampler)
    >>> len(batches) == len(sampler), all(a[-2:] == b[:2] for a, b in zip(batches, batches[1:]))
    (True, True)
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        overlap: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.n = check_int("n", n, low=1)
        self.batch_size = check_int("batch_size", batch_size, low=1, high=self.n)
        self.overlap = check_int("overlap", overlap, low=0, high=self.batch_size - 1)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.generator = generator

    @property
    def stride(self) -> int:
        return self.batch_size - self.overlap

    def __len__(self) -> int:
        return 1 + math.ceil(max(self.n - self.batch_size, 0) / self.stride)

    def __iter__(self) -> Iterator[list[int]]:
        gen = self.generator
        if gen is None:
            gen = torch.Generator()
            gen.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        perm = torch.randperm(self.n, generator=gen).tolist()
        start = 0
        while True:
            yield perm[start : start + self.batch_size]
            if start + self.batch_size >= self.n:
                return
            start += self.stride
