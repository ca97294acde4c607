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

import gc
import numbers

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_cat",
    "all_ranks_agree",
    "all_reduce_gradients",
    "all_reduce_sum",
    "any_rank",
    "broadcast_buffers",
    "broadcast_parameters",
    "data_parallel",
    "is_distributed",
    "process_group_from_env",
    "rank",
    "shard_range",
    "world_size",
]


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


# --- helpers for the trainers (data-parallel training under torchrun) -------------------------


def shard_range(n: int, *, rank_: int | None = None, world_size_: int | None = None) -> slice:
    """This rank's contiguous share of ``n`` items: the first ``n % world_size`` ranks get one
    more, so the shares differ by at most one and cover ``0..n-1`` once, in rank order.

    Parameters
    ----------
    n : int
        Number of items (samples of a batch, images of a data set).
    rank_, world_size_ : int, optional
        Override the process group's rank and size (for planning; default: this process).

    Returns
    -------
    slice
        ``slice(lo, hi)`` with ``hi - lo`` in ``{n // W, n // W + 1}`` (possibly empty).

    Examples
    --------
    >>> shard_range(5)
    slice(0, 5, None)
    >>> [shard_range(5, rank_=r, world_size_=2) for r in range(2)]
    [slice(0, 3, None), slice(3, 5, None)]
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    w = world_size() if world_size_ is None else int(world_size_)
    r = rank() if rank_ is None else int(rank_)
    if w < 1 or not 0 <= r < w:
        raise ValueError(f"rank_ must be in [0, world_size_) and world_size_ >= 1, got {r}, {w}")
    base, extra = divmod(int(n), w)
    lo = r * base + min(r, extra)
    return slice(lo, lo + base + (1 if r < extra else 0))


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, in rank order (sizes may differ).

    The first dimension may differ between ranks (uneven shares, even empty ones); the other
    dimensions and the dtype must agree. The sizes are gathered first, each tensor is padded to
    the largest and gathered, and the padding is cut off. Without a process group this returns
    ``tensor`` itself.

    Parameters
    ----------
    tensor : torch.Tensor
        This rank's rows, shape ``(n_r, *rest)``.

    Returns
    -------
    torch.Tensor
        Shape ``(sum_r n_r, *rest)``, the same on every rank.

    Examples
    --------
    >>> all_gather_cat(torch.arange(3)).tolist()
    [0, 1, 2]
    """
    if not isinstance(tensor, torch.Tensor) or tensor.dim() < 1:
        raise TypeError("tensor must be a torch.Tensor with at least one dimension")
    if not is_distributed():
        return tensor
    w = world_size()
    device = _collective_device(tensor)
    local = tensor.to(device).contiguous()
    sizes = torch.zeros(w, dtype=torch.long, device=device)
    sizes[rank()] = local.shape[0]
    dist.all_reduce(sizes, op=dist.ReduceOp.SUM)
    largest = int(sizes.max())
    padded = torch.zeros((largest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded)
    out = torch.cat([p[: int(s)] for p, s in zip(parts, sizes.tolist())])
    return out.to(tensor.device)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s buffers (batch-norm running statistics) to every rank, in place.

    Under data parallelism each rank updates its running statistics from its own share of the
    batch; call this before an evaluation or a checkpoint so every rank holds the same model.
    A no-op without a process group or without floating-point buffers.

    Examples
    --------
    >>> broadcast_buffers(torch.nn.BatchNorm1d(3))
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if is_distributed():
        _broadcast_in_place(module.buffers(), src)


def _broadcast_in_place(tensors, src: int) -> None:
    """Overwrite each tensor with ``src``'s copy (through the collective's device if needed)."""
    with torch.no_grad():
        for t in tensors:
            moved = t.detach().to(_collective_device(t))
            dist.broadcast(moved, src)
            if moved.data_ptr() != t.data_ptr():
                t.copy_(moved)


def all_reduce_gradients(parameters) -> None:
    """Sum the ``.grad`` of ``parameters`` over ranks, in place, in one flat reduction.

    Scale each rank's loss by its share of the global batch (``n_local / n_global`` for a mean)
    so the sum is the gradient of the loss on the union of the shares. Parameters without a
    gradient on this rank contribute zeros; every rank must pass the same parameters in the same
    order. A no-op without a process group.

    Examples
    --------
    >>> p = torch.nn.Parameter(torch.ones(2)); p.sum().backward()
    >>> all_reduce_gradients([p]); p.grad.tolist()
    [1.0, 1.0]
    """
    params = [p for p in parameters if p.requires_grad]
    if not is_distributed() or not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    all_reduce_sum(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def data_parallel(module: torch.nn.Module, **ddp_kwargs) -> torch.nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` (returned unchanged alone).

    On CUDA, batch norm layers become ``SyncBatchNorm`` first (in place), so statistics are over
    the global batch. On CPU no backend synchronises batch norm: a warning says that each rank
    then normalises with its own share of the batch and names a norm that needs no
    synchronisation (``SegNet(norm="group")``, ``--norm group``). Run every extra forward
    (evaluation, proposals) through ``wrapped.module`` so ranks never disagree on collectives.

    Examples
    --------
    >>> net = torch.nn.Linear(2, 1)
    >>> data_parallel(net) is net
    True
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if not is_distributed():
        return module
    from torch.nn.modules.batchnorm import _BatchNorm

    params = list(module.parameters())
    device = params[0].device if params else torch.device("cpu")
    has_bn = any(
        isinstance(m, _BatchNorm) and not isinstance(m, torch.nn.SyncBatchNorm)
        for m in module.modules()
    )
    if has_bn and device.type == "cuda":
        for name, child in list(module.named_children()):
            setattr(module, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
    elif has_bn and rank() == 0:
        import warnings

        warnings.warn(
            f"batch norm under {world_size()} ranks on {device.type}: SyncBatchNorm needs CUDA, "
            "so each rank normalises with the statistics of its own share of the batch and the "
            "result differs from one process on the whole batch; use a norm that needs no "
            "synchronisation (SegNet(norm='group'), `--norm group` on the command line)",
            UserWarning,
            stacklevel=2,
        )
    if device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [device.index])
    return torch.nn.parallel.DistributedDataParallel(module, **ddp_kwargs)


class process_group_from_env:  # noqa: N801 (used as a context manager, like a function)
    """Join the process group that ``torchrun`` describes in the environment, and leave it.

    With ``WORLD_SIZE`` set (``torchrun`` sets it, with ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR`` and ``MASTER_PORT``) and no group yet, the ``with`` block runs in a new
    default group: NCCL when CUDA is available (each rank on device ``LOCAL_RANK``), gloo
    otherwise (or ``backend``); the group is destroyed on exit, also after an error. Without
    ``WORLD_SIZE``, or with a group already there, it does nothing.

    Examples
    --------
    >>> with process_group_from_env() as joined:
    ...     joined, world_size()
    (False, 1)
    """

    def __init__(self, backend: str | None = None):
        self.backend = backend
        self.created = False

    def __enter__(self) -> bool:
        import os

        if "WORLD_SIZE" not in os.environ or is_distributed():
            return False
        backend = self.backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
        self.created = True
        return True

    def __exit__(self, exc_type, *exc_info) -> None:
        if self.created and is_distributed():
            if exc_type is None:
                # No rank tears its group down while another is still in a collective with it:
                # without this barrier gloo aborted a rank at exit about 1 run in 10 (2 ranks).
                dist.barrier()
            gc.collect()  # modules (DDP) left from the block release their work on the group
            dist.destroy_process_group()
        self.created = False


def broadcast_parameters(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters to every rank, in place (``DistributedDataParallel`` does this
    when it wraps a module; trainers that reduce gradients by hand call this once first).

    A no-op without a process group.

    Examples
    --------
    >>> broadcast_parameters(torch.nn.Linear(2, 1))
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if is_distributed():
        _broadcast_in_place(module.parameters(), src)
