"""Rank-consistency helpers for ``torch.distributed``; every one is a no-op without a process group.

An algorithm with branches (a line search, a switch criterion, a skip on a non-finite loss) stays
in lock-step across ranks only when every rank takes the same branch. These helpers reduce the
value a branch reads, so each rank sees the same number, and do nothing (no communication, no
import-time cost) in a single process.

Examples
--------
>>> import torch
>>> from beyondgd.core import all_reduce_sum, any_rank, is_distributed, world_size
>>> is_distributed(), world_size()
(False, 1)
>>> all_reduce_sum(torch.tensor([1.0, 2.0]))
tensor([1., 2.])
>>> any_rank(False)
False
"""

from __future__ import annotations

import numbers

import torch
import torch.distributed as dist

__all__ = ["all_ranks_agree", "all_reduce_sum", "any_rank", "is_distributed", "rank", "world_size"]


def is_distributed() -> bool:
    """True when ``torch.distributed`` is available and a default process group is initialised.

    Examples
    --------
    >>> is_distributed()
    False
    """
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """The number of ranks in the default process group, 1 without one.

    Examples
    --------
    >>> world_size()
    1
    """
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank in the default process group, 0 without one.

    Examples
    --------
    >>> rank()
    0
    """
    return dist.get_rank() if is_distributed() else 0


def _collective_device(tensor: torch.Tensor) -> torch.device:
    """Where a collective on ``tensor`` must run: NCCL only reduces CUDA tensors."""
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return tensor.device


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place, and return it (unchanged without a process group).

    Every rank must call this with a tensor of the same shape and dtype, in the same order as its
    other collectives.

    Parameters
    ----------
    tensor : torch.Tensor
        Overwritten with the element-wise sum over ranks.

    Returns
    -------
    torch.Tensor
        ``tensor`` itself.

    Examples
    --------
    >>> x = torch.tensor([1.0, 2.0])
    >>> all_reduce_sum(x) is x
    True
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if not is_distributed():
        return tensor
    device = _collective_device(tensor)
    if device == tensor.device:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    else:
        moved = tensor.to(device)
        dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        tensor.copy_(moved)
    return tensor


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on at least one rank.

    Use it for decisions that one rank may see alone, such as a non-finite loss on its shard, so
    that every rank takes the same branch.

    Parameters
    ----------
    flag : bool
        This rank's flag (a Python bool or a one-element tensor).

    Returns
    -------
    bool
        The logical OR of the flags of all ranks.

    Examples
    --------
    >>> any_rank(True), any_rank(False)
    (True, False)
    """
    if isinstance(flag, torch.Tensor):
        if flag.numel() != 1:
            raise ValueError(
                f"flag must be a bool or a one-element tensor, got shape {tuple(flag.shape)}"
            )
        flag = bool(flag.item())
    elif not isinstance(flag, (bool, numbers.Integral)):
        raise TypeError(f"flag must be a bool, got {type(flag).__name__}")
    if not is_distributed():
        return bool(flag)
    count = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
    return bool(all_reduce_sum(count).item() > 0)


def all_ranks_agree(value: torch.Tensor | float) -> bool:
    """True on every rank when ``value`` is bitwise the same on all ranks (always True alone).

    The check all-reduces ``[x, -x]`` with a maximum: the ranks agree exactly when the element-wise
    maximum and minimum over ranks coincide. NaNs agree with NaNs in the same positions, and
    ``0.0`` agrees with ``-0.0``. A first, small reduction compares the number of elements, so
    ranks holding tensors of different sizes get False instead of a hang. The collectives are the
    same on every rank.

    Parameters
    ----------
    value : torch.Tensor or float
        A tensor of the same shape and dtype on every rank, or a number.

    Returns
    -------
    bool
        Whether every rank holds the same value.

    Examples
    --------
    >>> all_ranks_agree(torch.tensor([1.0, float("nan")])), all_ranks_agree(3.0)
    (True, True)
    """
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        tensor = torch.tensor([float(value)], dtype=torch.float64)
    else:
        raise TypeError(
            f"value must be a torch.Tensor or a real number, got {type(value).__name__}"
        )
    if not is_distributed():
        return True
    flat = tensor.reshape(-1)
    size = torch.tensor([flat.numel(), -flat.numel()], dtype=torch.float64)
    size = size.to(_collective_device(size))
    dist.all_reduce(size, op=dist.ReduceOp.MAX)
    if size[0].item() != -size[1].item():
        return False
    if flat.is_floating_point() or flat.is_complex():
        if flat.is_complex():
            flat = torch.view_as_real(flat).reshape(-1)
        nan = torch.isnan(flat)
        # NaN positions must match, and NaNs compare as a fixed number (0) otherwise.
        flat = torch.cat([torch.where(nan, torch.zeros_like(flat), flat), nan.to(flat.dtype)])
        flat = flat.to(torch.float64) if flat.dtype.itemsize < 8 else flat
    else:
        flat = flat.to(torch.float64) if flat.dtype == torch.bool else flat.to(torch.int64)
    both = torch.cat([flat, -flat])
    device = _collective_device(both)
    both = both.to(device)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    n = flat.numel()
    # max(x) == -max(-x) == min(x) exactly when every rank holds the same x.
    return bool(torch.equal(both[:n], -both[n:]))
