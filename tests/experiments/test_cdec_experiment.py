"""The cdec reproduction on the declarative harness: the smoke preset end to end (files, claims,
equal training compute, budgets never overrun), the Fashion-MNIST branch on a stand-in, the
missing-data error, the arms' depths and budgets, and enough replicates in every preset."""

import numpy as np
import pandas as pd
import pytest

from beyondgd.data import DataNotFoundError
from beyondgd.experiments import get, run_experiment
from beyondgd.experiments.cdec import METHODS, budget_of, depth_of
from beyondgd.experiments.harness.stats import replicates_needed


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("cdec")
    result = run_experiment(get("cdec"), preset="smoke", workers=1, out_dir=out, progress=False)
    return result, pd.read_csv(result.out_dir / "results.csv")


def test_smoke_writes_the_report_and_its_figures(smoke):
    result, table = smoke
    for name in ("report.md", "curve-test_mse.png", "curve-slice1d.png", "landscape-2d-0.png"):
        assert (result.out_dir / name).exists(), name
    assert {f.filename for f in result.report.figures} >= {"metric-test_mse.png"}
    assert any(
        t.title.startswith("Sharpness and its seed-to-seed spread") for t in result.report.tables
    )
    assert table["test_mse"].notna().all() and table["sharpness_mse"].notna().all()
    assert result.metrics["wall_time_s"]["units_total"] < 30
    # the 2-D slice only where the figure draws it (the first seed)
    curves = pd.read_csv(result.out_dir / "curves.csv")
    assert set(curves[curves["curve"] == "slice2d"]["seed"]) == {0}
    assert set(curves[curves["curve"] == "slice1d"]["seed"]) == {0, 1}


def test_every_arm_gets_the_same_training_budget_and_never_overruns_it(smoke):
    result, table = smoke
    config = result.metrics["config"]
    K, L = config["stages"], config["layers"][0]
    assert (table["train_compute"] <= table["train_compute_charged"]).all()
    budget = config["epochs"] * config["n_train"] * K * L
    assert (table["train_compute_charged"] == budget).all()
    depth = table.set_index("method")["inference_layers"].groupby(level=0).first()
    for name in ("continuation-mse", "cdec", "cdec-n1", "deconet-kl", "deconet-kl-perlayer"):
        assert depth[name] == K * L
    assert depth["deconet-mse"] == depth["deconet-logcosh"] == L
    epochs = table.groupby("method")["max_epochs"].first()
    assert epochs["deconet-mse"] == K * epochs["cdec"] == K * config["epochs"]
    for v in result.metrics["report"]["verdicts"]:
        if v["cost_measure"] is not None and v["cost_ratio"] is not None:
            assert v["cost_ratio"] == pytest.approx(1.0), v["claim"]


def test_each_seed_draws_its_own_instance(smoke):
    _, table = smoke
    # a seed draws A, the noise, the initial W and the data order: results differ across seeds
    by = table.set_index(["method", "seed"])["test_mse"]
    for name in ("cdec", "deconet-mse", "deconet-kl"):
        assert by[(name, 0)] != by[(name, 1)]


def test_claims_name_the_method_first_and_use_columns_of_the_results(smoke):
    result, table = smoke
    repro = get("cdec")
    specs = {m.column: m for m in repro.metrics}
    for preset in repro.presets:
        config = repro.config(preset)
        claims = repro.claims(config)
        assert 1 <= sum(c.primary for c in claims) <= 4
        for c in claims:
            labels = [config["methods"][n].get("label", n) for n in (c.method, c.baseline)]
            assert 0 <= c.sentence.find(labels[0]) < c.sentence.rfind(labels[1]), c.sentence
            assert specs[c.metric].lower_is_better == c.lower_is_better
    for c in repro.claims(result.metrics["config"]):
        cols = [c.metric, *c.replicate, *c.group_by, *c.where] + ([c.cost] if c.cost else [])
        assert set(cols) <= set(table.columns), c.sentence


@pytest.mark.parametrize("preset", ["quick", "full", "paper"])
def test_presets_give_every_primary_claim_enough_replicates(preset):
    repro = get("cdec")
    config = repro.config(preset)
    n_primary = sum(c.primary for c in repro.claims(config)) * len(repro.problems(config))
    assert config["seeds"] >= replicates_needed(n_primary)
    if preset != "quick":
        assert config["seeds"] >= 8
    assert isinstance(config["methods"], dict) and isinstance(config["seeds"], int)
    assert "pilot" not in repro.summary


def test_depths_budgets_and_step_decay_of_the_arms():
    K, L = 3, 5
    assert depth_of(METHODS["cdec"], K, L) == (K, L)
    assert depth_of(METHODS["deconet-kl"], K, L) == (1, K * L)
    assert depth_of(METHODS["deconet-mse"], K, L) == (1, L)
    with pytest.raises(ValueError, match="continuation arm"):
        depth_of({**METHODS["cdec"], "depth": "KL"}, K, L)
    with pytest.raises(ValueError, match="decay"):
        depth_of({**METHODS["cdec"], "decay": "fast"}, K, L)
    config = {"n_train": 100, "epochs": 4, "stages": K, "patience": 2, "equal_compute": True}
    assert budget_of(config, L, K * L) == (4 * 100 * K * L, 4, 2)
    assert budget_of(config, L, L) == (4 * 100 * K * L, 4 * K, 2 * K)
    # the paper's protocol: equal epochs, so the L-layer arm gets 1/K of the compute
    paper = {**config, "equal_compute": False}
    assert budget_of(paper, L, L) == (4 * 100 * L, 4, 2)
    # the stretched K·L arm decays over its K·L layers as much as DECONET over L
    a = 0.5
    assert np.isclose((a ** (L / (K * L))) ** (K * L), a**L)


def test_unequal_epochs_are_reported_as_not_at_equal_cost(tmp_path):
    methods = {k: METHODS[k] for k in ("deconet-mse", "cdec")}
    result = run_experiment(
        get("cdec"),
        preset="smoke",
        out_dir=tmp_path,
        progress=False,
        config_overrides={"methods": methods},
        settings={"equal_compute": False, "seeds": 1},
    )
    verdicts = result.metrics["report"]["verdicts"]
    gap = [v for v in verdicts if v["metric"] == "gap_mse"]
    assert gap and all(v["status"] == "not at equal cost" for v in gap)


def test_fashion_mnist_branch_runs_on_a_stand_in(tmp_path, write_fashion_mnist):
    # the quick preset's dataset (2x2-pooled to 14 x 14), without the Debian package
    rng = np.random.default_rng(0)
    folder = write_fashion_mnist(
        tmp_path / "fmnist",
        train=(rng.integers(0, 256, (96, 28, 28)), rng.integers(0, 10, 96)),
        test=(rng.integers(0, 256, (32, 28, 28)), rng.integers(0, 10, 32)),
    )
    result = run_experiment(
        get("cdec"),
        preset="smoke",
        out_dir=tmp_path / "out",
        progress=False,
        config_overrides={"methods": {k: METHODS[k] for k in ("deconet-mse", "cdec")}},
        settings={"datasets": ["fashion-mnist"], "fashion_mnist_path": str(folder), "seeds": 1},
    )
    table = pd.read_csv(result.out_dir / "results.csv")
    assert set(table["dataset"]) == {"fashion-mnist"} and (table["n"] == 14 * 14).all()
    assert table["test_mse"].notna().all()


def test_missing_data_path_names_the_argument_and_the_fix(tmp_path):
    with pytest.raises(
        DataNotFoundError, match="(?s)apt-get install dataset-fashion-mnist.*fashion_mnist_path"
    ):
        run_experiment(
            get("cdec"),
            preset="smoke",
            out_dir=tmp_path,
            progress=False,
            settings={"datasets": ["fashion-mnist"], "fashion_mnist_path": str(tmp_path / "no")},
        )
