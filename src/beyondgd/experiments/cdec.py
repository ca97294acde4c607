"""``cdec``: does warm-starting (continuation) an overparameterized unfolding network help?

DECONET (Kouni & Panagakis, TSP 2023) and its continued version C-DEC (Kouni, SampTA 2025:
``K`` warm-started stages of DECONET, trained with log-cosh) reconstruct images from compressed
measurements ``y = A x + e`` (cdec.md). Every arm is a config method (model, loss, depth,
redundancy ``N / n``); a problem is a dataset, a measurement ratio and a layer count ``L``; one
replicate is one seed, which draws ``A``, the noise, the initial analysis operator ``W`` and the
order of the training images (all from :func:`beyondgd.core.derive_seed`), so every arm of a seed
sees the same instance.

Equal cost: every arm gets the same training budget in layer evaluations x images (a
``K``-stage ``L``-layer network and a ``K L``-layer DECONET cost ``K L`` per image, an ``L``-layer
DECONET ``L``), enforced inside the run (the epoch count is what the budget buys), and a run that
stops early (early stopping) is charged its whole budget. The arm a reviewer asks for first,
DECONET with ``K L`` layers (the same unrolled depth and inference cost as continuation), is the
primary baseline of "continuation helps".
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from beyondgd.core import derive_seed, finite_or_none, make_generator
from beyondgd.data import DataNotFoundError, load_fashion_mnist, load_image_patches, pool2x2
from beyondgd.experiments.harness import (
    Claim,
    CurveSpec,
    Figure,
    Method,
    MetricSpec,
    Problem,
    Reproduction,
    Table,
    UnitResult,
    plotting,
)
from beyondgd.experiments.registry import register
from beyondgd.landscape import sharpness, slice_1d, slice_2d
from beyondgd.unfolding import DECONET, Continued, GaussianCS, Trainer

NAME = "cdec"
DATASET_LABEL = {"fashion-mnist": "FMNIST", "patches": "patches"}
LOSS_LABEL = {"mse": "MSE", "log-cosh": "log-cosh"}


def arm(
    label: str,
    loss: str,
    *,
    continuation: bool = False,
    depth: str = "L",
    decay: str = "per-layer",
    redundancy: float = 4.0,
) -> dict[str, Any]:
    """A method spec: ``continuation`` runs ``K`` warm-started stages of ``L`` layers;
    ``depth="KL"`` unrolls one DECONET of ``K L`` layers, with the step sizes decaying per layer
    as in DECONET (``decay="per-layer"``) or stretched over the ``K L`` layers so that they decay
    as much as over ``L`` layers (``decay="stretched"``: ``a^(1/K)``, ``b^(1/K)`` per layer)."""
    return {
        "label": label,
        "loss": loss,
        "continuation": continuation,
        "depth": depth,
        "decay": decay,
        "redundancy": redundancy,
    }


METHODS: dict[str, dict[str, Any]] = {
    "deconet-mse": arm("DECONET (MSE)", "mse"),
    "deconet-logcosh": arm("DECONET (log-cosh)", "log-cosh"),
    "continuation-mse": arm("DECONET + continuation (MSE)", "mse", continuation=True),
    "cdec": arm("C-DEC", "log-cosh", continuation=True),
    "cdec-n1": arm("narrow C-DEC (N = n)", "log-cosh", continuation=True, redundancy=1.0),
    "deconet-kl": arm("DECONET with K·L layers (MSE)", "mse", depth="KL", decay="stretched"),
    "deconet-kl-perlayer": arm(
        "DECONET with K·L layers and per-layer step decay (MSE)", "mse", depth="KL"
    ),
}


def _paper_methods() -> dict[str, dict[str, Any]]:
    """The spec's four models at N/n in {1, 4, 10} (4 = the base names), and both K·L arms."""
    out = {name: dict(spec) for name, spec in METHODS.items()}
    for name in ("deconet-mse", "deconet-logcosh", "continuation-mse", "cdec"):
        for red, word in ((1.0, "narrow"), (10.0, "wide")):
            key = f"{name}-n{red:g}"
            base = METHODS[name]
            tag = f"N = {n_times(red)}"
            out[key] = {**base, "label": f"{word} {base['label']} ({tag})", "redundancy": red}
    return out


def n_times(redundancy: float) -> str:
    """``N`` in units of ``n``: ``"n"``, ``"4n"``."""
    return "n" if redundancy == 1 else f"{redundancy:g}n"


def _seed(*parts: object) -> int:
    return derive_seed(NAME, *parts) % 2**31


def load_images(config: Mapping[str, Any], dataset: str) -> tuple[torch.Tensor, ...]:
    """Flattened train / val / test images, standardised with the training set's mean and std.

    The images are the same for every seed (the first ``n_train + n_val`` training images of
    Fashion-MNIST, the first ``n_test`` test images; bundled-image patches drawn with seed 0,
    test patches from held-out locations)."""
    side = config["image_side"][dataset]
    n_train, n_val, n_test = config["n_train"], config["n_val"], config["n_test"]
    if dataset == "fashion-mnist":
        path = config["fashion_mnist_path"]
        try:
            train, _ = load_fashion_mnist("train", path=path, limit=n_train + n_val)
            test, _ = load_fashion_mnist("test", path=path, limit=n_test)
        except DataNotFoundError as exc:
            raise DataNotFoundError(
                f"{exc} (cdec reads it from the config key fashion_mnist_path = {path!r}; "
                "--set fashion_mnist_path='\"/path/to/folder\"')"
            ) from exc
        if side == 14:
            train, test = pool2x2(train), pool2x2(test)
        elif side != 28:
            raise ValueError(f"image_side for fashion-mnist must be 14 or 28, got {side}")
    elif dataset == "patches":
        train = load_image_patches("train", n_train + n_val, size=side, seed=0, split_by="location")
        test = load_image_patches("test", n_test, size=side, seed=0, split_by="location")
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected 'fashion-mnist' or 'patches'")
    flat = [x.reshape(x.shape[0], -1).double() for x in (train[:n_train], train[n_train:], test)]
    mean, std = flat[0].mean(), flat[0].std()
    return tuple(((x - mean) / std).float() for x in flat)


def depth_of(spec: Mapping[str, Any], stages: int, layers: int) -> tuple[int, int]:
    """``(stages, layers per stage)`` of an arm: continuation ``(K, L)``, a ``K L``-deep DECONET
    ``(1, K L)``, DECONET ``(1, L)``."""
    if spec["depth"] not in ("L", "KL"):
        raise ValueError(f"method depth must be 'L' or 'KL', got {spec['depth']!r}")
    if spec["decay"] not in ("per-layer", "stretched"):
        raise ValueError(f"method decay must be 'per-layer' or 'stretched', got {spec['decay']!r}")
    if spec["continuation"]:
        if spec["depth"] != "L":
            raise ValueError("a continuation arm runs K stages of L layers: set depth 'L'")
        return stages, layers
    return 1, layers * (stages if spec["depth"] == "KL" else 1)


def budget_of(config: Mapping[str, Any], layers: int, depth: int) -> tuple[int, int, int]:
    """``(budget, max_epochs, patience)`` of an arm of ``depth`` layer evaluations per image.

    The budget is ``epochs x n_train x K x L`` layer evaluations x images for every arm
    (``equal_compute``), or ``epochs x n_train x depth`` (the paper's equal epochs); the epochs
    are what the budget buys, the patience is scaled the same way (both in epochs of a ``K L``
    deep network)."""
    n_train, epochs = config["n_train"], config["epochs"]
    reference = config["stages"] * layers if config["equal_compute"] else depth
    budget = epochs * n_train * reference
    max_epochs = budget // (n_train * depth)
    if max_epochs < 1:
        raise ValueError(f"the budget {budget} buys no epoch at depth {depth}")
    patience = max(1, round(config["patience"] * reference / depth))
    return budget, max_epochs, patience


def _inference_us(model: torch.nn.Module, y: torch.Tensor, repeats: int = 3) -> float:
    """Microseconds per image to reconstruct ``y`` (eval mode, no gradients; the fastest of
    ``repeats`` passes, since other processes share the cores)."""
    model.eval()
    best = math.inf
    with torch.no_grad():
        for _ in range(repeats):
            if y.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(y)
            if y.is_cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return 1e6 * best / y.shape[0]


@register
class CDEC(Reproduction):
    name = NAME
    title = "C-DEC: continuation and overparameterization for an unfolding network (DECONET)"
    summary = (
        "Warm-starting the overparameterized unfolding network DECONET by continuation (C-DEC: "
        "K warm-started stages, trained with the log-cosh loss) is claimed to give lower test "
        "error, a lower generalization gap and a smoother training-loss landscape than DECONET; "
        "continuation, overparameterization (N/n) and the log-cosh loss each help. We test, at "
        "equal training compute (layer evaluations x images), whether continuation beats a "
        "DECONET of the same unrolled depth K·L, whether C-DEC with N = 4n beats C-DEC with "
        "N = n, whether C-DEC (log-cosh) beats continuation trained with MSE, and whether C-DEC's "
        "generalization gap is lower than DECONET's; the paper's comparison with an L-layer "
        "DECONET, the second K·L arm, sharpness and the other pairs are exploratory."
    )
    base_config: dict[str, Any] = {
        "seeds": 8,
        "datasets": ["fashion-mnist"],
        "image_side": {"fashion-mnist": 14, "patches": 32},
        "ratios": [0.25],
        "layers": [5],
        "stages": 3,
        "n_train": 1000,
        "n_val": 250,
        "n_test": 250,
        "epochs": 6,
        "patience": 3,
        "equal_compute": True,
        "batch_size": 128,
        "lr": {"fashion-mnist": 1e-2, "patches": 1e-3},
        "step_decay": {"fashion-mnist": [0.5, 0.3], "patches": [0.7, 0.5]},
        "mu": 100.0,
        "noise_std": 1e-4,
        "landscape": {
            "n_images": 64,
            "span": 1.0,
            "steps_1d": 15,
            "steps_2d": 9,
            # the 2-D slice figure shows one seed: computed only where it is drawn
            "slice2d_seeds": 1,
            # Lanczos on Hessian-vector products: on a trained continuation model the power
            # method needed 50-70 products where Lanczos needed 15 (clustered top)
            "sharpness_method": "lanczos",
            "sharpness_iters": 40,
            "sharpness_tol": 1e-2,
        },
        # measured times in the rows (inference, training); off in smoke, whose repeated runs
        # must give identical tables
        "measure_time": True,
        "fashion_mnist_path": None,
        "device": "cpu",
        "methods": METHODS,
    }
    presets = {
        "smoke": {
            "seeds": 2,
            "datasets": ["patches"],  # bundled images: no Debian package needed
            "image_side": {"patches": 8},
            "layers": [2],
            "stages": 2,
            "n_train": 64,
            "n_val": 32,
            "n_test": 32,
            "epochs": 2,
            "batch_size": 32,
            "landscape": {"n_images": 16, "steps_1d": 5, "steps_2d": 3, "sharpness_iters": 5},
            "measure_time": False,
        },
        # 7 seeds: 4 primary claims need replicates_needed(4) = 7; the K·L arm with per-layer
        # steps (a strawman: its last layers barely move) and DECONET (log-cosh) stay in full
        "quick": {
            "seeds": 7,
            "n_train": 800,
            "n_val": 200,
            "epochs": 5,
            "methods": {"deconet-logcosh": None, "deconet-kl-perlayer": None},
        },
        # 28 x 28 Fashion-MNIST only, the spec pilot's 2000 / 1000 images, 8 epochs, 8 seeds
        # (every primary claim needs 7): measured 157 s (C-DEC) and 172 s (DECONET, 24 epochs)
        # per unit on 2 shared cores, about 1000 s per seed for the seven arms, so ~8200 core-s.
        # 32 x 32 patches (n = 1024, N = 4096) cost about 1.7x as much per unit: both datasets
        # would not fit in the ~70 minutes of 2 cores, so patches are in the paper preset only.
        # One thread per unit: two threads per unit ran 3.5x slower on the shared cores.
        "full": {
            "image_side": {"fashion-mnist": 28},
            "n_train": 2000,
            "n_val": 500,
            "n_test": 1000,
            "epochs": 8,
        },
        # the spec's whole grid: 2 datasets x 2 ratios x L in {5, 10} x the four models at
        # N/n in {1, 4, 10} plus both K·L arms, 12 seeds (32 primary verdicts under Holm need
        # replicates_needed(32) = 10, the 128 exploratory ones 12); for a Ray cluster or a GPU
        # (--set device='"cuda"')
        "paper": {
            "seeds": 12,
            "datasets": ["fashion-mnist", "patches"],
            "image_side": {"fashion-mnist": 28},
            "ratios": [0.25, 0.5],
            "layers": [5, 10],
            "n_train": 2000,
            "n_val": 500,
            "n_test": 1000,
            "epochs": 15,
            "landscape": {"n_images": 256, "steps_1d": 31, "steps_2d": 13, "sharpness_iters": 80},
            "methods": _paper_methods(),
        },
    }
    # smoke, quick: measured compute with --workers 1 on 2 cores shared with other jobs (7 s;
    # 151 s to 250 s, by load) / 2 workers;
    # full: ~8200 core-s measured per unit (above) / 2. paper: an estimate from the full units'
    # measured 5.0e-7 s per epoch per (N n x unrolled depth) at 2000 / 3500 train / evaluated
    # images: the grid's sum of 15 epochs x N n x K L is ~7.6e4 core-s per seed; 12 seeds and
    # ~5% for the probes make ~9.6e5 core-s (~265 core-hours), ~4.8e5 s on 2 cores (hours on a
    # 64-CPU Ray cluster; or one GPU with --set device='"cuda"')
    # quick: measured wall time in the fresh-clone `make run` of 2026-12-06 (2 workers)
    expected_seconds = {"smoke": 5, "quick": 58, "full": 4100, "paper": 4.8e5}
    cpus_per_unit = 1
    metrics = (
        MetricSpec("test_mse", "test MSE"),
        MetricSpec("test_log_cosh", "test log-cosh", logy=True),
        MetricSpec("gap_mse", "generalization gap (test - train MSE)"),
        MetricSpec("sharpness_mse", "sharpness (top Hessian eigenvalue, training MSE)", logy=True),
    )
    curves = (
        CurveSpec("test_mse", "training compute (epochs of a K·L-deep network)", "test MSE"),
        CurveSpec(
            "slice1d",
            "step along a random filter-normalized direction",
            "training MSE (probe images)",
        ),
    )
    cost_columns = (
        "train_compute",
        "train_compute_charged",
        "inference_layers",
        "inference_madds",
        "inference_us_per_image",
        "train_seconds",
    )

    # ---- problems and claims ---------------------------------------------------------------
    def problems(self, config: Mapping[str, Any]) -> list[Problem]:
        out = []
        for dataset in config["datasets"]:
            side = config["image_side"][dataset]
            for ratio in config["ratios"]:
                for layers in config["layers"]:
                    label = f"{DATASET_LABEL.get(dataset, dataset)}{side} m={ratio:g}n L={layers}"
                    out.append(
                        Problem(
                            label,
                            {"dataset": dataset, "side": side, "ratio": ratio, "layers": layers},
                        )
                    )
        return out

    def claims(self, config: Mapping[str, Any]) -> list[Claim]:
        methods = config["methods"]

        def label(name: str) -> str:
            return str(methods[name].get("label", name))

        def wide(name: str) -> str:
            return f"N = {n_times(methods[name]['redundancy'])}" if name in methods else ""

        def claim(method, base, metric, text, *, primary=False, scale="log10", cost=True, tail=""):
            if method not in methods or base not in methods:
                return []
            return [
                Claim(
                    f"{label(method)} {text} {label(base)}{tail} ({{problem}})",
                    metric,
                    method,
                    base,
                    scale=scale,
                    group_by=("problem",),
                    primary=primary,
                    cost="train_compute_charged" if cost else None,
                    cost_note=""
                    if cost
                    else "same depth, data and training budget in layer evaluations x images; "
                    "a layer of the wider model costs more arithmetic (N x n): that is the "
                    "overparameterization under test",
                )
            ]

        lower = "reaches a lower test MSE than"
        gap = "has a lower generalization gap (test - train MSE) than"
        out = []
        # primary: the four headline questions, each at equal training compute
        same_depth = ", at the same unrolled depth and training compute"
        out += claim(
            "continuation-mse", "deconet-kl", "test_mse", lower, primary=True, tail=same_depth
        )
        out += claim(
            "cdec", "cdec-n1", "test_mse", f"({wide('cdec')}) {lower}", primary=True, cost=False
        )
        out += claim("cdec", "continuation-mse", "test_mse", f"(log-cosh) {lower}", primary=True)
        out += claim("cdec", "deconet-mse", "gap_mse", gap, primary=True, scale="linear")
        # secondary: the paper's L-layer comparison, the other pairs, sharpness
        out += claim("cdec", "deconet-mse", "test_mse", lower)
        out += claim("continuation-mse", "deconet-mse", "test_mse", lower)
        out += claim("continuation-mse", "deconet-kl-perlayer", "test_mse", lower)
        out += claim("cdec", "deconet-kl", "test_mse", lower)
        out += claim("deconet-kl", "deconet-kl-perlayer", "test_mse", lower)
        out += claim("deconet-logcosh", "deconet-mse", "test_mse", lower)
        for name in ("deconet-mse", "deconet-logcosh", "continuation-mse"):
            out += claim(name, f"{name}-n1", "test_mse", lower, cost=False)
        for name in ("deconet-mse", "deconet-logcosh", "continuation-mse", "cdec"):
            out += claim(
                f"{name}-n10", name, "test_mse", lower, cost=False, tail=f" ({wide(name)})"
            )
        sharper = "has a lower sharpness (top Hessian eigenvalue of the training MSE) than"
        out += claim("cdec", "deconet-mse", "sharpness_mse", sharper, scale="linear")
        out += claim("cdec", "cdec-n1", "sharpness_mse", sharper, scale="linear", cost=False)
        out += claim("continuation-mse", "deconet-kl", "sharpness_mse", sharper, scale="linear")
        return out

    # ---- work -----------------------------------------------------------------------------
    def prepare(self, config: Mapping[str, Any]) -> None:
        """Check the arms and that the data are there before any unit starts."""
        for spec in config["methods"].values():
            depth_of(spec, config["stages"], 1)
        for dataset in config["datasets"]:
            load_images({**config, "n_train": 1, "n_val": 1, "n_test": 1}, dataset)

    def run(self, problem: Problem, method: Method, seed: int, config, tuned) -> UnitResult:
        p, spec = problem.params, method.params
        dataset, ratio, L, K = p["dataset"], p["ratio"], p["layers"], config["stages"]
        device = torch.device(config["device"])
        xtr, xva, xte = (x.to(device) for x in load_images(config, dataset))
        n = xtr.shape[1]
        m = max(1, round(ratio * n))
        # one instance per (problem, seed): A, noise, initial W and data order shared by all arms
        op = GaussianCS(m, n, seed=_seed("A", problem.name, seed), device=device)
        gen = make_generator(_seed("noise", problem.name, seed))
        noise = config["noise_std"]
        ytr, yva, yte = (
            op(x) + noise * torch.randn(x.shape[0], m, generator=gen).to(device)
            for x in (xtr, xva, xte)
        )
        stages, layers = depth_of(spec, K, L)
        a, b = config["step_decay"][dataset]
        if spec["decay"] == "stretched":  # decays over its layers as much as over L layers
            a, b = a ** (L / layers), b ** (L / layers)
        net = DECONET(
            op,
            redundancy=spec["redundancy"],
            layers=layers,
            mu=config["mu"],
            a=a,
            b=b,
            eps=noise * math.sqrt(m),
            clamp=(float(xtr.min()), float(xtr.max())),  # the training set's range
            seed=_seed("W", problem.name, spec["redundancy"], seed),
        )
        model = Continued(net, stages=stages) if spec["continuation"] else net
        depth = stages * layers
        budget, max_epochs, patience = budget_of(config, L, depth)
        trainer = Trainer(
            model,
            spec["loss"],
            lr=config["lr"][dataset],
            batch_size=config["batch_size"],
            max_epochs=max_epochs,
            patience=patience,
            seed=_seed("shuffle", problem.name, seed),
        )
        result = trainer.fit((ytr, xtr), test=(yte, xte), val=(yva, xva))
        spent = result.samples * depth
        if spent > budget:
            raise RuntimeError(f"training overran its budget: {spent} > {budget}")
        failed = result.diverged and result.best_epoch == len(result.history)
        timed = config["measure_time"]
        final = {} if failed else result.final
        row: dict[str, Any] = {
            "loss": spec["loss"],
            "continuation": bool(spec["continuation"]),
            "stages": stages,
            "layers_per_stage": layers,
            "redundancy": float(spec["redundancy"]),
            "n": n,
            "m": m,
            "N": int(net.W.shape[0]),
            **{
                k: finite_or_none(final.get(k))
                for k in (
                    "test_mse",
                    "test_log_cosh",
                    "train_mse",
                    "train_log_cosh",
                    "val_mse",
                    "gap_mse",
                    "gap_log_cosh",
                )
            },
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "max_epochs": max_epochs,
            "stopped_early": bool(result.stopped_early),
            "diverged": bool(result.diverged),
            "train_compute": spent,
            "train_compute_charged": max(spent, budget),
            "inference_layers": depth,
            # per layer: W x, W^T v (N n each), A x, A^T v (m n each)
            "inference_madds": depth * 2 * (int(net.W.shape[0]) + m) * n,
            "inference_us_per_image": _inference_us(model, yte) if timed else None,
            "train_seconds": result.train_seconds if timed else None,
        }
        unit_per_epoch = depth / (K * L)  # epochs of a K L-deep network per epoch of this arm
        curves = {
            "test_mse": {
                "x": [h["epoch"] * unit_per_epoch for h in result.history],
                "y": [finite_or_none(h.get("test_mse")) for h in result.history],
            }
        }
        if not failed:
            probes, slices = self._landscape(model, ytr, xtr, config, problem, method, seed)
            row.update(probes)
            curves.update(slices)
        return UnitResult([row], curves)

    @staticmethod
    def _landscape(model, ytr, xtr, config, problem, method, seed):
        """Sharpness (every seed: a metric), a 1-D slice (every seed: a curve with its spread)
        and a 2-D slice (the seeds the figure shows) of the training MSE on the probe images."""
        cfg = config["landscape"]
        k = cfg["n_images"]
        yp, xp = ytr[:k], xtr[:k]
        model.eval()

        def mse(mdl):
            return F.mse_loss(mdl(yp), xp)

        key = (problem.name, method.name, seed)
        sh = sharpness(
            model,
            mse,
            n_iter=cfg["sharpness_iters"],
            tol=cfg["sharpness_tol"],
            method=cfg["sharpness_method"],
            seed=_seed("sharp", *key),
        )
        s1 = slice_1d(model, mse, span=cfg["span"], steps=cfg["steps_1d"], seed=_seed("s1", *key))
        probes = {
            "sharpness_mse": finite_or_none(sh.eigenvalue),
            "sharpness_converged": bool(sh.converged),
            "sharpness_products": sh.n_iter,
            "landscape_center_mse": finite_or_none(s1.center_loss),
        }
        curves = {"slice1d": {"x": s1.alphas.tolist(), "y": finite_or_none(s1.losses.tolist())}}
        if seed < cfg["slice2d_seeds"]:
            s2 = slice_2d(
                model, mse, span=cfg["span"], steps=cfg["steps_2d"], seed=_seed("s2", *key)
            )
            # flattened row-major: x = i * steps + j for (beta_i, alpha_j)
            flat = s2.losses.reshape(-1).tolist()
            curves["slice2d"] = {"x": list(range(len(flat))), "y": finite_or_none(flat)}
        return probes, curves

    # ---- report -----------------------------------------------------------------------------
    def describe(self, config: Mapping[str, Any]) -> list[str]:
        K, lc = config["stages"], config["landscape"]
        sides = ", ".join(
            f"{d} {config['image_side'][d]} x {config['image_side'][d]}" for d in config["datasets"]
        )
        decays = ", ".join(
            f"({config['step_decay'][d][0]:g}, {config['step_decay'][d][1]:g}) for {d}"
            for d in config["datasets"]
        )
        lrs = ", ".join(f"{config['lr'][d]:g} for {d}" for d in config["datasets"])
        methods = "; ".join(
            f"**{s['label']}** (`{name}`): {self._describe_arm(s, K)}"
            for name, s in config["methods"].items()
        )
        if config["equal_compute"]:
            compute = (
                "**Equal training compute.** Every arm gets the same budget of layer evaluations "
                f"x training images: {config['epochs']} epochs of a {K}·L-layer network "
                f"({config['epochs']} x {config['n_train']} x {K} x L). An L-layer DECONET costs "
                f"L per image, so it trains for {K} x {config['epochs']} epochs; its "
                f"early-stopping patience ({config['patience']} epochs of a K·L network) is "
                "scaled the same way. "
            )
        else:
            compute = (
                "**Equal epochs (the paper's protocol).** Every arm trains for "
                f"{config['epochs']} epochs, so an L-layer DECONET gets 1/{K} of the training "
                "compute of a K·L-deep arm; claims between such arms report **not at equal "
                "cost**. "
            )
        compute += (
            "The budget is enforced inside the run (the epochs are what it buys); "
            "`train_compute` is what was spent, `train_compute_charged` charges **the whole "
            "budget** to a run that early stopping ended sooner (the claims hold this column "
            "equal). Validation, test and probe evaluations are not counted (they measure, they "
            "do not train). `inference_layers` is the unrolled depth per image, "
            "`inference_madds` its multiply-adds (2 (N + m) n per layer), "
            + (
                "`inference_us_per_image` the measured time to reconstruct the test set "
                "(fastest of 3 passes, one thread, on cores shared with other processes)."
                if config["measure_time"]
                else "measured times are left out in this preset (`measure_time` is off)."
            )
        )
        return [
            f"Data: {sides}; {config['n_train']} / {config['n_val']} / {config['n_test']} train / "
            "validation / test images (the same for every seed), standardised with the training "
            f"set's mean and std. Measurements `y = A x + e`, `A` i.i.d. N(0, 1/m) with m = "
            f"ratio x n for ratio in {config['ratios']}, noise {config['noise_std']:g} N(0, I), "
            "eps = noise x sqrt(m). **One replicate = one seed**, which draws `A`, the noise, "
            "the initial analysis operator `W` (the same for every arm with the same N) and the "
            "order of the training images; one verdict per problem (dataset, ratio, L).",
            f"DECONET: L in {config['layers']} layers sharing a learned `W` (N = redundancy x n, "
            f"Kaiming init), mu = {config['mu']:g}, step decays (a, b) per layer {decays}, full "
            "back-propagation, elementwise soft threshold, output clamped to the training set's "
            f"range. Continuation: K = {K} stages of the same network (shared `W`), x0 <- the "
            "previous stage's output, duals warm-started, step sizes restarted each stage, "
            "trained end to end: each training step runs all K stages, so an image costs K·L "
            "layer evaluations, as in a K·L-layer DECONET. (The continuation is a reconstruction "
            "from TFOCS's continuation and the paper's abstract: its method section could not be "
            f"read.) Adam (lr {lrs}), batch {config['batch_size']}, early stopping on the "
            "validation value of the arm's own loss (MSE or log-cosh), best weights restored.",
            f"Arms: {methods}.",
            compute,
            "Why the K·L arms: continuation runs K x L layers per image, so a gain over an "
            "L-layer DECONET may come from depth alone. A DECONET of K·L layers with DECONET's "
            "per-layer step decay barely moves in its last layers (the steps shrink by a^(K·L)), "
            "so the primary baseline stretches the decay over its depth (a^(1/K), b^(1/K) per "
            "layer: the same total decay as L layers); the per-layer arm is exploratory.",
            f"Landscape probes on the first {lc['n_images']} training images, training MSE for "
            "every arm (log-cosh is about MSE/2 for small residuals, so the two are never "
            "compared with each other): sharpness = top Hessian eigenvalue by "
            f"{lc['sharpness_method']} on Hessian-vector products (at most "
            f"{lc['sharpness_iters']}, residual tolerance {lc['sharpness_tol']:g}; "
            "`sharpness_converged` says whether it was met) for every seed, so its seed-to-seed "
            "spread is in the summary table, the strip plot and the sharpness table; a 1-D slice "
            f"along a random filter-normalized direction ({lc['steps_1d']} steps over "
            f"[-{lc['span']:g}, {lc['span']:g}]) for every seed (median and interquartile band "
            f"over seeds); a 2-D slice ({lc['steps_2d']} x {lc['steps_2d']}) for the first "
            f"{lc['slice2d_seeds']} seed(s) only, a picture whose differences are not tested. "
            "Claims on test MSE compare log10 values; the gap and sharpness claims, linear values.",
        ]

    @staticmethod
    def _describe_arm(spec: Mapping[str, Any], stages: int) -> str:
        if spec["continuation"]:
            shape = f"{stages} stages of L layers"
        elif spec["depth"] == "KL":
            decay = (
                "step decay stretched over its depth"
                if spec["decay"] == "stretched"
                else "per-layer step decay"
            )
            shape = f"one DECONET of {stages}·L layers, {decay}"
        else:
            shape = "one DECONET of L layers"
        loss = LOSS_LABEL.get(spec["loss"], spec["loss"])
        return f"{shape}, N = {n_times(spec['redundancy'])}, {loss}"

    def extra_tables(self, results) -> list[Table]:
        """Sharpness per arm with its seed-to-seed range, against DECONET (MSE)'s range."""
        t = results.table
        ref = "deconet-mse"
        if t.empty or "sharpness_mse" not in t.columns or ref not in set(t["method"]):
            return []
        labels = {k: v.get("label", k) for k, v in results.config["methods"].items()}
        rows = []
        for problem, sub in t.groupby("problem", sort=False):
            base = sub[sub["method"] == ref]["sharpness_mse"].dropna()
            if base.empty:
                continue
            for method, g in sub.groupby("method", sort=False):
                v = g["sharpness_mse"].dropna()
                if v.empty:
                    continue
                overlap = v.min() <= base.max() and base.min() <= v.max()
                rows.append(
                    [
                        problem,
                        labels.get(method, method),
                        f"{v.median():.3g} [{v.min():.3g}, {v.max():.3g}]",
                        f"{v.median() / base.median():.3g}",
                        "-" if method == ref else ("yes" if overlap else "no"),
                        f"{int(g['sharpness_converged'].sum())} / {len(g)}",
                    ]
                )
        return [
            Table(
                "Sharpness and its seed-to-seed spread",
                [
                    "problem",
                    "method",
                    "sharpness median [min, max] over seeds",
                    "median / DECONET (MSE) median",
                    "seed range overlaps DECONET (MSE)'s",
                    "converged",
                ],
                rows,
                note="A difference whose seed ranges overlap is within seed-to-seed spread; "
                "the sharpness claims test the paired differences.",
            )
        ]

    def extra_figures(self, results, out_dir: Path) -> list[Figure]:
        """The 2-D slices of the first seed, one panel per arm: the rise of the training MSE
        over its value at the trained weights (the shape of the landscape), on one colour
        scale."""
        data = results.curves[results.curves["curve"] == "slice2d"]
        if data.empty:
            return []
        cfg = results.config["landscape"]
        steps, span = cfg["steps_2d"], cfg["span"]
        labels = {k: v.get("label", k) for k, v in results.config["methods"].items()}
        ticks = np.linspace(-span, span, steps)
        figures = []
        for i, (problem, sub) in enumerate(data.groupby("problem", sort=False)):
            seed = int(sub["seed"].min())
            sub = sub[sub["seed"] == seed]
            grids = {}
            for method, g in sub.groupby("method", sort=False):
                z = g.sort_values("x")["y"].to_numpy(float).reshape(steps, steps)
                centre = z[steps // 2, steps // 2]
                with np.errstate(divide="ignore", invalid="ignore"):
                    grids[method] = (np.log10(z / centre), centre)
            finite = np.concatenate([z[np.isfinite(z)] for z, _ in grids.values()])
            if finite.size == 0:
                continue
            lo, hi = float(finite.min()), float(finite.max())
            plt = plotting.pyplot()
            ncols = min(4, len(grids))
            nrows = -(-len(grids) // ncols)
            fig, axes = plt.subplots(
                nrows, ncols, figsize=(3.3 * ncols, 3.0 * nrows), squeeze=False
            )
            cs = None
            for ax, (method, (z, centre)) in zip(axes.flat, grids.items()):
                cs = ax.contourf(ticks, ticks, z, levels=np.linspace(lo, hi + 1e-12, 21))
                ax.plot([0], [0], "r+", ms=8)
                ax.set_title(f"{labels.get(method, method)}\nMSE at + = {centre:.3g}", fontsize=8)
                ax.set_xlabel("alpha (direction 1)", fontsize=7)
                ax.set_ylabel("beta (direction 2)", fontsize=7)
                ax.tick_params(labelsize=6)
            for ax in list(axes.flat)[len(grids) :]:
                ax.axis("off")
            fig.tight_layout()
            bar = fig.colorbar(cs, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02)
            bar.set_label("log10(training MSE / MSE at the trained weights)")
            name = f"landscape-2d-{i}.png"
            plotting.save(fig, out_dir / name)
            figures.append(
                Figure(
                    name,
                    f"{problem}, seed {seed}: rise of the training MSE (probe images) on a plane "
                    "through the trained weights (red +) along two random filter-normalized "
                    "directions, as log10 of its ratio to the MSE at the trained weights, on one "
                    "colour scale. One seed: differences between panels are not tested; the "
                    "sharpness table and claims give the spread over seeds.",
                )
            )
        return figures


__all__ = ["CDEC", "METHODS", "arm", "budget_of", "depth_of", "load_images"]
