"""dlc-registration on the harness: the smoke preset end to end (files, verdicts, determinism),
the training budget in energy evaluations, the tuning units, the bins and the CGAL fallback."""

import json

import pandas as pd
import pytest

from beyondgd.experiments import get, run_experiment
from beyondgd.experiments.dlc import registration as reg
from beyondgd.experiments.harness.stats import STATUSES, replicates_needed

NAME = "dlc-registration"


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    return [
        run_experiment(
            get(NAME),
            preset="smoke",
            workers=1,
            out_dir=tmp_path_factory.mktemp(tag),
            progress=False,
        )
        for tag in ("a", "b")
    ]


def _table(run) -> pd.DataFrame:
    return pd.read_csv(run.out_dir / "results.csv")


def test_smoke_runs_end_to_end_and_is_deterministic(smoke_runs):
    first, second = smoke_runs
    a, b = (_table(r).drop(columns="wall_time_s") for r in smoke_runs)
    pd.testing.assert_frame_equal(a, b)
    curves = [pd.read_csv(r.out_dir / "curves.csv") for r in smoke_runs]
    pd.testing.assert_frame_equal(curves[0], curves[1])
    assert first.metrics["tuned"] == second.metrics["tuned"]
    metrics = json.loads((first.out_dir / "metrics.json").read_text())
    verdicts = metrics["report"]["verdicts"]
    assert verdicts and all(v["status"] in STATUSES for v in verdicts)
    assert sum(v["primary"] for v in verdicts) == 2
    for fig in ("landscape_slices.png", "success_by_angle.png", "verdicts.png"):
        assert (first.out_dir / fig).exists()
    text = (first.out_dir / "report.md").read_text()
    for needle in ("0-45", "45-90", "90-180", "err < 1 deg", "err < 10 deg", "chosen lr"):
        assert needle in text


def test_one_row_per_bin_and_method_with_every_arm_present(smoke_runs):
    table = _table(smoke_runs[0])
    config = get(NAME).config("smoke")
    bins = [reg.bin_name(*b) for b in config["bins"]]
    for (method, seed), rows in table.groupby(["method", "seed"]):
        assert list(rows["bin"]) == bins, (method, seed)
    assert set(table["method"]) == set(config["methods"])
    learned = table[table["method"] != "icp"]
    assert learned["star_convex_fraction"].between(0, 1).all()
    assert table[table["method"] == "icp"]["star_convex_fraction"].isna().all()
    for col in ("success_1", "success_5", "success_10", "refined_success_5"):
        assert table[col].between(0, 1).all()


def test_training_never_exceeds_the_budget_and_is_charged_the_budget(smoke_runs):
    table = _table(smoke_runs[0])
    budget = get(NAME).config("smoke")["budget_evals"]
    trained = table[table["method"].isin(["baseline", "dlc", "prise"])]
    assert (trained["train_evals"] <= budget).all() and (trained["train_evals"] > 0).all()
    assert (trained["train_evals_charged"] == budget).all()
    # the arms differ in cost per step, so in the number of steps they get
    steps = trained.groupby("method")["train_steps"].first()
    assert steps["dlc"] < steps["baseline"] <= steps["prise"]
    untrained = table[table["method"].isin(["untrained", "icp"])]
    assert (untrained["train_evals_charged"] == 0).all()


def test_learning_rates_are_tuned_on_validation_replicates_and_used(smoke_runs):
    run = smoke_runs[0]
    config = run.metrics["config"]
    table = _table(run)
    for method in ("baseline", "dlc", "prise"):
        tuned = run.metrics["tuned"][f"rotation/{method}"]
        grid = config["methods"][method]["lr_grid"]
        assert tuned["lrs"] == grid and len(tuned["scores"]) == len(grid)
        assert tuned["params"]["lr"] in grid
        assert (table[table["method"] == method]["lr"] == tuned["params"]["lr"]).all()
    assert "rotation/untrained" not in run.metrics["tuned"]


def test_landscape_slices_are_curves_of_the_learned_arms(smoke_runs):
    curves = pd.read_csv(smoke_runs[0].out_dir / "curves.csv")
    config = get(NAME).config("smoke")
    assert set(curves["method"]) == {"untrained", "baseline", "dlc", "prise"}
    one = curves[(curves["method"] == "baseline") & (curves["seed"] == 0)]
    assert one["curve"].nunique() == 2 * config["slice_pairs"]
    assert (one.groupby("curve").size() == config["slice_points"]).all()
    assert one["x"].min() == -180 and one["x"].max() == 180


def test_presets_give_the_primary_claims_enough_seeds():
    repro = get(NAME)
    for preset, least in (("quick", None), ("full", 8)):
        config = repro.config(preset)
        primary = [c for c in repro.claims(config) if c.primary]
        assert [c.method for c in primary] == ["dlc", "prise"]
        need = least or replicates_needed(len(primary))
        assert config["seeds"] >= need, preset
        # the 90-180 degree bin is part of the primary claims and has its own verdicts
        assert all(not c.where for c in primary)
        per_bin = [c for c in repro.claims(config) if c.group_by == ("bin",)]
        assert {c.method for c in per_bin} >= {"dlc", "prise"}


def test_falls_back_to_procedural_test_shapes_without_cgal(tmp_path, monkeypatch):
    monkeypatch.setenv("BEYONDGD_CGAL_DATA", str(tmp_path / "no-cgal-here"))
    methods = get(NAME).config("smoke")["methods"]
    run = run_experiment(
        get(NAME),
        preset="smoke",
        out_dir=tmp_path,
        progress=False,
        config_overrides={"seeds": 1, "methods": {"baseline": methods["baseline"]}},
    )
    text = (run.out_dir / "report.md").read_text()
    assert "held-out procedural shapes" in text and "apt-get install libcgal-demo" in text
