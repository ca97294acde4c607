r"""L-BFGS pieces: curvature memory with the two-loop recursion, and a NaN-safe line search.

The direction is :math:`d = -H_k g` where :math:`H_k` is the L-BFGS inverse-Hessian approximation
built from the last ``m`` pairs :math:`s_i = x_{i+1} - x_i`, :math:`y_i = g_{i+1} - g_i` with
:math:`\rho_i = 1 / (y_i^\top s_i)` and initial scaling
:math:`H^0 = \gamma I,\ \gamma = s^\top y / y^\top y` (latest pair), computed by the two-loop
recursion (Nocedal & Wright, Algorithm 7.4). A pair is stored only if
:math:`y^\top s > \varepsilon\, y^\top y` (machine epsilon :math:`\varepsilon`, the test of
L-BFGS-B) and all its entries are finite, which keeps :math:`H_k` positive definite.
``torch.optim.LBFGS`` uses the absolute test :math:`y^\top s > 10^{-10}` instead, which rejects
every pair once the steps are small and stalls convergence (on a badly scaled quadratic it stops
improving near :math:`10^{-5}` while L-BFGS-B goes on); the scale-invariant test avoids that.

The step length comes from :func:`strong_wolfe`, which looks for :math:`t` with

.. math::
    f(x + t d) \le f(x) + c_1 t\, g^\top d, \qquad |g(x + t d)^\top d| \le c_2 |g^\top d|.

Its bracketing/zoom logic is ported from ``torch.optim.lbfgs._strong_wolfe`` and
``_cubic_interpolate`` (PyTorch, BSD licence; itself a port of ``lswolfe.lua`` from torch/optim),
with non-finite handling added (pytorch issue #5953): a trial whose loss or gradient is not finite
counts as a failed Armijo test and the bracket is then bisected toward the last good point instead
of interpolating through inf/NaN; the lowest finite trial seen is returned when the Wolfe
conditions are not met within the budget.

References
----------
.. [1] J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., Springer, 2006, Ch. 3 and 7.
.. [2] A. S. Berahas, J. Nocedal, M. Takac, "A Multi-Batch L-BFGS Method for Machine Learning",
   NeurIPS 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["LBFGSMemory", "LineSearchResult", "cubic_interpolate", "fixed_step", "strong_wolfe"]


def _finite(x: float) -> bool:
    return math.isfinite(x)


class LBFGSMemory:
    r"""The last ``history_size`` curvature pairs and the two-loop recursion.

    Parameters
    ----------
    history_size : int
        Number of pairs kept (oldest dropped first).
    curvature_eps : float, optional
        Pairs with :math:`y^\top s \le` ``curvature_eps`` :math:`\cdot\, y^\top y` are rejected;
        default: machine epsilon of ``y``'s dtype (L-BFGS-B's rule, scale invariant).

    Attributes
    ----------
    s, y : list of Tensor
        Steps and gradient differences, oldest first.
    rho : list of Tensor
        :math:`1 / (y_i^\top s_i)` (0-d tensors).
    h_diag : Tensor or float
        :math:`\gamma = s^\top y / y^\top y` of the newest accepted pair (1.0 when empty).

    References
    ----------
    .. [1] J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., Algorithm 7.4.

    Examples
    --------
    >>> import torch
    >>> A = torch.diag(torch.tensor([1.0, 10.0], dtype=torch.float64))
    >>> mem = LBFGSMemory(history_size=5)
    >>> for s in torch.eye(2, dtype=torch.float64):
    ...     _ = mem.update(s, A @ s)
    >>> g = torch.tensor([1.0, 1.0], dtype=torch.float64)
    >>> torch.allclose(mem.direction(g), -torch.linalg.solve(A, g))
    True
    """

    def __init__(self, history_size: int, curvature_eps: float | None = None) -> None:
        self.history_size = int(history_size)
        self.curvature_eps = None if curvature_eps is None else float(curvature_eps)
        self.reset()

    def reset(self) -> None:
        """Drop all pairs (the next direction is steepest descent)."""
        self.s: list[Tensor] = []
        self.y: list[Tensor] = []
        self.rho: list[Tensor] = []
        self.h_diag: Tensor | float = 1.0

    def __len__(self) -> int:
        return len(self.s)

    def update(self, s: Tensor, y: Tensor) -> bool:
        """Store the pair ``(s, y)`` if it has positive, finite curvature; return whether stored."""
        ys = y.dot(s)
        yy = y.dot(y)
        # One sync for both checks; NaN fails every comparison, so it is rejected too.
        ys_f, yy_f = torch.stack([ys, yy]).tolist()
        eps = self.curvature_eps
        if eps is None:
            eps = torch.finfo(y.dtype).eps
        if not (_finite(ys_f) and _finite(yy_f) and yy_f > 0.0 and ys_f > eps * yy_f):
            return False
        if len(self.s) == self.history_size:
            self.s.pop(0)
            self.y.pop(0)
            self.rho.pop(0)
        self.s.append(s)
        self.y.append(y)
        self.rho.append(1.0 / ys)
        self.h_diag = ys / yy
        return True

    def direction(self, grad: Tensor) -> Tensor:
        """Two-loop recursion: return :math:`-H_k\\,` ``grad`` (a new tensor)."""
        m = len(self.s)
        alphas: list[Any] = [None] * m
        q = grad.neg()
        for i in range(m - 1, -1, -1):
            alphas[i] = self.s[i].dot(q) * self.rho[i]
            q.add_(self.y[i], alpha=-alphas[i])
        r = torch.mul(q, self.h_diag)
        for i in range(m):
            beta = self.y[i].dot(r) * self.rho[i]
            r.add_(self.s[i], alpha=alphas[i] - beta)
        return r

    def state_dict(self) -> dict[str, Any]:
        return {
            "s": list(self.s),
            "y": list(self.y),
            "rho": list(self.rho),
            "h_diag": self.h_diag,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.s = list(state["s"])
        self.y = list(state["y"])
        self.rho = list(state["rho"])
        self.h_diag = state["h_diag"]


@dataclass
class LineSearchResult:
    """Outcome of a line search along ``d`` from ``x``.

    Attributes
    ----------
    t : float
        Accepted step length; ``0.0`` when no finite point with a lower loss was found (failure).
    f : float
        Loss at ``x + t d`` (the start loss on failure).
    g : Tensor
        Flat gradient at ``x + t d`` (the start gradient on failure).
    n_evals : int
        Objective evaluations made.
    wolfe : bool
        Whether the strong Wolfe conditions hold at ``t`` (always False for :func:`fixed_step`).
    n_nonfinite : int
        Trials whose loss or gradient was not finite.
    """

    t: float
    f: float
    g: Tensor
    n_evals: int
    wolfe: bool
    n_nonfinite: int

    @property
    def success(self) -> bool:
        return self.t > 0.0


def cubic_interpolate(
    x1: float,
    f1: float,
    g1: float,
    x2: float,
    f2: float,
    g2: float,
    bounds: tuple[float, float] | None = None,
) -> float:
    """Minimizer of the cubic through two points with values and slopes, clipped to ``bounds``.

    Ported from ``torch.optim.lbfgs._cubic_interpolate``. Falls back to the midpoint of the bounds
    when any input is not finite or the cubic has no real minimizer (bisection), which is what
    keeps the line search away from inf/NaN trials.
    """
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    mid = 0.5 * (xmin_bound + xmax_bound)
    if not all(_finite(v) for v in (x1, f1, g1, x2, f2, g2)) or x1 == x2:
        return mid
    d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    if not (d2_square >= 0.0) or not _finite(d2_square):
        return mid
    d2 = math.sqrt(d2_square)
    if x1 <= x2:
        den = g2 - g1 + 2.0 * d2
        min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / den) if den != 0.0 else math.nan
    else:
        den = g1 - g2 + 2.0 * d2
        min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / den) if den != 0.0 else math.nan
    if not _finite(min_pos):
        return mid
    return min(max(min_pos, xmin_bound), xmax_bound)


Objective = Callable[[float], tuple[float, Tensor]]


def strong_wolfe(
    obj_func: Objective,
    t: float,
    d: Tensor,
    f: float,
    g: Tensor,
    gtd: float,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> LineSearchResult:
    """Strong Wolfe line search along ``d`` (bracketing + cubic zoom), NaN-safe.

    Parameters
    ----------
    obj_func : callable
        ``obj_func(t) -> (loss: float, flat_grad: Tensor)`` at ``x + t d``; must leave ``x``
        unchanged.
    t : float
        Initial trial step.
    d : Tensor
        Descent direction (``gtd < 0``).
    f, g, gtd : float, Tensor, float
        Loss, flat gradient and directional derivative at ``x``.
    c1, c2 : float
        Armijo and curvature constants.
    tolerance_change : float
        Stop zooming when the bracket is shorter than this (in parameter units).
    max_ls : int
        Trials after the first one (the first trial is always made, as in torch: with
        ``max_ls=0`` one trial is evaluated and accepted if it lowers the loss).

    Returns
    -------
    LineSearchResult
        With ``t=0.0`` (and ``f``, ``g`` of the start) when no finite point lowered the loss.

    Notes
    -----
    Ported from ``torch.optim.lbfgs._strong_wolfe`` (PyTorch, BSD licence). Differences: scalars
    are Python floats; a non-finite trial is treated as ``f = +inf`` (fails Armijo) and
    interpolation through it is replaced by bisection; when the Wolfe conditions are not met, the
    lowest finite trial is returned if it is below ``f`` (torch returns the low end of the
    bracket, which is the NaN point itself when NaN compares false, pytorch issue #5953).
    """
    d_norm = float(d.abs().max())
    n_evals = 0
    n_nonfinite = 0
    best_t, best_f, best_g = 0.0, f, g

    def evaluate(step: float) -> tuple[float, Tensor, float]:
        nonlocal n_evals, n_nonfinite, best_t, best_f, best_g
        f_new, g_new = obj_func(step)
        n_evals += 1
        gtd_new = float(g_new.dot(d))
        if not (_finite(f_new) and _finite(gtd_new) and bool(torch.isfinite(g_new).all())):
            n_nonfinite += 1
            return math.inf, g_new, math.nan
        if f_new < best_f:
            best_t, best_f, best_g = step, f_new, g_new
        return f_new, g_new, gtd_new

    f_new, g_new, gtd_new = evaluate(t)

    # Bracket an interval containing a point satisfying the Wolfe conditions.
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    ls_iter = 0
    bracket: list[float] = []
    bracket_f: list[float] = []
    bracket_g: list[Tensor] = []
    bracket_gtd: list[float] = []
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        # Extrapolate.
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, (min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new, gtd_new = evaluate(t)
        ls_iter += 1

    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0.0, t], [f, f_new], [g, g_new]
        bracket_gtd = [gtd, gtd_new]

    # Zoom: shrink the bracket until a point satisfies the conditions.
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = cubic_interpolate(
            bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1]
        )
        # Too close to a bracket end: move 10% of the bracket inside (torch's safeguard).
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False

        f_new, g_new, gtd_new = evaluate(t)
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Armijo fails, or no better than the low end (non-finite lands here too).
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new, gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new, gtd_new

    if done:
        return LineSearchResult(
            t=bracket[low_pos],
            f=bracket_f[low_pos],
            g=bracket_g[low_pos],
            n_evals=n_evals,
            wolfe=True,
            n_nonfinite=n_nonfinite,
        )
    # No Wolfe point within the budget: keep the best finite trial if it lowers the loss.
    if best_t > 0.0 and best_f < f:
        return LineSearchResult(best_t, best_f, best_g, n_evals, False, n_nonfinite)
    return LineSearchResult(0.0, f, g, n_evals, False, n_nonfinite)


def fixed_step(
    obj_func: Objective, t: float, f: float, g: Tensor, max_trials: int
) -> LineSearchResult:
    """Fixed step ``t``, halved while the trial's loss or gradient is not finite.

    Parameters
    ----------
    obj_func : callable
        As in :func:`strong_wolfe`.
    t : float
        Step length.
    f, g : float, Tensor
        Loss and flat gradient at the start (returned on failure).
    max_trials : int
        Evaluations allowed (``>= 1``).

    Returns
    -------
    LineSearchResult
        The first finite trial (its loss may be higher than ``f``: no descent test), or ``t=0``.
    """
    n_nonfinite = 0
    for trial in range(max(1, max_trials)):
        f_new, g_new = obj_func(t)
        if _finite(f_new) and bool(torch.isfinite(g_new).all()):
            return LineSearchResult(t, f_new, g_new, trial + 1, False, n_nonfinite)
        n_nonfinite += 1
        t *= 0.5
    return LineSearchResult(0.0, f, g, max(1, max_trials), False, n_nonfinite)
