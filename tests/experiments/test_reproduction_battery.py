"""One battery over every declarative reproduction.

For each declared claim of the quick and full presets, synthetic results where the method
clearly wins must give ``holds``, where it clearly loses ``does not hold``, where it is noise
``inconclusive``, and where both arms are exactly equal ``does not hold`` for "better" and
``holds`` for "no worse" / "the same". The synthetic data are built from what the claim does
NOT declare itself (which arm the sentence names first, the metric's direction in the
reproduction's ``metrics``), so a claim whose method and baseline are swapped, or whose
direction is flipped, fails here. Primary claims are checked on each preset's own replicates
under Holm's correction over all primary claims (so quick can reach a verdict); each smoke
preset runs end to end, twice, with the same numbers; the presets' expected times fit the
budgets the issues set.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from beyondgd.experiments import get, names, run_experiment
from beyondgd.experiments.harness import Reproduction, evaluate_claims

REPRODUCTIONS = [n for n in names() if isinstance(get(n), Reproduction)]


def _labels(config, method: str) -> list[str]:
    params = config["methods"].get(method, {})
    return [s for s in {method, str(params.get("label", method))} if s]


def _first_position(sentence: str, words: list[str]) -> int:
    found = [sentence.find(w) for w in words if sentence.find(w) >= 0]
    return min(found) if found else -1


def _metric_specs(repro):
    return {m.column: m for m in repro.metrics}


def _synthetic(repro, config, claim, scenario: str, seeds: int | None = None) -> pd.DataFrame:
    """One row per unit of ``config``; the claim's arms differ by the scenario."""
    spec = _metric_specs(repro)[claim.metric]
    lower = spec.lower_is_better
    n_seeds = seeds if seeds is not None else len(repro.seeds(config))
    methods = {m.name: m for m in repro.methods(config)}
    # the arm the sentence names first is the one the claim says is better
    first_method = _first_position(claim.sentence, _labels(config, claim.method))
    first_baseline = _first_position(claim.sentence, _labels(config, claim.baseline))
    winner = claim.method if first_method <= first_baseline else claim.baseline
    rows = []
    counter = itertools.count()
    for p_index, problem in enumerate(repro.problems(config)):
        for seed in range(n_seeds):
            level = 1.0 + 0.37 * seed + 0.11 * p_index  # varies by replicate, never tied
            i = next(counter)
            sign = 1.0 if i % 2 == 0 else -1.0
            margin = claim.margin
            if scenario == "win":
                gain = 0.001 * (i % 7) + (0.0 if claim.kind == "equivalence" else 1.0 + 2 * margin)
            elif scenario == "lose":
                gain = -(1.0 + 5 * margin) - 0.001 * (i % 7)
            elif scenario == "tie":  # both arms exactly equal on every replicate
                gain = 0.0
            else:  # noise around the claim's boundary
                centre = -margin if claim.kind == "noninferiority" else 0.0
                gain = centre + sign * (1.0 + 10 * margin) * (1 + (i // 2) % 5)
            for name, method in methods.items():
                if not repro.applies(problem, method, config):
                    continue
                good = gain if name == winner else 0.0
                if claim.scale == "log10":
                    value = 10.0 ** (level - good if lower else level + good)
                else:
                    value = level - good if lower else level + good
                row = {
                    "problem": problem.name,
                    "method": name,
                    "seed": seed,
                    **{
                        k: v
                        for k, v in problem.params.items()
                        if isinstance(v, (bool, int, float, str))
                    },
                    claim.metric: value,
                }
                if claim.cost is not None:
                    row[claim.cost] = 1.0
                rows.append(row)
    table = pd.DataFrame(rows)
    for col, want in claim.where.items():
        if col not in table.columns:
            table[col] = want[0] if isinstance(want, (list, tuple)) else want
    for col in claim.replicate:  # a row-level replicate column (an image): one per seed
        if col not in table.columns:
            table[col] = table["seed"]
    for col in claim.group_by:
        if col not in table.columns:
            table[col] = "g"
    return table


@pytest.fixture(scope="module", params=REPRODUCTIONS)
def repro(request):
    return get(request.param)


def test_every_claim_names_its_arms_in_order_and_uses_a_declared_metric(repro):
    specs = _metric_specs(repro)
    for preset in repro.presets:
        config = repro.config(preset)
        claims = repro.claims(config)
        assert any(c.primary for c in claims), f"{repro.name}/{preset}: no primary claim"
        for c in claims:
            assert c.method in config["methods"] and c.baseline in config["methods"], c.sentence
            m = _first_position(c.sentence, _labels(config, c.method))
            b = _first_position(c.sentence, _labels(config, c.baseline))
            assert m >= 0 and b >= 0, f"{c.sentence!r} must name {c.method} and {c.baseline}"
            assert m < b, f"{c.sentence!r} names the baseline before the method"
            assert c.metric in specs, f"{c.metric!r} has no MetricSpec in {repro.name}"
            assert specs[c.metric].lower_is_better == c.lower_is_better, (
                f"{c.sentence!r}: direction differs from the MetricSpec of {c.metric!r}"
            )


# An exact tie refutes "better" (the interval is [0, 0]) and supports "no worse" / "the same".
TIE_STATUS = {"superiority": "does not hold", "noninferiority": "holds", "equivalence": "holds"}
SCENARIOS = [
    ("win", "holds"),
    ("lose", "does not hold"),
    ("noise", "inconclusive"),
    ("tie", TIE_STATUS),
]


def _expected(status, claim) -> str:
    return status[claim.kind] if isinstance(status, dict) else status


@pytest.mark.parametrize("preset", ["quick", "full"])
@pytest.mark.parametrize("scenario, status", SCENARIOS)
def test_primary_claims_reach_their_verdict_on_the_presets_replicates(
    repro, preset, scenario, status
):
    # quick: what `make run` reports; full: the preset whose tables the closing notes post
    if preset not in repro.presets:
        pytest.skip(f"{repro.name} has no {preset} preset")
    config = repro.config(preset)
    primary = [c for c in repro.claims(config) if c.primary]
    for claim in primary:
        table = _synthetic(repro, config, claim, scenario)
        # Holm over all primary claims, in the worst case where all are equally strong
        verdicts = evaluate_claims(table, [claim] * len(primary))
        assert verdicts, f"{claim.sentence!r}: no pairs in the {preset} config"
        for v in verdicts:
            assert v["status"] == _expected(status, claim), (claim.sentence, scenario, v)


@pytest.mark.parametrize("preset", ["quick", "full"])
@pytest.mark.parametrize("scenario, status", SCENARIOS)
def test_secondary_claims_say_the_right_thing_with_enough_replicates(
    repro, preset, scenario, status
):
    if preset not in repro.presets:
        pytest.skip(f"{repro.name} has no {preset} preset")
    config = repro.config(preset)
    for claim in [c for c in repro.claims(config) if not c.primary]:
        table = _synthetic(repro, config, claim, scenario, seeds=16)
        for v in evaluate_claims(table, [claim]):
            assert v["status"] == _expected(status, claim), (claim.sentence, scenario, v)


def test_full_presets_fit_two_hours_and_quick_fits_make_run():
    # The issues size `full` to run under 2 hours on 2 cores (--workers 2) and `make run`
    # (every quick preset) under 20 minutes; `beyondgd list` prints these expectations.
    quick_total = 0.0
    for name in REPRODUCTIONS:
        expected = get(name).expected_seconds
        if "full" in get(name).presets:
            assert 0 < expected["full"] <= 2 * 3600, (name, expected["full"])
        quick_total += expected["quick"]
    assert quick_total <= 20 * 60, quick_total


def test_smoke_preset_runs_end_to_end_and_is_deterministic(repro, tmp_path):
    first = run_experiment(repro, preset="smoke", out_dir=tmp_path / "a", workers=1, progress=False)
    second = run_experiment(
        repro, preset="smoke", out_dir=tmp_path / "b", workers=1, progress=False
    )
    a = pd.read_csv(first.out_dir / "results.csv").drop(columns="wall_time_s")
    b = pd.read_csv(second.out_dir / "results.csv").drop(columns="wall_time_s")
    pd.testing.assert_frame_equal(a, b)
    assert not a.empty
    for claim in repro.claims(first.metrics["config"]):
        for col in (
            claim.metric,
            *claim.replicate,
            *claim.group_by,
            *claim.where,
            *([claim.cost] if claim.cost else []),
        ):
            assert col in a.columns, f"{claim.sentence!r}: column {col!r} not in results.csv"
    va = [(v["claim"], v["status"]) for v in first.metrics["report"]["verdicts"]]
    vb = [(v["claim"], v["status"]) for v in second.metrics["report"]["verdicts"]]
    assert va == vb and va
    page = (first.out_dir / "report.html").read_text()
    for fig in first.report.figures:
        assert (first.out_dir / fig.filename).exists() and f"src='{fig.filename}'" in page
    assert "`" not in page  # Markdown rendered, never raw backticks
    json.loads((first.out_dir / "metrics.json").read_text())
    assert np.isfinite(first.metrics["wall_time_s"]["units_total"])
