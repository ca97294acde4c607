"""Summaries and paired tests that turn per-seed numbers into verdicts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def median_range(values: Sequence[float]) -> str:
    """``"median [min, max]"`` with three significant digits (just the value when n = 1)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return "n/a"
    if arr.size == 1:
        return f"{arr[0]:.3g}"
    return f"{np.median(arr):.3g} [{arr.min():.3g}, {arr.max():.3g}]"


@dataclass
class PairedComparison:
    """Method vs baseline on the same seeds/instances.

    ``p_value`` is the one-sided Wilcoxon signed-rank p-value for "method is better"
    (on log10 values when ``log`` was set, so that a 10x improvement counts the same at any scale).
    """

    n: int
    median_method: float
    median_baseline: float
    wins: int
    p_value: float
    status: str

    @property
    def ratio(self) -> float:
        """median(baseline) / median(method): > 1 means the method is better (lower is better)."""
        if self.median_method == 0:
            return math.inf
        return self.median_baseline / self.median_method

    def evidence(self, method: str, baseline: str, metric: str) -> str:
        p = "n/a" if math.isnan(self.p_value) else f"{self.p_value:.3g}"
        return (
            f"median {metric}: {method} {self.median_method:.3g} vs {baseline} "
            f"{self.median_baseline:.3g}; better on {self.wins}/{self.n} paired runs; "
            f"one-sided Wilcoxon p = {p}"
        )


def compare_paired(
    method: Sequence[float],
    baseline: Sequence[float],
    *,
    lower_is_better: bool = True,
    log: bool = False,
    alpha: float = 0.05,
) -> PairedComparison:
    """Decide "method beats baseline" from paired samples.

    ``"holds"`` when the one-sided Wilcoxon signed-rank test for "method better" gives
    p < ``alpha`` and the method's median is not worse; ``"does not hold"`` when the method's
    median is worse, when the opposite one-sided test is significant, or when neither the median
    nor the test favours the method; ``"inconclusive"`` when the median is better but the test
    is not significant (for example with too few pairs: with 4 pairs the smallest one-sided p is
    1/16).
    """
    m = np.asarray(method, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if m.shape != b.shape or m.ndim != 1:
        raise ValueError(
            f"method and baseline must be 1-D of equal length, got {m.shape}, {b.shape}"
        )
    if m.size == 0:
        raise ValueError("method and baseline must not be empty")
    if log:
        floor = np.finfo(float).tiny
        tm, tb = np.log10(np.maximum(m, floor)), np.log10(np.maximum(b, floor))
    else:
        tm, tb = m, b
    diff = tm - tb if lower_is_better else tb - tm  # negative = method better
    wins = int((diff < 0).sum())
    med_m, med_b = float(np.median(m)), float(np.median(b))
    sign = 1.0 if lower_is_better else -1.0
    better, worse = sign * (med_m - med_b) < 0, sign * (med_m - med_b) > 0
    if np.all(diff == 0) or m.size < 2:
        p = p_reverse = math.nan
    else:
        p = float(stats.wilcoxon(diff, alternative="less", zero_method="wilcox").pvalue)
        p_reverse = float(stats.wilcoxon(diff, alternative="greater", zero_method="wilcox").pvalue)
    significant = not math.isnan(p) and p < alpha
    if significant and not worse:
        status = "holds"
    elif worse or (not math.isnan(p_reverse) and p_reverse < alpha) or not better:
        status = "does not hold"
    else:
        status = "inconclusive"
    return PairedComparison(m.size, med_m, med_b, wins, p, status)
