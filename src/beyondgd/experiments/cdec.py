"""``cdec``: does warm-starting (continuation) an overparameterized unfolding network help?

DECONET (MSE), DECONET (log-cosh), continuation (MSE) and C-DEC (continuation + log-cosh) are
trained on compressed measurements of Fashion-MNIST and of grey natural-image patches across
measurement ratios, layer counts and redundancies ``N/n`` (cdec.md). Each unit trains one model
and probes its training-loss landscape (1-D / 2-D filter-normalized slices and sharpness).
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from beyondgd.core import derive_seed, finite_or_none, make_generator
from beyondgd.data import DataNotFoundError, load_fashion_mnist, load_image_patches, pool2x2
from beyondgd.experiments.base import Experiment, Figure, Report, Table, Unit, Verdict
from beyondgd.experiments.plotting import plot_grouped_bars, plot_median_curves
from beyondgd.experiments.registry import register
from beyondgd.experiments.stats import compare_paired, median_range
from beyondgd.landscape import (
    Slice1D,
    Slice2D,
    plot_slices_1d,
    plot_slices_2d,
    sharpness,
    slice_1d,
    slice_2d,
)
from beyondgd.unfolding import DECONET, Continued, GaussianCS, Trainer, get_loss

#: model name -> (training loss, uses continuation)
MODELS = {
    "deconet-mse": ("mse", False),
    "deconet-logcosh": ("log-cosh", False),
    "continuation-mse": ("mse", True),
    "cdec": ("log-cosh", True),
}
DATASET_LABEL = {"fashion-mnist": "FMNIST", "patches": "patches"}
#: one-sided Wilcoxon signed-rank needs 5 pairs to reach p < 0.05 (1/32)
MIN_PAIRS = 5


def _seed(*parts: object) -> int:
    return derive_seed("cdec", *parts) % 2**31


@functools.lru_cache(maxsize=4)
def _images(
    dataset: str, side: int, n_train: int, n_val: int, n_test: int, path: str | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flattened train / val / test images standardised with the training set's mean and std."""
    if dataset == "fashion-mnist":
        try:
            train, _ = load_fashion_mnist("train", path=path, limit=n_train + n_val)
            test, _ = load_fashion_mnist("test", path=path, limit=n_test)
        except DataNotFoundError as exc:
            raise DataNotFoundError(
                f"{exc} (cdec reads it from the config key fashion_mnist_path = {path!r})"
            ) from exc
        if side == 14:
            train, test = pool2x2(train), pool2x2(test)
        elif side != 28:
            raise ValueError(f"image_side for fashion-mnist must be 14 or 28, got {side}")
        train, val = train[:n_train], train[n_train:]
    elif dataset == "patches":
        both = load_image_patches("train", n_train + n_val, size=side, seed=0, split_by="location")
        train, val = both[:n_train], both[n_train:]
        test = load_image_patches("test", n_test, size=side, seed=0, split_by="location")
    else:
        raise ValueError(f"unknown dataset {dataset!r}; expected 'fashion-mnist' or 'patches'")
    flat = [x.reshape(x.shape[0], -1).double() for x in (train, val, test)]
    mean, std = flat[0].mean(), flat[0].std()
    return tuple(((x - mean) / std).float() for x in flat)  # type: ignore[return-value]


def _grid(values: np.ndarray) -> list:
    return (
        [[finite_or_none(v) for v in row] for row in values]
        if values.ndim == 2
        else [finite_or_none(v) for v in values]
    )


@register
class CDECExperiment(Experiment):
    name = "cdec"
    title = "C-DEC: continuation and overparameterization for an unfolding network (DECONET)"
    claim = (
        "Warm-starting DECONET by continuation (C-DEC, trained with log-cosh) gives lower test "
        "error, a lower generalization gap and a smoother training-loss landscape than DECONET; "
        "continuation, overparameterization (N/n) and the log-cosh loss each help."
    )
    # full: 288 runs at 28 x 28 / 32 x 32 with N up to 10 n; estimated from the quick preset's
    # measured throughput (cost ~ images x epochs x layers x stages x N n), on 2 idle CPU cores.
    expected_seconds = {"quick": 30, "full": 80 * 3600}

    def config(self, preset: str) -> dict[str, Any]:
        quick = preset == "quick"
        return {
            "seeds": [0] if quick else [0, 1, 2],
            "datasets": ["fashion-mnist"] if quick else ["fashion-mnist", "patches"],
            "image_side": {"fashion-mnist": 14 if quick else 28, "patches": 32},
            "ratios": [0.25] if quick else [0.25, 0.5],
            "layers": [5] if quick else [5, 10],
            "redundancies": [1, 4] if quick else [1, 4, 10],
            "models": list(MODELS),
            "n_train": 1500 if quick else 2000,
            "n_val": 300 if quick else 500,
            "n_test": 500 if quick else 1000,
            "epochs": 8 if quick else 15,
            "patience": 3,
            "batch_size": 128,
            "lr": {"fashion-mnist": 1e-2, "patches": 1e-3},
            "step_decay": {"fashion-mnist": [0.5, 0.3], "patches": [0.7, 0.5]},
            "mu": 100.0,
            "stages": 3,
            "noise_std": 1e-4,
            "landscape": {
                "n_images": 128 if quick else 256,
                "span": 1.0,
                "steps_1d": 21 if quick else 31,
                "steps_2d": 9 if quick else 13,
                # Lanczos on Hessian-vector products: on a trained continuation model the
                # power method needed 50-70 products where Lanczos needed 15 (clustered top).
                "sharpness_method": "lanczos",
                "sharpness_iters": 40 if quick else 80,
                "sharpness_tol": 1e-2 if quick else 1e-3,
            },
            "fashion_mnist_path": None,
            # Intra-op threads per unit: the quick preset's matmuls are small, and on 2 shared
            # cores extra threads spin-wait (measured 9x slower with 2 threads under load); the
            # full preset's 7840 x 784 matmuls gain from 2 (None would keep the runner's 1).
            "threads": 1 if quick else 2,
            "device": "cpu",
        }

    @staticmethod
    def _cell(dataset: str, ratio: float, layers: int, red: float) -> str:
        return f"{dataset}/m={ratio:g}n/L={layers}/N={red:g}n"

    def units(self, config: dict[str, Any]) -> list[Unit]:
        return [
            Unit(
                f"{self._cell(d, r, L, red)}/{model}/seed={s}",
                {
                    "dataset": d,
                    "ratio": r,
                    "layers": L,
                    "redundancy": red,
                    "model": model,
                    "seed": s,
                },
            )
            for d in config["datasets"]
            for r in config["ratios"]
            for L in config["layers"]
            for red in config["redundancies"]
            for s in config["seeds"]
            for model in config["models"]
        ]

    def run_unit(self, unit: Unit, config: dict[str, Any]) -> dict[str, Any]:
        previous = torch.get_num_threads()
        torch.set_num_threads(config.get("threads") or previous)
        try:
            return self._run_unit(unit, config)
        finally:
            torch.set_num_threads(previous)

    def _run_unit(self, unit: Unit, config: dict[str, Any]) -> dict[str, Any]:
        p = unit.params
        dataset, ratio, layers, red, seed = (
            p["dataset"],
            p["ratio"],
            p["layers"],
            p["redundancy"],
            p["seed"],
        )
        loss_name, continued = MODELS[p["model"]]
        side = config["image_side"][dataset]
        xtr, xva, xte = _images(
            dataset,
            side,
            config["n_train"],
            config["n_val"],
            config["n_test"],
            config["fashion_mnist_path"],
        )
        device = torch.device(config.get("device") or "cpu")
        xtr, xva, xte = (x.to(device) for x in (xtr, xva, xte))
        n = xtr.shape[1]
        m = max(1, round(ratio * n))
        # Same measurement matrix, noise and initial W for every model of a (cell, seed).
        op = GaussianCS(m, n, seed=_seed("A", dataset, ratio, seed), device=device)
        gen = make_generator(_seed("noise", dataset, ratio, seed))
        noise = config["noise_std"]
        ytr, yva, yte = (
            op(x) + noise * torch.randn(x.shape[0], m, generator=gen).to(device)
            for x in (xtr, xva, xte)
        )
        a, b = config["step_decay"][dataset]
        net = DECONET(
            op,
            redundancy=red,
            layers=layers,
            mu=config["mu"],
            a=a,
            b=b,
            eps=noise * math.sqrt(m),
            clamp=(float(xtr.min()), float(xtr.max())),  # the training set's range
            seed=_seed("W", dataset, ratio, layers, red, seed),
        )
        model = Continued(net, stages=config["stages"]) if continued else net
        trainer = Trainer(
            model,
            loss_name,
            lr=config["lr"][dataset],
            batch_size=config["batch_size"],
            max_epochs=config["epochs"],
            patience=config["patience"],
            seed=_seed("shuffle", dataset, ratio, layers, red, seed),
        )
        result = trainer.fit((ytr, xtr), test=(yte, xte), val=(yva, xva))
        final = result.final
        record: dict[str, Any] = {
            "model": p["model"],
            "loss": loss_name,
            "stages": config["stages"] if continued else 1,
            "n": n,
            "m": m,
            "N": int(net.W.shape[0]),
            "test_mse": final["test_mse"],
            "test_log_cosh": final["test_log_cosh"],
            "train_mse": final["train_mse"],
            "train_log_cosh": final["train_log_cosh"],
            "val_mse": final["val_mse"],
            "gap_mse": final["gap_mse"],
            "gap_log_cosh": final["gap_log_cosh"],
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "diverged": result.diverged,
            "images_per_second": finite_or_none(result.images_per_second),
            "curve_test_mse": [h["test_mse"] for h in result.history],
            "curve_train_mse": [h["train_mse"] for h in result.history],
        }
        t0 = time.perf_counter()
        record.update(self._landscape(model, ytr, xtr, loss_name, config, unit.key))
        record["landscape_seconds"] = time.perf_counter() - t0
        record["train_seconds"] = result.train_seconds
        return record

    def _landscape(self, model, ytr, xtr, loss_name, config, key) -> dict[str, Any]:
        cfg = config["landscape"]
        k = cfg["n_images"]
        yp, xp = ytr[:k], xtr[:k]
        model.eval()

        def mse(mdl):
            return F.mse_loss(mdl(yp), xp)

        own = get_loss(loss_name)

        def own_loss(mdl):
            return own(mdl(yp), xp)

        s1 = slice_1d(
            model, mse, span=cfg["span"], steps=cfg["steps_1d"], seed=_seed("slice1d", key)
        )
        s2 = slice_2d(
            model, mse, span=cfg["span"], steps=cfg["steps_2d"], seed=_seed("slice2d", key)
        )
        probe = {
            "n_iter": cfg["sharpness_iters"],
            "tol": cfg["sharpness_tol"],
            "method": cfg["sharpness_method"],
            "seed": _seed("sharp", key),
        }
        sh = sharpness(model, mse, **probe)
        sh_own = sh if loss_name == "mse" else sharpness(model, own_loss, **probe)
        return {
            "sharpness_mse": finite_or_none(sh.eigenvalue),
            "sharpness_own": finite_or_none(sh_own.eigenvalue),
            "sharpness_converged": bool(sh.converged and sh_own.converged),
            "sharpness_residual": finite_or_none(sh.residual),
            "sharpness_products": sh.n_iter + (0 if sh_own is sh else sh_own.n_iter),
            "slice1d_alphas": _grid(s1.alphas),
            "slice1d_mse": _grid(s1.losses),
            "slice2d_alphas": _grid(s2.alphas),
            "slice2d_mse": _grid(s2.losses),
            "landscape_center_mse": finite_or_none(s1.center_loss),
        }

    # ------------------------------------------------------------------ analysis
    def analyze(self, config, records, out_dir: Path) -> Report:
        cells = [
            (d, r, L, red)
            for d in config["datasets"]
            for r in config["ratios"]
            for L in config["layers"]
            for red in config["redundancies"]
        ]
        seeds, models = config["seeds"], config["models"]

        def rec(cell, model, seed):
            return records[f"{self._cell(*cell)}/{model}/seed={seed}"]

        def vals(cell, model, field):
            return [rec(cell, model, s)[field] for s in seeds]

        def label(cell):
            d, r, L, red = cell
            side = config["image_side"][d]
            return f"{DATASET_LABEL.get(d, d)}{side} m={r:g}n L={L} N={red:g}n"

        def fmt(values):
            finite = [v for v in values if v is not None]
            text = median_range(finite) if finite else "n/a"
            missing = len(values) - len(finite)
            return text + (f" ({missing} non-finite)" if missing else "")

        rows = []
        for cell in cells:
            for model in models:
                rows.append(
                    [
                        label(cell),
                        model,
                        fmt(vals(cell, model, "test_mse")),
                        fmt(vals(cell, model, "test_log_cosh")),
                        fmt(vals(cell, model, "train_mse")),
                        fmt(vals(cell, model, "gap_mse")),
                        fmt(vals(cell, model, "gap_log_cosh")),
                        fmt(vals(cell, model, "sharpness_mse")),
                        fmt(vals(cell, model, "sharpness_own")),
                        fmt(vals(cell, model, "best_epoch")),
                    ]
                )
        table = Table(
            "Test error, generalization gap and sharpness (median [min, max] over seeds)",
            [
                "cell",
                "model",
                "test MSE",
                "test log-cosh",
                "train MSE",
                "gap MSE",
                "gap log-cosh",
                "sharpness (MSE)",
                "sharpness (own loss)",
                "best epoch",
            ],
            rows,
            note="Gap = test - train, both evaluated in eval mode after training. Sharpness = top "
            "Hessian eigenvalue of the training MSE (a common measure for every model) and "
            "of the model's own training loss, on the landscape probe images, by Lanczos on "
            "Hessian-vector products (or the power method, per config). Log-cosh is "
            "about MSE/2 for small residuals: compare a column only with itself.",
        )

        verdicts = self._verdicts(config, cells, rec)
        figures = self._figures(config, cells, rec, label, out_dir)
        ratios = []
        for cell in cells:
            base = np.median(
                [v for v in vals(cell, "deconet-mse", "test_mse") if v is not None] or [np.nan]
            )
            if {"cdec", "deconet-mse"} <= set(models):
                c = np.median(
                    [v for v in vals(cell, "cdec", "test_mse") if v is not None] or [np.nan]
                )
                ratios.append(f"{label(cell)}: DECONET / C-DEC test MSE = {base / c:.3g}")
        return Report(
            self.title,
            self.claim,
            paragraphs=[
                "Setup: y = A x + e with A i.i.d. N(0, 1/m) (one draw per dataset, ratio and "
                f"seed), noise {config['noise_std']:g} N(0, I), eps = noise * sqrt(m); images "
                "standardised with the training set's mean and std; output clamped to the "
                f"training set's range. DECONET: mu = {config['mu']:g}, shared learned W "
                "(Kaiming init, same init for all four models of a cell and seed), full "
                "backpropagation, elementwise soft threshold. Continuation: "
                f"K = {config['stages']} stages, shared W, x0 <- previous stage's output, duals "
                "warm-started, trained end-to-end. Adam, batch "
                f"{config['batch_size']}, up to {config['epochs']} epochs, early stopping "
                f"(patience {config['patience']}) on a validation split of the training images; "
                f"{config['n_train']} / {config['n_val']} / {config['n_test']} train / val / "
                "test images.",
                "C-DEC's continuation is a reconstruction from TFOCS's continuation and the "
                "paper's abstract (its method section could not be read).",
                "Verdicts pair models on the same (dataset, ratio, L, N/n, seed) cell; "
                f"a one-sided Wilcoxon signed-rank test on log10 values needs at least {MIN_PAIRS} "
                "pairs to reach p < 0.05, so with fewer pairs a verdict is inconclusive whatever "
                "the direction.",
                "; ".join(ratios) + "." if ratios else "",
                self._sharpness_note(records),
            ],
            tables=[table],
            verdicts=verdicts,
            figures=figures,
        )

    @staticmethod
    def _sharpness_note(records) -> str:
        total = len(records)
        done = sum(bool(r.get("sharpness_converged")) for r in records.values())
        return (
            f"Sharpness estimates that met their residual tolerance: {done} of {total} runs "
            "(a run counts only when both its MSE and own-loss estimates converged)."
        )

    def _verdicts(self, config, cells, rec) -> list[Verdict]:
        seeds, models = config["seeds"], set(config["models"])
        out = []

        def collect(combos, field):
            """combos: list of ((cell, model), (cell, model)) method/baseline pairs."""
            m, b = [], []
            for (mcell, mmodel), (bcell, bmodel) in combos:
                for s in seeds:
                    mv, bv = rec(mcell, mmodel, s)[field], rec(bcell, bmodel, s)[field]
                    mv = math.inf if mv is None else mv
                    bv = math.inf if bv is None else bv
                    if math.isinf(mv) and math.isinf(bv):
                        continue
                    m.append(mv)
                    b.append(bv)
            return m, b

        def decide(claim, combos, field, metric, mname, bname, log=True):
            m, b = collect(combos, field)
            if not m:
                out.append(Verdict(claim, "inconclusive", "no paired runs in this configuration"))
                return
            log = log and all(0 < v < math.inf for v in m + b)
            cmp = compare_paired(m, b, log=log)
            evidence = cmp.evidence(mname, bname, metric)
            status = cmp.status
            if len(m) < MIN_PAIRS:
                direction = "better" if cmp.median_method < cmp.median_baseline else "not better"
                status = "inconclusive"
                evidence += (
                    f"; only {len(m)} paired runs (fewer than {MIN_PAIRS}, so no test can reach "
                    f"p < 0.05): the method is {direction} on the median here, but that is not "
                    "a verdict"
                )
            out.append(Verdict(claim, status, evidence))

        if {"continuation-mse", "deconet-mse"} <= models or {"cdec", "deconet-logcosh"} <= models:
            combos = []
            for cell in cells:
                if {"continuation-mse", "deconet-mse"} <= models:
                    combos.append(((cell, "continuation-mse"), (cell, "deconet-mse")))
                if {"cdec", "deconet-logcosh"} <= models:
                    combos.append(((cell, "cdec"), (cell, "deconet-logcosh")))
            decide(
                "Continuation helps: lower test MSE than the same network without it (same loss)",
                combos,
                "test_mse",
                "test MSE",
                "with continuation",
                "without",
            )
        reds = sorted(config["redundancies"])
        if len(reds) >= 2:
            combos = []
            for cell in cells:
                if cell[3] != reds[-1]:
                    continue
                low = (*cell[:3], reds[0])
                combos += [((cell, mdl), (low, mdl)) for mdl in config["models"]]
            decide(
                f"Overparameterization helps: N = {reds[-1]:g}n has lower test MSE than "
                f"N = {reds[0]:g}n (every model)",
                combos,
                "test_mse",
                "test MSE",
                f"N={reds[-1]:g}n",
                f"N={reds[0]:g}n",
            )
        else:
            out.append(
                Verdict(
                    "Overparameterization helps",
                    "inconclusive",
                    "only one redundancy N/n in this configuration",
                )
            )
        if {"deconet-logcosh", "deconet-mse"} <= models or {"cdec", "continuation-mse"} <= models:
            combos = []
            for cell in cells:
                if {"deconet-logcosh", "deconet-mse"} <= models:
                    combos.append(((cell, "deconet-logcosh"), (cell, "deconet-mse")))
                if {"cdec", "continuation-mse"} <= models:
                    combos.append(((cell, "cdec"), (cell, "continuation-mse")))
            decide(
                "Log-cosh helps: training with log-cosh gives lower test MSE than training "
                "with MSE (same architecture)",
                combos,
                "test_mse",
                "test MSE",
                "log-cosh",
                "MSE",
            )
        if {"cdec", "deconet-mse"} <= models:
            combos = [((cell, "cdec"), (cell, "deconet-mse")) for cell in cells]
            decide(
                "C-DEC has lower test MSE than DECONET (MSE)",
                combos,
                "test_mse",
                "test MSE",
                "C-DEC",
                "DECONET",
            )
            decide(
                "C-DEC has a lower generalization gap (test - train MSE) than DECONET (MSE)",
                combos,
                "gap_mse",
                "gap",
                "C-DEC",
                "DECONET",
                log=False,
            )
            decide(
                "C-DEC's landscape is smoother: lower sharpness (top Hessian eigenvalue of the "
                "training MSE) than DECONET (MSE)",
                combos,
                "sharpness_mse",
                "sharpness",
                "C-DEC",
                "DECONET",
            )
        return out

    def _figures(self, config, cells, rec, label, out_dir: Path) -> list[Figure]:
        seeds, models = config["seeds"], config["models"]
        figures = []
        groups = [label(c) for c in cells]

        def per_model(field):
            return {
                mdl: [
                    [
                        np.nan if rec(c, mdl, s)[field] is None else rec(c, mdl, s)[field]
                        for s in seeds
                    ]
                    for c in cells
                ]
                for mdl in models
            }

        plot_grouped_bars(
            out_dir / "test_mse.png",
            groups,
            per_model("test_mse"),
            ylabel="test MSE",
            title="Test MSE per cell",
        )
        figures.append(Figure("test_mse.png", "Test MSE per cell and model (median, min-max)"))
        plot_grouped_bars(
            out_dir / "gap.png",
            groups,
            per_model("gap_mse"),
            ylabel="test - train MSE",
            title="Generalization gap",
            logy=False,
        )
        figures.append(Figure("gap.png", "Generalization gap (test - train MSE)"))
        sharp = per_model("sharpness_mse")
        positive = all(v > 0 for g in sharp.values() for vs in g for v in vs if np.isfinite(v))
        plot_grouped_bars(
            out_dir / "sharpness.png",
            groups,
            sharp,
            ylabel="top Hessian eigenvalue (train MSE)",
            title="Sharpness of the training MSE",
            logy=positive,
        )
        figures.append(
            Figure(
                "sharpness.png",
                "Sharpness: top Hessian eigenvalue of the training MSE at the trained weights",
            )
        )

        epochs = config["epochs"]
        panels = {}
        for c in cells:
            panels[label(c)] = {}
            for mdl in models:
                runs = []
                for s in seeds:
                    curve = [np.nan if v is None else v for v in rec(c, mdl, s)["curve_test_mse"]]
                    curve = curve + [curve[-1]] * (epochs - len(curve))
                    runs.append(curve)
                panels[label(c)][mdl] = runs
        plot_median_curves(
            out_dir / "curves.png",
            list(range(1, epochs + 1)),
            panels,
            xlabel="epoch",
            ylabel="test MSE",
            ncols=min(3, len(cells)),
        )
        figures.append(
            Figure(
                "curves.png",
                "Test MSE per epoch (median over seeds; an early-"
                "stopped run is held at its last value)",
            )
        )

        # Landscape plots for the first seed: every N/n at the first ratio and the largest L.
        shown = [c for c in cells if c[1] == config["ratios"][0] and c[2] == max(config["layers"])]
        s0 = seeds[0]
        for i, c in enumerate(shown):
            s1 = {}
            s2 = {}
            for mdl in models:
                r = rec(c, mdl, s0)
                alphas = np.asarray(r["slice1d_alphas"], float)
                s1[mdl] = Slice1D(
                    alphas,
                    np.asarray([np.nan if v is None else v for v in r["slice1d_mse"]], float),
                    r["landscape_center_mse"] or np.nan,
                    [],
                )
                a2 = np.asarray(r["slice2d_alphas"], float)
                z = np.asarray(
                    [[np.nan if v is None else v for v in row] for row in r["slice2d_mse"]], float
                )
                s2[f"{mdl} (sharpness {r['sharpness_mse'] or np.nan:.3g})"] = Slice2D(
                    a2, a2, z, r["landscape_center_mse"] or np.nan, ([], [])
                )
            f1, f2 = f"landscape_1d_{i}.png", f"landscape_2d_{i}.png"
            plot_slices_1d(
                out_dir / f1, s1, title=f"{label(c)}, seed {s0}", ylabel="training MSE", logy=True
            )
            plot_slices_2d(out_dir / f2, s2, ncols=len(models), title=f"{label(c)}, seed {s0}")
            figures.append(
                Figure(
                    f1,
                    f"1-D slice of the training MSE along a random "
                    f"filter-normalized direction: {label(c)}, seed {s0}",
                )
            )
            figures.append(
                Figure(f2, f"2-D slice of the training MSE (log10): {label(c)}, seed {s0}")
            )
        return figures
