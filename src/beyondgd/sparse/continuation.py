"""Continuation schedules: solve a sequence of easier problems, warm-starting each from the last."""

from __future__ import annotations

import math
from dataclasses import dataclass

from beyondgd.core.validation import check_int, check_number

__all__ = ["GeometricContinuation"]


@dataclass(frozen=True)
class GeometricContinuation:
    r"""Grow a penalty parameter geometrically from ``start`` to its target over ``n_stages``.

    For WEEP the parameter is ``a`` (the curvature of the quadratic core): a small ``a`` gives a
    mild, nearly convex problem (``a t^2`` core, wide bridge), a large ``a`` approaches the
    quadratic envelope of L0. Stage ``s = 0, ..., n_stages - 1`` uses

    .. math:: a_s = a_{\mathrm{start}} (a_{\mathrm{target}} / a_{\mathrm{start}})^{s/(S - 1)}

    and runs at most ``stage_iter`` iterations (or until the stopping rule holds for that
    stage's penalty), warm-started from the previous stage; the last stage uses the target value
    and the remaining iteration budget. If the target is not above ``start`` there is a single
    stage.

    Parameters
    ----------
    start : float, default 1.0
        First value of the parameter (``> 0``).
    n_stages : int, default 5
        Number of stages including the final one (``>= 1``).
    stage_iter : int, default 200
        Iteration budget of each non-final stage.
    param : str, default "a"
        Name of the penalty attribute to set (the penalty is copied, never modified).

    Examples
    --------
    >>> sched = GeometricContinuation(start=1.0, n_stages=3)
    >>> sched.values(100.0)
    [1.0, 10.0, 100.0]
    """

    start: float = 1.0
    n_stages: int = 5
    stage_iter: int = 200
    param: str = "a"

    def __post_init__(self) -> None:
        check_number("start", self.start, low=0.0, low_inclusive=False)
        check_int("n_stages", self.n_stages, low=1)
        check_int("stage_iter", self.stage_iter, low=1)
        if not isinstance(self.param, str) or not self.param:
            raise TypeError("param must be a non-empty string naming a penalty attribute")

    def values(self, target: float) -> list[float]:
        """Parameter values of the stages, ending exactly at ``target``."""
        target = check_number("target", target, low=0.0, low_inclusive=False)
        if target <= self.start or self.n_stages == 1:
            return [target]
        ratio = math.log(target / self.start)
        out = [self.start * math.exp(ratio * s / (self.n_stages - 1)) for s in range(self.n_stages)]
        out[-1] = target
        return [round(v, 12) if s < len(out) - 1 else v for s, v in enumerate(out)]
