"""The cdec reproduction end to end on a tiny configuration: files, verdicts, determinism."""

import json
import math

import numpy as np

from beyondgd.experiments import get, run_experiment
from beyondgd.experiments.base import VERDICTS

TINY = {
    "datasets": ["patches"],  # bundled images: no Debian package needed
    "image_side": {"fashion-mnist": 14, "patches": 8},
    "layers": [2],
    "redundancies": [1, 2],
    "n_train": 64,
    "n_val": 32,
    "n_test": 32,
    "epochs": 2,
    "batch_size": 32,
    "stages": 2,
    "landscape": {
        "n_images": 16,
        "span": 1.0,
        "steps_1d": 5,
        "steps_2d": 3,
        "sharpness_method": "lanczos",
        "sharpness_iters": 5,
        "sharpness_tol": 1e-2,
    },
}
TIMING = {"wall_time_s", "train_seconds", "landscape_seconds", "images_per_second"}


def _numbers(metrics):
    return {
        k: {kk: vv for kk, vv in r.items() if kk not in TIMING}
        for k, r in metrics["records"].items()
    }


def test_cdec_runs_and_is_deterministic(tmp_path):
    r1 = run_experiment(get("cdec"), out_dir=tmp_path / "a", progress=False, config_overrides=TINY)
    r2 = run_experiment(get("cdec"), out_dir=tmp_path / "b", progress=False, config_overrides=TINY)
    assert _numbers(r1.metrics) == _numbers(r2.metrics)
    run_dir = tmp_path / "a" / "cdec"
    assert len(r1.metrics["records"]) == 2 * 4  # two redundancies x four models
    for name in (
        "report.md",
        "test_mse.png",
        "gap.png",
        "sharpness.png",
        "curves.png",
        "landscape_1d_0.png",
        "landscape_2d_1.png",
    ):
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    verdicts = metrics["report"]["verdicts"]
    assert len(verdicts) == 6
    assert all(v["status"] in VERDICTS for v in verdicts)
    # two pairs per claim at most: too few for a test, so every verdict must say inconclusive
    assert all(v["status"] == "inconclusive" for v in verdicts)
    for record in metrics["records"].values():
        assert record["test_mse"] is not None and record["gap_mse"] is not None
        assert len(record["slice2d_mse"]) == 3


def test_cdec_fashion_mnist_branch_runs_on_a_stand_in(tmp_path, write_fashion_mnist):
    # the quick preset's dataset (2x2-pooled to 14 x 14), without the Debian package
    rng = np.random.default_rng(0)
    folder = write_fashion_mnist(
        tmp_path / "fmnist",
        train=(rng.integers(0, 256, (96, 28, 28)), rng.integers(0, 10, 96)),
        test=(rng.integers(0, 256, (32, 28, 28)), rng.integers(0, 10, 32)),
    )
    config = dict(
        TINY, datasets=["fashion-mnist"], redundancies=[1], fashion_mnist_path=str(folder)
    )
    result = run_experiment(
        get("cdec"), out_dir=tmp_path / "out", progress=False, config_overrides=config
    )
    records = result.metrics["records"]
    assert len(records) == 4 and all(k.startswith("fashion-mnist/") for k in records)
    assert all(math.isfinite(r["test_mse"]) for r in records.values())
