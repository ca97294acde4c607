"""Claims on the tidy table: replicates, aggregation, grouping, failures, Holm, cost."""

import numpy as np
import pandas as pd
import pytest

from beyondgd.experiments.harness import Claim, evaluate_claims
from beyondgd.experiments.harness.results import evidence


def _table(n_seeds=8, trials=4, gap=1.0, cost_better=100.0, problems=("a",)):
    rows = []
    for p in problems:
        for s in range(n_seeds):
            for t in range(trials):
                level = 10.0 + s + 0.1 * t
                rows.append(
                    {
                        "problem": p,
                        "method": "base",
                        "seed": s,
                        "trial": t,
                        "loss": level,
                        "evals": 100.0,
                    }
                )
                rows.append(
                    {
                        "problem": p,
                        "method": "new",
                        "seed": s,
                        "trial": t,
                        "loss": level - gap - 0.01 * s,
                        "evals": cost_better,
                    }
                )
    return pd.DataFrame(rows)


CLAIM = Claim("new beats base", "loss", "new", "base", cost="evals")


def test_rows_of_one_seed_are_one_replicate():
    (v,) = evaluate_claims(_table(n_seeds=8, trials=50), [CLAIM])
    assert v["n"] == 8  # not 400 pseudo-replicates
    assert v["status"] == "holds"
    assert v["estimate"] == pytest.approx(1.035, abs=0.01)
    # every field the report and metrics.json promise
    for key in (
        "claim",
        "status",
        "n",
        "estimate",
        "ci_low",
        "ci_high",
        "p_value",
        "p_adjusted",
        "test",
        "primary",
        "cost_ratio",
    ):
        assert key in v


def test_pseudo_replicates_cannot_rescue_too_few_seeds():
    (v,) = evaluate_claims(_table(n_seeds=4, trials=100), [CLAIM])
    assert v["n"] == 4 and v["status"] == "too few replicates"
    assert "needs n >= 6" in evidence(v)


def test_cost_is_checked_per_claim():
    (v,) = evaluate_claims(_table(cost_better=121.0), [CLAIM])
    assert v["status"] == "not at equal cost" and v["cost_ratio"] == pytest.approx(1.21)


def test_group_by_gives_one_verdict_per_group_and_holm_counts_them():
    table = _table(problems=("a", "b", "c"))
    claim = Claim(
        "new beats base on {problem}", "loss", "new", "base", cost="evals", group_by=("problem",)
    )
    verdicts = evaluate_claims(table, [claim])
    assert [v["claim"] for v in verdicts] == [f"new beats base on {p}" for p in "abc"]
    assert [v["group"] for v in verdicts] == [{"problem": p} for p in "abc"]
    raw = [v["p_value"] for v in verdicts]
    assert [v["p_adjusted"] for v in verdicts] == pytest.approx([min(1, 3 * p) for p in raw])


def test_secondary_claims_are_corrected_apart_and_listed_after():
    table = _table()
    secondary = Claim(
        "base beats new (exploratory)", "loss", "base", "new", cost="evals", primary=False
    )
    verdicts = evaluate_claims(table, [secondary, CLAIM])
    assert [v["primary"] for v in verdicts] == [True, False]
    assert verdicts[0]["p_adjusted"] == verdicts[0]["p_value"]  # a family of one
    assert verdicts[1]["status"] == "does not hold"


def test_where_filters_rows_first():
    table = _table(problems=("a", "b"))
    table.loc[(table["problem"] == "b") & (table["method"] == "new"), "loss"] += 5.0
    only_a = Claim(
        "new beats base on a", "loss", "new", "base", cost="evals", where={"problem": "a"}
    )
    pooled = Claim(
        "new beats base", "loss", "new", "base", cost="evals", replicate=("problem", "seed")
    )
    va, vp = evaluate_claims(table, [only_a, pooled])
    assert va["status"] == "holds" and va["n"] == 8
    assert vp["n"] == 16 and vp["status"] != "holds"


def test_a_failed_run_ranks_last_and_is_counted():
    table = _table()
    table.loc[(table["method"] == "new") & (table["seed"] == 0) & (table["trial"] == 1), "loss"] = (
        np.nan
    )
    (v,) = evaluate_claims(table, [CLAIM])
    assert v["failed_runs"] == {"method": 1, "baseline": 0}
    assert v["wins"] == 7  # the failed replicate is a loss
    assert "failed runs 1 / 0" in evidence(v)


def test_higher_is_better_claims_flip_the_sign():
    table = _table()
    claim = Claim(
        "new beats base in accuracy", "loss", "new", "base", cost="evals", lower_is_better=False
    )
    (v,) = evaluate_claims(table, [claim])
    assert v["estimate"] < 0 and v["status"] == "does not hold"


def test_log10_scale_compares_ratios():
    rows = []
    for s in range(8):
        scale = 10.0 ** (-s)  # losses over eight orders of magnitude
        rows += [
            {"method": "base", "seed": s, "loss": scale, "evals": 1},
            {"method": "new", "seed": s, "loss": scale / 100 * (1 + 0.01 * s), "evals": 1},
        ]
    claim = Claim("new beats base", "loss", "new", "base", cost="evals", scale="log10")
    (v,) = evaluate_claims(pd.DataFrame(rows), [claim])
    assert v["estimate"] == pytest.approx(2.0, abs=0.02)  # two decades better
    assert v["status"] == "holds"


def test_an_unknown_column_names_the_claim():
    claim = Claim("new beats base", "no_such_metric", "new", "base", cost="evals")
    with pytest.raises(ValueError, match="no_such_metric"):
        evaluate_claims(_table(), [claim])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kind": "nope"}, "kind must be one of"),
        ({"kind": "noninferiority"}, "needs a margin > 0"),
        ({"aggregate": "max"}, "aggregate must be one of"),
        ({"scale": "ln"}, "scale must be one of"),
        ({"baseline": "new"}, "both 'new'"),
        ({"cost": None}, "cost column"),
        ({"replicate": ()}, "replicate must name"),
    ],
)
def test_bad_claims_are_refused(kwargs, match):
    args = {
        "sentence": "s",
        "metric": "loss",
        "method": "new",
        "baseline": "base",
        "cost": "evals",
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        Claim(**args)


def test_cost_note_beside_an_equal_cost_column_reaches_the_evidence():
    claim = Claim(
        "new beats base", "loss", "new", "base", cost="evals", cost_note="new's wall time is 2.9x"
    )
    (v,) = evaluate_claims(_table(n_seeds=8, trials=2), [claim])
    text = evidence(v)
    assert "cost ratio 1" in text and text.endswith("new's wall time is 2.9x")
