r"""``dlc-toy``: a learned 2-D energy solved by gradient descent, trained with and without DLC.

Each datum is an observation :math:`y = \phi(w^*) + \varepsilon` of a point
:math:`w^* \in [-1, 1]^2` through a fixed periodic sensor
:math:`\phi(w) = (\cos(Aw + b), \sin(Aw + b))` (random frequencies between ``min_freq`` and
``max_freq``); the model is the feature-matching energy
:math:`E_\theta(w; y) = \|g_\theta(\phi(w)) - g_\theta(y)\|^2` with a small MLP :math:`g_\theta`
(the same structure as the registration energy), and the test-time iterative method is gradient
descent from random starts in :math:`[-1, 1]^2` (an adaptive step: doubled after a decrease,
halved and the step rejected after an increase, so no arm depends on the energy's scale).
Success: ending within ``eps`` of :math:`w^*`.

Arms (methods as data; same network, initial weights, training data stream, optimizer with
gradient-norm clipping, test-time solver, and the same budget of energy evaluations):

- ``untrained``: the energy at its initial weights (a reference);
- ``baseline``: trained by unrolling ``n_unroll`` steps of the test-time solver, loss
  :math:`\|w_K - w^*\|^2` on the unrolled output (backpropagated through the unroll);
- ``dlc``: the baseline's loss plus :math:`\rho` x the star-convexity hinges (DLC as an add-on);
- ``prise``: :math:`E(w^*)` + :math:`\rho` x hinges, no unrolled loss (the PRISE recipe).

Cost is counted in energy evaluations (one forward pass of :math:`E_\theta` at one point for one
datum): an unrolled solver step costs 2 per datum (the energy with its gradient at the iterate, and
at the candidate), the hinges :math:`1 + S k` (:math:`w^*` and, per sample, :math:`w'` and/or
:math:`w_\lambda`). Each arm takes as many training steps as fit in the budget; each arm's learning
rate is chosen in a tuning unit, at the same budget, on validation data drawn with seeds the test
units never use.

Reconstruction: the paper's RNN/toy settings are not public; this toy tests the mechanism
(spurious minima removed around :math:`w^*`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from beyondgd.core import derive_seed, finite_or_none, make_generator
from beyondgd.experiments.dlc.common import (
    hinge_evaluations,
    make_hinge,
    method_label,
    tune_learning_rate,
    tuning_table,
)
from beyondgd.experiments.harness import (
    Claim,
    Figure,
    Method,
    MetricSpec,
    Problem,
    Reproduction,
    Table,
)
from beyondgd.experiments.registry import register
from beyondgd.landscape import BoxSampler, star_convexity_fraction

NAME = "dlc-toy"
#: training losses of the arms (``methods[name]["loss"]``)
LOSSES = ("none", "unroll", "unroll+hinges", "energy+hinges")


class ToySensor:
    """The fixed periodic sensor :math:`\\phi(w) = (\\cos(Aw + b), \\sin(Aw + b))`."""

    def __init__(
        self, n_freq: int = 8, max_freq: float = 4.0, seed: int = 0, min_freq: float = 1.0
    ):
        gen = make_generator(seed)
        direction = torch.randn(n_freq, 2, generator=gen, dtype=torch.float64)
        direction = direction / direction.norm(dim=1, keepdim=True)
        radius = min_freq + (max_freq - min_freq) * torch.rand(
            n_freq, 1, generator=gen, dtype=torch.float64
        )
        self.a = (direction * radius).float()
        self.b = (2 * math.pi * torch.rand(n_freq, generator=gen, dtype=torch.float64)).float()

    @property
    def dim(self) -> int:
        return 2 * len(self.b)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        z = w @ self.a.T + self.b
        return torch.cat([torch.cos(z), torch.sin(z)], -1)

    def observe(self, n: int, noise: float, gen: torch.Generator):
        w_star = 2 * torch.rand(n, 2, generator=gen) - 1
        y = self(w_star) + noise * torch.randn(n, self.dim, generator=gen)
        return w_star, y


class ToyEnergy(nn.Module):
    """:math:`E_\\theta(w; y) = \\|g_\\theta(\\phi(w)) - g_\\theta(y)\\|^2`; broadcasts over
    leading dimensions of ``w`` (``(..., B, 2)`` against ``y`` ``(B, m)``).

    ``seed`` sets the initial weights (the global torch RNG is left as it was)."""

    def __init__(self, sensor: ToySensor, hidden: int = 32, out: int = 16, seed: int = 0):
        super().__init__()
        self.sensor = sensor
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed % 2**63)
            self.g = nn.Sequential(nn.Linear(sensor.dim, hidden), nn.Tanh(), nn.Linear(hidden, out))
        #: energy evaluations so far (one per point per datum)
        self.evaluations = 0

    def forward(self, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.evaluations += w.numel() // w.shape[-1]
        return (self.g(self.sensor(w)) - self.g(y)).square().sum(-1)


def adaptive_gd(
    energy, w0: torch.Tensor, n_steps: int, *, step0: float = 0.1, create_graph: bool = False
) -> torch.Tensor:
    """Batched gradient descent with a per-run step: doubled after a decrease, halved (and the
    step rejected) after an increase. Two energy evaluations per step (the iterate, with its
    gradient, and the candidate). Differentiable through accepted steps when
    ``create_graph``."""
    w = w0 if create_graph else w0.detach()
    if create_graph and not w.requires_grad:
        w = w.clone().requires_grad_(True)
    t = torch.full((len(w0), 1), step0, dtype=w0.dtype)
    with torch.enable_grad():
        for _ in range(n_steps):
            if not create_graph:
                w = w.detach().requires_grad_(True)
            e = energy(w)
            (g,) = torch.autograd.grad(e.sum(), w, create_graph=create_graph)
            cand = w - t * g
            with torch.set_grad_enabled(create_graph):
                ec = energy(cand)
            ok = (ec < e).detach()
            w = torch.where(ok[:, None], cand, w)
            t = torch.where(ok[:, None], 2 * t, 0.5 * t)
    return w if create_graph else w.detach()


# ---- one replicate: model, training at a budget, evaluation --------------------------------------
def make_model(config: Mapping[str, Any], stream: tuple) -> ToyEnergy:
    """The energy at its initial weights for a replicate ``stream`` (``("test", seed)`` or
    ``("validation", v)``): the same for every arm."""
    s = config["sensor"]
    sensor = ToySensor(s["n_freq"], s["max_freq"], seed=s["seed"], min_freq=s["min_freq"])
    init = derive_seed(NAME, *stream, "init")
    return ToyEnergy(sensor, config["hidden"], config["feature_dim"], seed=init)


def n_unroll(spec: Mapping[str, Any], config: Mapping[str, Any]) -> int:
    return int(spec.get("n_unroll", config["n_unroll"]))


def budget_of(spec: Mapping[str, Any], config: Mapping[str, Any]) -> int:
    """The arm's training budget in energy evaluations (``budget_scale`` x the config's)."""
    return int(round(float(spec.get("budget_scale", 1.0)) * int(config["budget_evals"])))


def step_evaluations(spec: Mapping[str, Any], config: Mapping[str, Any]) -> int:
    """Energy evaluations of one training step, per datum of the batch."""
    loss = spec["loss"]
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r} in method {dict(spec)}; known: {LOSSES}")
    cost = 2 * n_unroll(spec, config) if loss.startswith("unroll") else 0
    if loss.endswith("hinges"):
        cost += hinge_evaluations(config["hinge"])
    return cost


def train_energy(
    model: ToyEnergy, spec: Mapping[str, Any], config: Mapping[str, Any], lr: float, stream: tuple
) -> dict[str, Any]:
    """Train ``model`` with the arm ``spec`` until the next step would exceed the budget of
    energy evaluations (never beyond it). Data, solver starts and hinge samples come from
    separate generators of ``stream``, so every arm sees the same training data."""
    loss_kind = spec["loss"]
    batch, budget = int(config["batch"]), budget_of(spec, config)
    per_step = step_evaluations(spec, config) * batch
    data_gen = make_generator(derive_seed(NAME, *stream, "data"))
    start_gen = make_generator(derive_seed(NAME, *stream, "starts"))
    hinge_gen = make_generator(derive_seed(NAME, *stream, "hinge"))
    hinge = make_hinge(model, BoxSampler(config["hinge"]["radius"]), config["hinge"])
    opt = torch.optim.Adam(model.g.parameters(), lr=lr)
    clip = spec.get("clip_grad", config["clip_grad"])
    k = n_unroll(spec, config)
    model.evaluations = 0
    losses: list[float] = []
    while per_step > 0 and model.evaluations + per_step <= budget:
        w_star, y = model.sensor.observe(batch, config["noise"], data_gen)
        loss = torch.zeros(())
        if loss_kind.startswith("unroll"):
            w0 = 2 * torch.rand(batch, 2, generator=start_gen) - 1
            w_k = adaptive_gd(
                lambda w, y=y: model(w, y), w0, k, step0=config["step0"], create_graph=True
            )
            loss = loss + (w_k - w_star).square().sum(-1).mean()
        if loss_kind.endswith("hinges"):
            out = hinge(w_star, y, generator=hinge_gen)
            loss = loss + out.total + (out.energy_star if loss_kind == "energy+hinges" else 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.g.parameters(), float(clip))
        opt.step()
        losses.append(float(loss.detach()))
    if model.evaluations > budget:
        raise RuntimeError(f"budget overrun: {model.evaluations} > {budget} energy evaluations")
    spent = model.evaluations
    return {
        "train_steps": len(losses),
        "train_evals": spent,
        # stopped because the next step did not fit: charged the whole budget
        "train_evals_charged": max(spent, budget) if per_step > 0 else 0,
        "final_train_loss": finite_or_none(float(np.mean(losses[-20:]))) if losses else None,
    }


def evaluate_energy(model: ToyEnergy, config: Mapping[str, Any], stream: tuple) -> dict[str, Any]:
    """Gradient descent from random starts on fresh observations: success shares, final
    distances and the star-convex fraction around :math:`w^*`."""
    gen = make_generator(derive_seed(NAME, *stream, "evaluation"))
    n, r = config["test_points"], config["starts_per_point"]
    w_star, y = model.sensor.observe(n, config["noise"], gen)
    w0 = 2 * torch.rand(n * r, 2, generator=gen) - 1
    ws, ys = w_star.repeat_interleave(r, 0), y.repeat_interleave(r, 0)
    w_end = adaptive_gd(lambda w: model(w, ys), w0, config["test_steps"], step0=config["step0"])
    dist = (w_end - ws).norm(dim=-1)
    dist = torch.where(torch.isfinite(dist), dist, torch.full_like(dist, math.inf))
    frac = star_convexity_fraction(
        model,
        BoxSampler(config["hinge"]["radius"]),
        w_star,
        y,
        n_samples=8,
        generator=gen,
        stacked=True,
    )
    return finite_or_none(
        {
            "success_rate": float((dist < config["eps"]).double().mean()),
            "success_loose": float((dist < config["loose_eps"]).double().mean()),
            "median_distance": float(dist.median()),
            "star_convex_fraction": frac.fraction,
        }
    )


def landscape_payload(model: ToyEnergy, config: Mapping[str, Any]) -> str:
    """log10 energy on a grid over ``[-L, L]^2`` for a few fixed noiseless observations (the
    same for every arm and seed), as compact JSON for the landscape figure."""
    spec = config["landscape"]
    gen = make_generator(derive_seed(NAME, "landscape"))
    w_star, y = model.sensor.observe(spec["examples"], 0.0, gen)
    half, n = float(spec["half_width"]), int(spec["grid"])
    axis = torch.linspace(-half, half, n)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)  # (n*n, 2)
    with torch.no_grad():
        values = model(grid[:, None, :], y).T.reshape(-1, n, n)  # (examples, n, n)
    z = torch.log10(values.double().clamp_min(0) + 1e-4)
    z = torch.nan_to_num(z, nan=10.0, posinf=10.0)
    return json.dumps(
        {
            "half_width": half,
            "w_star": np.round(w_star.double().numpy(), 4).tolist(),
            "log10_energy": np.round(z.numpy(), 3).tolist(),
        },
        separators=(",", ":"),
    )


def run_arm(
    spec: Mapping[str, Any], config: Mapping[str, Any], lr: float | None, stream: tuple
) -> tuple[ToyEnergy, dict[str, Any]]:
    """The energy of one arm on one replicate: trained (unless ``loss == "none"``) and
    evaluated."""
    model = make_model(config, stream)
    if spec["loss"] == "none":
        stats = {"train_steps": 0, "train_evals": 0, "train_evals_charged": 0}
        stats["final_train_loss"] = None
    else:
        stats = train_energy(model, spec, config, float(lr), stream)
    return model, {**evaluate_energy(model, config, stream), **stats}


@register
class DLCToy(Reproduction):
    name = NAME
    title = "DLC on a learned 2-D energy solved by gradient descent"
    summary = (
        "Training a learned energy with the star-convexity hinges is claimed to make the "
        "test-time iterative solver reach the ground truth more often. On a 2-D feature-matching "
        "energy solved by gradient descent from random starts, at an equal budget of energy "
        "evaluations and with each arm's learning rate tuned on validation data, we test whether "
        "DLC (the unrolled-solver loss plus the hinges) and the PRISE recipe (the energy at w* "
        "plus the hinges, no unrolled loss) each raise the share of runs that end within eps of "
        "w* over the baseline trained by unrolling the solver. Whether the baseline improves on "
        "the untrained energy (a sanity check), the share within a looser radius and the "
        "star-convex fraction of the landscape around w* are exploratory."
    )
    base_config: dict[str, Any] = {
        "seeds": 16,
        "val_seeds": 2,
        "sensor": {"n_freq": 8, "min_freq": 2.0, "max_freq": 6.0, "seed": 0},
        "noise": 0.01,
        "hidden": 32,
        "feature_dim": 16,
        "batch": 64,
        # energy evaluations per training run (2400 baseline steps of 4 unrolled steps)
        "budget_evals": 1228800,
        "lrs": [3e-4, 1e-3, 3e-3, 1e-2],
        "clip_grad": 1.0,
        "n_unroll": 4,
        "step0": 0.1,
        "hinge": {
            "radius": 2.0,
            "lam": 0.5,
            "mu": 0.1,
            "rho": 1.0,
            "n_samples": 4,
            "aggregate": "sum",
            "terms": ["H1", "H2", "H3"],
        },
        "test_points": 400,
        "starts_per_point": 4,
        "test_steps": 100,
        "eps": 0.05,
        "loose_eps": 0.2,
        "landscape": {"examples": 2, "grid": 31, "half_width": 1.2},
        "methods": {
            "untrained": {"label": "untrained", "loss": "none"},
            "baseline": {"label": "unrolled GD", "loss": "unroll"},
            "dlc": {"label": "DLC", "loss": "unroll+hinges"},
            "prise": {"label": "PRISE", "loss": "energy+hinges"},
            # DLC at twice the evaluations: about the baseline's wall time at this scale
            "dlc-2x": {
                "label": "DLC at 2x evaluations",
                "loss": "unroll+hinges",
                "budget_scale": 2.0,
            },
            # the recipe before the fix: 8 unrolled steps, no gradient clipping
            "baseline-k8": {
                "label": "unrolled GD (8 steps, unclipped)",
                "loss": "unroll",
                "n_unroll": 8,
                "clip_grad": None,
            },
        },
    }
    presets = {
        "smoke": {
            "seeds": 2,
            "val_seeds": 1,
            "budget_evals": 64 * 8 * 6,
            "lrs": [3e-3],
            "test_points": 10,
            "starts_per_point": 2,
            "test_steps": 10,
            "landscape": {"grid": 9},
            "methods": {"baseline-k8": None},
        },
        "quick": {
            "seeds": 8,
            "val_seeds": 1,
            "budget_evals": 307200,  # 600 baseline steps
            "lrs": [1e-3, 3e-3, 1e-2, 3e-2],
            "test_points": 100,
            "methods": {"baseline-k8": None},
        },
        "full": {},
    }
    # measured with --workers 1 on the 2-core machine shared with other jobs (quick: 95 s of
    # compute, full: 1098 s); 2-worker wall time estimated as half of that (units independent)
    # quick: measured wall time in the fresh-clone `make run` of 2026-12-06 (2 workers)
    expected_seconds = {"smoke": 3, "quick": 40, "full": 600}
    metrics = (
        MetricSpec("success_rate", "share of runs within eps of w*", lower_is_better=False),
        MetricSpec("success_loose", "share of runs within loose_eps", lower_is_better=False),
        MetricSpec("median_distance", "median final distance to w*", logy=True),
        MetricSpec("star_convex_fraction", "star-convex fraction", lower_is_better=False),
    )
    cost_columns = ("train_evals", "train_evals_charged", "train_steps")

    def problems(self, config: Mapping[str, Any]) -> list[Problem]:
        return [Problem("toy", {"eps": config["eps"]})]

    # ---- tuning ------------------------------------------------------------------------------
    def needs_tuning(self, method: Method, config: Mapping[str, Any]) -> bool:
        return method.params["loss"] != "none"

    def tune(self, problem: Problem, method: Method, config: Mapping[str, Any]) -> dict[str, Any]:
        def score(lr: float) -> float:
            values = [
                run_arm(method.params, config, lr, ("validation", v))[1]["success_rate"]
                for v in range(int(config["val_seeds"]))
            ]
            return float(np.mean([0.0 if v is None else v for v in values]))

        return tune_learning_rate(method.params.get("lrs", config["lrs"]), score)

    # ---- run ---------------------------------------------------------------------------------
    def run(self, problem, method, seed, config, tuned) -> dict[str, Any]:
        lr = tuned[method.name]["params"]["lr"] if method.name in tuned else None
        model, row = run_arm(method.params, config, lr, ("test", seed))
        row["lr"] = lr
        # the landscape figure's payload, on the first seed only
        row["landscape"] = landscape_payload(model, config) if seed == 0 else None
        return row

    # ---- claims ------------------------------------------------------------------------------
    def claims(self, config: Mapping[str, Any]) -> list[Claim]:
        methods = config["methods"]
        eps, loose = config["eps"], config["loose_eps"]
        equal = {"lower_is_better": False, "cost": "train_evals_charged"}
        out: list[Claim] = []

        def add(sentence: str, metric: str, method: str, baseline: str, **kw: Any) -> None:
            if method in methods and baseline in methods:
                out.append(Claim(sentence, metric, method, baseline, **kw))

        reach = f"gradient descent from random starts ends within {eps:g} of w*"
        add(
            f"DLC (unrolled loss + hinges): {reach} more often than with unrolled GD",
            "success_rate",
            "dlc",
            "baseline",
            **equal,
        )
        add(
            f"PRISE (energy at w* + hinges): {reach} more often than with unrolled GD",
            "success_rate",
            "prise",
            "baseline",
            **equal,
        )
        untrained = {
            "lower_is_better": False,
            "primary": False,
            "cost_note": "the untrained energy has no training; this checks that training "
            "helps the solver at all",
        }
        for name in ("baseline", "baseline-k8"):
            if name in methods:
                add(
                    f"{method_label(methods, name)}: {reach} more often than with the untrained "
                    "energy",
                    "success_rate",
                    name,
                    "untrained",
                    **untrained,
                )
        add(
            f"DLC at 2x evaluations: {reach} more often than with unrolled GD",
            "success_rate",
            "dlc-2x",
            "baseline",
            lower_is_better=False,
            primary=False,
            cost_note="DLC gets twice the baseline's energy evaluations here, about the "
            "baseline's wall time at this scale (compare `wall_time_s`): whether the verdict "
            "depends on the cost measure",
        )
        for name in ("dlc", "prise"):
            if name not in methods:
                continue
            label = method_label(methods, name)
            add(
                f"{label}: gradient descent ends within {loose:g} of w* more often than with "
                "unrolled GD",
                "success_loose",
                name,
                "baseline",
                primary=False,
                **equal,
            )
            add(
                f"{label} makes the energy star-convex around w* on more sampled segments than "
                "unrolled GD",
                "star_convex_fraction",
                name,
                "baseline",
                primary=False,
                **equal,
            )
        return out

    # ---- report ------------------------------------------------------------------------------
    def describe(self, config: Mapping[str, Any]) -> list[str]:
        s, h, methods = config["sensor"], config["hinge"], config["methods"]
        arms = "; ".join(
            f"**{method_label(methods, name)}** (`{name}`): {_arm_text(spec, config)}"
            for name, spec in methods.items()
        )
        return [
            f"`w*` uniform in [-1, 1]^2, observed through {s['n_freq']} periodic features "
            f"(frequencies {s['min_freq']:g} to {s['max_freq']:g}, the same sensor for every "
            f"seed) with noise {config['noise']:g}; energy `||g(phi(w)) - g(y)||^2` with a "
            f"{config['hidden']}-unit tanh MLP `g` ({config['feature_dim']} features). Test: "
            f"{config['test_points']} fresh observations x {config['starts_per_point']} starts "
            f"uniform in [-1, 1]^2, {config['test_steps']} adaptive gradient-descent steps "
            f"(initial step {config['step0']:g}, doubled after a decrease, halved and rejected "
            f"after an increase); success = ending within {config['eps']:g} of `w*`. **One "
            f"replicate = one seed** ({config['seeds']} seeds): it draws the initial network "
            "(the same for every arm), the training data stream, the solver starts, the hinge "
            "samples and the test points.",
            f"Arms: {arms}. Every trained arm uses Adam with the gradient norm clipped at "
            f"{config['clip_grad']} (unless its spec says otherwise) and batches of "
            f"{config['batch']}. Hinges: box perturbations of radius {h['radius']:g}, terms "
            f"{', '.join(h['terms'])}, rho {h['rho']:g}, mu {h['mu']:g}, lambda {h['lam']:g}, "
            f"{h['n_samples']} samples per datum ({h['aggregate']}).",
            "**Equal cost.** Cost is counted in energy evaluations (a forward pass of the "
            "energy at one point for one datum): an unrolled solver step costs 2 (the iterate, "
            "with its gradient, and the candidate), the hinges cost 1 + one or two per sample "
            "(`w*`, then `w'` and/or `w_lambda`). Every arm trains until its next step would "
            f"exceed the budget of **{config['budget_evals']}** evaluations, so arms with "
            "dearer steps take fewer steps (`train_steps`); `train_evals` is what was spent, "
            "never more than the budget, and the claims hold `train_evals_charged` (the whole "
            "budget) equal. The test-time solver is the same for every arm and not counted. Wall "
            "time is not held equal: an unrolled step also differentiates through the solver's "
            "gradients (second-order terms), so at this scale an evaluation of the unrolled arms "
            "takes more wall time than a hinge evaluation (see `wall_time_s`).",
            "**Tuning.** Each trained arm's Adam learning rate is chosen from "
            f"{config['lrs']} by the success share on {config['val_seeds']} validation "
            "replicate(s), each trained at the same budget and drawn (network, data, starts, "
            "test points) with seeds the test units never use.",
            "The baseline unrolls the test-time solver itself (adaptive step included) for "
            f"{config['n_unroll']} steps and backpropagates through all of them. Longer "
            "unrolls let the step size double up to 2^K times its start, so the unrolled "
            "gradient explodes, and without clipping its training raises its own unrolled loss "
            "and lowers the success share below the untrained energy's"
            + (
                " (the `baseline-k8` arm keeps that recipe: 8 unrolled steps, no clipping)."
                if "baseline-k8" in methods
                else " in pilot runs (the full preset's `baseline-k8` arm measures it)."
            ),
        ]

    def extra_tables(self, results) -> list[Table]:
        table = tuning_table(results, "validation success share")
        return [table] if table else []

    def extra_figures(self, results, out_dir: Path) -> list[Figure]:
        t = results.table
        if t.empty or "landscape" not in t.columns:
            return []
        rows = t[t["landscape"].notna()]
        if rows.empty:
            return []
        from beyondgd.experiments.harness.plotting import pyplot, save

        methods = results.config["methods"]
        panels = [
            (method_label(methods, m), json.loads(rows[rows["method"] == m]["landscape"].iloc[0]))
            for m in methods
            if (rows["method"] == m).any()
        ]
        seed = int(rows["seed"].iloc[0])
        n_ex = len(panels[0][1]["log10_energy"])
        plt = pyplot()
        fig, axes = plt.subplots(
            n_ex, len(panels), figsize=(3.5 * len(panels), 3.1 * n_ex), squeeze=False
        )
        for j, (label, data) in enumerate(panels):
            half = data["half_width"]
            for i in range(n_ex):
                ax = axes[i, j]
                z = np.asarray(data["log10_energy"][i], dtype=float)
                im = ax.imshow(z, extent=(-half, half, -half, half), origin="lower", cmap="viridis")
                fig.colorbar(im, ax=ax, shrink=0.85).set_label("log10 energy", fontsize=7)
                grid = np.linspace(-half, half, z.shape[0])
                ax.contour(grid, grid, z, levels=10, colors="w", linewidths=0.4)
                wx, wy = data["w_star"][i]
                ax.plot(wx, wy, "r*", ms=11, label="w*")
                ax.plot([-1, 1, 1, -1, -1], [-1, -1, 1, 1, -1], "w--", lw=0.7, label="starts")
                ax.tick_params(labelsize=7)
                ax.set_xlabel("w1", fontsize=8)
                ax.set_ylabel("w2", fontsize=8)
                ax.set_title(f"{label}, example {i + 1}", fontsize=9)
                if i == 0 and j == 0:
                    ax.legend(loc="lower left", fontsize=7, facecolor="0.45", labelcolor="w")
        fig.suptitle(f"log10 energy over the box, seed {seed} (red star: w*)", fontsize=10)
        fig.tight_layout()
        save(fig, out_dir / "landscapes.png")
        return [
            Figure(
                "landscapes.png",
                f"The learned energy of each arm (seed {seed}) for two noiseless observations: "
                "log10 energy over the box, contours in white, the ground truth as a red star, "
                "the box of solver starts dashed",
            )
        ]


def _arm_text(spec: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    loss = spec["loss"]
    if loss == "none":
        return "the energy at its initial weights, not trained"
    k = n_unroll(spec, config)
    unroll = f"loss `||w_{k} - w*||^2` after unrolling {k} solver steps"
    text = {
        "unroll": unroll,
        "unroll+hinges": f"{unroll}, plus rho x the hinges",
        "energy+hinges": "`E(w*)` plus rho x the hinges, no unrolled loss",
    }[loss]
    clip = spec.get("clip_grad", config["clip_grad"])
    scale = float(spec.get("budget_scale", 1.0))
    if scale != 1.0:
        text += f", {scale:g} x the budget of evaluations"
    if clip != config["clip_grad"]:
        text += ", no gradient clipping" if clip is None else f", gradient clipped at {clip}"
    return f"{text} ({step_evaluations(spec, config)} evaluations per datum per step)"
