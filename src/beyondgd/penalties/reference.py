r"""Reference sparse penalties: L1, MCP, SCAD, capped-L1, log-sum and the quadratic envelope of L0.

All act elementwise with ``t = |x|`` and have closed-form proximal operators. For the nonconvex
ones the prox of ``tau * p`` is single valued while ``tau * weak_convexity < 1`` (the prox problem
is strongly convex there and the classical thresholding formulas apply); for larger ``tau`` the
problem is nonconvex and :meth:`prox` returns the best of the finitely many candidate minimizers
(a global minimizer; at exact ties the first candidate, the one closer to zero, is returned).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from beyondgd.core.validation import check_number
from beyondgd.penalties.base import Penalty, _as_tau, _best_of

__all__ = ["L1", "MCP", "SCAD", "CappedL1", "LogSum", "QuadEnvelopeL0"]


def _positive(name: str, value: float) -> float:
    return check_number(name, value, low=0.0, low_inclusive=False)


# ---- L1 ----------------------------------------------------------------------------------------
class L1(Penalty):
    r"""The L1 penalty ``p(x) = alpha |x|`` (the lasso).

    Convex (``weak_convexity = 0``), not smooth. ``grad`` is ``alpha sign(x)`` (0 at 0, the
    minimum-norm subgradient); ``prox`` is soft thresholding
    ``sign(y) max(|y| - tau alpha, 0)`` for every ``tau > 0``.

    Parameters
    ----------
    alpha : float
        Weight, ``alpha > 0``.

    References
    ----------
    .. [1] R. Tibshirani, "Regression shrinkage and selection via the lasso", JRSS-B, 1996.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.penalties import L1
    >>> L1(0.5).prox(torch.tensor([-2.0, 0.3, 1.0]), 1.0)
    tensor([-1.5000,  0.0000,  0.5000])
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = _positive("alpha", alpha)

    smoothness = math.inf
    weak_convexity = 0.0

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}"

    def _value(self, x: Tensor) -> Tensor:
        return self.alpha * x.abs()

    def _grad(self, x: Tensor) -> Tensor:
        return self.alpha * torch.sign(x)

    def _prox(self, y: Tensor, tau: float | Tensor) -> Tensor:
        tau = _as_tau(tau, y)
        return torch.sign(y) * (y.abs() - tau * self.alpha).clamp_min(0.0)


# ---- MCP ---------------------------------------------------------------------------------------
def _mcp_value(t: Tensor, alpha: float, gamma: float) -> Tensor:
    return torch.where(t < gamma * alpha, alpha * t - t * t / (2 * gamma), 0.5 * gamma * alpha**2)


def _mcp_grad(x: Tensor, alpha: float, gamma: float) -> Tensor:
    return torch.sign(x) * (alpha - x.abs() / gamma).clamp_min(0.0)


def _mcp_prox(y: Tensor, tau, alpha: float, gamma: float) -> Tensor:
    tau = _as_tau(tau, y)
    s, t = torch.sign(y), y.abs()

    def firm() -> Tensor:
        mid = (t - tau * alpha) / (1.0 - tau / gamma)
        mag = torch.where(t <= gamma * alpha, mid, t)
        return torch.where(t <= tau * alpha, torch.zeros_like(t), mag)

    def hard() -> Tensor:
        return _best_of(
            t,
            tau,
            lambda u: _mcp_value(u, alpha, gamma),
            [torch.zeros_like(t), t.clamp_min(gamma * alpha)],
        )

    if isinstance(tau, float):
        mag = firm() if tau < gamma else hard()
    else:
        mag = torch.where(tau < gamma, firm(), hard())
    return s * mag


class MCP(Penalty):
    r"""Minimax concave penalty (Zhang, 2010).

    .. math::
        p(x) = \begin{cases} \alpha t - t^2 / (2\gamma) & t \le \gamma\alpha \\
                              \gamma \alpha^2 / 2 & t > \gamma\alpha \end{cases}

    ``(1/gamma)``-weakly convex, not smooth (kink at 0). ``grad`` is
    ``sign(x) max(alpha - t/gamma, 0)`` (0 at 0).

    Prox of ``tau * p``: for ``tau < gamma`` the firm-thresholding formula

    .. math::
        \operatorname{prox}(y) = \begin{cases} 0 & t \le \tau\alpha \\
           \operatorname{sign}(y)\, \frac{t - \tau\alpha}{1 - \tau/\gamma}
             & \tau\alpha < t \le \gamma\alpha \\
           y & t > \gamma\alpha \end{cases}

    (the prox problem is strongly convex). For ``tau >= gamma`` the problem is concave on
    ``[0, gamma alpha]`` and the prox is the better of ``0`` and ``sign(y) max(t, gamma alpha)``
    (hard thresholding).

    Parameters
    ----------
    alpha : float
        Level, ``alpha > 0`` (slope at 0).
    gamma : float
        Concavity, ``gamma > 0`` (the penalty is flat beyond ``gamma alpha``).

    References
    ----------
    .. [1] C.-H. Zhang, "Nearly unbiased variable selection under minimax concave penalty",
       Annals of Statistics 38(2), 2010.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.penalties import MCP
    >>> MCP(alpha=1.0, gamma=3.0).prox(torch.tensor([0.5, 2.0, 4.0]), 1.0)
    tensor([0.0000, 1.5000, 4.0000])
    """

    def __init__(self, alpha: float = 1.0, gamma: float = 3.0) -> None:
        super().__init__()
        self.alpha = _positive("alpha", alpha)
        self.gamma = _positive("gamma", gamma)

    smoothness = math.inf

    @property
    def weak_convexity(self) -> float:
        return 1.0 / self.gamma

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, gamma={self.gamma:g}"

    def _value(self, x: Tensor) -> Tensor:
        return _mcp_value(x.abs(), self.alpha, self.gamma)

    def _grad(self, x: Tensor) -> Tensor:
        return _mcp_grad(x, self.alpha, self.gamma)

    def _prox(self, y: Tensor, tau: float | Tensor) -> Tensor:
        return _mcp_prox(y, tau, self.alpha, self.gamma)


# ---- SCAD --------------------------------------------------------------------------------------
class SCAD(Penalty):
    r"""Smoothly clipped absolute deviation (Fan & Li, 2001).

    .. math::
        p(x) = \begin{cases} \alpha t & t \le \alpha \\
            \frac{2\gamma\alpha t - t^2 - \alpha^2}{2(\gamma - 1)} & \alpha < t \le \gamma\alpha \\
            \alpha^2 (\gamma + 1) / 2 & t > \gamma\alpha \end{cases}

    ``1/(gamma - 1)``-weakly convex, not smooth (kink at 0). ``grad`` is
    ``sign(x) {alpha; (gamma alpha - t)/(gamma - 1); 0}`` (0 at 0).

    Prox of ``tau * p``: for ``tau < gamma - 1`` (strongly convex prox problem) the SCAD
    thresholding rule

    .. math::
        \operatorname{prox}(y) = \begin{cases}
          \operatorname{sign}(y) \max(t - \tau\alpha, 0) & t \le (1 + \tau)\alpha \\
          \operatorname{sign}(y) \frac{(\gamma - 1) t - \tau\gamma\alpha}{\gamma - 1 - \tau}
            & (1 + \tau)\alpha < t \le \gamma\alpha \\
          y & t > \gamma\alpha \end{cases}

    (Fan & Li's rule for ``tau = 1``). For ``tau >= gamma - 1`` the middle piece of the prox
    problem is concave and the prox is the better of ``sign(y) clamp(t - tau alpha, 0, alpha)`` and
    ``sign(y) max(t, gamma alpha)``.

    Parameters
    ----------
    alpha : float
        Level, ``alpha > 0``.
    gamma : float
        Shape, ``gamma > 2`` (Fan & Li suggest 3.7).

    References
    ----------
    .. [1] J. Fan, R. Li, "Variable selection via nonconcave penalized likelihood and its oracle
       properties", JASA 96(456), 2001.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.penalties import SCAD
    >>> SCAD(alpha=1.0, gamma=3.7).prox(torch.tensor([0.5, 1.5, 5.0]), 1.0)
    tensor([0.0000, 0.5000, 5.0000])
    """

    def __init__(self, alpha: float = 1.0, gamma: float = 3.7) -> None:
        super().__init__()
        self.alpha = _positive("alpha", alpha)
        self.gamma = check_number("gamma", gamma, low=2.0, low_inclusive=False)

    smoothness = math.inf

    @property
    def weak_convexity(self) -> float:
        return 1.0 / (self.gamma - 1.0)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, gamma={self.gamma:g}"

    def _value(self, x: Tensor) -> Tensor:
        al, ga = self.alpha, self.gamma
        t = x.abs()
        mid = (2 * ga * al * t - t * t - al * al) / (2 * (ga - 1))
        out = torch.where(t <= ga * al, mid, torch.full_like(t, al * al * (ga + 1) / 2))
        return torch.where(t <= al, al * t, out)

    def _grad(self, x: Tensor) -> Tensor:
        al, ga = self.alpha, self.gamma
        t = x.abs()
        mid = ((ga * al - t) / (ga - 1)).clamp_min(0.0)
        return torch.sign(x) * torch.where(t <= al, torch.full_like(t, al), mid)

    def _prox(self, y: Tensor, tau: float | Tensor) -> Tensor:
        al, ga = self.alpha, self.gamma
        tau = _as_tau(tau, y)
        s, t = torch.sign(y), y.abs()

        def rule() -> Tensor:
            mid = ((ga - 1) * t - tau * ga * al) / (ga - 1 - tau)
            mag = torch.where(t <= ga * al, mid, t)
            return torch.where(t <= (1 + tau) * al, (t - tau * al).clamp_min(0.0), mag)

        def candidates() -> Tensor:
            soft = torch.clamp(t - tau * al, min=0.0, max=al)
            return _best_of(t, tau, self._value, [soft, t.clamp_min(ga * al)])

        if isinstance(tau, float):
            mag = rule() if tau < ga - 1 else candidates()
        else:
            mag = torch.where(tau < ga - 1, rule(), candidates())
        return s * mag


# ---- capped L1 ---------------------------------------------------------------------------------
class CappedL1(Penalty):
    r"""Capped L1 penalty ``p(x) = alpha min(|x|, theta)``.

    Not smooth (kinks at 0 and at ``theta``) and not weakly convex (the kink at ``theta`` is
    concave), so ``weak_convexity = inf``. ``grad`` is ``alpha sign(x)`` for ``t < theta`` and 0
    beyond (0 at 0 and at ``theta``: minimum-norm subgradients).

    Prox of ``tau * p`` (any ``tau > 0``): the better of ``sign(y) clamp(t - tau alpha, 0, theta)``
    (minimizer on ``[0, theta]``) and ``sign(y) max(t, theta)`` (minimizer beyond ``theta``).

    Parameters
    ----------
    alpha : float
        Slope, ``alpha > 0``.
    theta : float
        Cap, ``theta > 0``.

    References
    ----------
    .. [1] T. Zhang, "Analysis of multi-stage convex relaxation for sparse regularization", JMLR
       11, 2010.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.penalties import CappedL1
    >>> CappedL1(alpha=1.0, theta=2.0).prox(torch.tensor([0.5, 1.5, 5.0]), 1.0)
    tensor([0.0000, 0.5000, 5.0000])
    """

    def __init__(self, alpha: float = 1.0, theta: float = 1.0) -> None:
        super().__init__()
        self.alpha = _positive("alpha", alpha)
        self.theta = _positive("theta", theta)

    smoothness = math.inf
    weak_convexity = math.inf

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, theta={self.theta:g}"

    def _value(self, x: Tensor) -> Tensor:
        return self.alpha * x.abs().clamp_max(self.theta)

    def _grad(self, x: Tensor) -> Tensor:
        return torch.where(x.abs() < self.theta, self.alpha * torch.sign(x), torch.zeros_like(x))

    def _prox(self, y: Tensor, tau: float | Tensor) -> Tensor:
        tau = _as_tau(tau, y)
        s, t = torch.sign(y), y.abs()
        inner = torch.clamp(t - tau * self.alpha, min=0.0, max=self.theta)
        outer = t.clamp_min(self.theta)
        return s * _best_of(t, tau, self._value, [inner, outer])


# ---- log-sum -----------------------------------------------------------------------------------
class LogSum(Penalty):
    r"""Log-sum penalty ``p(x) = alpha log(1 + |x| / eps)``.

    ``alpha / eps^2``-weakly convex, not smooth (kink at 0), smooth away from 0 with
    ``grad = alpha sign(x) / (eps + |x|)`` (0 at 0).

    Prox of ``tau * p`` (any ``tau > 0``), closed-form root selection: the stationary points on
    ``u > 0`` solve ``u^2 + (eps - t) u + tau alpha - t eps = 0``; the larger root
    ``r = (t - eps)/2 + sqrt((t + eps)^2/4 - tau alpha)`` is the only local minimizer there (when
    real and positive). The prox is ``sign(y) r`` if that beats ``u = 0`` and 0 otherwise.

    Parameters
    ----------
    alpha : float
        Weight, ``alpha > 0``.
    eps : float
        Scale, ``eps > 0`` (smaller: closer to L0).

    References
    ----------
    .. [1] E. J. Candes, M. B. Wakin, S. P. Boyd, "Enhancing sparsity by reweighted l1
       minimization", J. Fourier Anal. Appl. 14, 2008.
    .. [2] A. Prater-Bennette, L. Shen, E. E. Tripp, "The proximity operator of the log-sum
       penalty", J. Sci. Comput. 93, 2022.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.penalties import LogSum
    >>> LogSum(alpha=1.0, eps=1.0).prox(torch.tensor([0.5, 3.0]), 1.0)
    tensor([0.0000, 2.7321])
    """

    def __init__(self, alpha: float = 1.0, eps: float = 1.0) -> None:
        super().__init__()
        self.alpha = _positive("alpha", alpha)
        self.eps = _positive("eps", eps)

    smoothness = math.inf

    @property
    def weak_convexity(self) -> float:
        return self.alpha / self.eps**2

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, eps={self.eps:g}"

    def _value(self, x: Tensor) -> Tensor:
        return self.alpha * torch.log1p(x.abs() / self.eps)

    def _grad(self, x: Tensor) -> Tensor:
        return self.alpha * torch.sign(x) / (self.eps + x.abs())

    def _prox(self, y: Tensor, tau: float | Tensor) -> Tensor:
        tau = _as_tau(tau, y)
        s, t = torch.sign(y), y.abs()
        disc = (t + self.eps) ** 2 / 4 - tau * self.alpha
        root = (t - self.eps) / 2 + disc.clamp_min(0.0).sqrt()
        zero = torch.zeros_like(t)
        root = torch.where((disc >= 0) & (root > 0), root, zero)
        return s * _best_of(t, tau, self._value, [zero, root])


# ---- quadratic envelope of L0 ------------------------------------------------------------------
class QuadEnvelopeL0(Penalty):
    r"""Quadratic envelope of the cardinality, ``Q_1(mu ||.||_0)`` (Carlsson; Soubies et al.).

    .. math:: p(x) = \mu - \tfrac12 \max(0, \sqrt{2\mu} - |x|)^2

    the largest 1-weakly-convex function below ``mu 1[x != 0]``; it equals
    ``MCP(alpha=sqrt(2 mu), gamma=1)`` and is the ``a -> inf`` limit of ``WEEP(a, b=mu, c=0)``.
    1-weakly convex, not smooth (kink at 0); ``grad = sign(x) max(0, sqrt(2 mu) - |x|)``.

    Prox of ``tau * p``: for ``tau < 1`` firm thresholding (0 for ``t <= tau sqrt(2 mu)``,
    ``sign(y) (t - tau sqrt(2 mu)) / (1 - tau)`` up to ``t = sqrt(2 mu)``, ``y`` beyond); for
    ``tau >= 1`` hard thresholding (the better of 0 and ``sign(y) max(t, sqrt(2 mu))``).

    Parameters
    ----------
    mu : float
        Weight of the cardinality, ``mu > 0``.

    References
    ----------
    .. [1] M. Carlsson, "On convex envelopes and regularization of non-convex functionals without
       moving global minima", J. Optim. Theory Appl. 183, 2019.
    .. [2] E. Soubies, L. Blanc-Feraud, G. Aubert, "A unified view of exact continuous penalties
       for l2-l0 minimization", SIAM J. Optim. 27(3), 2017.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.penalties import QuadEnvelopeL0
    >>> pen = QuadEnvelopeL0(mu=0.5)            # sqrt(2 mu) = 1
    >>> pen.value(torch.tensor([0.0, 0.5, 2.0]))
    tensor([0.0000, 0.3750, 0.5000])
    """

    def __init__(self, mu: float = 1.0) -> None:
        super().__init__()
        self.mu = _positive("mu", mu)

    smoothness = math.inf
    weak_convexity = 1.0

    @property
    def threshold(self) -> float:
        """``sqrt(2 mu)``: the level beyond which the penalty is flat."""
        return math.sqrt(2.0 * self.mu)

    def extra_repr(self) -> str:
        return f"mu={self.mu:g}"

    def _value(self, x: Tensor) -> Tensor:
        return self.mu - 0.5 * (self.threshold - x.abs()).clamp_min(0.0) ** 2

    def _grad(self, x: Tensor) -> Tensor:
        return _mcp_grad(x, self.threshold, 1.0)

    def _prox(self, y: Tensor, tau: float | Tensor) -> Tensor:
        return _mcp_prox(y, tau, self.threshold, 1.0)
