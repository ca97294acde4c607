"""One statistics core for every verdict: paired tests on independent replicates.

A claim compares a method with a baseline on ``n`` independent replicates (seeds, instances).
The paired differences are oriented so that **positive = the method is better**. Then:

- the effect is the Hodges-Lehmann estimate (median of the Walsh averages of the differences)
  with its distribution-free 95% confidence interval (order statistics of the Walsh averages at
  the signed-rank critical value: the shifts the two-sided Wilcoxon test does not reject);
- the p-value is the one-sided Wilcoxon signed-rank test of the claim (superiority: the
  differences are > 0; non-inferiority with margin ``d``: they are > ``-d``; equivalence:
  two one-sided tests, ``|difference| < d``);
- Holm's correction (``statsmodels``) runs across a report's primary claims, and separately
  across its secondary (exploratory) claims.

Statuses, the same rule in every report (:func:`decide`):

``not at equal cost``
    the two arms' cost ratio on the claim's cost measure is outside ``[0.95, 1.05]``; no other
    status is given, whatever the numbers say.
``too few replicates``
    ``n`` is below the smallest ``n`` at which the exact test could reach significance after
    Holm's correction and the 95% interval could be bounded; the verdict says the ``n`` needed.
``holds``
    adjusted p < 0.05, the whole 95% interval is on the claimed side (above 0 for superiority,
    above ``-margin`` for non-inferiority, inside ``(-margin, margin)`` for equivalence), and the
    method's median over the replicates is not worse than the baseline's (many small wins with a
    few large losses do not make a "holds"). The interval rule matters because the p-value is
    one-sided and the interval two-sided: a one-sided p just under 0.05 can come with an interval
    that reaches 0, and a reader of the table would rightly not call that a win.
``does not hold``
    only with evidence against the claim: the whole interval is at or below 0 (superiority), or
    at or below ``-margin`` (non-inferiority), or outside ``[-margin, margin]`` (equivalence).
``inconclusive``
    otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
CONFIDENCE = 0.95
COST_BAND = (0.95, 1.05)
KINDS = ("superiority", "noninferiority", "equivalence")
STATUSES = ("holds", "does not hold", "inconclusive", "too few replicates", "not at equal cost")
TEST_NAME = "Wilcoxon signed-rank (Pratt), one-sided; Hodges-Lehmann estimate and interval"


@dataclass
class PairedResult:
    """What the paired test says, before Holm's correction and the status rule."""

    n: int
    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    wins: int
    kind: str
    margin: float
    #: median(baseline) - median(method), oriented like the differences: > 0 = method better
    median_gap: float


def oriented_differences(
    method: Sequence[float], baseline: Sequence[float], *, lower_is_better: bool
) -> np.ndarray:
    """``baseline - method`` when lower is better, else ``method - baseline``: > 0 = better."""
    m = np.asarray(method, dtype=float)
    b = np.asarray(baseline, dtype=float)
    if m.shape != b.shape or m.ndim != 1:
        raise ValueError(
            f"method and baseline must be 1-D arrays of equal length, got {m.shape} and {b.shape}"
        )
    if not (np.isfinite(m).all() and np.isfinite(b).all()):
        raise ValueError("method and baseline must be finite (replace failed runs first)")
    return b - m if lower_is_better else m - b


def hodges_lehmann(diffs: Sequence[float]) -> float:
    """The median of the Walsh averages ``(d_i + d_j) / 2, i <= j``."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        raise ValueError("diffs must not be empty")
    i, j = np.triu_indices(d.size)
    return float(np.median((d[i] + d[j]) / 2.0))


def _wilcoxon_p(d: np.ndarray, alternative: str) -> float:
    """``scipy.stats.wilcoxon`` p-value; all-zero differences give p = 1 (no evidence)."""
    if not np.any(d != 0):
        return 1.0
    res = stats.wilcoxon(d, zero_method="pratt", alternative=alternative, method=_method(d))
    return float(res.pvalue)


def _method(d: np.ndarray) -> str:
    """Exact null distribution without zeros or ties; with them, scipy's permutation version
    for small n (where the normal approximation is poor) and the normal approximation beyond."""
    a = np.abs(d)
    if a.size <= 50 and np.all(a > 0) and np.unique(a).size == a.size:
        return "exact"
    return "auto" if a.size <= 8 else "approx"


def wilcoxon_interval(
    diffs: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """The distribution-free confidence interval of the location shift that goes with the
    Hodges-Lehmann estimate (Hollander & Wolfe): ``[W_(k+1), W_(N-k)]`` of the ``N`` sorted
    Walsh averages, ``k`` the largest integer with ``P(T+ <= k) <= (1 - confidence) / 2`` under
    the exact null distribution of the signed-rank statistic.

    Without ties this is exactly the set of shifts ``c`` for which the two-sided Wilcoxon test of
    ``diffs - c`` is not rejected (the tests check it against ``scipy.stats.wilcoxon``); with ties
    it is the usual approximation. Both ends are infinite when even ``k = 0`` is too likely
    (``n <= 5`` at 95%).
    """
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        raise ValueError("diffs must not be empty")
    i, j = np.triu_indices(d.size)
    walsh = np.sort((d[i] + d[j]) / 2.0)
    k = _signed_rank_quantile(d.size, (1.0 - confidence) / 2.0)
    if k is None:
        return -math.inf, math.inf
    return float(walsh[k]), float(walsh[walsh.size - 1 - k])


def _signed_rank_quantile(n: int, prob: float) -> int | None:
    """The largest ``k`` with ``P(T+ <= k) <= prob`` for ``n`` untied pairs under H0, or None.

    The exact distribution (subset sums of the ranks 1..n) up to n = 1000; beyond, the normal
    approximation."""
    if n > 1000:
        mean, sd = n * (n + 1) / 4.0, math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
        k = math.floor(mean + sd * stats.norm.ppf(prob) - 0.5)
        return k if k >= 0 else None
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r]  # right side is evaluated first: old counts
    cdf = np.cumsum(counts) / 2.0**n
    below = np.nonzero(cdf <= prob)[0]
    return int(below[-1]) if below.size else None


def paired_test(
    method: Sequence[float],
    baseline: Sequence[float],
    *,
    lower_is_better: bool,
    kind: str = "superiority",
    margin: float = 0.0,
) -> PairedResult:
    """The one-sided Wilcoxon test of the claim, the HL estimate and its 95% interval.

    ``method`` and ``baseline`` hold one (finite) value per independent replicate, paired by
    position, on the scale on which differences are taken (log10 already applied if wanted).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if kind != "superiority" and margin <= 0:
        raise ValueError(f"a {kind} claim needs a margin > 0, got {margin!r}")
    d = oriented_differences(method, baseline, lower_is_better=lower_is_better)
    if d.size == 0:
        raise ValueError("method and baseline must not be empty")
    if kind == "superiority":
        p = _wilcoxon_p(d, "greater")
    elif kind == "noninferiority":
        p = _wilcoxon_p(d + margin, "greater")
    else:  # two one-sided tests
        p = max(_wilcoxon_p(d + margin, "greater"), _wilcoxon_p(d - margin, "less"))
    low, high = wilcoxon_interval(d)
    return PairedResult(
        n=int(d.size),
        estimate=hodges_lehmann(d),
        ci_low=low,
        ci_high=high,
        p_value=p,
        wins=int((d > 0).sum()),
        kind=kind,
        margin=float(margin),
        median_gap=float(
            np.median(baseline) - np.median(method)
            if lower_is_better
            else np.median(method) - np.median(baseline)
        ),
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (``statsmodels.stats.multitest.multipletests``)."""
    from statsmodels.stats.multitest import multipletests

    p = [float(v) for v in p_values]
    if not p:
        return []
    if any(not (0.0 <= v <= 1.0) for v in p):
        raise ValueError(f"p-values must lie in [0, 1], got {p}")
    return [float(v) for v in multipletests(p, alpha=ALPHA, method="holm")[1]]


def replicates_needed(n_claims: int, alpha: float = ALPHA, confidence: float = CONFIDENCE) -> int:
    """The smallest ``n`` at which the exact one-sided signed-rank test can give
    ``p < alpha / n_claims`` (Holm's first step) and the two-sided interval can be bounded."""
    if n_claims < 1:
        raise ValueError(f"n_claims must be >= 1, got {n_claims}")
    n_test = 1
    while 0.5**n_test >= alpha / n_claims:
        n_test += 1
    n_ci = 1
    while 2 * 0.5**n_ci > 1.0 - confidence:
        n_ci += 1
    return max(n_test, n_ci)


def cost_ratio(method_cost: Sequence[float], baseline_cost: Sequence[float]) -> float:
    """Total method cost / total baseline cost over the paired replicates."""
    mc, bc = float(np.sum(method_cost)), float(np.sum(baseline_cost))
    if not (math.isfinite(mc) and math.isfinite(bc)) or bc <= 0 or mc < 0:
        raise ValueError(f"costs must be finite with a positive baseline total, got {mc} and {bc}")
    return mc / bc


def decide(
    result: PairedResult,
    p_adjusted: float,
    *,
    n_needed: int,
    cost: float | None = None,
    alpha: float = ALPHA,
) -> str:
    """The status of a claim from its paired result (see the module notes)."""
    if cost is not None and not (COST_BAND[0] <= cost <= COST_BAND[1]):
        return "not at equal cost"
    if result.n < n_needed:
        return "too few replicates"
    margin = result.margin
    if result.kind == "superiority":
        on_side = result.ci_low > 0
        against = result.ci_high <= 0
    elif result.kind == "noninferiority":
        on_side = result.ci_low > -margin
        against = result.ci_high <= -margin
    else:
        on_side = -margin < result.ci_low and result.ci_high < margin
        against = result.ci_high <= -margin or result.ci_low >= margin
    # the method's typical value must not be worse than the baseline's (beyond the margin)
    typical_ok = (
        result.kind == "equivalence"
        or result.median_gap + (margin if result.kind == "noninferiority" else 0.0) >= 0
    )
    if p_adjusted < alpha and on_side and typical_ok:
        return "holds"
    if against:
        return "does not hold"
    return "inconclusive"
