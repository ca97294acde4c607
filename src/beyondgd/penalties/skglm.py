r"""WEEP as a penalty for skglm's solvers (needs the ``sparse`` extra: skglm and numba).

``from beyondgd.penalties.skglm import WEEPPenalty`` gives a separable skglm penalty
``alpha * sum_j WEEP_{a,b,c}(w_j)`` with the methods skglm's solvers look for (``value``,
``prox_1d``, ``subdiff_distance``, ``gradient``, ``is_penalized``, ``generalized_support``,
``get_spec``, ``params_to_dict``), written the way skglm's own ``MCPenalty`` is, so skglm can
JIT-compile it (numba ``jitclass``) inside ``AndersonCD``, ``FISTA``, ``LBFGS`` or
``GeneralizedLinearEstimator``. skglm and numba are imported only when ``WEEPPenalty`` is first
looked up; without them an ``ImportError`` says which extra to install.

Examples
--------
>>> import numpy as np
>>> from skglm import GeneralizedLinearEstimator
>>> from skglm.datafits import Quadratic
>>> from skglm.solvers import AndersonCD
>>> from beyondgd.penalties.skglm import WEEPPenalty
>>> rng = np.random.default_rng(0)
>>> X = rng.standard_normal((50, 10)); y = X[:, 0] * 2.0
>>> est = GeneralizedLinearEstimator(
...     Quadratic(), WEEPPenalty(alpha=0.1, a=20.0, b=0.5), AndersonCD(fit_intercept=False))
>>> bool(abs(est.fit(X, y).coef_[0] - 2.0) < 0.05)
True
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["WEEPPenalty", "skglm_available"]  # noqa: F822 (WEEPPenalty is built lazily)

_EXTRA_HINT = 'the skglm plug-in needs skglm and numba: pip install "beyondgd[sparse]"'


def skglm_available() -> bool:
    """Whether skglm and numba can be imported."""
    try:
        _require_skglm()
    except ImportError:
        return False
    return True


def _require_skglm() -> None:
    try:
        import numba  # noqa: F401
        import skglm  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{_EXTRA_HINT} ({exc})") from exc


@functools.cache
def _build_weep_penalty_class() -> type:
    _require_skglm()
    from skglm.penalties.base import BasePenalty

    class WEEPPenalty(BasePenalty):
        r"""skglm penalty ``alpha * sum_j WEEP_{a,b,c}(w_j)`` (Furuhashi et al., 2025).

        WEEP is the 1-weakly-convex envelope of ``min(a t^2, b + c t)``
        (see :class:`beyondgd.penalties.WEEP`; a reconstruction from the paper's description,
        verified numerically). It is differentiable: ``subdiff_distance`` is
        ``|grad_j + alpha WEEP'(w_j)|`` and ``gradient`` is available for skglm's ``LBFGS``.
        ``prox_1d`` is the closed-form prox of ``stepsize * alpha * WEEP`` (valid for every step).

        Its stationary points are dense (tiny nonzero entries off the support), so
        ``generalized_support`` is ``w != 0`` to let ``AndersonCD``'s working set grow to every
        coordinate that still moves; read the support out with ``|w| > x1``.

        Parameters
        ----------
        alpha : float
            Regularization weight, ``alpha > 0``.
        a, b : float
            WEEP core curvature and cap, both ``> 0``.
        c : float
            Tail slope, ``c >= 0``.

        References
        ----------
        .. [1] T. Furuhashi, H. Hontani, Q. Zhao, T. Yokota, "WEEP: A Differentiable Nonconvex
           Sparse Regularizer via Weakly-Convex Envelope", arXiv:2507.20447, 2025.
        .. [2] Q. Bertrand et al., "Beyond L1: Faster and better sparse models with skglm",
           NeurIPS 2022.

        Examples
        --------
        >>> from beyondgd.penalties.skglm import WEEPPenalty
        >>> pen = WEEPPenalty(alpha=0.5, a=1.0, b=3.0)   # x1 = 1, x2 = 3
        >>> float(pen.prox_1d(10.0, 1.0, 0))             # tau = 0.5: tail, c = 0 -> unchanged
        10.0
        """

        def __init__(self, alpha, a, b, c=0.0):
            if not (alpha > 0.0 and alpha < np.inf):
                raise ValueError("alpha must be a finite number > 0")
            if not (a > 0.0 and a < np.inf):
                raise ValueError("a must be a finite number > 0")
            if not (b > 0.0 and b < np.inf):
                raise ValueError("b must be a finite number > 0")
            if not (c >= 0.0 and c < np.inf):
                raise ValueError("c must be a finite number >= 0")
            self.alpha = alpha
            self.a = a
            self.b = b
            self.c = c
            k = 2.0 * a + 1.0
            self.k = k
            self.x1 = (k * c + np.sqrt(k * c * c + 2.0 * b * k * (k - 1.0))) / (k * (k - 1.0))
            self.x2 = k * self.x1 - c

        def get_spec(self):
            from numba import float64

            return (
                ("alpha", float64),
                ("a", float64),
                ("b", float64),
                ("c", float64),
                ("k", float64),
                ("x1", float64),
                ("x2", float64),
            )

        def params_to_dict(self):
            return dict(alpha=self.alpha, a=self.a, b=self.b, c=self.c)

        def _weep(self, t):
            """WEEP at ``t >= 0``."""
            if t <= self.x1:
                return self.a * t * t
            if t < self.x2:
                return self.b + self.c * t - 0.5 * (self.x2 - t) ** 2
            return self.b + self.c * t

        def _dweep(self, x):
            """WEEP'(x) (odd)."""
            t = abs(x)
            if t <= self.x1:
                g = 2.0 * self.a * t
            elif t < self.x2:
                g = self.k * self.x1 - t
            else:
                g = self.c
            return np.sign(x) * g

        def value(self, w):
            """Penalty value ``alpha * sum_j WEEP(w_j)``."""
            out = 0.0
            for j in range(w.shape[0]):
                out += self._weep(abs(w[j]))
            return self.alpha * out

        def gradient(self, w):
            """Gradient ``alpha * WEEP'(w)`` (WEEP is differentiable)."""
            g = np.zeros_like(w)
            for j in range(w.shape[0]):
                g[j] = self.alpha * self._dweep(w[j])
            return g

        def prox_1d(self, value, stepsize, j):
            """Closed-form prox of ``stepsize * alpha * WEEP`` at ``value``."""
            tau = stepsize * self.alpha
            t = abs(value)
            d = 1.0 + 2.0 * self.a * tau
            if tau < 1.0:
                if t <= d * self.x1:
                    m = t / d
                elif t < self.x2 + tau * self.c:
                    m = (t - tau * self.k * self.x1) / (1.0 - tau)
                else:
                    m = t - tau * self.c
            else:
                m1 = min(t / d, self.x1)
                m2 = max(t - tau * self.c, self.x2)
                f1 = self._weep(m1) + (m1 - t) ** 2 / (2.0 * tau)
                f2 = self._weep(m2) + (m2 - t) ** 2 / (2.0 * tau)
                m = m1 if f1 <= f2 else m2
            return np.sign(value) * m

        def subdiff_distance(self, w, grad, ws):
            """Distance of ``-grad`` to ``{alpha WEEP'(w_j)}``: ``|grad_j + alpha WEEP'(w_j)|``."""
            dist = np.zeros_like(grad)
            for idx, j in enumerate(ws):
                dist[idx] = abs(grad[idx] + self.alpha * self._dweep(w[j]))
            return dist

        def is_penalized(self, n_features):
            """Every feature is penalized."""
            return np.ones(n_features, np.bool_)

        def generalized_support(self, w):
            """``w != 0`` (see the class notes)."""
            return w != 0

    WEEPPenalty.__module__ = __name__
    WEEPPenalty.__qualname__ = "WEEPPenalty"
    return WEEPPenalty


def __getattr__(name: str):
    if name == "WEEPPenalty":
        return _build_weep_penalty_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
