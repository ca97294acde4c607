"""The weep-* reproductions end to end on tiny configurations, plus their metrics, verdict rules,
validation tuning and image operators against hand computations."""

import json
import math

import numpy as np
import pytest
import torch

from beyondgd.experiments import get, run_experiment, weep_denoise, weep_recovery, weep_tv1d
from beyondgd.experiments.base import VERDICTS
from beyondgd.experiments.weep_common import (
    make_penalty,
    matches_verdict,
    nmse_db,
    select_on_validation,
    snr_db,
    support_f1,
    weep_grid,
)
from beyondgd.penalties import L1, WEEP
from beyondgd.sparse import solve

_WEEP2 = weep_grid([1.0 / 3.0, 1.0], [0.6], a=10.0)


def _tiny_recovery():
    return {
        "ks": [6],
        "m": 40,
        "n": 100,
        "trials_per_block": 5,
        "val_blocks": 1,
        "methods": [
            {"name": "oracle-ls", "penalty": "oracle", "solver": "lstsq", "grid": [{}]},
            {
                "name": "l1-fista",
                "penalty": "l1",
                "solver": "fista",
                "max_iter": 300,
                "grid": [{"lam": 0.01}, {"lam": 0.05}],
            },
            {
                "name": "mcp-g3",
                "penalty": "mcp",
                "solver": "fista",
                "max_iter": 300,
                "grid": [{"alpha": 0.1, "gamma": 3.0}, {"alpha": 0.2, "gamma": 3.0}],
            },
            {
                "name": "weep-adam",
                "penalty": "weep",
                "solver": "adam",
                "lr": 0.02,
                "max_iter": 300,
                "grid": _WEEP2,
            },
            {
                "name": "weep-lbfgs",
                "penalty": "weep",
                "solver": "lbfgs",
                "max_iter": 200,
                "grid": _WEEP2,
            },
        ],
    }


def _tiny_tv1d():
    weep = weep_grid([1.0], [0.6], a=30.0)
    return {
        "m": 32,
        "n": 64,
        "jumps": 3,
        "min_gap": 8,
        "trials_per_block": 5,
        "val_blocks": 1,
        "methods": [
            {
                "name": "tv-l1",
                "penalty": "l1",
                "solver": "admm",
                "max_iter": 300,
                "grid": [{"lam": 0.05}, {"lam": 0.2}],
            },
            {
                "name": "tv-mcp",
                "penalty": "mcp",
                "solver": "admm",
                "max_iter": 300,
                "grid": [{"alpha": 0.2, "gamma": 3.0}],
            },
            {
                "name": "weep-adam",
                "penalty": "weep",
                "solver": "adam",
                "lr": 0.02,
                "max_iter": 150,
                "grid": weep,
            },
            {
                "name": "weep-admm",
                "penalty": "weep",
                "solver": "admm",
                "max_iter": 300,
                "grid": weep,
            },
            {
                "name": "weep-lbfgs-warm",
                "penalty": "weep",
                "solver": "lbfgs",
                "max_iter": 100,
                "warm_start": "tv-l1",
                "grid": weep,
            },
            {
                "name": "weep-lbfgs-cont",
                "penalty": "weep",
                "solver": "lbfgs",
                "max_iter": 200,
                "continuation": {"start": 0.1, "n_stages": 3, "stage_iter": 50},
                "grid": weep,
            },
        ],
    }


def _tiny_denoise():
    weep = weep_grid([0.1], [0.35, 0.5], a=30.0, tails=[0.02])
    admm = {"solver": "admm", "max_iter": 40, "tol": 1e-4}
    return {
        "images": ["camera", "coins", "astronaut"],
        "val_images": ["rocket"],
        "size": 32,
        "sigmas": [25],
        "methods": [
            {
                "name": "tv-l1-chambolle",
                "kind": "chambolle",
                "grid": [{"weight": 0.05}, {"weight": 0.1}],
            },
            {"name": "tv-l1-admm", "kind": "tv", "penalty": "l1", **admm, "grid": [{"lam": 0.07}]},
            {
                "name": "tv-mcp",
                "kind": "tv",
                "penalty": "mcp",
                **admm,
                "grid": [{"alpha": 0.05, "gamma": 10.0}],
            },
            {
                "name": "wavelet-soft",
                "kind": "wavelet",
                "mode": "soft",
                "levels": 2,
                "grid": [{"t": 1.0}, {"t": 2.0}],
            },
            {
                "name": "weep-adam",
                "kind": "tv",
                "penalty": "weep",
                "solver": "adam",
                "lr": 2e-3,
                "max_iter": 40,
                "grid": weep,
            },
            {"name": "weep-admm", "kind": "tv", "penalty": "weep", **admm, "grid": weep},
            {
                "name": "weep-lbfgs-warm",
                "kind": "tv",
                "penalty": "weep",
                "solver": "lbfgs",
                "max_iter": 10,
                "warm_start": "tv-l1-admm",
                "grid": weep[:1],
            },
        ],
    }


TINY = {
    "weep-recovery": (_tiny_recovery, weep_recovery, 1),
    "weep-tv1d": (_tiny_tv1d, weep_tv1d, 1),
    "weep-denoise": (_tiny_denoise, weep_denoise, 2),
}


def _numbers(metrics):
    return {
        k: {kk: vv for kk, vv in r.items() if kk != "wall_time_s"}
        for k, r in metrics["records"].items()
    }


def _clear_caches(module):
    for cache in ("_TUNE_CACHE", "_WARM_CACHE"):
        getattr(module, cache, {}).clear()


@pytest.mark.parametrize("name", sorted(TINY))
def test_weep_experiment_runs_and_is_deterministic(name, tmp_path):
    overrides_fn, module, seeds = TINY[name]
    runs = []
    for sub in ("a", "b"):
        _clear_caches(module)  # the second run recomputes its tuning from scratch
        runs.append(
            run_experiment(
                get(name),
                seeds=seeds,
                out_dir=tmp_path / sub,
                progress=False,
                config_overrides=overrides_fn(),
            )
        )
    assert _numbers(runs[0].metrics) == _numbers(runs[1].metrics)
    run_dir = tmp_path / "a" / name
    assert (run_dir / "report.md").exists()
    assert list(run_dir.glob("*.png"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    verdicts = metrics["report"]["verdicts"]
    assert verdicts
    assert all(v["status"] in VERDICTS for v in verdicts)
    report = (run_dir / "report.md").read_text()
    assert "non-inferiority" in report  # the matching rule is stated


# ---- metrics ---------------------------------------------------------------------------------
def test_nmse_and_snr_against_hand_computation():
    x = torch.tensor([[1.0, 0.0, 0.0], [3.0, 4.0, 0.0]], dtype=torch.float64)
    x_hat = torch.tensor([[1.1, 0.0, 0.0], [3.0, 4.0, 0.5]], dtype=torch.float64)
    # row 0: 0.01 / 1 -> -20 dB; row 1: 0.25 / 25 -> -20 dB
    assert nmse_db(x_hat, x).tolist() == pytest.approx([-20.0, -20.0])
    assert snr_db(x_hat, x).tolist() == pytest.approx([20.0, 20.0])
    x_hat2 = torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)  # error 1 on norm 1: 0 dB
    assert float(nmse_db(x_hat2, x[0])) == pytest.approx(0.0)
    assert math.isfinite(float(nmse_db(x[0], x[0])))  # exact recovery stays finite


def test_support_f1_against_hand_computation():
    est = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    true = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    # TP 1, FP 1, FN 1 -> 2 / 4; exact -> 1; both empty -> 1
    assert support_f1(est, true).tolist() == pytest.approx([0.5, 1.0, 1.0])


def test_make_penalty_weep_parametrization():
    pen, lam = make_penalty("weep", {"lam": 0.5, "a": 10.0, "thr": 0.6, "tail": 0.02})
    assert isinstance(pen, WEEP) and lam == 0.5
    assert pen.b == pytest.approx(0.18) and pen.c == pytest.approx(0.04)
    pen, lam = make_penalty("l1", {"lam": 0.3})
    assert isinstance(pen, L1) and lam == 0.3


# ---- verdict rule ----------------------------------------------------------------------------
def test_matches_rule_is_noninferiority_with_margin():
    base = [-30.0, -31.0, -32.0, -33.0, -34.0, -35.0]
    slightly_worse = [b + 0.5 for b in base]  # 0.5 dB worse everywhere, margin 1 dB
    v = matches_verdict("c", slightly_worse, base, ("w", "b"), "NMSE", 1.0)
    assert v.status == "holds"
    much_worse = [b + 2.0 for b in base]
    v = matches_verdict("c", much_worse, base, ("w", "b"), "NMSE", 1.0)
    assert v.status == "does not hold"
    # higher is better (SNR): 0.5 dB lower is still within a 1 dB margin
    v = matches_verdict(
        "c",
        [-b - 0.5 for b in base],
        [-b for b in base],
        ("w", "b"),
        "SNR",
        1.0,
        lower_is_better=False,
    )
    assert v.status == "holds"


# ---- validation tuning -----------------------------------------------------------------------
def test_select_on_validation_handles_missing_and_ties():
    assert select_on_validation([3.0, 1.0, 1.0, 2.0]) == 1
    assert select_on_validation([None, float("nan"), 5.0]) == 2
    assert select_on_validation([1.0, 4.0, 4.0], lower_is_better=False) == 1


def test_recovery_tuning_minimises_the_validation_error():
    from beyondgd.experiments.runner import resolve_config

    config = resolve_config(get("weep-recovery"), "quick", 1, _tiny_recovery())
    spec = next(s for s in config["methods"] if s["name"] == "l1-fista")
    spec = dict(spec, grid=[{"lam": 0.002}, {"lam": 0.02}, {"lam": 0.5}])
    weep_recovery._TUNE_CACHE.clear()
    result = weep_recovery.tuned(spec, 6, config)
    # recompute the validation error of every grid point by hand
    from beyondgd.core import derive_seed
    from beyondgd.sparse import squared_spectral_norm

    A, X, Y = weep_recovery.make_instances(
        40,
        100,
        6,
        config["trials_per_block"],
        config["noise"],
        derive_seed("weep-recovery", "val", 6, 0),
    )
    errors = []
    for params in spec["grid"]:
        out = weep_recovery.run_method(
            spec, params, A, X, Y, config["tol"], float(squared_spectral_norm(A))
        )
        errors.append(float(nmse_db(out["x"], X).mean()))
    assert result["scores"] == pytest.approx(errors)
    assert result["index"] == int(np.argmin(errors))
    assert result["params"] == spec["grid"][int(np.argmin(errors))]
    # validation instances are not the test instances
    A_test, X_test, _ = weep_recovery.make_instances(
        40,
        100,
        6,
        config["trials_per_block"],
        config["noise"],
        derive_seed("weep-recovery", "test", 6, 0),
    )
    assert not torch.equal(X_test, X)


# ---- image operators -------------------------------------------------------------------------
def test_haar_is_orthonormal_and_invertible():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 16))
    a, details = weep_denoise.haar2(x, 3)
    energy = (a**2).sum() + sum((c**2).sum() for d in details for c in d)
    assert energy == pytest.approx((x**2).sum())
    assert np.allclose(weep_denoise.ihaar2(a, details), x)
    assert np.allclose(weep_denoise.wavelet_denoise(x, 0.0, "hard", 3), x)


def test_denoise_admm_matches_the_dense_library_solver():
    n = 6
    rng = np.random.default_rng(1)
    y = rng.standard_normal((1, n, n))
    lam = 0.3
    x_admm, _ = weep_denoise.admm_tv(y, L1(1.0), lam, max_iter=3000, tol=1e-10, rho=1.0)
    # dense D stacking horizontal and vertical forward differences of a row-major image
    eye = np.eye(n * n).reshape(n * n, n, n)
    dh, dv = weep_denoise.grad2(eye)
    D = torch.from_numpy(np.concatenate([dh.reshape(n * n, -1), dv.reshape(n * n, -1)], 1).T)
    res = solve(
        torch.eye(n * n, dtype=torch.float64),
        torch.from_numpy(y.reshape(-1)),
        L1(1.0),
        lam,
        method="admm",
        D=D,
        max_iter=20000,
        tol=1e-12,
    )
    assert np.allclose(x_admm.reshape(-1), res.x.numpy(), atol=1e-6)
