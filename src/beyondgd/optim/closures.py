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
from beyondgd.core.validation import check_int

__all__ = ["OverlappingBatchSampler", "full_batch_closure", "make_closure"]


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

    def closure() -> Tensor:
        model.zero_grad()
        with torch.enable_grad():
            loss = loss_fn(model(inputs), targets)
            loss.backward()
        if meter is not None:
            meter.add(n)
        return loss.detach()

    return closure


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
    # An iterator would be exhausted after the first call; creating one here could start workers.
    if not isinstance(loader, Iterable):
        raise TypeError(f"loader must be iterable, got {type(loader).__name__}")
    if isinstance(loader, Iterator):
        raise TypeError(
            "loader must be re-iterable (a DataLoader or a list of batches), not an iterator"
        )

    def closure() -> Tensor:
        model.zero_grad()
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
                # Weight by batch size now, divide by N once at the end (N unknown up front).
                (loss * n).backward()
                part = loss.detach() * n
                total = part if total is None else total + part
                n_total += n
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
