r"""``adm``: ADM (alternating direction, alpha-expansion X-step) against gradient descent on a
regularized scribble-segmentation loss, at the same network, data and step budget (adm.md).

One **replicate is one seed**: it draws its own training / validation / test scenes, scribbles,
network initialisation and mini-batch order. Per problem (a dataset and a scribble condition)
and seed, one network is pre-trained with partial cross-entropy (pCE); every method fine-tunes
that same state for the same number of steps and mini-batches: pCE alone (``pce``), GD on
pCE + lambda x relaxed (bilinear) grid Potts (``gd-grid``), GD on pCE + lambda x dense CRF
(``gd-dense``) and ADM on the grid Potts loss (``adm``). A unit runs one method over its whole
lambda grid and returns one row per lambda; the lambda with the best **validation** mIoU is the
method's choice for that seed (ties at the top go to the lambda nearest the middle of the grid,
so a flat curve says nothing about small or large lambda), and its test numbers are copied onto
every row of the unit as ``best_*`` columns (the standard summary averages a seed's rows).

Measured on the training set: the discrete grid-CRF objective of the network's hard output,
pCE(S) + lambda Potts(argmax S) / N (what ADM's X-step works on), and the relaxed objective
pCE(S) + lambda bilinear-Potts(S) / N (what GD minimises); on the test set: mIoU from the
dataset's confusion matrix. Energies are compared at one lambda shared by both arms
(``lam_ref``): at different lambdas they are different objectives.

Pre-training is cached in the reproduction instance (one per worker process), keyed by
(dataset, scribble condition, seed) and the settings that determine it; it uses explicit seeds
only, so a worker that recomputes it gets the same weights. Each unit reports its fine-tuning
time and X-step time as curves over lambda (rows must not carry timings: the results table is
compared for determinism).
"""

from __future__ import annotations

import copy
import functools
import json
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from beyondgd.core import derive_seed, finite_or_none
from beyondgd.experiments.harness import (
    Claim,
    CurveSpec,
    Figure,
    Method,
    MetricSpec,
    Problem,
    Reproduction,
    Results,
    Table,
    UnitResult,
)
from beyondgd.experiments.registry import register

NAME = "adm"
FULL = "full"
#: label characters of the example-prediction payload (one per pixel)
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
#: config keys that determine the data of a (dataset, scribbles, seed)
_DATA_KEYS = ("size", "n_train", "n_val", "n_test", "n_classes", "fashion_mnist_path", "folder")
#: ... and the pre-trained network
_PRETRAIN_KEYS = (*_DATA_KEYS, "width", "batch", "pretrain_lr", "pretrain_steps", "neighbourhood")
_CACHE_SIZE = 4


def scribble_variant(condition: str) -> dict[str, Any]:
    """``make_scribbles`` arguments of a scribble condition: ``"full"``, a length share such as
    ``"0.3"`` (a contiguous part of every full stroke) or ``"clicks"`` (one pixel per region)."""
    if condition == FULL:
        return {"length": 1.0}
    if condition == "clicks":
        return {"clicks": True}
    try:
        length = float(condition)
    except ValueError:
        raise ValueError(
            f"scribble conditions are 'full', 'clicks' or a length share such as '0.3', got "
            f"{condition!r}"
        ) from None
    if not 0.0 < length <= 1.0:
        raise ValueError(f"a scribble length share must lie in (0, 1], got {condition!r}")
    return {"length": length}


def make_splits(config: Mapping[str, Any], dataset: str, scribbles: str, seed: int):
    """``(train with scribbles, validation, test)`` of one replicate: everything random is drawn
    from ``(dataset, part, seed)``, so every method sees the same data for the same seed, and
    the scribble conditions of one seed are nested (shorter strokes are parts of the full ones)."""
    from beyondgd.data.scenes import (
        load_scribble_folder,
        make_fashion_scenes,
        make_scribbles,
        make_texture_scenes,
    )

    def part_seed(part: str) -> int:
        return derive_seed(NAME, dataset, part, seed) % 2**31

    if dataset == "folder":  # a user's images, scribbles and masks: a split drawn per seed
        folder = config["folder"]
        if not folder:
            raise ValueError("dataset 'folder' needs config['folder'] (images, scribbles, masks)")
        size = folder.get("size")
        data = load_scribble_folder(
            folder["images"],
            folder["scribbles"],
            masks=folder["masks"],
            size=None if size is None else (size, size),
        )
        n = len(data)
        gen = torch.Generator().manual_seed(part_seed("split"))
        perm = torch.randperm(n, generator=gen).tolist()
        n_val = max(1, round(folder["val_fraction"] * n))
        n_test = max(1, round(folder["test_fraction"] * n))
        if n - n_val - n_test < 1:
            raise ValueError(f"the folder has {n} images: too few to split into train/val/test")
        val, test = perm[:n_val], perm[n_val : n_val + n_test]
        return data.subset(perm[n_val + n_test :]), data.subset(val), data.subset(test)
    if dataset == "texture":

        def make(n: int, part: str):
            return make_texture_scenes(
                n, size=config["size"], n_classes=config["n_classes"], seed=part_seed(part)
            )
    elif dataset == "fashion":

        def make(n: int, part: str):
            return make_fashion_scenes(
                n,
                size=config["size"],
                seed=part_seed(part),
                path=config["fashion_mnist_path"],
                split="test" if part == "test" else "train",
            )
    else:
        raise ValueError(f"datasets are 'texture', 'fashion' or 'folder', got {dataset!r}")
    train = make(config["n_train"], "train")
    val, test = make(config["n_val"], "val"), make(config["n_test"], "test")
    marks = make_scribbles(train.masks, seed=part_seed("scribbles"), **scribble_variant(scribbles))
    return train.with_scribbles(marks), val, test


def select_lambda(
    lams: Sequence[float], scores: Sequence[float | None], tolerance: float
) -> tuple[int | None, int]:
    """``(index of the chosen lambda, number tied at the top)`` from validation scores (higher
    is better; ``None`` = a failed run, never chosen).

    Every lambda within ``tolerance`` of the best score is tied; the tie goes to the lambda
    nearest the middle of the grid (then the higher score, then the smaller index), so a flat
    validation curve picks the middle, not the smallest lambda."""
    finite = [(i, s) for i, s in enumerate(scores) if s is not None and math.isfinite(s)]
    if not finite:
        return None, 0
    best = max(s for _, s in finite)
    tied = [(i, s) for i, s in finite if s >= best - tolerance]
    middle = (len(lams) - 1) / 2.0
    index = min(tied, key=lambda t: (abs(t[0] - middle), -t[1], t[0]))[0]
    return index, len(tied)


def encode_labels(labels: torch.Tensor) -> str | None:
    """A hard labelling ``(H, W)`` as one character per pixel (row-major), or None if it has
    more labels than characters."""
    flat = labels.reshape(-1).tolist()
    if flat and max(flat) >= len(_DIGITS):
        return None
    return "".join(_DIGITS[v] for v in flat)


def decode_labels(text: str, shape: tuple[int, int]) -> np.ndarray:
    return np.array([_DIGITS.index(c) for c in text], dtype=np.int64).reshape(shape)


class _LRU:
    """A small most-recently-used store (per worker process, per reproduction instance)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, make: Any) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = make()
        self._items[key] = value
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value


def _key(config: Mapping[str, Any], keys: Sequence[str], *parts: Any) -> tuple:
    return (*parts, json.dumps({k: config.get(k) for k in keys}, sort_keys=True))


def _network(config: Mapping[str, Any], n_classes: int, problem: Problem, seed: int):
    from beyondgd.segmentation import SegNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(NAME, "init", problem.params["dataset"], seed) % 2**63)
        return SegNet(3, n_classes, width=config["width"])


def _trainer(
    config: Mapping[str, Any],
    model: torch.nn.Module,
    spec: Mapping[str, Any],
    lam: float,
    steps: int,
    order_seed: int,
    eval_every: int = 0,
    lr: float | None = None,
):
    from beyondgd.segmentation import SegmentationTrainer

    return SegmentationTrainer(
        model,
        method=spec["kind"],
        lam=lam,
        regularizer=spec.get("regularizer", "grid"),
        relaxation=spec.get("relaxation", "bilinear"),
        neighbourhood=config["neighbourhood"],
        sigma_rgb=spec.get("sigma_rgb", 15.0),
        sigma_xy=spec.get("sigma_xy", 100.0),
        beta=spec.get("beta", 1.5),
        expansion_iters=spec.get("expansion_iters", 5),
        schedule=spec.get("schedule", "batch"),
        restrict_labels=spec.get("restrict_labels", False),
        lr=config["lr"] if lr is None else lr,
        batch_size=config["batch"],
        steps=steps,
        eval_every=eval_every,
        energy_lam=config["lam_ref"],
        n_jobs=config["n_jobs"],
        seed=order_seed,
    )


def method_lams(spec: Mapping[str, Any]) -> list[float]:
    """The lambda grid of a method (pCE has only lambda = 0: no regularizer)."""
    return [0.0] if spec["kind"] == "pce" else [float(v) for v in spec["lams"]]


def _label(config: Mapping[str, Any], method: str) -> str:
    return str(config["methods"][method].get("label", method))


def _column(by: Mapping[str, pd.DataFrame], method: str, column: str) -> pd.Series:
    """``by[method][column]`` (per seed), empty when the method did not run."""
    return by[method][column] if method in by else pd.Series(dtype=float)


def _range(values: Sequence[float]) -> str:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return "failed"
    if v.size == 1 or v.min() == v.max():
        return f"{np.median(v):.3g}"
    return f"{np.median(v):.3g} [{v.min():.3g}, {v.max():.3g}]"


def _row(config: Mapping[str, Any], lam: float, result, val: Mapping[str, Any]) -> dict:
    """One fine-tuning run's row; a diverged run's numbers are None (a failed run)."""
    final = result.final
    ok = not result.diverged

    def good(value: Any) -> float | None:
        return finite_or_none(value) if ok else None

    pce = good(final.get("train_pce"))
    hard = good(final.get("train_potts_hard"))
    relaxed = good(final.get("train_potts_relaxed"))
    budget = int(config["finetune_steps"])
    return {
        "lam": lam,
        "val_miou": good(val.get("miou")),
        "test_miou": good(final.get("test_miou")),
        "test_pixel_accuracy": good(final.get("test_pixel_accuracy")),
        "seed_accuracy": good(final.get("train_seed_accuracy")),
        "train_pce": pce,
        "potts_hard": hard,
        "potts_relaxed": relaxed,
        "energy": None if None in (pce, hard) else pce + lam * hard,
        "energy_relaxed": None if None in (pce, relaxed) else pce + lam * relaxed,
        "diverged": result.diverged,
        "steps": result.steps,
        # a run that stopped early (diverged) is charged its whole budget
        "steps_charged": max(result.steps, budget),
        "images_charged": max(result.steps, budget) * int(config["batch"]),
    }


_METHODS: dict[str, dict[str, Any]] = {
    "pce": {"label": "pCE", "kind": "pce"},
    "gd-grid": {
        "label": "GD (grid Potts)",
        "kind": "gd",
        "regularizer": "grid",
        "relaxation": "bilinear",
        "lams": [0.3, 1.0, 3.0, 10.0, 30.0],
    },
    "gd-dense": {
        "label": "GD (dense CRF)",
        "kind": "gd",
        "regularizer": "dense",
        "sigma_rgb": 15.0,
        "sigma_xy": 100.0,
        "lams": [1.0, 3.0, 10.0],
    },
    "adm": {
        "label": "ADM",
        "kind": "adm",
        "beta": 1.5,
        "expansion_iters": 3,
        "schedule": "batch",
        "restrict_labels": False,
        "lams": [0.3, 1.0, 3.0, 10.0, 30.0],
    },
}


@register
class ADMSegmentation(Reproduction):
    name = NAME
    title = "ADM vs gradient descent for scribble segmentation with a grid-CRF loss"
    summary = (
        "For scribble-supervised segmentation with a nearest-neighbour (grid) Potts loss, ADM "
        "(alternating direction with an alpha-expansion X-step, Marin et al., CVPR 2019) is "
        "claimed to optimize the loss better than gradient descent on its relaxation and to "
        "give better segmentations, while gradient descent does best with a weaker (smoother) "
        "regularization. We test, with seeds as replicates (each draws its own scenes, "
        "scribbles and initialisation) at the same network, data and fine-tuning steps from one "
        "pCE-pre-trained state: whether ADM reaches a lower discrete grid-CRF energy of the "
        "network's hard output on the training set than GD on the relaxed loss at the same "
        "lambda, and a higher test mIoU than GD with each method's lambda chosen on validation "
        "data. GD with a dense CRF, pCE alone, where each method's selected lambda lies, the "
        "relaxed loss, and shorter scribbles down to single clicks are exploratory."
    )
    base_config: dict[str, Any] = {
        "seeds": 10,
        "datasets": ["texture", "fashion"],
        # the scribble-length sweep: these datasets, these conditions (besides "full")
        "sweep_datasets": ["texture"],
        "sweep_scribbles": ["0.8", "0.5", "0.3", "clicks"],
        "size": 32,
        "n_classes": 4,
        "n_train": 128,
        "n_val": 32,
        "n_test": 64,
        "fashion_mnist_path": None,
        "folder": None,  # {"images", "scribbles", "masks", "size", "val_fraction", ...}
        "width": 8,
        "batch": 8,
        "pretrain_lr": 5e-3,
        "pretrain_steps": 600,
        "lr": 2e-3,
        "finetune_steps": 200,
        # evaluations along the lam_ref runs (training curves; they change no number)
        "eval_every": 25,
        "neighbourhood": 8,
        "n_jobs": 1,
        # the lambda at which the energies of the arms are compared (in every regularized grid)
        "lam_ref": 10.0,
        # validation mIoUs within this of the best are a tie (broken toward the grid's middle)
        "lam_tie_tolerance": 0.002,
        "example_images": 3,
        "methods": _METHODS,
    }
    presets = {
        "smoke": {
            "seeds": 2,
            "datasets": ["texture"],
            "sweep_scribbles": ["clicks"],
            "size": 24,
            "n_train": 8,
            "n_val": 4,
            "n_test": 4,
            "width": 4,
            "pretrain_steps": 3,
            "finetune_steps": 2,
            "eval_every": 1,
            "example_images": 2,
            "methods": {
                "gd-grid": {"lams": [1.0, 10.0]},
                "gd-dense": {"lams": [10.0]},
                "adm": {"lams": [1.0, 10.0], "expansion_iters": 1},
            },
        },
        "quick": {
            # 7 seeds: enough for the 2 primary and the 4 exploratory claims under Holm
            "seeds": 7,
            "datasets": ["texture"],
            "sweep_datasets": [],
            "pretrain_steps": 300,
            "finetune_steps": 100,
            "methods": {
                "gd-dense": None,
                "gd-grid": {"lams": [1.0, 3.0, 10.0]},
                "adm": {"lams": [1.0, 3.0, 10.0]},
            },
        },
        "full": {},
        # the pilot's scale (adm.md): 64 x 64 scenes, width 16, 200 training images, 400
        # fine-tuning steps, 5 expansion cycles as in the paper's code
        "paper": {
            "size": 64,
            "width": 16,
            "n_train": 200,
            "n_val": 64,
            "n_test": 128,
            "pretrain_steps": 800,
            "finetune_steps": 400,
            "eval_every": 50,
            "methods": {"adm": {"expansion_iters": 5}},
        },
    }
    # Derived from unit times measured with --workers 1 on this 2-core machine while other
    # work ran on it (the sessions' rule: one worker): quick 202 s of compute for 21 units, so
    # about (202 + 7 x 5 s of pre-training that the second worker repeats) / 2 = 120 s wall on
    # 2 workers; full, from one measured problem x seed of each kind (fashion with the
    # dense-CRF GD: 183 s, a sweep condition: 95 s): 10 x (2 x 183 + 4 x 95) = 7460 s of compute
    # plus repeated pre-training, about 65 min wall on 2 workers; paper: full scaled by pixels x
    # width^2 (16x) and the fine-tuning steps (2x), an estimate, not measured.
    # quick: measured wall time in the fresh-clone `make run` of 2026-12-06 (2 workers); full:
    # measured 3567 s with --workers 2 on 2 cores (a 16-minute test run beside it for part of it)
    expected_seconds = {"smoke": 5, "quick": 90, "full": 3600, "paper": 120000}
    cpus_per_unit = 1
    metrics = (
        MetricSpec("best_test_miou", "test mIoU at the validation-selected lambda", False),
        MetricSpec("energy_ref", "discrete grid-CRF energy at lam_ref (train)", logy=True),
        MetricSpec("relaxed_ref", "relaxed grid-CRF loss at lam_ref (train)", logy=True),
        MetricSpec("best_lam", "validation-selected lambda"),
    )
    curves = (
        CurveSpec("energy_ref", "fine-tuning step", "discrete energy at lam_ref (train)"),
        CurveSpec("test_miou_ref", "fine-tuning step", "test mIoU (run at lam_ref)", logy=False),
    )
    cost_columns = ("steps_charged", "images_charged")

    def __init__(self) -> None:
        self._data = _LRU(_CACHE_SIZE)
        self._pretrained = _LRU(_CACHE_SIZE)

    # ---- problems and methods -----------------------------------------------------------
    def problems(self, config: Mapping[str, Any]) -> list[Problem]:
        out = []
        for dataset in config["datasets"]:
            out.append(Problem(dataset, {"dataset": dataset, "scribbles": FULL}))
        for dataset in config["sweep_datasets"]:
            if dataset == "folder":
                raise ValueError("a folder's own scribbles cannot be shortened (sweep_datasets)")
            for condition in config["sweep_scribbles"]:
                scribble_variant(condition)  # a clear error for a bad condition
                if condition != FULL:
                    what = "clicks" if condition == "clicks" else f"length {condition}"
                    name = f"{dataset}, {what}"
                    out.append(Problem(name, {"dataset": dataset, "scribbles": condition}))
        return out

    def applies(self, problem: Problem, method: Method, config: Mapping[str, Any]) -> bool:
        # the dense-CRF baseline runs with the full scribbles only (as in adm.md's pilot)
        return method.params.get("regularizer") != "dense" or problem.params["scribbles"] == FULL

    def prepare(self, config: Mapping[str, Any]) -> None:
        """Check the config, and that Fashion-MNIST is there, before any unit starts."""
        for name, spec in config["methods"].items():
            if spec["kind"] != "pce" and float(config["lam_ref"]) not in method_lams(spec):
                raise ValueError(
                    f"lam_ref = {config['lam_ref']} must be in every regularized method's "
                    f"lambda grid (the energies are compared there); methods.{name}.lams = "
                    f"{spec['lams']}"
                )
        if "fashion" in config["datasets"]:
            from beyondgd.data.scenes import make_fashion_scenes

            make_fashion_scenes(1, size=16, seed=0, path=config["fashion_mnist_path"])

    # ---- work ---------------------------------------------------------------------------
    def _splits(self, config, problem: Problem, seed: int):
        p = problem.params
        return self._data.get(
            _key(config, _DATA_KEYS, p["dataset"], p["scribbles"], seed),
            lambda: make_splits(config, p["dataset"], p["scribbles"], seed),
        )

    def _pretrained_state(self, config, problem: Problem, seed: int, train) -> dict:
        """The pCE-pre-trained weights of (dataset, scribbles, seed): explicit seeds only."""
        p = problem.params

        def pretrain() -> dict:
            model = _network(config, train.n_classes, problem, seed)
            spec = {"kind": "pce"}
            order = derive_seed(NAME, "pretrain-order", problem.name, seed) % 2**31
            steps, lr = config["pretrain_steps"], config["pretrain_lr"]
            _trainer(config, model, spec, 0.0, steps, order, lr=lr).fit(train)
            return copy.deepcopy(model.state_dict())

        key = _key(config, _PRETRAIN_KEYS, p["dataset"], p["scribbles"], seed)
        return self._pretrained.get(key, pretrain)

    @staticmethod
    def _start_record(trainer, train, test) -> dict[str, Any]:
        """The pre-trained state's numbers (step 0 of the training curves)."""
        rec: dict[str, Any] = {"step": 0}
        rec.update({f"train_{k}": v for k, v in trainer.evaluate(train).items()})
        rec.update({f"test_{k}": v for k, v in trainer.evaluate(test, energies=False).items()})
        return rec

    def run(self, problem, method, seed, config, tuned) -> UnitResult:
        train, val, test = self._splits(config, problem, seed)
        state = self._pretrained_state(config, problem, seed, train)
        spec = method.params
        lams = method_lams(spec)
        share = float((train.scribbles != train.ignore_index).double().mean())
        rows, curves, times, xtimes, examples = [], {}, [], [], []
        for lam in lams:
            model = _network(config, train.n_classes, problem, seed)
            model.load_state_dict(state)
            ref_run = lam == float(config["lam_ref"]) or spec["kind"] == "pce"
            every = int(config["eval_every"]) if ref_run else 0
            order = derive_seed(NAME, "finetune-order", problem.name, seed) % 2**31
            trainer = _trainer(
                config, model, spec, lam, config["finetune_steps"], order, eval_every=every
            )
            start = self._start_record(trainer, train, test) if every else None
            result = trainer.fit(train, test)
            scores = {} if result.diverged else trainer.evaluate(val, energies=False)
            row = _row(config, lam, result, scores)
            rows.append({**row, "scribbled_share": share, "ref_run": ref_run})
            times.append(result.train_seconds / result.steps if result.steps else None)
            xtimes.append(result.xstep_seconds / result.steps if result.steps else None)
            if start is not None:
                history = [start, *result.history]
                pairs = (("energy_ref", "train_energy_discrete"), ("test_miou_ref", "test_miou"))
                for curve, key in pairs:
                    curves[curve] = {
                        "x": [h["step"] for h in history],
                        "y": [finite_or_none(h.get(key)) for h in history],
                    }
            n_ex = min(int(config["example_images"]), len(test))
            example = None
            if seed == 0 and problem.params["scribbles"] == FULL and n_ex and not row["diverged"]:
                from beyondgd.segmentation import predict

                pred = predict(model, test.images[:n_ex])
                example = "/".join(encode_labels(p) or "" for p in pred)
            examples.append(example)
        self._finish_rows(rows, examples, lams, config)
        curves["seconds_per_step"] = {"x": lams, "y": [finite_or_none(t) for t in times]}
        curves["xstep_seconds_per_step"] = {"x": lams, "y": [finite_or_none(t) for t in xtimes]}
        return UnitResult(rows, curves)

    @staticmethod
    def _finish_rows(rows, examples, lams, config) -> None:
        """Mark the validation-selected lambda and copy the unit-level numbers onto every row
        (``best_*`` at the selected lambda; ``*_ref`` of the run at ``lam_ref``, or of the
        pCE run, evaluated at ``lam_ref``)."""
        lam_ref = float(config["lam_ref"])
        index, n_tied = select_lambda(
            lams, [r["val_miou"] for r in rows], float(config["lam_tie_tolerance"])
        )
        best = rows[index] if index is not None else {}
        ref = next((r for r in rows if r.get("ref_run")), {})
        pce, hard, relaxed = (ref.get(k) for k in ("train_pce", "potts_hard", "potts_relaxed"))
        unit = {
            "best_lam": best.get("lam"),
            "best_val_miou": best.get("val_miou"),
            "best_test_miou": best.get("test_miou"),
            "best_test_pixel_accuracy": best.get("test_pixel_accuracy"),
            "n_tied": n_tied,
            "energy_ref": None if None in (pce, hard) else pce + lam_ref * hard,
            "relaxed_ref": None if None in (pce, relaxed) else pce + lam_ref * relaxed,
        }
        for i, row in enumerate(rows):
            row.pop("ref_run", None)
            row["selected"] = i == index
            row.update(unit)
            row["example"] = examples[i] if i == index else None

    # ---- claims ---------------------------------------------------------------------------
    def claims(self, config: Mapping[str, Any]) -> list[Claim]:
        methods = config["methods"]
        lam_ref = f"{float(config['lam_ref']):g}"
        full = {"group_by": ("dataset",), "where": {"scribbles": FULL}}
        sweep = [c for c in config["sweep_scribbles"] if c != FULL]
        swept = {
            "group_by": ("dataset", "scribbles"),
            "where": {"scribbles": sweep, "dataset": list(config["sweep_datasets"])},
        }
        out: list[Claim] = []

        def label(name: str) -> str:
            return _label(config, name)

        def add(sentence, metric, method, baseline, lower, primary=False, scale="linear", **kw):
            if method in methods and baseline in methods:
                out.append(
                    Claim(
                        sentence,
                        metric,
                        method,
                        baseline,
                        lower_is_better=lower,
                        scale=scale,
                        primary=primary,
                        cost="steps_charged",
                        **{**full, **kw},
                    )
                )

        adm = label("adm") if "adm" in methods else "adm"
        gd = label("gd-grid") if "gd-grid" in methods else "gd-grid"
        energy = (
            f"{{dataset}}: {adm} reaches a lower discrete grid-CRF energy of its hard output on "
            f"the training set than {gd} on the relaxed loss, both trained at lambda {lam_ref}"
        )
        best = "each at its validation-selected lambda"
        add(energy, "energy_ref", "adm", "gd-grid", True, True, "log10")
        add(
            f"{{dataset}}: {adm} reaches a higher test mIoU than {gd}, {best}",
            "best_test_miou",
            "adm",
            "gd-grid",
            False,
            True,
        )
        for other in ("gd-dense", "pce"):
            if other in methods:
                add(
                    f"{{dataset}}: {adm} reaches a higher test mIoU than {label(other)}"
                    + (f", {best}" if other != "pce" else " (fine-tuned for the same steps)"),
                    "best_test_miou",
                    "adm",
                    other,
                    False,
                )
        if "pce" in methods:
            add(
                f"{{dataset}}: {gd} reaches a higher test mIoU than {label('pce')} at its "
                "validation-selected lambda",
                "best_test_miou",
                "gd-grid",
                "pce",
                False,
            )
        add(
            f"{{dataset}}: {gd} does best at a smaller lambda than {adm} (validation-selected "
            "lambda per seed, compared in log10; equal choices count as no difference)",
            "best_lam",
            "gd-grid",
            "adm",
            True,
            scale="log10",
        )
        add(
            f"{{dataset}}: {gd} reaches a lower relaxed loss pCE + lambda x bilinear Potts on the "
            f"training set than {adm}, both trained at lambda {lam_ref}",
            "relaxed_ref",
            "gd-grid",
            "adm",
            True,
            scale="log10",
        )
        if sweep and config["sweep_datasets"]:
            add(
                f"{{dataset}}, scribbles {{scribbles}}: {adm} reaches a higher test mIoU than "
                f"{gd}, {best}",
                "best_test_miou",
                "adm",
                "gd-grid",
                False,
                **swept,
            )
            add(
                energy.replace("{dataset}:", "{dataset}, scribbles {scribbles}:"),
                "energy_ref",
                "adm",
                "gd-grid",
                True,
                scale="log10",
                **swept,
            )
        return out

    # ---- report ---------------------------------------------------------------------------
    def describe(self, config: Mapping[str, Any]) -> list[str]:
        methods = config["methods"]
        s = config["size"]
        sweep = [c for c in config["sweep_scribbles"] if c != FULL]
        listed = []
        for name, spec in methods.items():
            if spec["kind"] == "pce":
                what = "partial cross-entropy only (lambda = 0)"
            elif spec["kind"] == "gd":
                reg = (
                    f"dense CRF (sigma_rgb {spec.get('sigma_rgb', 15.0):g}, sigma_xy "
                    f"{spec.get('sigma_xy', 100.0):g})"
                    if spec.get("regularizer") == "dense"
                    else f"{spec.get('relaxation', 'bilinear')} relaxation of the grid Potts model"
                )
                what = f"Adam on pCE + lambda x {reg} / N, lambda in {method_lams(spec)}"
            else:
                what = (
                    f"X-step by alpha-expansion ({spec.get('expansion_iters', 5)} cycles, seeds "
                    f"as hard constraints, proposals per mini-batch: `{spec.get('schedule')}`), "
                    f"then an Adam step on pCE + beta x cross-entropy to the proposals (beta "
                    f"{spec.get('beta', 1.5):g}), lambda in {method_lams(spec)}"
                )
            listed.append(f"**{spec.get('label', name)}** (`{name}`): {what}")
        paragraphs = [
            f"**One replicate = one seed** ({config['seeds']} seeds): a seed draws its own "
            f"training, validation and test scenes, the scribbles, the network's initial "
            f"weights and the mini-batch order, the same for every method. Datasets: "
            f"{', '.join(config['datasets'])} ({s} x {s} pixels; texture scenes: "
            f"{config['n_classes']} classes given by texture with random colours per region; "
            "fashion scenes: Fashion-MNIST garments pasted, tinted, onto textured backgrounds); "
            f"{config['n_train']} training / {config['n_val']} validation / {config['n_test']} "
            "test images. Scribbles are strokes inside eroded ground-truth regions; the share of "
            "scribbled training pixels is computed per condition (scribble table)."
            + (
                f" Scribble sweep on {', '.join(config['sweep_datasets'])}: the full strokes and "
                f"{', '.join(sweep)} (a length share keeps that part of every stroke; clicks "
                "keep one pixel per region), nested within a seed, each with its own "
                "pre-training and the same lambda grids."
                if sweep and config["sweep_datasets"]
                else ""
            ),
            f"Network: SegNet, width {config['width']}. Per problem and seed, one network is "
            f"pre-trained with pCE for {config['pretrain_steps']} steps of {config['batch']} "
            f"images (Adam, lr {config['pretrain_lr']:g}); every method and lambda then "
            f"fine-tunes that same state for {config['finetune_steps']} steps of "
            f"{config['batch']} images (Adam, lr {config['lr']:g}) in the same mini-batch order. "
            "The pre-trained state is cached in each worker process (keyed by dataset, scribbles, "
            "seed and the settings that determine it, built from explicit seeds only, so a "
            "worker that recomputes it gets the same weights); a unit's `wall_time_s` includes "
            "it when the worker had not built it yet.",
            "Methods: " + "; ".join(listed) + ".",
            "Lambda is chosen per method and seed on the validation set (highest validation "
            "mIoU; lambdas within "
            f"{config['lam_tie_tolerance']:g} of the best are tied and the tie goes to the "
            "lambda nearest the middle of the grid; `n_tied` counts them); the `best_*` columns "
            "are the test numbers at that lambda, never chosen on the test set. The discrete "
            "energy is pCE(S) + lambda x sum_pq w_pq [X_p != X_q] / N of the hard output X = "
            "argmax S (contrast-sensitive "
            f"{config['neighbourhood']}-neighbour weights), the relaxed loss the same with "
            "1 - S_p . S_q, both on the training set. They are compared at one lambda for both "
            f"arms, lam_ref = {config['lam_ref']:g} (energies at different lambdas are different "
            "objectives); for pCE and the dense-CRF GD they are evaluated at lam_ref too. Test "
            "mIoU is the dataset's (one confusion matrix over all test pixels). Per-image tests "
            "of the earlier version are dropped: the images of one trained network are not "
            "independent replicates.",
            "Cost: every method and lambda runs the same number of steps on the same images "
            "(`steps_charged`, `images_charged`; a run that diverged is charged its whole "
            "budget), which the claims hold equal. ADM's X-step adds wall time: the time table "
            "gives seconds per step and the X-step's part, measured in these runs, and its "
            "ratio to GD. Alpha-expansion (beyondgd's numba solver where numba is installed, "
            f"else GCO: the same moves) solves {config['n_jobs']} image(s) at once per unit; "
            f"units use {self.cpus_per_unit} core(s) each.",
        ]
        return paragraphs

    @staticmethod
    def _per_seed(table: pd.DataFrame) -> pd.DataFrame:
        """One row per unit (problem, method, seed): the unit-level columns."""
        return table.groupby(["problem", "method", "seed"], sort=False).first().reset_index()

    def extra_tables(self, results: Results) -> list[Table]:
        table, config = results.table, results.config
        if table.empty:
            return []
        labels = {m: _label(config, m) for m in config["methods"]}
        out = [self._lambda_table(table, labels)]
        per_seed = self._per_seed(table)
        rows = []
        for (problem, method), g in per_seed.groupby(["problem", "method"], sort=False):
            if method == "pce":
                continue
            picks = [
                f"{lam:g}" + (f" ({int(t)} tied)" if t > 1 else "") if lam == lam else "failed"
                for lam, t in zip(g["best_lam"], g["n_tied"])
            ]
            rows.append([problem, labels[method], ", ".join(picks)])
        out.append(
            Table(
                "Validation-selected lambda per seed (seeds in order)",
                ["problem", "method", "lambda per seed"],
                rows,
                note="'(k tied)': k lambdas within the tie tolerance of the best validation "
                "mIoU; the one nearest the grid's middle was taken.",
            )
        )
        sweep = self._scribble_table(per_seed, config, labels)
        if sweep is not None:
            out.append(sweep)
        timing = self._time_table(results.curves, labels)
        if timing is not None:
            out.append(timing)
        return out

    @staticmethod
    def _lambda_table(table: pd.DataFrame, labels: Mapping[str, str]) -> Table:
        rows = []
        full = table[table["scribbles"] == FULL]
        for (problem, method, lam), g in full.groupby(["problem", "method", "lam"], sort=False):
            rows.append(
                [
                    problem,
                    labels[method],
                    f"{lam:g}",
                    _range(g["val_miou"]),
                    _range(g["test_miou"]),
                    _range(g["energy"]),
                    _range(g["energy_relaxed"]),
                    f"{int(g['selected'].sum())} / {g['seed'].nunique()}",
                ]
            )
        return Table(
            "Lambda sweep, full scribbles: median [min, max] over seeds",
            [
                "problem",
                "method",
                "lambda",
                "validation mIoU",
                "test mIoU",
                "discrete energy (train)",
                "relaxed loss (train)",
                "seeds selecting it",
            ],
            rows,
            note="Energies at the run's own lambda: pCE(S) + lambda x Potts(argmax S) / N and "
            "pCE(S) + lambda x bilinear Potts(S) / N (what GD on the grid minimises); for the "
            "dense-CRF GD both are grid-Potts energies of its output, not its own loss; lambda = "
            "0 is pCE alone.",
        )

    @staticmethod
    def _scribble_table(per_seed: pd.DataFrame, config, labels) -> Table | None:
        datasets = list(config["sweep_datasets"])
        data = per_seed[per_seed["dataset"].isin(datasets)]
        if data.empty or not [c for c in config["sweep_scribbles"] if c != FULL]:
            return None
        rows = []
        for (dataset, condition), g in data.groupby(["dataset", "scribbles"], sort=False):
            by = {m: s.set_index("seed") for m, s in g.groupby("method")}
            col = functools.partial(_column, by)
            diff = (col("adm", "best_test_miou") - col("gd-grid", "best_test_miou")).dropna()
            rows.append(
                [
                    dataset,
                    condition,
                    _range(g.groupby("seed")["scribbled_share"].first()),
                    _range(col("pce", "best_test_miou")),
                    _range(col("gd-grid", "best_test_miou")),
                    _range(col("adm", "best_test_miou")),
                    f"{diff.median():+.3f}" if len(diff) else "-",
                    _range(col("gd-grid", "energy_ref")),
                    _range(col("adm", "energy_ref")),
                ]
            )
        return Table(
            "Scribble conditions: median [min, max] over seeds",
            [
                "dataset",
                "scribbles",
                "scribbled share of training pixels",
                f"{labels.get('pce', 'pce')} test mIoU",
                f"{labels.get('gd-grid', 'gd-grid')} test mIoU",
                f"{labels.get('adm', 'adm')} test mIoU",
                "ADM - GD (median of per-seed differences)",
                f"{labels.get('gd-grid', 'gd-grid')} energy at lam_ref",
                f"{labels.get('adm', 'adm')} energy at lam_ref",
            ],
            rows,
            note="Test mIoU at each method's validation-selected lambda; energies of the runs "
            f"at lam_ref = {config['lam_ref']:g}. A length share keeps that part of every full "
            "stroke; clicks keep one pixel per region.",
        )

    @staticmethod
    def _time_table(curves: pd.DataFrame, labels) -> Table | None:
        steps = curves[curves["curve"] == "seconds_per_step"]
        if steps.empty:
            return None
        xsteps = curves[curves["curve"] == "xstep_seconds_per_step"]
        med = steps.groupby("method", sort=False)["y"].median()
        xmed = xsteps.groupby("method", sort=False)["y"].median()
        ref = med.get("gd-grid")
        rows = [
            [
                labels[m],
                f"{1e3 * med[m]:.3g}",
                f"{1e3 * xmed.get(m, 0.0):.3g}",
                f"{med[m] / ref:.2f}" if ref else "-",
            ]
            for m in med.index
        ]
        return Table(
            "Wall time of fine-tuning (median over all runs)",
            ["method", "ms per step", "of which X-step (ms)", "ratio to GD (grid Potts)"],
            rows,
            note="Measured in these runs on one core per unit (other work on the machine "
            "included); evaluations are not counted.",
        )

    def extra_figures(self, results: Results, out_dir: Path) -> list[Figure]:
        if results.table.empty:
            return []
        return [self._lambda_figure(results, out_dir)] + self._example_figures(results, out_dir)

    def _lambda_figure(self, results: Results, out_dir: Path) -> Figure:
        from beyondgd.experiments.harness.plotting import pyplot, save

        table, config = results.table, results.config
        full = table[table["scribbles"] == FULL]
        problems = list(dict.fromkeys(full["problem"]))
        plt = pyplot()
        fig, axes = plt.subplots(len(problems), 2, figsize=(10, 3.6 * len(problems)), squeeze=False)
        for row, problem in zip(axes, problems):
            sub = full[full["problem"] == problem]
            for i, method in enumerate(config["methods"]):
                m = sub[sub["method"] == method]
                if m.empty:
                    continue
                label = _label(config, method)
                if config["methods"][method]["kind"] == "pce":
                    row[0].axhline(
                        m["test_miou"].median(), color="k", ls="--", lw=1, label=f"{label} (median)"
                    )
                    continue
                for ax, column in zip(row, ("test_miou", "energy")):
                    g = m.groupby("lam")[column]
                    lams = np.asarray(g.median().index, dtype=float)
                    (line,) = ax.plot(lams, g.median(), "o-", color=f"C{i}", label=label)
                    ax.fill_between(
                        lams, g.quantile(0.25), g.quantile(0.75), color=line.get_color(), alpha=0.15
                    )
            lam_ref = float(config["lam_ref"])
            row[0].set(xscale="log", xlabel="lambda", ylabel="test mIoU (higher is better)")
            row[1].set(
                xscale="log",
                yscale="log",
                xlabel="lambda",
                ylabel="discrete energy at that lambda (train)",
            )
            for ax in row:
                ax.axvline(lam_ref, color="grey", ls=":", lw=1)
                ax.set_title(f"{problem}: median over seeds, interquartile band", fontsize=9)
                ax.grid(True, alpha=0.3)
                ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        save(fig, out_dir / "lambda.png")
        return Figure(
            "lambda.png",
            "Full scribbles: test mIoU and the training set's discrete grid-CRF energy of each "
            "fine-tuned network against its lambda (dotted: lam_ref, where the energy claims "
            "compare the arms)",
        )

    def _example_figures(self, results: Results, out_dir: Path) -> list[Figure]:
        from beyondgd.data.scenes import colorize
        from beyondgd.experiments.harness.plotting import pyplot, save

        table, config = results.table, results.config
        picked = table[table["example"].notna()] if "example" in table.columns else table[:0]
        figures = []
        for problem in dict.fromkeys(picked["problem"]):
            sub = picked[picked["problem"] == problem]
            params = {"dataset": sub["dataset"].iloc[0], "scribbles": FULL}
            _, _, test = self._splits(config, Problem(problem, params), 0)
            shape = tuple(test.images.shape[-2:])
            cols: list[tuple[str, list[np.ndarray]]] = [
                ("image", [im.permute(1, 2, 0).numpy() for im in test.images]),
                ("ground truth", [colorize(m) for m in test.masks]),
            ]
            for method in config["methods"]:
                r = sub[sub["method"] == method]
                if r.empty:
                    continue
                r = r.iloc[0]
                title = _label(config, method)
                if config["methods"][method]["kind"] != "pce":
                    title += f", lambda {r['lam']:g}"
                preds = [colorize(decode_labels(t, shape)) for t in r["example"].split("/") if t]
                cols.append((title, preds))
            n = min(len(c[1]) for c in cols)
            plt = pyplot()
            fig, axes = plt.subplots(
                n, len(cols), figsize=(1.7 * len(cols), 1.75 * n + 0.3), squeeze=False
            )
            for j, (title, images) in enumerate(cols):
                for i in range(n):
                    ax = axes[i, j]
                    ax.imshow(images[i])
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if i == 0:
                        ax.set_title(title, fontsize=7)
                    if j == 0:
                        ax.set_ylabel(f"test image {i}", fontsize=7)
            fig.tight_layout()
            fname = f"examples-{problem.replace(' ', '_').replace(',', '')}.png"
            save(fig, out_dir / fname)
            figures.append(
                Figure(
                    fname,
                    f"{problem}: test predictions of seed 0 (the network's argmax), each method "
                    "at its validation-selected lambda",
                )
            )
        return figures
