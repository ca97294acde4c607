r"""``dlc-registration``: point-cloud registration with a learned energy, with and without DLC.

The model is the PointNetLK-like energy :math:`E(R) = \|g(X R^\top) - g(Y)\|^2`
(:class:`~beyondgd.registration.PointNetRegistration`), solved at test time by damped Gauss-Newton
on SO(3) from the identity with a fixed iteration count, identical for every arm. Arms (same
network, same initial weights and training pairs per seed, the same training budget counted in
energy evaluations, each arm's learning rate tuned on a validation split):

- ``untrained``: the energy at its initial weights (the start every arm trains from);
- ``baseline``: trained by unrolling Gauss-Newton steps (PointNetLK-style, loss on the last
  iterate, forward-mode Jacobian);
- ``dlc``: the baseline loss plus :math:`\rho` x the star-convexity hinges at on-manifold
  perturbations :math:`\exp(\delta) R^*` (DLC as an add-on);
- ``prise``: :math:`E(R^*)` + :math:`\rho` x hinges, no unrolled loss (the loss of dlc.md / PRISE);
- ``icp``: ICP from the identity (classical reference); every learned arm's estimate is also
  refined by ICP (the ``refined_*`` columns).

One replicate is one seed: it draws the initial network, the training pairs, the hinge samples
and the test pairs. Training shapes are procedural; validation pairs come from other procedural
shapes; test shapes are the CGAL meshes (unseen categories; held-out procedural shapes when CGAL
is missing, said in the report). The two clouds of a pair are independent surface samples with
noise. One row per initial-angle bin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from beyondgd.core import derive_seed, finite_or_none, make_generator
from beyondgd.data.fashion_mnist import DataNotFoundError
from beyondgd.data.shapes import load_cgal_meshes, make_registration_pairs, procedural_shapes
from beyondgd.experiments.dlc.common import tune_learning_rate, tuning_table
from beyondgd.experiments.harness import (
    Claim,
    Figure,
    Method,
    MetricSpec,
    Problem,
    Reproduction,
    Table,
    UnitResult,
)
from beyondgd.experiments.harness.plotting import pyplot, save
from beyondgd.experiments.harness.results import summarize
from beyondgd.experiments.registry import register
from beyondgd.landscape import SO3Sampler, segment_profile, star_convexity_fraction
from beyondgd.registration import (
    PointNetRegistration,
    RegistrationTrainer,
    geodesic_error,
    icp,
)

NAME = "dlc-registration"
THRESHOLDS = (1.0, 5.0, 10.0)
_HINGES = ["H1", "H2", "H3"]
# five rates: with three (3e-4 .. 3e-3) two arms chose an edge of the grid in a full run
_LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]


# ------------------------------------------------------------------------------------- data
def _procedural(n: int, seed: int, *, fallback_kinds: bool = False):
    """Procedural shapes from the on-disk cache (filled by ``prepare``) and a note when trimesh
    is missing (then superquadrics and blobs only)."""
    if not fallback_kinds:
        try:
            return procedural_shapes(n, seed=seed, cache=True), ""
        except ImportError:
            pass
    shapes = procedural_shapes(n, seed=seed, kinds=("superquadric", "blob"), cache=True)
    return shapes, "trimesh is missing: procedural shapes are superquadrics and blobs only"


def train_meshes(config: Mapping[str, Any]):
    return _procedural(config["n_train_shapes"], config["shape_seed"])


def validation_meshes(config: Mapping[str, Any]):
    return _procedural(config["n_val_shapes"], config["shape_seed"] + 2)


def held_out_meshes(config: Mapping[str, Any]):
    """``(meshes, source)``: the CGAL meshes, or held-out procedural shapes without them."""
    try:
        return load_cgal_meshes(), "CGAL meshes (libcgal-demo)"
    except (DataNotFoundError, ImportError) as err:
        shapes, _ = _procedural(
            config["n_fallback_test_shapes"], config["shape_seed"] + 1, fallback_kinds=True
        )
        return shapes, f"held-out procedural shapes (CGAL meshes unavailable: {err})"


def _bins(config: Mapping[str, Any]) -> list[tuple[float, float]]:
    return [(float(lo), float(hi)) for lo, hi in config["bins"]]


def bin_name(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}"


def _pairs(meshes, n: int, angle_range, config, *key):
    return make_registration_pairs(
        meshes,
        n,
        n_points=config["n_points"],
        angle_range=tuple(angle_range),
        noise=config["noise"],
        seed=derive_seed(NAME, *key),
    )


# ------------------------------------------------------------------------------ train / test
def make_model(config: Mapping[str, Any], *key) -> PointNetRegistration:
    """The network initialised from ``key`` (the global torch RNG is left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(NAME, "init", *key) % 2**31)
        return PointNetRegistration(tuple(config["hidden"]))


def make_trainer(
    model: PointNetRegistration, spec: Mapping[str, Any], lr: float, config: Mapping[str, Any]
) -> RegistrationTrainer:
    return RegistrationTrainer(
        model,
        loss=spec["loss"],
        lr=lr,
        n_unroll=config["n_unroll"],
        unrolled_loss=config["unrolled_loss"],
        jacobian=config["train_jacobian"],
        rho=spec.get("rho", 1.0),
        terms=tuple(spec.get("terms", _HINGES)),
        lam=config["lam"],
        mu=config["mu"],
        n_samples=config["n_samples"],
        aggregate=config["aggregate"],
        max_angle=math.radians(config["hinge_max_angle_deg"]),
        damping=config["gn_damping"],
        max_step=math.radians(config["gn_max_step_deg"]),
    )


def no_training() -> dict[str, Any]:
    """The cost columns of an arm that is not trained."""
    return {
        "train_evals": 0,
        "train_evals_charged": 0,
        "train_steps": 0,
        "final_train_loss": None,
    }


def train(
    spec: Mapping[str, Any], lr: float | None, config: Mapping[str, Any], *key
) -> tuple[PointNetRegistration, dict[str, Any]]:
    """Train the arm ``spec`` from the initial network of ``key`` on at most
    ``budget_evals`` energy evaluations: a step that does not fit in what is left is not started
    (only a budget smaller than one step is overrun, by its first step, and charged as spent).

    Returns the model and its cost: ``train_evals`` spent (counted by the network),
    ``train_evals_charged`` (the whole budget: the remainder is smaller than one step),
    ``train_steps`` and the mean loss of the last 20 steps."""
    model = make_model(config, *key)
    cost = no_training()
    if "loss" not in spec:
        return model, cost
    meshes, _ = train_meshes(config)
    trainer = make_trainer(model, spec, lr, config)
    budget, batch = int(config["budget_evals"]), int(config["batch"])
    gen = make_generator(derive_seed(NAME, "hinge", *key))
    spent, step, per_step, losses = 0, 0, None, []
    while per_step is None or spent + per_step <= budget:
        pairs = _pairs(meshes, batch, config["train_angle_deg"], config, "batch", *key, step)
        stats = trainer.step(pairs.source, pairs.target, pairs.rotation, generator=gen)
        per_step = int(stats["evaluations"])
        spent += per_step
        step += 1
        losses.append(stats["loss"])
    cost.update(
        train_evals=spent,
        train_evals_charged=max(spent, budget),
        train_steps=step,
        final_train_loss=finite_or_none(float(np.mean(losses[-20:]))),
    )
    return model, cost


def _errors(rotation: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    return geodesic_error(rotation, truth, degrees=True).double().numpy()


def gauss_newton_errors(model: PointNetRegistration, pairs, config: Mapping[str, Any]):
    """``(errors in degrees, estimates)`` of Gauss-Newton from the identity (test settings)."""
    model.eval()
    out = model.register(
        pairs.source,
        pairs.target,
        n_iters=config["gn_iters"],
        damping=config["gn_damping"],
        max_step=math.radians(config["gn_max_step_deg"]),
    )
    return _errors(out.w, pairs.rotation), out.w


def _icp(pairs, config: Mapping[str, Any], init: torch.Tensor | None = None) -> np.ndarray:
    out = icp(
        pairs.source,
        pairs.target,
        init_rotation=init,
        n_iters=config["icp_iters"],
        estimate_translation=False,
    )
    return _errors(out.rotation, pairs.rotation)


def _summary(errors: np.ndarray, prefix: str = "") -> dict[str, float]:
    out = {f"{prefix}success_{t:g}": float((errors < t).mean()) for t in THRESHOLDS}
    out[f"{prefix}median_error"] = float(np.median(errors))
    return out


def validation_score(model: PointNetRegistration, config: Mapping[str, Any], v: int) -> float:
    """Mean share of validation pairs registered within 5 degrees over the angle bins."""
    meshes, _ = validation_meshes(config)
    rates = []
    for i, b in enumerate(_bins(config)):
        pairs = _pairs(meshes, config["val_pairs_per_bin"], b, config, "validation-pairs", v, i)
        errors, _ = gauss_newton_errors(model, pairs, config)
        rates.append(float((errors < 5.0).mean()))
    return float(np.mean(rates))


def landscape(model: PointNetRegistration, pairs, config: Mapping[str, Any], seed: int):
    """The star-convex fraction around R* (hinge radius) and 1-D slices of the energy along
    geodesics through R* (curves ``slice-i-j``: pair i, axis j, angle in degrees)."""
    k, n_slice = config["diagnostic_pairs"], config["slice_pairs"]
    src, tgt, rot = pairs.source[:k], pairs.target[:k], pairs.rotation[:k]
    with torch.no_grad():
        gy = model.features(tgt)

        def energy(r, batch):
            return model.energy(r, *batch)

        frac = star_convexity_fraction(
            energy,
            SO3Sampler(math.radians(config["hinge_max_angle_deg"])),
            rot,
            (src, gy),
            n_samples=8,
            generator=make_generator(derive_seed(NAME, "diagnostic", seed)),
            stacked=True,
        )
        axes = torch.randn(2, n_slice, 3, generator=make_generator(derive_seed(NAME, "axes", seed)))
        axes = math.pi * axes / axes.norm(dim=-1, keepdim=True)
        ts = torch.linspace(-1, 1, config["slice_points"])
        prof = segment_profile(
            energy, SO3Sampler(1.0), rot[:n_slice], axes, ts, (src[:n_slice], gy[:n_slice]),
            stacked=True,
        )  # fmt: skip
    degrees = [round(float(t) * 180.0, 6) for t in ts]
    curves = {
        f"slice-{i}-{j}": {"x": degrees, "y": [finite_or_none(float(v)) for v in prof[:, j, i]]}
        for i in range(n_slice)
        for j in range(2)
    }
    return frac.fraction, curves


# ------------------------------------------------------------------------------ the reproduction
def _trained(label: str, loss: str, **extra: Any) -> dict[str, Any]:
    return {"label": label, "loss": loss, **extra, "lr_grid": list(_LRS)}


METHODS: dict[str, dict[str, Any]] = {
    "untrained": {"label": "untrained energy"},
    "baseline": _trained("unrolled-GN baseline", "baseline"),
    "dlc": _trained("DLC (unrolled loss + hinges)", "dlc", rho=1.0, terms=_HINGES),
    "prise": _trained("PRISE (E(R*) + hinges)", "prise", rho=1.0, terms=_HINGES),
    "icp": {"label": "ICP from identity", "solver": "icp"},
}
EXTRA = {
    "dlc-rho10": _trained("DLC rho=10", "dlc", rho=10.0, terms=_HINGES),
    "prise-H2": _trained("PRISE H2 only", "prise", rho=1.0, terms=["H2"]),
}

#: smoke and quick: the three main arms, each tuned over two learning rates
_SMALL = {
    **{m: {"lr_grid": [1e-3, 3e-3]} for m in ("baseline", "dlc", "prise")},
    **{m: None for m in EXTRA},
}


@register
class DLCRegistration(Reproduction):
    name = NAME
    title = "DLC for learned point-cloud registration (PointNetLK-like energy, Gauss-Newton)"
    summary = (
        "Deep Loss Convexification trains a learned energy so that its landscape is star-convex "
        "around the ground truth, by hinge losses at perturbed predictions. On rotation-only "
        "point-cloud registration with a PointNetLK-like energy solved by Gauss-Newton from the "
        "identity, we test whether adding the star-convexity hinges to the unrolled training "
        "loss (DLC) and whether the PRISE recipe (energy at the ground truth plus hinges, no "
        "unrolled loss) register more unseen test pairs within 5 degrees, over initial angles "
        "0-180 degrees, than training by unrolling the solver alone, at an equal budget of "
        "energy evaluations with each arm's learning rate tuned on validation pairs. Per-bin "
        "results (0-45, 45-90 and the 90-180 stress bin), other thresholds, whether the tuned "
        "baseline improves on the untrained energy, ICP refinement and hinge variants are "
        "exploratory."
    )
    base_config: dict[str, Any] = {
        "seeds": 12,
        "hidden": [32, 64, 128],
        "n_train_shapes": 128,
        "n_val_shapes": 40,
        "n_fallback_test_shapes": 40,
        "shape_seed": 0,
        "n_points": 256,
        "noise": 0.01,
        "train_angle_deg": [0.0, 90.0],
        "batch": 8,
        "budget_evals": 44800,
        "n_unroll": 3,
        "unrolled_loss": "final",
        "train_jacobian": "forward",
        "hinge_max_angle_deg": 90.0,
        "n_samples": 4,
        "lam": 0.5,
        "mu": 0.1,
        "aggregate": "sum",
        "gn_iters": 10,
        "gn_damping": 1e-4,
        "gn_max_step_deg": 30.0,
        "icp_iters": 30,
        "bins": [[0.0, 45.0], [45.0, 90.0], [90.0, 180.0]],
        "test_pairs_per_bin": 100,
        "val_seeds": 1,
        "val_pairs_per_bin": 50,
        "diagnostic_pairs": 32,
        "slice_pairs": 3,
        "slice_points": 37,
        "methods": {**METHODS, **EXTRA},
    }
    presets = {
        "smoke": {
            "seeds": 2,
            "hidden": [8, 16],
            "n_train_shapes": 4,
            "n_val_shapes": 3,
            "n_fallback_test_shapes": 3,
            "n_points": 48,
            "batch": 2,
            "budget_evals": 60,
            "n_unroll": 2,
            "gn_iters": 2,
            "icp_iters": 3,
            "test_pairs_per_bin": 3,
            "val_pairs_per_bin": 2,
            "diagnostic_pairs": 3,
            "slice_pairs": 2,
            "slice_points": 9,
            "methods": _SMALL,
        },
        "quick": {
            "seeds": 6,
            "budget_evals": 7840,
            "test_pairs_per_bin": 30,
            "val_pairs_per_bin": 20,
            "diagnostic_pairs": 16,
            "methods": _SMALL,
        },
        "full": {},
    }
    # quick: measured wall time in the fresh-clone `make run` of 2026-12-06 (2 workers); full:
    # measured 1636 s with --workers 2 on 2 otherwise idle cores (2026-12-06)
    expected_seconds = {"smoke": 5, "quick": 91, "full": 1650}
    metrics = (
        MetricSpec("success_5", "share registered within 5 deg", lower_is_better=False),
        MetricSpec("success_1", "share within 1 deg", lower_is_better=False),
        MetricSpec("success_10", "share within 10 deg", lower_is_better=False),
        MetricSpec("median_error", "median error per bin, mean over bins (deg)", logy=True),
        MetricSpec(
            "refined_success_5", "share within 5 deg after ICP refinement", lower_is_better=False
        ),
    )
    cost_columns = ("train_evals", "train_evals_charged", "train_steps")

    # ---- plan ---------------------------------------------------------------------------------
    def problems(self, config: Mapping[str, Any]) -> list[Problem]:
        return [Problem("rotation", {"n_points": config["n_points"], "noise": config["noise"]})]

    def prepare(self, config: Mapping[str, Any]) -> None:
        """On the driver, before workers start: extract the test meshes and generate the
        procedural shapes once (on-disk caches)."""
        held_out_meshes(config)
        train_meshes(config)
        validation_meshes(config)

    def needs_tuning(self, method: Method, config: Mapping[str, Any]) -> bool:
        return "lr_grid" in method.params

    def tune(self, problem: Problem, method: Method, config: Mapping[str, Any]) -> dict[str, Any]:
        """Each learning rate trains at the test budget on validation replicates (their own
        initial networks, training pairs and hinge samples) and is scored on validation pairs
        of other procedural shapes."""

        def score(lr: float) -> float:
            vals = []
            for v in range(int(config["val_seeds"])):
                model, _ = train(method.params, lr, config, "validation", v)
                vals.append(validation_score(model, config, v))
            return float(np.mean(vals))

        return tune_learning_rate(method.params["lr_grid"], score)

    # ---- run ----------------------------------------------------------------------------------
    def run(self, problem, method: Method, seed, config, tuned) -> UnitResult:
        meshes, _ = held_out_meshes(config)
        bins = _bins(config)
        test = [
            _pairs(meshes, config["test_pairs_per_bin"], b, config, "test", seed, i)
            for i, b in enumerate(bins)
        ]
        rows: list[dict[str, Any]] = []
        curves: dict[str, dict[str, list]] = {}
        if method.params.get("solver") == "icp":
            for b, pairs in zip(bins, test):
                own = _summary(_icp(pairs, config))
                # ICP is its own refinement: the refined columns repeat its result
                refined = {f"refined_{k}": v for k, v in own.items()}
                rows.append({"bin": bin_name(*b), **own, **refined, "star_convex_fraction": None})
            cost = no_training()
        else:
            lr = tuned[method.name]["params"]["lr"] if method.name in tuned else None
            model, cost = train(method.params, lr, config, seed)
            fraction, curves = landscape(model, test[min(1, len(test) - 1)], config, seed)
            for b, pairs in zip(bins, test):
                errors, estimate = gauss_newton_errors(model, pairs, config)
                refined = _icp(pairs, config, init=estimate)
                rows.append(
                    {
                        "bin": bin_name(*b),
                        **_summary(errors),
                        **_summary(refined, "refined_"),
                        "star_convex_fraction": finite_or_none(fraction),
                        "lr": lr,
                    }
                )
        for row in rows:
            row.update(cost)
            for k, v in row.items():
                if isinstance(v, float):
                    row[k] = finite_or_none(v)
        return UnitResult(rows, curves)

    # ---- claims -------------------------------------------------------------------------------
    def claims(self, config: Mapping[str, Any]) -> list[Claim]:
        methods = config["methods"]
        bins = _bins(config)
        every = f"all initial angles ({bin_name(bins[0][0], bins[-1][1])} deg)"
        out: list[Claim] = []

        def add(method, base, what, where=every, metric="success_5", primary=False, **kw):
            if method not in methods or base not in methods:
                return
            if "cost_note" not in kw:
                kw["cost"] = "train_evals_charged"
            m, b = (str(methods[n].get("label", n)) for n in (method, base))
            out.append(
                Claim(
                    what.format(m=m, b=b) + ", " + where,
                    metric,
                    method,
                    base,
                    lower_is_better=False,
                    primary=primary,
                    **kw,
                )
            )

        more = "{m} registers more test pairs within 5 deg than the {b}"
        per_bin = {"where": "initial angle {bin} deg", "group_by": ("bin",)}
        for arm in ("dlc", "prise"):
            add(arm, "baseline", more, primary=True)
        for arm in ("dlc", "prise"):
            add(arm, "baseline", more, **per_bin)
        for arm in ("dlc", "prise"):
            add(
                arm,
                "baseline",
                "{m} + ICP refinement registers more test pairs within 5 deg than the {b} + ICP "
                "refinement",
                metric="refined_success_5",
            )
        untrained = "the untrained energy has no training cost (same network and initial weights)"
        add("baseline", "untrained", "The " + more, cost_note=untrained)
        add("baseline", "untrained", "The " + more, cost_note=untrained, **per_bin)
        for arm in EXTRA:
            add(arm, "baseline", more)
        return out

    # ---- report -------------------------------------------------------------------------------
    def describe(self, config: Mapping[str, Any]) -> list[str]:
        _, test_source = held_out_meshes(config)
        _, train_note = train_meshes(config)
        trained = [n for n, p in config["methods"].items() if "loss" in p]
        paragraphs = [
            f"**One replicate = one seed** ({config['seeds']} seeds): it draws the initial "
            "PointNet (the same for every arm), the training pairs (the same sequence for every "
            "arm), the hinge samples and the test pairs. Training: "
            f"{config['n_train_shapes']} procedural shapes, batches of {config['batch']} pairs, "
            f"{config['n_points']} points per cloud, noise {config['noise']}, angles "
            f"{config['train_angle_deg'][0]:g}-{config['train_angle_deg'][1]:g} deg; PointNet "
            f"widths {config['hidden']}. The unrolled loss runs {config['n_unroll']} "
            f"Gauss-Newton steps ({config['train_jacobian']} Jacobian) and penalises the "
            f"{'last iterate' if config['unrolled_loss'] == 'final' else 'mean over iterates'}. "
            f"Hinges: on-manifold perturbations up to {config['hinge_max_angle_deg']:g} deg, "
            f"{config['n_samples']} samples ({config['aggregate']}), lambda {config['lam']}, "
            f"mu {config['mu']}.",
            f"**Equal training cost.** Every trained arm ({', '.join(trained)}) gets "
            f"**{config['budget_evals']}** energy evaluations (one evaluation = one cloud "
            "embedded by the PointNet, counted by the network: target features, every residual "
            "and forward-mode Jacobian column of the unrolled steps, every hinge point). A step "
            "that does not fit in what is left is not started, so `train_evals` never exceeds "
            "the budget; the remainder (less than one step) cannot be spent, so each run is "
            "charged its whole budget (`train_evals_charged`), which the claims hold equal. A "
            "DLC step costs the unrolled step plus the hinges, so DLC takes fewer steps; PRISE "
            "needs no unrolling and takes more. The unit's wall time (`wall_time_s`, training "
            "plus the same test for every arm) is reported too: an unrolled evaluation (with "
            "its backward pass through the solver) costs several times a hinge evaluation.",
            f"**Tuning.** Each trained arm's Adam learning rate is chosen from its `lr_grid` by "
            f"tuning units: {config['val_seeds']} validation replicate(s) (own initial network, "
            "training pairs and hinge samples, seeds the test never uses) trained at the same "
            f"budget and scored on {config['val_pairs_per_bin']} pairs per angle bin of "
            f"{config['n_val_shapes']} other procedural shapes (mean share within 5 deg).",
            f"**Test.** {test_source}; {config['test_pairs_per_bin']} pairs per initial-angle "
            f"bin ({', '.join(bin_name(*b) for b in _bins(config))} deg), one row per bin; "
            f"Gauss-Newton from the identity, {config['gn_iters']} iterations (forward-mode "
            f"Jacobian, damping {config['gn_damping']:g}, steps clipped to "
            f"{config['gn_max_step_deg']:g} deg) for every arm; ICP {config['icp_iters']} "
            "iterations (rotation only, clouds centred), from the identity (`icp`) and from each "
            "learned arm's estimate (`refined_*`). Claims over all angles average the bins' "
            "success rates within a seed (equal pairs per bin). Initial angles beyond "
            f"{max(config['train_angle_deg'][1], config['hinge_max_angle_deg']):g} deg lie "
            "outside the training angles and the hinge radius: a stress test.",
        ]
        if train_note:
            paragraphs.append(train_note)
        return paragraphs

    def extra_tables(self, results) -> list[Table]:
        table = results.table
        if table.empty:
            return []
        tables = []
        labels = {n: str(p.get("label", n)) for n, p in results.config.get("methods", {}).items()}
        cols = [f"success_{t:g}" for t in THRESHOLDS] + ["median_error", "refined_success_5"]
        sums = {c: summarize(table, c, by=("bin", "method")) for c in cols}
        first = sums[cols[0]]
        bins = [bin_name(*b) for b in _bins(results.config)]
        rows = [
            [first["bin"].iloc[i], labels.get(first["method"].iloc[i], first["method"].iloc[i])]
            + [_cell(sums[c].iloc[i]) for c in cols]
            for i in sorted(range(len(first)), key=lambda i: bins.index(first["bin"].iloc[i]))
        ]
        tables.append(
            Table(
                "Per initial-angle bin: median [min, max] over seeds",
                ["bin (deg)", "method"]
                + [f"err < {t:g} deg" for t in THRESHOLDS]
                + ["median error (deg)", "ICP-refined err < 5 deg"],
                rows,
                note="Gauss-Newton from the identity; ICP from identity: its own result in every "
                "column.",
            )
        )
        tuning = tuning_table(results, "validation share within 5 deg")
        if tuning is not None:
            tables.append(tuning)
        learned = table[table["star_convex_fraction"].notna()]
        if not learned.empty:
            diag = [summarize(learned, c) for c in ("star_convex_fraction", "train_steps")]
            tables.append(
                Table(
                    "Landscape diagnostic and training steps (median [min, max] over seeds)",
                    ["method", "star-convex fraction", "training steps"],
                    [
                        [labels.get(m, m), _cell(diag[0].iloc[i]), _cell(diag[1].iloc[i])]
                        for i, m in enumerate(diag[0]["method"])
                    ],
                    note="Star-convex fraction: share of sampled geodesic segments from R* (up "
                    f"to {results.config['hinge_max_angle_deg']:g} deg) along which E stays "
                    f"below its chord from R*, on {results.config['diagnostic_pairs']} test "
                    "pairs of the second bin.",
                )
            )
        return tables

    def extra_figures(self, results, out_dir: Path) -> list[Figure]:
        figures = []
        if not results.table.empty:
            figures.append(_plot_bars(results, out_dir))
        curves = results.curves[results.curves["curve"].str.startswith("slice-")]
        if not curves.empty:
            figures.append(_plot_slices(results, curves, out_dir))
        return figures


def _cell(s: pd.Series) -> str:
    if int(s["count"]) == 0:
        return "failed"
    if s["min"] == s["max"]:
        return f"{s['median']:.3g}"
    return f"{s['median']:.3g} [{s['min']:.3g}, {s['max']:.3g}]"


def _plot_bars(results, out_dir: Path) -> Figure:
    plt = pyplot()
    config = results.config
    labels = {n: str(p.get("label", n)) for n, p in config["methods"].items()}
    table = results.table
    per_seed = table.groupby(["bin", "method", "seed"], sort=False)["success_5"].mean()
    per_seed = per_seed.reset_index()
    bins = list(dict.fromkeys(per_seed["bin"]))
    methods = list(dict.fromkeys(per_seed["method"]))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(bins) + 0.5 * len(methods)), 4.0))
    for j, m in enumerate(methods):
        sub = per_seed[per_seed["method"] == m]
        x = np.arange(len(bins)) + (j - (len(methods) - 1) / 2) * width
        med = [float(sub[sub["bin"] == b]["success_5"].median()) for b in bins]
        ax.bar(x, med, width * 0.92, label=labels.get(m, m), color=f"C{j % 10}", alpha=0.8)
        for k, b in enumerate(bins):
            vals = sub[sub["bin"] == b]["success_5"].to_numpy(dtype=float)
            ax.plot(np.full(vals.size, x[k]), vals, "k.", ms=3, alpha=0.6)
    ax.set_xticks(np.arange(len(bins)), [f"{b} deg" for b in bins])
    ax.set_xlabel("initial rotation angle (bin)")
    ax.set_ylabel("share registered within 5 deg")
    ax.set_ylim(0, 1.05)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    save(fig, out_dir / "success_by_angle.png")
    return Figure(
        "success_by_angle.png",
        "Share of test pairs registered within 5 deg per initial-angle bin: median over seeds "
        "(bars) and each seed (dots); Gauss-Newton from the identity, ICP from the identity as "
        "the classical reference",
    )


def _plot_slices(results, curves: pd.DataFrame, out_dir: Path) -> Figure:
    plt = pyplot()
    labels = {n: str(p.get("label", n)) for n, p in results.config["methods"].items()}
    seed = int(curves["seed"].min())
    data = curves[curves["seed"] == seed]
    names = sorted(dict.fromkeys(data["curve"]))
    n_pairs = len({n.split("-")[1] for n in names})
    fig, axes = plt.subplots(2, n_pairs, figsize=(4.0 * n_pairs, 5.6), squeeze=False)
    for name in names:
        _, i, j = name.split("-")
        ax = axes[int(j), int(i)]
        for k, (method, sub) in enumerate(
            data[data["curve"] == name].groupby("method", sort=False)
        ):
            y = sub["y"].to_numpy(dtype=float)
            span = max(np.nanmax(y) - np.nanmin(y), 1e-12)
            ax.plot(
                sub["x"],
                (y - np.nanmin(y)) / span,
                lw=1.3,
                color=f"C{k}",
                label=labels.get(method, method),
            )
        ax.axvline(0, color="k", lw=0.6)
        ax.set_title(f"test pair {i}, axis {j}", fontsize=9)
        ax.set_xlabel("angle from R* along the geodesic (deg)")
        ax.set_ylabel("E (min-max normalised)")
        ax.grid(True, alpha=0.3)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    save(fig, out_dir / "landscape_slices.png")
    return Figure(
        "landscape_slices.png",
        f"1-D slices of the energy along geodesics through R* (seed {seed}): the untrained "
        "energy and each arm's after training",
    )
