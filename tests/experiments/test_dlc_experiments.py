"""dlc-toy and dlc-classify: smoke presets end to end, the energy-evaluation budget (counted, never
exceeded, equal between arms), validation data kept apart from test data, and the fixed baseline
of the toy (trained by unrolling the solver, it must improve on the untrained energy)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from beyondgd.experiments import get, run_experiment
from beyondgd.experiments.dlc.classify import DLCClassify, digits_indices
from beyondgd.experiments.dlc.common import hinge_evaluations
from beyondgd.experiments.dlc.toy import (
    DLCToy,
    budget_of,
    make_model,
    run_arm,
    step_evaluations,
    train_energy,
)
from beyondgd.experiments.harness.stats import STATUSES, replicates_needed

NAMES = ("dlc-toy", "dlc-classify")


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    out = {}
    for name in NAMES:
        root = tmp_path_factory.mktemp(name)
        out[name] = run_experiment(
            get(name), preset="smoke", workers=1, out_dir=root, progress=False
        )
    return out


@pytest.mark.parametrize("name", NAMES)
def test_smoke_preset_writes_a_report_with_verdicts(name, smoke_runs):
    run = smoke_runs[name]
    assert (run.out_dir / "report.md").exists()
    metrics = json.loads((run.out_dir / "metrics.json").read_text())
    verdicts = metrics["report"]["verdicts"]
    assert verdicts and all(v["status"] in STATUSES for v in verdicts)
    assert any(v["primary"] for v in verdicts)
    assert "Learning rates chosen on validation data" in (run.out_dir / "report.md").read_text()
    assert set(metrics["tuned"]) == {
        f"{p}/{m}"
        for p in [pr.name for pr in get(name).problems(metrics["config"])]
        for m, spec in metrics["config"]["methods"].items()
        if spec.get("loss") != "none"
    }


def test_toy_smoke_has_the_landscape_figure_from_the_first_seed(smoke_runs):
    run = smoke_runs["dlc-toy"]
    table = pd.read_csv(run.out_dir / "results.csv")
    payload = table[table["landscape"].notna()]
    assert set(payload["seed"]) == {0}
    assert set(payload["method"]) == set(run.metrics["config"]["methods"])
    grid = run.metrics["config"]["landscape"]["grid"]
    data = json.loads(payload["landscape"].iloc[0])
    assert np.asarray(data["log10_energy"]).shape == (2, grid, grid)
    assert (run.out_dir / "landscapes.png").exists()


def test_toy_never_exceeds_the_budget_and_charges_it(smoke_runs):
    run = smoke_runs["dlc-toy"]
    config = run.metrics["config"]
    table = pd.read_csv(run.out_dir / "results.csv")
    trained = table[table["method"] != "untrained"]
    for _, row in trained.iterrows():
        spec = config["methods"][row["method"]]
        budget = budget_of(spec, config)
        assert budget == config["budget_evals"] * spec.get("budget_scale", 1)
        assert row["train_evals"] <= budget and row["train_evals_charged"] == budget
        # each arm stopped because its next step did not fit
        per_step = step_evaluations(spec, config) * config["batch"]
        assert row["train_evals"] == row["train_steps"] * per_step
        assert budget - row["train_evals"] < per_step
    untrained = table[table["method"] == "untrained"]
    assert (untrained["train_evals_charged"] == 0).all()


def test_toy_step_costs_match_the_counted_energy_evaluations():
    config = DLCToy().config("smoke")
    h = config["hinge"]
    assert hinge_evaluations(h) == 1 + 2 * h["n_samples"]
    assert hinge_evaluations({**h, "terms": ["H2"]}) == 1 + h["n_samples"]
    methods = config["methods"]
    k = config["n_unroll"]
    assert step_evaluations(methods["baseline"], config) == 2 * k
    assert step_evaluations(methods["dlc"], config) == 2 * k + hinge_evaluations(h)
    assert step_evaluations(methods["prise"], config) == hinge_evaluations(h)
    for name in ("baseline", "dlc", "prise"):
        per_step = step_evaluations(methods[name], config) * config["batch"]
        cfg = dict(config, budget_evals=3 * per_step + per_step // 2)
        model = make_model(cfg, ("test", 0))
        stats = train_energy(model, methods[name], cfg, 1e-3, ("test", 0))
        assert stats["train_steps"] == 3
        assert stats["train_evals"] == 3 * per_step  # counted by the energy itself
        assert stats["train_evals_charged"] == cfg["budget_evals"]


def test_toy_arms_start_from_the_same_network_and_validation_differs_from_test():
    config = DLCToy().config("smoke")
    a, b = make_model(config, ("test", 1)), make_model(config, ("test", 1))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    v = make_model(config, ("validation", 1))
    assert not torch.equal(next(a.parameters()), next(v.parameters()))


def test_toy_baseline_trained_by_unrolling_beats_the_untrained_energy():
    """The fixed baseline recipe (4 unrolled steps, gradient clipping) must improve on the
    untrained energy; the old recipe (8 unclipped steps) made it worse."""
    config = DLCToy().config("quick")
    config.update(budget_evals=64 * 8 * 300, test_points=100)
    methods = config["methods"]
    _, untrained = run_arm(methods["untrained"], config, None, ("test", 0))
    _, baseline = run_arm(methods["baseline"], config, 3e-3, ("test", 0))
    assert baseline["success_rate"] > untrained["success_rate"] + 0.1


def test_classify_validation_pool_never_meets_a_test_split():
    config = DLCClassify().config("quick")
    labels = np.repeat(np.arange(10), 180)[:1797]
    _, pool = digits_indices(labels, config, ("validation", 0))
    _, pool_again = digits_indices(labels, config, ("validation", 1))
    np.testing.assert_array_equal(np.sort(pool), np.sort(pool_again))
    for seed in range(5):
        train, test = digits_indices(labels, config, ("test", seed))
        assert not set(pool) & (set(test) | set(train))
        assert not set(train) & set(test)
        assert len(train) + len(test) + len(pool) == len(labels)


def test_classify_arms_make_equal_network_passes(smoke_runs):
    table = pd.read_csv(smoke_runs["dlc-classify"].out_dir / "results.csv")
    passes = table.pivot(index="seed", columns="method", values="train_passes")
    assert (passes["dlc"] == passes["baseline"]).all()
    label = table.set_index("method")["label_energy_evals"]
    assert (label.loc["baseline"] == 0).all() and (label.loc["dlc"] > 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_quick_and_full_have_enough_replicates(name):
    repro = get(name)
    for preset, least in (("quick", None), ("full", 8)):
        config = repro.config(preset)
        claims = repro.claims(config)
        need = replicates_needed(sum(c.primary for c in claims))
        assert config["seeds"] >= max(need, least or 0)
        secondary = sum(not c.primary for c in claims)
        if secondary:
            assert config["seeds"] >= replicates_needed(secondary)


def test_tuning_table_marks_grid_edges_and_ties():
    from types import SimpleNamespace

    from beyondgd.experiments.dlc.common import tuning_table

    grid = [3e-4, 1e-3, 3e-3]
    tuned = {
        ("p", "edge"): {"params": {"lr": 3e-3}, "lrs": grid, "scores": [0.1, 0.2, 0.3]},
        ("p", "inside"): {"params": {"lr": 1e-3}, "lrs": grid, "scores": [0.1, 0.3, 0.2]},
        ("p", "tie"): {"params": {"lr": 3e-4}, "lrs": grid, "scores": [0.3, 0.1, 0.3]},
    }
    table = tuning_table(SimpleNamespace(tuned=tuned, config={}), "score")
    chosen = {row[1]: row[2] for row in table.rows}
    assert chosen["edge"] == "0.003 (edge of the grid)"
    assert chosen["inside"] == "0.001 (inside the grid)"
    assert chosen["tie"] == "0.0003 (edge of the grid, tied with 0.003)"
