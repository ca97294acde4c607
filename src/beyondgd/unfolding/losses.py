"""Reconstruction losses: log-cosh (computed stably) and MSE, by name for the trainer."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from beyondgd.core import check_choice

__all__ = ["LogCoshLoss", "get_loss", "log_cosh_loss"]

_LOG2 = math.log(2.0)
_REDUCTIONS = ("mean", "sum", "none")


def log_cosh_loss(
    input: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    r"""Log-cosh loss ``mean(log cosh(input - target))``, finite for residuals of any size.

    With ``d = |input - target|`` it is evaluated as

    .. math:: \log\cosh d = d + \operatorname{softplus}(-2 d) - \log 2,

    which never forms ``cosh d`` (that overflows float32 for ``d > 89``). Its derivative is
    ``tanh(input - target)``: quadratic (``d^2 / 2``) for small residuals and linear (``|d|``)
    for large ones, so it is about half the squared error near zero. Never compare its value
    with an MSE.

    Parameters
    ----------
    input, target
        Tensors of the same shape.
    reduction
        ``"mean"`` (over all elements), ``"sum"`` or ``"none"``.

    References
    ----------
    .. [1] V. Kouni, "How to warm-start your unfolding network", SampTA 2025, arXiv:2502.01854
       (C-DEC is trained with this loss).

    Examples
    --------
    >>> import torch
    >>> log_cosh_loss(torch.tensor([1e4]), torch.tensor([0.0]))
    tensor(9999.3066)
    """
    if input.shape != target.shape:
        raise ValueError(
            f"input and target must have the same shape, got {tuple(input.shape)} and "
            f"{tuple(target.shape)}"
        )
    check_choice("reduction", reduction, _REDUCTIONS)
    d = (input - target).abs()
    out = d + F.softplus(-2.0 * d) - _LOG2
    if reduction == "mean":
        return out.mean()
    if reduction == "sum":
        return out.sum()
    return out


class LogCoshLoss(nn.Module):
    """Module form of :func:`log_cosh_loss`.

    Examples
    --------
    >>> import torch
    >>> LogCoshLoss()(torch.zeros(3), torch.zeros(3))
    tensor(0.)
    """

    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = check_choice("reduction", reduction, _REDUCTIONS)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return log_cosh_loss(input, target, self.reduction)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": F.mse_loss,
    "log-cosh": log_cosh_loss,
}


def get_loss(
    loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``"mse"`` or ``"log-cosh"`` -> the loss function (mean reduction); callables pass through."""
    if callable(loss):
        return loss
    return LOSSES[check_choice("loss", loss, LOSSES)]
