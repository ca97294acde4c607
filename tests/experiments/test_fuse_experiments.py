"""The fuse-* reproductions end to end on tiny configurations: files, verdicts, determinism."""

import json

import pytest

from beyondgd.experiments import get, run_experiment
from beyondgd.experiments.base import VERDICTS

TINY = {
    "fuse-testfns": {"functions": ["rosenbrock", "quadratic-20d-cond1e+04"], "budget": 150},
    "fuse-pinn": {"ks": [1], "budget": 60},
    "fuse-classify": {"datasets": ["digits"], "budget_epochs": {"digits": 4, "fashion-mnist": 1}},
}


def _numbers(metrics):
    return {
        k: {kk: vv for kk, vv in r.items() if kk != "wall_time_s"}
        for k, r in metrics["records"].items()
    }


@pytest.mark.parametrize("name", sorted(TINY))
def test_fuse_experiment_runs_and_is_deterministic(name, tmp_path):
    exp = get(name)
    overrides = dict(TINY[name])
    if name == "fuse-classify":
        cfg = exp.config("quick")
        overrides["methods"] = {
            "digits": [
                m
                for m in cfg["methods"]["digits"]
                if m["name"] in ("adam", "lbfgs-full", "fuse-after-third", "fuse-paper-code")
            ]
        }
        overrides["methods"]["digits"][2] = dict(
            overrides["methods"]["digits"][2], switch={"rule": "after_epochs", "n": 2}
        )
    r1 = run_experiment(
        exp, seeds=2, out_dir=tmp_path / "a", progress=False, config_overrides=overrides
    )
    r2 = run_experiment(
        get(name), seeds=2, out_dir=tmp_path / "b", progress=False, config_overrides=overrides
    )
    assert _numbers(r1.metrics) == _numbers(r2.metrics)
    run_dir = tmp_path / "a" / name
    assert (run_dir / "report.md").exists()
    assert list(run_dir.glob("*.png"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["report"]["verdicts"]
    assert all(v["status"] in VERDICTS for v in metrics["report"]["verdicts"])
    for record in metrics["records"].values():
        assert record.get("final_loss", record.get("train_loss")) is not None
