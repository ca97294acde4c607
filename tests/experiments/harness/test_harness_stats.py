"""The statistics core against scipy / statsmodels on hand cases, and its status rule."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from beyondgd.experiments.harness import stats


def _status(method, baseline, *, lower=True, kind="superiority", margin=0.0, cost=None, n_claims=1):
    res = stats.paired_test(method, baseline, lower_is_better=lower, kind=kind, margin=margin)
    return stats.decide(
        res, res.p_value, n_needed=stats.replicates_needed(n_claims), cost=cost
    ), res


def test_p_value_is_scipys_one_sided_wilcoxon():
    rng = np.random.default_rng(0)
    base = rng.normal(size=12)
    meth = base - 0.4 + 0.3 * rng.normal(size=12)
    res = stats.paired_test(meth, base, lower_is_better=True)
    want = sps.wilcoxon(base - meth, zero_method="pratt", alternative="greater").pvalue
    assert res.p_value == pytest.approx(want)
    # higher is better: the same data read the other way round
    res_hi = stats.paired_test(base, meth, lower_is_better=False)
    assert res_hi.p_value == pytest.approx(want)


def test_hodges_lehmann_is_the_median_of_walsh_averages():
    d = np.array([3.0, -1.0, 4.0, 1.0, 5.0])
    walsh = [(d[i] + d[j]) / 2 for i in range(5) for j in range(i, 5)]
    assert stats.hodges_lehmann(d) == pytest.approx(np.median(walsh))


def test_interval_is_the_set_of_shifts_the_two_sided_test_accepts():
    rng = np.random.default_rng(3)
    d = rng.normal(1.0, 1.0, size=15)
    low, high = stats.wilcoxon_interval(d)
    assert low < stats.hodges_lehmann(d) < high

    def p(c):
        return sps.wilcoxon(d - c, zero_method="pratt").pvalue

    eps = 1e-7
    assert p(low + eps) >= 0.05 and p(high - eps) >= 0.05
    assert p(low - eps) < 0.05 and p(high + eps) < 0.05


def test_interval_is_unbounded_with_too_few_pairs():
    low, high = stats.wilcoxon_interval([1.0, 2.0, 3.0, 4.0, 5.0])  # two-sided min p = 1/16
    assert low == -math.inf and high == math.inf


def test_clear_win_holds_clear_loss_does_not_hold():
    base = np.arange(10.0)
    status, res = _status(base - 1.0 - 0.01 * np.arange(10), base)
    assert status == "holds" and res.estimate > 0
    status, res = _status(base + 1.0 + 0.01 * np.arange(10), base)
    assert status == "does not hold" and res.ci_high <= 0


def test_direction_matters():
    base = np.arange(10.0)
    better_if_lower = base - 1.0 - 0.01 * np.arange(10)
    assert _status(better_if_lower, base, lower=True)[0] == "holds"
    assert _status(better_if_lower, base, lower=False)[0] == "does not hold"


def test_many_small_wins_with_a_few_large_losses_is_not_holds():
    baseline = np.arange(1.0, 23.0)
    method = baseline - 1.0
    method[:2] = baseline[:2] + 1000.0  # two large losses on instances below the median
    assert sps.wilcoxon(baseline - method, alternative="greater").pvalue < 0.05
    status, res = _status(method, baseline)
    assert res.p_value < 0.05 and res.estimate > 0
    assert np.median(method) > np.median(baseline)  # the typical result is worse
    assert status != "holds"
    assert status == "inconclusive"
    assert math.isfinite(res.ci_low) and math.isfinite(res.ci_high)  # heavy ties: still defined


def test_interval_uses_the_published_signed_rank_critical_values():
    # two-sided 5% critical values of T+ (Hollander & Wolfe, table A.4): n=6: 0, 7: 2, 10: 8,
    # 20: 52
    for n, k in [(6, 0), (7, 2), (10, 8), (20, 52)]:
        assert stats._signed_rank_quantile(n, 0.025) == k
    assert stats._signed_rank_quantile(5, 0.025) is None


def test_noise_is_inconclusive_not_does_not_hold():
    d = np.array([1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 0.5, -0.5, 1.5, -1.5])
    status, res = _status(10.0 - d, np.full(10, 10.0))
    assert res.ci_low < 0 < res.ci_high
    assert status == "inconclusive"


def test_an_exact_tie_does_not_hold_superiority_but_holds_equivalence():
    x = np.linspace(1, 2, 10)
    status, res = _status(x, x.copy())
    assert res.p_value == 1.0 and res.estimate == 0 and res.ci_low == res.ci_high == 0
    assert status == "does not hold"
    assert _status(x, x.copy(), kind="equivalence", margin=0.1)[0] == "holds"


def test_too_few_replicates_names_the_n_needed():
    base = np.arange(5.0)
    status, res = _status(base - 1.0 - 0.01 * np.arange(5), base)  # perfect, but n = 5
    assert status == "too few replicates"
    assert stats.replicates_needed(1) == 6  # bounded 95% interval needs 6
    assert stats.replicates_needed(4) == 7  # 2^-7 < 0.05 / 4 <= 2^-6
    assert stats.replicates_needed(10) == 8  # 2^-8 < 0.005 <= 2^-7
    base = np.arange(6.0)
    assert _status(base - 1.0 - 0.01 * np.arange(6), base, n_claims=4)[0] == "too few replicates"
    base = np.arange(7.0)
    assert _status(base - 1.0 - 0.01 * np.arange(7), base, n_claims=4)[0] == "holds"


def test_holm_matches_known_values():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.001, 0.5]) == pytest.approx([0.002, 0.5])
    assert stats.holm([]) == []
    with pytest.raises(ValueError, match="p-values"):
        stats.holm([1.5])


def test_noninferiority_on_both_sides_of_the_margin():
    base = np.full(10, 10.0)
    jitter = 0.01 * np.arange(10)
    # worse by 0.2 with margin 1: not worse by more than the margin -> holds
    assert _status(base + 0.2 + jitter, base, kind="noninferiority", margin=1.0)[0] == "holds"
    # worse by 3 with margin 1: the interval lies beyond the margin -> does not hold
    status, res = _status(base + 3.0 + jitter, base, kind="noninferiority", margin=1.0)
    assert status == "does not hold" and res.ci_high <= -1.0
    # worse by about the margin, noisy: inconclusive
    noise = np.array([0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 0.2, -0.2, 0.7, -0.7])
    assert _status(base + 1.0 + noise, base, kind="noninferiority", margin=1.0)[0] == "inconclusive"


def test_equivalence_both_ways():
    base = np.full(10, 10.0)
    small = 0.01 * np.array([1, -1, 2, -2, 3, -3, 1, -1, 2, -2.0])
    assert _status(base + small, base, kind="equivalence", margin=0.5)[0] == "holds"
    assert _status(base + 2 + small, base, kind="equivalence", margin=0.5)[0] == "does not hold"
    assert _status(base - 2 + small, base, kind="equivalence", margin=0.5)[0] == "does not hold"


def test_cost_ratio_outside_the_band_overrides_everything():
    base = np.arange(10.0)
    win = base - 1.0 - 0.01 * np.arange(10)
    assert _status(win, base, cost=1.21)[0] == "not at equal cost"
    assert _status(win, base, cost=0.90)[0] == "not at equal cost"
    assert _status(win, base, cost=1.04)[0] == "holds"
    assert stats.cost_ratio([121, 121], [100, 100]) == pytest.approx(1.21)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "bogus"}, "kind must be one of"),
        ({"kind": "noninferiority", "margin": 0.0}, "margin > 0"),
        ({"margin": -1.0}, "margin must be a finite number >= 0"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stats.paired_test([1.0, 2.0], [2.0, 3.0], lower_is_better=True, **kwargs)


def test_unequal_or_non_finite_inputs_are_rejected():
    with pytest.raises(ValueError, match="equal length"):
        stats.paired_test([1.0, 2.0], [1.0], lower_is_better=True)
    with pytest.raises(ValueError, match="finite"):
        stats.paired_test([1.0, float("nan")], [1.0, 2.0], lower_is_better=True)


def test_significant_p_with_an_interval_reaching_zero_is_not_holds():
    # six wins and four ties: the one-sided p is small, but the two-sided 95% interval is [0, 1]
    d = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    status, res = _status(d, np.zeros(10), lower=False)
    assert res.p_value < 0.01 and res.estimate > 0
    assert res.ci_low == 0.0 and res.ci_high > 0
    assert status == "inconclusive"
    # the same with one win more: the interval leaves 0 and the claim holds
    d = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    status, res = _status(d, np.zeros(10), lower=False)
    assert res.ci_low > 0 and status == "holds"


def test_equivalence_needs_the_whole_interval_inside_the_margin():
    base = np.full(10, 10.0)
    d = np.array([0.3, 0.4, 0.45, 0.2, 0.35, 0.1, 0.42, 0.38, 0.3, 0.44])
    status, res = _status(base - d, base, kind="equivalence", margin=0.5)
    assert res.ci_high < 0.5 and status == "holds"
    # one replicate further out: p still < 0.05 and the estimate inside, the interval is not
    d[-1] = 0.9
    status, res = _status(base - d, base, kind="equivalence", margin=0.5)
    assert res.p_value < 0.05 and abs(res.estimate) < 0.5 and res.ci_high > 0.5
    assert status == "inconclusive"
