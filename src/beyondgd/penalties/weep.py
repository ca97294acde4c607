r"""WEEP: the 1-weakly-convex envelope of a capped quadratic with a linear tail.

The construction below is a *reconstruction* from the paper's description (abstract, Figure 1
caption and introduction; the method section could not be read), verified numerically against a
lower-convex-hull computation of the envelope (see ``tests/penalties``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from beyondgd.core.validation import check_number
from beyondgd.penalties.base import Penalty, _as_tau, _best_of

__all__ = ["WEEP", "weep_breakpoints"]


def weep_breakpoints(a: float, b: float, c: float = 0.0) -> tuple[float, float]:
    r"""Breakpoints ``(x1, x2)`` of WEEP with parameters ``a > 0``, ``b > 0``, ``c >= 0``.

    With :math:`k = 2a + 1`,

    .. math::
        x_1 = \frac{k c + \sqrt{k c^2 + 2 b k (k - 1)}}{k (k - 1)}, \qquad x_2 = k x_1 - c,

    and :math:`0 < x_1 < x_2`.

    Examples
    --------
    >>> x1, x2 = weep_breakpoints(1.0, 3.0)   # a = 1, c = 0: x1 = sqrt(b/3), x2 = sqrt(3b)
    >>> round(x1, 12), round(x2, 12)
    (1.0, 3.0)
    """
    a = check_number("a", a, low=0.0, low_inclusive=False)
    b = check_number("b", b, low=0.0, low_inclusive=False)
    c = check_number("c", c, low=0.0)
    k = 2.0 * a + 1.0
    x1 = (k * c + math.sqrt(k * c * c + 2.0 * b * k * (k - 1.0))) / (k * (k - 1.0))
    return x1, k * x1 - c


class _WEEPSum(torch.autograd.Function):
    """Fused ``sum(WEEP(x))`` with its gradient.

    Uses the identity ``WEEP(x) = k H_{x1}(x) - H_{x2}(x)`` with the Huber function
    ``H_d(x) = x^2/2`` for ``|x| <= d`` and ``d |x| - d^2/2`` beyond, whose derivative is
    ``clamp(x, -d, d)``. The forward is two fused Huber reductions (no masks, no branch
    temporaries); only ``x`` is saved and the backward recomputes the cheap gradient
    ``k clamp(x, -x1, x1) - clamp(x, -x2, x2)``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, k: float, x1: float, x2: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.consts = (k, x1, x2)
        zero = x.new_zeros(()).expand_as(x)
        s1 = F.huber_loss(x, zero, reduction="sum", delta=x1)
        s2 = F.huber_loss(x, zero, reduction="sum", delta=x2)
        return s1.mul_(k).sub_(s2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        k, x1, x2 = ctx.consts
        g = torch.clamp(x, -x2, x2)
        g.mul_(-grad_out)
        g.addcmul_(torch.clamp(x, -x1, x1), grad_out, value=k)
        return g, None, None, None


class WEEP(Penalty):
    r"""WEEP: weakly-convex envelope of an elementwise sparse penalty (Furuhashi et al., 2025).

    The base penalty is ``phi(t) = min(a t^2, b + c t)`` with ``t = |x|`` (a capped quadratic,
    with a linear tail when ``c > 0``); WEEP is its 1-weakly-convex envelope

    .. math::
        \mathrm{WEEP} = Q_1(\phi) = (\phi + \tfrac12 |\cdot|^2)^{**} - \tfrac12 |\cdot|^2 ,

    the largest 1-weakly-convex function below ``phi``. With :math:`k = 2a + 1` and the
    breakpoints :math:`x_1, x_2` of :func:`weep_breakpoints`,

    .. math::
        \mathrm{WEEP}(x) = \begin{cases}
            a t^2 & t \le x_1 \quad\text{(quadratic core)}\\
            k x_1 t - \tfrac{k}{2} x_1^2 - \tfrac12 t^2 & x_1 < t < x_2
                \quad\text{(concave bridge, curvature -1)}\\
            b + c t & t \ge x_2 \quad\text{(tail)}
        \end{cases}

    and :math:`\mathrm{WEEP}'(x) = \operatorname{sign}(x)\,\{2 a t;\ k x_1 - t;\ c\}` on the same
    pieces. WEEP is C^1, L-smooth with ``L = max(2a, 1)`` (:attr:`smoothness`) and exactly
    1-weakly convex (:attr:`weak_convexity`). ``a`` tunes how close it is to the quadratic
    envelope of ``b ||x||_0`` (the limit ``b - max(0, sqrt(2b) - |x|)^2 / 2`` as ``a -> inf``
    with ``c = 0``; the sup distance is about ``b / (2a)``), ``b`` sets the threshold (about
    ``sqrt(2b)``) and ``c`` the tail slope (0: unbiased for large coefficients).

    The proximal operator of ``tau * WEEP`` is closed form (elementwise, ``s = sign(y)``,
    ``t = |y|``):

    - ``0 < tau < 1`` (strongly convex, continuous): ``s t / (1 + 2 a tau)`` if
      ``t <= (1 + 2 a tau) x1``; ``s (t - tau k x1) / (1 - tau)`` if ``t < x2 + tau c``;
      ``s (t - tau c)`` otherwise.
    - ``tau = 1``: ``y / (1 + 2a)`` for ``t <= k x1``, else ``s (t - c)`` (a jump).
    - ``tau > 1``: the better (lower objective) of ``s min(t / (1 + 2 a tau), x1)`` and
      ``s max(t - tau c, x2)``.

    A differentiable penalty never yields exact zeros at a stationary point, so the support is read
    out by a threshold: :meth:`support` uses ``|x| > x1`` unless ``support_threshold`` (or the
    ``threshold`` argument) says otherwise.

    ``penalty(x)`` is one fused pass: a custom :class:`torch.autograd.Function` computes the sum
    and saves only ``x``; the backward recomputes the gradient (see ``_WEEPSum``). In float32 the
    fused sum is computed as ``k S1 - S2`` of two Huber sums, so its absolute error is about
    ``eps * sum(x2 |x|)``; :meth:`value` uses the exact piecewise formula.

    Parameters
    ----------
    a : float
        Curvature of the quadratic core, ``a > 0``.
    b : float
        Cap level, ``b > 0``.
    c : float, default 0.0
        Slope of the linear tail, ``c >= 0``.
    support_threshold : float or None, default None
        Threshold used by :meth:`support` (``None``: the breakpoint ``x1``).

    Attributes
    ----------
    x1, x2 : float
        The breakpoints (end of the quadratic core, start of the tail).

    Notes
    -----
    The construction (base penalty, envelope and the closed forms above) is a reconstruction from
    the paper's abstract and introduction, whose method section could not be read; the closed
    forms are verified numerically against a lower-convex-hull computation of the envelope and
    against brute-force prox minimization (``tests/penalties``).

    ``a``, ``b`` and ``c`` can be reassigned (for instance by a continuation schedule that grows
    ``a``); the breakpoints are recomputed and checked.

    References
    ----------
    .. [1] T. Furuhashi, H. Hontani, Q. Zhao, T. Yokota, "WEEP: A Differentiable Nonconvex Sparse
       Regularizer via Weakly-Convex Envelope", arXiv:2507.20447, 2025.
    .. [2] M. Carlsson, "On convex envelopes and regularization of non-convex functionals without
       moving global minima", J. Optim. Theory Appl., 2019.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.penalties import WEEP
    >>> pen = WEEP(a=1.0, b=3.0)
    >>> pen.x1, pen.x2
    (1.0, 3.0)
    >>> x = torch.tensor([0.5, 2.0, 4.0], requires_grad=True)
    >>> loss = pen(x)            # fused value + gradient
    >>> loss.backward()
    >>> x.grad
    tensor([1., 1., 0.])
    >>> pen.prox(torch.tensor([5.0]), 0.5)
    tensor([5.])
    """

    def __init__(
        self, a: float, b: float, c: float = 0.0, support_threshold: float | None = None
    ) -> None:
        super().__init__()
        self._a = check_number("a", a, low=0.0, low_inclusive=False)
        self._b = check_number("b", b, low=0.0, low_inclusive=False)
        self._c = check_number("c", c, low=0.0)
        if support_threshold is not None:
            support_threshold = check_number("support_threshold", support_threshold, low=0.0)
        self.support_threshold = support_threshold
        self._update()

    def _update(self) -> None:
        self._k = 2.0 * self._a + 1.0
        self._x1, self._x2 = weep_breakpoints(self._a, self._b, self._c)

    # ---- parameters ---------------------------------------------------------------------------
    @property
    def a(self) -> float:
        """Curvature of the quadratic core (``a > 0``)."""
        return self._a

    @a.setter
    def a(self, value: float) -> None:
        self._a = check_number("a", value, low=0.0, low_inclusive=False)
        self._update()

    @property
    def b(self) -> float:
        """Cap level (``b > 0``)."""
        return self._b

    @b.setter
    def b(self, value: float) -> None:
        self._b = check_number("b", value, low=0.0, low_inclusive=False)
        self._update()

    @property
    def c(self) -> float:
        """Tail slope (``c >= 0``)."""
        return self._c

    @c.setter
    def c(self, value: float) -> None:
        self._c = check_number("c", value, low=0.0)
        self._update()

    @property
    def x1(self) -> float:
        """End of the quadratic core."""
        return self._x1

    @property
    def x2(self) -> float:
        """Start of the linear tail."""
        return self._x2

    @property
    def k(self) -> float:
        """``2a + 1``."""
        return self._k

    @property
    def smoothness(self) -> float:
        """Lipschitz constant of WEEP': ``max(2a, 1)``."""
        return max(2.0 * self._a, 1.0)

    @property
    def weak_convexity(self) -> float:
        """WEEP + x^2/2 is convex, and no smaller modulus works: 1."""
        return 1.0

    @property
    def default_threshold(self) -> float:  # type: ignore[override]
        return self._x1 if self.support_threshold is None else self.support_threshold

    def extra_repr(self) -> str:
        return f"a={self._a:g}, b={self._b:g}, c={self._c:g}, x1={self._x1:.4g}, x2={self._x2:.4g}"

    # ---- elementwise maps ---------------------------------------------------------------------
    def _value(self, x: Tensor) -> Tensor:
        a, b, c, x1, x2 = self._a, self._b, self._c, self._x1, self._x2
        t = x.abs()
        outer = b + c * t - 0.5 * (x2 - t).clamp_min(0.0) ** 2
        return torch.where(t <= x1, a * t * t, outer)

    def _grad(self, x: Tensor) -> Tensor:
        t = x.abs()
        g = torch.minimum(2.0 * self._a * t, (self._k * self._x1 - t).clamp_min(self._c))
        return torch.sign(x) * g

    def _prox(self, y: Tensor, tau: float | Tensor) -> Tensor:
        tau = _as_tau(tau, y)
        s = torch.sign(y)
        t = y.abs()
        d = 1.0 + 2.0 * self._a * tau
        if isinstance(tau, float):
            if tau < 1.0:
                mag = self._prox_small(t, tau, d)
            else:
                mag = self._prox_large(t, tau, d)
        else:
            small = self._prox_small(t, tau, d)
            large = self._prox_large(t, tau, d)
            mag = torch.where(tau < 1.0, small, large)
        return s * mag

    def _prox_small(self, t: Tensor, tau, d) -> Tensor:
        c, k, x1, x2 = self._c, self._k, self._x1, self._x2
        bridge = (t - tau * k * x1) / (1.0 - tau)
        mag = torch.where(t < x2 + tau * c, bridge, t - tau * c)
        return torch.where(t <= d * x1, t / d, mag)

    def _prox_large(self, t: Tensor, tau, d) -> Tensor:
        core = torch.clamp(t / d, max=self._x1)
        tail = torch.clamp(t - tau * self._c, min=self._x2)
        return _best_of(t, tau, self._value, [core, tail])

    # ---- fused forward ------------------------------------------------------------------------
    def _sum(self, x: Tensor) -> Tensor:
        return _WEEPSum.apply(x, self._k, self._x1, self._x2)
