"""The fuse-* reproductions: smoke presets end to end (files, verdicts, determinism), budget
enforcement (no run may spend more than its budget) and the shared helpers."""

import json
import math

import pandas as pd
import pytest
import torch

import beyondgd.data as bdata
from beyondgd.experiments import get, run_experiment
from beyondgd.experiments.fuse.classify import mlp, train_classifier
from beyondgd.experiments.fuse.common import (
    BudgetedRun,
    StepCap,
    build_optimizer,
    build_switch,
    cost_grid,
    lbfgs_step_bound,
    resample,
    run_full_batch,
)
from beyondgd.experiments.fuse.pinn import PoissonPINN, pinn_mlp, value_and_second_derivative
from beyondgd.experiments.harness.stats import STATUSES, replicates_needed
from beyondgd.optim import FUSE, AfterEpochs

NAMES = ("fuse-testfns", "fuse-pinn", "fuse-classify")


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    out = {}
    for name in NAMES:
        runs = []
        for tag in ("a", "b"):
            root = tmp_path_factory.mktemp(f"{name}-{tag}")
            runs.append(
                run_experiment(get(name), preset="smoke", workers=1, out_dir=root, progress=False)
            )
        out[name] = runs
    return out


@pytest.mark.parametrize("name", NAMES)
def test_smoke_preset_runs_end_to_end_and_is_deterministic(name, smoke_runs):
    first, second = smoke_runs[name]
    tables = [
        pd.read_csv(r.out_dir / "results.csv").drop(columns="wall_time_s") for r in (first, second)
    ]
    pd.testing.assert_frame_equal(tables[0], tables[1])
    curves = [pd.read_csv(r.out_dir / "curves.csv") for r in (first, second)]
    pd.testing.assert_frame_equal(curves[0], curves[1])
    assert (first.out_dir / "report.md").exists()
    assert (first.out_dir / f"curve-{get(name).curves[0].name}.png").exists()
    metrics = json.loads((first.out_dir / "metrics.json").read_text())
    verdicts = metrics["report"]["verdicts"]
    assert verdicts and all(v["status"] in STATUSES for v in verdicts)
    assert any(v["primary"] for v in verdicts)
    assert tables[0]["stop"].isin(["budget", "converged", "target"]).all()


@pytest.mark.parametrize("name", NAMES)
def test_no_run_exceeds_its_budget_and_claims_charge_the_budget(name, smoke_runs):
    table = pd.read_csv(smoke_runs[name][0].out_dir / "results.csv")
    if name == "fuse-classify":
        spent, charged, budget = table["epochs"], table["epochs_charged"], table["budget_epochs"]
    else:
        budget = get(name).config("smoke")["budget"]
        spent, charged = table["evals"], table["evals_charged"]
    assert (spent <= budget + 1e-12).all()
    assert (charged == budget).all()


@pytest.mark.parametrize("name", NAMES)
def test_claims_name_the_method_first_and_use_existing_columns(name, smoke_runs):
    repro = get(name)
    config = repro.config("smoke")
    table = pd.read_csv(smoke_runs[name][0].out_dir / "results.csv")
    specs = {m.column: m for m in repro.metrics}
    labels = {n: p.get("label", n) for n, p in config["methods"].items()}
    full = repro.config("full")
    for claim in repro.claims(full):
        method = full["methods"][claim.method].get("label", claim.method)
        base = full["methods"][claim.baseline].get("label", claim.baseline)
        assert base in claim.sentence[claim.sentence.index(method) + len(method) :]
        assert specs[claim.metric].lower_is_better == claim.lower_is_better
    for claim in repro.claims(config):
        assert claim.method in labels and claim.baseline in labels
        cols = [claim.metric, *claim.replicate, *claim.group_by, *claim.where]
        cols += [claim.cost] if claim.cost else []
        assert set(cols) <= set(table.columns), claim.sentence


@pytest.mark.parametrize("name", NAMES)
def test_quick_and_full_presets_have_enough_replicates(name):
    repro = get(name)
    for preset, least in (("quick", None), ("full", 8)):
        config = repro.config(preset)
        primary = [c for c in repro.claims(config) if c.primary]
        assert 1 <= len(primary) <= 4
        groups = len(config["datasets"]) if name == "fuse-classify" else 1
        needed = replicates_needed(len(primary) * groups)
        per_replicate = len(config["functions"]) if name == "fuse-testfns" else 1
        assert config["seeds"] * per_replicate >= max(needed, least or 0)


# ---- budget enforcement --------------------------------------------------------------------


@pytest.mark.parametrize("lbfgs_lr", [1.0, 1e4])
def test_full_batch_lbfgs_never_spends_more_than_its_budget(lbfgs_lr):
    fn = bdata.test_functions()["rosenbrock"]
    spec = {"optimizer": "fuse", "lbfgs_lr": lbfgs_lr, "switch": {"rule": "after_epochs", "n": 0}}
    for budget in range(1, 45):
        x = fn.random_start(3).requires_grad_(True)
        run = run_full_batch(spec, [x], lambda x=x: fn(x), budget)
        assert run.evals <= budget, (budget, run.evals)
        assert run.evals_charged == budget
        assert run.stop in ("budget", "converged")


def test_step_cap_fits_each_lbfgs_step_into_what_is_left():
    x = torch.zeros(2, requires_grad=True)
    opt = FUSE([x], switch=AfterEpochs(0), max_iter=20, max_eval=4)
    cap = StepCap(opt)
    assert lbfgs_step_bound(opt) == 4 + 25
    assert cap.fit(10) and lbfgs_step_bound(opt) == 10
    assert cap.fit(100) and (opt.max_ls, opt.max_eval) == (25, 4)
    assert cap.fit(3) and lbfgs_step_bound(opt) == 3
    assert not cap.fit(1)
    one = FUSE([x], switch=AfterEpochs(0))
    assert StepCap(one).fit(2) and lbfgs_step_bound(one) == 2
    assert not StepCap(one).fit(1)
    strict = FUSE([x], switch=AfterEpochs(0), max_iter=20, max_eval=4, strict_max_eval=True)
    cap = StepCap(strict)
    assert lbfgs_step_bound(strict) == 5  # torch's budget: max_eval + 1 calls
    assert cap.fit(3) and lbfgs_step_bound(strict) == 3
    assert cap.fit(100) and strict.max_eval == 4
    assert not cap.fit(1)


def test_step_cap_counts_the_cached_start_of_full_batch_lbfgs_as_free():
    x = torch.tensor([3.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = FUSE([x], switch=AfterEpochs(0), reuse_last_eval=True)
    cap = StepCap(opt)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = (x**2).sum() + x[0] ** 4
        loss.backward()
        return loss

    assert not cap.fit(1)  # first step: the start must be evaluated
    assert cap.fit(2)
    opt.step(closure)
    assert cap.fit(1) and opt.max_ls == 0
    before = len(calls)
    opt.step(closure)
    assert len(calls) - before <= 1


@pytest.mark.parametrize(
    "spec",
    [
        {
            "optimizer": "fuse",
            "lbfgs_mode": "full",
            "lbfgs_lr": 1e3,
            "switch": {"rule": "after_epochs", "n": 0},
            "batch_size": 128,
        },
        {
            "optimizer": "fuse",
            "lr": 1e-3,
            "lbfgs_mode": "full",
            "switch": {"rule": "after_fraction", "fraction": 0.34},
            "batch_size": 100,
        },
        {
            "optimizer": "fuse",
            "lr": 1e-3,
            "lbfgs_mode": "minibatch",
            "max_iter": 20,
            "max_eval": 4,
            "switch": {"rule": "paper_code", "kind": "epoch"},
            "batch_size": 512,
        },
        {"optimizer": "adam", "lr": 1e-3, "batch_size": 100},
    ],
)
@pytest.mark.parametrize("budget", [2.5, 7.0])
def test_classifier_training_never_spends_more_than_its_budget(spec, budget):
    data = bdata.load_digits_split(seed=0)
    xtr, ytr, xte, yte = (t[:400] for t in data)
    model = mlp(xtr.shape[1], 16, 10, seed=0)
    out = train_classifier(spec, model, (xtr, ytr, xte, yte), budget, seed=1)
    assert out["epochs"] <= budget + 1e-12
    assert out["train_loss"] is not None
    assert out["epochs"] > budget - 2.0  # it did use the budget


# ---- helpers -------------------------------------------------------------------------------


def test_after_fraction_switches_after_that_share_of_the_budget():
    assert build_switch({"rule": "after_fraction", "fraction": 1 / 3}, 300).n == 100
    assert build_switch({"rule": "after_epochs", "n": 7}, 300).n == 7
    with pytest.raises(ValueError, match="unknown switch rule"):
        build_switch({"rule": "nope"}, 10)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(
            {"optimizer": "nope"}, [torch.zeros(1, requires_grad=True)], budget_epochs=1
        )


def test_fuse_pv_switches_after_a_third_of_a_full_batch_budget():
    fn = bdata.test_functions()["beale"]
    x = fn.random_start(0).requires_grad_(True)
    spec = {
        "optimizer": "fuse",
        "lr": 1e-3,
        "switch": {"rule": "after_fraction", "fraction": 1 / 3},
    }
    run = run_full_batch(spec, [x], lambda: fn(x), 90)
    assert run.switch_step == 30 and run.evals <= 90


def test_resample_cost_to_reach_and_curves():
    assert resample([1, 3, 5], [4.0, 2.0, 3.0], [0, 1, 2, 3, 6]) == [4.0, 4.0, 4.0, 2.0, 2.0]
    run = BudgetedRun(
        budget=10, evals=6, stop="converged", final_loss=0.5, trace=[(1, 4.0), (3, 2.0), (6, 0.5)]
    )
    assert run.evals_charged == 10
    assert run.cost_to_reach(2.5) == 3 and run.cost_to_reach(0.1) is None
    assert run.curve([0, 3, 10], offset=0.5, floor=1e-3) == [3.5, 1.5, 1e-3]
    assert cost_grid(10, 3) == [0.0, 5.0, 10.0]
    assert cost_grid(100, 3, log=True) == [1.0, 10.0, 100.0]


def test_pinn_second_derivative_matches_nested_autograd():
    net = pinn_mlp(8, seed=3)
    pinn = PoissonPINN(2, n_collocation=16)
    x = pinn.x.clone().requires_grad_(True)
    u = net(x)
    (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    (d2u,) = torch.autograd.grad(du.sum(), x)
    u2, d2 = value_and_second_derivative(net, pinn.x)
    torch.testing.assert_close(u2, u.detach())
    torch.testing.assert_close(d2, d2u)
    assert math.isfinite(float(pinn.loss(net).detach()))
    assert pinn_mlp(8, seed=3)[0].weight.equal(net[0].weight)
