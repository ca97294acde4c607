"""The adm reproduction on the declarative harness: the smoke preset end to end, honest
replication (a seed draws its own scenes, scribbles and initialisation; the pre-trained state
depends only on the problem and the seed), the validation choice of lambda (ties go to the
middle of the grid), the claims and presets, and the segment CLI on a user's folder."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from beyondgd.experiments import get, run_experiment
from beyondgd.experiments.adm import (
    decode_labels,
    encode_labels,
    make_splits,
    scribble_variant,
    select_lambda,
)
from beyondgd.experiments.harness import Problem, resolve_config
from beyondgd.experiments.harness.stats import replicates_needed

pytest.importorskip("gco")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("adm")
    result = run_experiment(get("adm"), preset="smoke", workers=1, out_dir=out, progress=False)
    return result, pd.read_csv(result.out_dir / "results.csv")


def test_smoke_runs_and_reports(smoke):
    result, _ = smoke
    run_dir = result.out_dir
    text = (run_dir / "report.md").read_text()
    for needle in ("Lambda sweep", "Validation-selected lambda", "Scribble conditions",
                   "Wall time of fine-tuning", "clicks", "discrete grid-CRF energy"):  # fmt: skip
        assert needle in text, needle
    # the cost paragraph says which solver ran and how many images it solved at once
    solver = "beyondgd's numba solver where numba is installed, else GCO: the same moves"
    n_jobs = result.metrics["config"]["n_jobs"]
    assert f"Alpha-expansion ({solver}) solves {n_jobs} image(s) at once per unit" in text
    for figure in ("lambda.png", "examples-texture.png", "curve-energy_ref.png", "verdicts.png"):
        assert (run_dir / figure).exists(), figure
    verdicts = result.metrics["report"]["verdicts"]
    assert sum(v["primary"] for v in verdicts) == 2
    assert all(v["n"] == 2 and v["cost_ratio"] == 1.0 for v in verdicts)
    assert result.metrics["wall_time_s"]["units_total"] < 60


def test_rows_one_per_lambda_with_one_validation_choice(smoke):
    result, table = smoke
    config = result.metrics["config"]
    for (_problem, method, seed), unit in table.groupby(["problem", "method", "seed"]):
        spec = config["methods"][method]
        lams = [0.0] if spec["kind"] == "pce" else spec["lams"]
        assert sorted(unit["lam"]) == sorted(lams)
        assert unit["selected"].sum() == 1
        chosen = unit[unit["selected"]].iloc[0]
        # the best_* columns repeat the selected row's numbers on every row of the unit
        assert (unit["best_lam"] == chosen["lam"]).all()
        assert np.allclose(unit["best_test_miou"], chosen["test_miou"])
        assert (unit["steps_charged"] == config["finetune_steps"]).all()
        assert unit["energy_ref"].nunique() == 1
        # the example payload: on the selected row of seed 0, full scribbles only
        has_example = unit["example"].notna()
        assert has_example.sum() == (seed == 0 and unit["scribbles"].iloc[0] == "full")
    # the energy at lam_ref of a GD / ADM unit is its lam_ref run's energy
    ref = table[(table["method"] == "adm") & (table["lam"] == config["lam_ref"])]
    assert np.allclose(ref["energy_ref"], ref["energy"])
    # the scribbled share is computed per condition: clicks label far fewer pixels
    share = table.groupby("scribbles")["scribbled_share"].median()
    assert 0 < share["clicks"] < share["full"] < 0.2


def test_timings_are_curves_not_columns(smoke):
    result, table = smoke
    curves = pd.read_csv(result.out_dir / "curves.csv")
    adm = curves[(curves["curve"] == "xstep_seconds_per_step") & (curves["method"] == "adm")]
    gd = curves[(curves["curve"] == "xstep_seconds_per_step") & (curves["method"] == "gd-grid")]
    assert (adm["y"] > 0).all() and (gd["y"] == 0).all()
    assert not [c for c in table.columns if "seconds" in c]


def test_select_lambda_breaks_ties_toward_the_middle():
    lams = [0.3, 1.0, 3.0, 10.0, 30.0]
    assert select_lambda(lams, [0.5] * 5, 0.0) == (2, 5)  # flat: the middle, not the smallest
    assert select_lambda(lams, [0.6, 0.6, 0.5, 0.4, 0.3], 0.0) == (1, 2)
    assert select_lambda(lams, [0.7, 0.6, 0.5, 0.4, 0.3], 0.0) == (0, 1)  # a clear best stays
    assert select_lambda(lams, [0.7, 0.699, 0.5, 0.4, 0.3], 0.002) == (1, 2)
    assert select_lambda(lams, [None, None, 0.1, None, 0.2], 0.0) == (4, 1)
    assert select_lambda(lams, [None] * 5, 0.0) == (None, 0)


def test_a_seed_draws_its_own_data_and_conditions_are_nested():
    config = resolve_config(get("adm"), "smoke")
    a_train, a_val, a_test = make_splits(config, "texture", "full", 0)
    b_train, _, _ = make_splits(config, "texture", "full", 1)
    again, _, _ = make_splits(config, "texture", "full", 0)
    assert not torch.equal(a_train.images, b_train.images)
    assert torch.equal(a_train.images, again.images)
    assert torch.equal(a_train.scribbles, again.scribbles)
    assert not torch.equal(a_val.images, a_test.images[: len(a_val)])
    clicks, _, _ = make_splits(config, "texture", "clicks", 0)
    short, _, _ = make_splits(config, "texture", "0.3", 0)
    ignore = a_train.ignore_index
    for sub, sup in ((clicks, short), (short, a_train)):
        marked = sub.scribbles != ignore
        assert marked.sum() < (sup.scribbles != ignore).sum()
        assert torch.equal(sub.scribbles[marked], sup.scribbles[marked])
    with pytest.raises(ValueError, match="scribble conditions"):
        scribble_variant("long")


def test_pretrained_state_depends_only_on_problem_and_seed():
    config = resolve_config(get("adm"), "smoke")
    problem = Problem("texture", {"dataset": "texture", "scribbles": "full"})
    states = []
    for global_seed in (1, 2):  # another worker, another global RNG state
        torch.manual_seed(global_seed)
        repro = get("adm")
        train = repro._splits(config, problem, 0)[0]
        states.append(repro._pretrained_state(config, problem, 0, train))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_claims_presets_and_replicates():
    repro = get("adm")
    assert "pilot" not in repro.summary
    assert set(re.findall(r"[\d.]*\d", repro.summary)) == {"2019"}  # the citation only
    assert isinstance(repro.base_config["methods"], dict)
    for preset in ("quick", "full"):
        config = repro.config(preset)
        claims = repro.claims(config)
        primary = [c for c in claims if c.primary]
        assert [c.metric for c in primary] == ["energy_ref", "best_test_miou"]
        n_primary = len(primary) * len(config["datasets"])  # one verdict per dataset
        assert config["seeds"] >= replicates_needed(n_primary)
        assert all(c.cost == "steps_charged" for c in claims)
    quick = repro.config("quick")
    assert quick["datasets"] == ["texture"] and not quick["sweep_datasets"]
    n_secondary = sum(not c.primary for c in repro.claims(quick))
    assert quick["seeds"] >= replicates_needed(n_secondary)  # exploratory verdicts reachable
    full = repro.config("full")
    assert full["seeds"] >= 8
    # the sweep runs every lambda of the grids, the smallest included, and the clicks
    assert "clicks" in full["sweep_scribbles"]
    assert {p.params["scribbles"] for p in repro.problems(full)} >= {"full", "clicks", "0.3"}


def test_prepare_rejects_a_reference_lambda_outside_a_grid():
    repro = get("adm")
    config = resolve_config(repro, "smoke", settings={"lam_ref": 3.0})
    with pytest.raises(ValueError, match="lam_ref"):
        repro.prepare(config)


def test_example_payload_round_trips():
    labels = torch.randint(0, 12, (5, 7))
    assert np.array_equal(decode_labels(encode_labels(labels), (5, 7)), labels.numpy())
    assert encode_labels(torch.full((2, 2), 40)) is None
