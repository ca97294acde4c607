"""The dlc-* reproductions end to end on tiny configurations, and the toy's central claim."""

import json

import pytest

from beyondgd.experiments import get, run_experiment
from beyondgd.experiments.base import VERDICTS
from beyondgd.experiments.dlc.toy import DLCToy, evaluate_toy, train_toy

TINY = {
    "dlc-toy": {"steps": 15, "test_points": 10, "n_unroll": 2, "test_steps": 10},
    "dlc-registration": {
        "steps": 2,
        "batch": 2,
        "n_points": 48,
        "hidden": [8, 16],
        "n_train_shapes": 3,
        "test_pairs_per_bin": 3,
        "diagnostic_pairs": 3,
        "slice_points": 9,
        "gn_iters": 2,
        "icp_iters": 3,
    },
    "dlc-classify": {"epochs": 1},
}


def _numbers(metrics):
    return {
        k: {kk: vv for kk, vv in r.items() if kk not in ("wall_time_s", "train_time_s")}
        for k, r in metrics["records"].items()
    }


@pytest.mark.parametrize("name", sorted(TINY))
def test_dlc_experiment_runs_and_is_deterministic(name, tmp_path):
    seeds = 1 if name == "dlc-registration" else 2
    r1 = run_experiment(
        get(name), seeds=seeds, out_dir=tmp_path / "a", progress=False,
        config_overrides=TINY[name],
    )  # fmt: skip
    r2 = run_experiment(
        get(name), seeds=seeds, out_dir=tmp_path / "b", progress=False,
        config_overrides=TINY[name],
    )  # fmt: skip
    assert _numbers(r1.metrics) == _numbers(r2.metrics)
    run_dir = tmp_path / "a" / name
    assert (run_dir / "report.md").exists()
    assert len(list(run_dir.glob("*.png"))) >= 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    verdicts = metrics["report"]["verdicts"]
    assert verdicts and all(v["status"] in VERDICTS for v in verdicts)
    if seeds == 1:  # a single seed can never make a paired test significant
        assert all(v["status"] != "holds" for v in verdicts)


def test_registration_report_has_bins_thresholds_and_slices(tmp_path):
    result = run_experiment(
        get("dlc-registration"), seeds=1, out_dir=tmp_path, progress=False,
        config_overrides=dict(TINY["dlc-registration"], arms=[
            {"name": "baseline", "loss": "baseline"},
            {"name": "prise-H2", "loss": "prise", "rho": 2.0, "terms": ["H2"]},
        ]),
    )  # fmt: skip
    text = (tmp_path / "dlc-registration" / "report.md").read_text()
    for needle in ("0-45", "45-90", "90-180", "err < 1 deg", "err < 10 deg", "prise-H2"):
        assert needle in text
    assert (tmp_path / "dlc-registration" / "landscape_slices.png").exists()
    rec = result.metrics["records"]["prise-H2/seed=0"]
    assert len(rec["slices"]) == 3 and len(rec["slices"][0][0]) == 9
    assert 0.0 <= rec["star_convex_fraction"] <= 1.0


def test_toy_dlc_raises_the_share_of_converged_gradient_descent_runs():
    config = DLCToy().config("quick")
    config.update(steps=200, test_points=60)
    baseline, _ = train_toy("baseline", config, seed=0)
    # The hinges with the energy at w* and no unrolled loss (the PRISE recipe, dlc.md). Hinges
    # added to the unrolled loss ("dlc" arm) do not reliably help: the full preset measured
    # 0.148 vs the baseline's 0.316 over 5 seeds, as the spec's pilot found for registration.
    prise, _ = train_toy("prise", config, seed=0)
    base = evaluate_toy(baseline, config, seed=0)
    ours = evaluate_toy(prise, config, seed=0)
    assert ours["success_rate"] > base["success_rate"] + 0.1
    assert ours["star_convex_fraction"] > base["star_convex_fraction"]


def test_registration_falls_back_to_procedural_test_shapes_without_cgal(tmp_path, monkeypatch):
    from beyondgd.experiments.dlc import registration as dlc_registration

    monkeypatch.setenv("BEYONDGD_CGAL_DATA", str(tmp_path / "no-cgal-here"))
    dlc_registration._test_meshes.cache_clear()
    try:
        overrides = dict(TINY["dlc-registration"], arms=[{"name": "baseline", "loss": "baseline"}])
        overrides["n_fallback_test_shapes"] = 3
        run_experiment(
            get("dlc-registration"), seeds=1, out_dir=tmp_path, progress=False,
            config_overrides=overrides,
        )  # fmt: skip
    finally:
        dlc_registration._test_meshes.cache_clear()
    text = (tmp_path / "dlc-registration" / "report.md").read_text()
    assert "held-out procedural shapes" in text and "apt-get install libcgal-demo" in text
