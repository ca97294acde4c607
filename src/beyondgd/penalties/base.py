"""The penalty protocol and the shared base class of the elementwise sparse penalties.

A penalty ``P`` acts elementwise, ``P(x) = sum_i p(x_i)``, and offers what first-order and proximal
solvers need:

- ``value(x)``: the elementwise values ``p(x_i)`` (``forward`` sums them);
- ``grad(x)``: the gradient where it exists, the minimum-norm (Clarke) subgradient elsewhere;
- ``prox(x, tau)``: the proximal operator of ``tau * p``, elementwise and in closed form,
  ``argmin_u p(u) + (u - x)^2 / (2 tau)`` (a global minimizer; ties go to the first candidate);
- ``support(x, threshold)``: the boolean mask ``|x| > threshold``;
- ``smoothness``: the Lipschitz constant ``L`` of ``p'`` (``math.inf`` when ``p`` is not smooth);
- ``weak_convexity``: the smallest ``rho >= 0`` with ``p + rho/2 x^2`` convex (``math.inf`` when
  there is none).

Solvers only rely on these names (see :class:`PenaltyProtocol`), the way skglm's solvers rely on
``value``/``prox_1d``/``subdiff_distance``. The public methods check their input (floating point,
finite, ``tau > 0``) once; the underscored ``_value``/``_grad``/``_prox`` do the same work without
checks and are what the solvers call inside their loops.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from beyondgd.core.validation import check_finite_tensor, check_number

__all__ = ["Penalty", "PenaltyProtocol", "check_tau"]


@runtime_checkable
class PenaltyProtocol(Protocol):
    """What a solver of :mod:`beyondgd.sparse` may ask of a penalty (structural typing).

    Any object with these members works with :func:`beyondgd.sparse.solve`; each method checks
    only what it needs (``prox`` for proximal methods, ``grad`` and a finite ``smoothness`` for
    gradient descent and L-BFGS).

    Examples
    --------
    >>> from beyondgd.penalties import MCP, PenaltyProtocol
    >>> isinstance(MCP(1.0, 3.0), PenaltyProtocol)
    True
    """

    smoothness: float
    weak_convexity: float

    def value(self, x: Tensor) -> Tensor: ...

    def grad(self, x: Tensor) -> Tensor: ...

    def prox(self, x: Tensor, tau: float | Tensor) -> Tensor: ...

    def support(self, x: Tensor, threshold: float | None = None) -> Tensor: ...


def check_tau(tau: object, name: str = "tau") -> float | Tensor:
    """Check a prox step ``tau``: a positive finite number, or a tensor of them."""
    if isinstance(tau, Tensor):
        if not tau.is_floating_point():
            raise TypeError(f"{name} must have a floating-point dtype, got {tau.dtype}")
        if not bool(torch.isfinite(tau).all()):
            raise ValueError(f"{name} must be finite (found NaN or inf)")
        if not bool((tau > 0).all()):
            raise ValueError(f"{name} must be > 0, got a tensor with entries <= 0")
        return tau
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real):
        raise TypeError(f"{name} must be a real number or a tensor, got {type(tau).__name__}")
    return check_number(name, tau, low=0.0, low_inclusive=False)


def _check_input(name: str, x: object) -> Tensor:
    return check_finite_tensor(name, x)


class Penalty(nn.Module):
    """Base class of the elementwise penalties (an :class:`torch.nn.Module`).

    Subclasses implement ``_value``, ``_grad`` and ``_prox`` on tensors (no checks) and set
    ``smoothness`` and ``weak_convexity``. The hyperparameters are Python floats, so a penalty works
    on tensors of any floating dtype and on any device without being moved.

    ``penalty(x)`` accepts a tensor or an iterable of tensors (for instance
    ``model.parameters()``) and returns the sum of the elementwise values over all of them, so it
    can be used as ``loss = data_loss + lam * penalty(model.parameters())``.

    Examples
    --------
    A new penalty only needs the three elementwise maps and the two constants:

    >>> import math, torch
    >>> class Ridge(Penalty):
    ...     smoothness, weak_convexity = 2.0, 0.0
    ...     def _value(self, x): return x * x
    ...     def _grad(self, x): return 2 * x
    ...     def _prox(self, x, tau): return x / (1 + 2 * tau)
    >>> Ridge()(torch.tensor([1.0, 2.0]))
    tensor(5.)
    >>> Ridge().prox(torch.tensor([3.0]), 1.0)
    tensor([1.])
    """

    #: Default support threshold (``|x| > threshold``); WEEP overrides it with its breakpoint x1.
    default_threshold: float = 0.0

    # ---- to implement ----------------------------------------------------------------------
    def _value(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _grad(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prox(self, x: Tensor, tau: float | Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def smoothness(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def weak_convexity(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- public, checked entry points ---------------------------------------------------------
    def value(self, x: Tensor) -> Tensor:
        """Elementwise penalty values ``p(x_i)`` (same shape as ``x``)."""
        return self._value(_check_input("x", x))

    def grad(self, x: Tensor) -> Tensor:
        """Elementwise derivative ``p'(x_i)``; the minimum-norm subgradient at kinks."""
        return self._grad(_check_input("x", x))

    def prox(self, x: Tensor, tau: float | Tensor) -> Tensor:
        """Proximal operator ``argmin_u p(u) + (u - x)^2 / (2 tau)``, elementwise.

        ``tau`` is a positive number or a tensor broadcastable against ``x``.
        """
        x = _check_input("x", x)
        tau = check_tau(tau)
        return self._prox(x, tau)

    def support(self, x: Tensor, threshold: float | None = None) -> Tensor:
        """Boolean mask ``|x| > threshold`` (default: :attr:`default_threshold`)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        thr = self.default_threshold if threshold is None else threshold
        thr = check_number("threshold", thr, low=0.0)
        return x.abs() > thr

    # ---- nn.Module ---------------------------------------------------------------------------
    def _sum(self, x: Tensor) -> Tensor:
        return self._value(x).sum()

    def forward(self, x: Tensor | Iterable[Tensor]) -> Tensor:
        """Sum of the elementwise penalty over a tensor or over an iterable of tensors.

        Only the dtype is checked here (no device synchronisation); use :meth:`value` for a
        finiteness check.
        """
        if isinstance(x, Tensor):
            _check_floating("x", x)
            return self._sum(x)
        total: Tensor | None = None
        for i, p in enumerate(x):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"x must be a tensor or an iterable of tensors; item {i} is {type(p).__name__}"
                )
            _check_floating(f"x[{i}]", p)
            s = self._sum(p)
            total = s if total is None else total + s
        if total is None:
            return torch.zeros(())
        return total


def _check_floating(name: str, x: Tensor) -> None:
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")


def _where_tau(cond: Tensor | bool, a: Tensor, b: Tensor) -> Tensor:
    """``torch.where`` that also accepts a Python bool condition."""
    if isinstance(cond, bool):
        return a if cond else b
    return torch.where(cond, a, b)


def _as_tau(tau: float | Tensor, x: Tensor) -> float | Tensor:
    """Bring a tensor ``tau`` to ``x``'s dtype/device (floats pass through)."""
    if isinstance(tau, Tensor):
        return tau.to(dtype=x.dtype, device=x.device)
    return float(tau)


def _best_of(y: Tensor, tau: float | Tensor, value_fn, candidates: list[Tensor]) -> Tensor:
    """Among candidate minimizers pick (elementwise) the one with the lowest prox objective."""
    best = candidates[0]
    best_obj = value_fn(best) + (best - y) ** 2 / (2 * tau)
    for cand in candidates[1:]:
        obj = value_fn(cand) + (cand - y) ** 2 / (2 * tau)
        better = obj < best_obj
        best = torch.where(better, cand, best)
        best_obj = torch.where(better, obj, best_obj)
    return best


INF = math.inf
