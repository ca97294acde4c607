r"""``dlc-toy``: a learned 2-D energy solved by gradient descent, trained with and without DLC.

Each datum is an observation :math:`y = \phi(w^*) + \varepsilon` of a point
:math:`w^* \in [-1, 1]^2` through a fixed periodic sensor
:math:`\phi(w) = (\cos(Aw + b), \sin(Aw + b))` (random frequencies up to ``max_freq``); the model is
the feature-matching energy :math:`E_\theta(w; y) = \|g_\theta(\phi(w)) - g_\theta(y)\|^2` with a
small MLP :math:`g_\theta` (the same structure as the registration energy), and the test-time
iterative method is gradient descent from random starts in :math:`[-1, 1]^2` (an adaptive step:
doubled after a decrease, halved and the step rejected after an increase, so no arm depends on
the energy's scale). Success: ending within ``eps`` of :math:`w^*`.

Arms (same network, optimizer, steps and test-time solver): ``baseline`` (unrolling ``n_unroll``
solver steps, loss :math:`\|w_K - w^*\|^2`), ``dlc`` (baseline + :math:`\rho` x hinges) and
``prise`` (:math:`E(w^*)` + :math:`\rho` x hinges; here :math:`E(w^*) = 0` by construction, so the
hinges are the whole loss). Reconstruction: the paper's RNN/toy settings are not public; this toy
tests the mechanism (spurious minima removed around :math:`w^*`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from beyondgd.core import derive_seed, finite_or_none, make_generator
from beyondgd.experiments.base import Experiment, Figure, Report, Table, Unit, Verdict
from beyondgd.experiments.dlc.common import or_value
from beyondgd.experiments.registry import register
from beyondgd.experiments.stats import compare_paired, median_range
from beyondgd.landscape import BoxSampler, StarConvexHinge, star_convexity_fraction

ARMS = ("baseline", "dlc", "prise")


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
    leading dimensions of ``w`` (``(..., B, 2)`` against ``y`` ``(B, m)``)."""

    def __init__(self, sensor: ToySensor, hidden: int = 32, out: int = 16):
        super().__init__()
        self.sensor = sensor
        self.g = nn.Sequential(nn.Linear(sensor.dim, hidden), nn.Tanh(), nn.Linear(hidden, out))

    def forward(self, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.g(self.sensor(w)) - self.g(y)).square().sum(-1)


def adaptive_gd(
    energy, w0: torch.Tensor, n_steps: int, *, step0: float = 0.1, create_graph: bool = False
) -> torch.Tensor:
    """Batched gradient descent with a per-run step: doubled after a decrease, halved (and the
    step rejected) after an increase. Differentiable through accepted steps when
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


def train_toy(arm: str, config: dict[str, Any], seed: int) -> tuple[ToyEnergy, dict[str, Any]]:
    """Train one arm; returns the model and training statistics."""
    sensor = ToySensor(
        config["n_freq"],
        config["max_freq"],
        seed=config["sensor_seed"],
        min_freq=config["min_freq"],
    )
    torch.manual_seed(derive_seed("dlc-toy", "init", seed) % 2**31)  # same init for every arm
    model = ToyEnergy(sensor, config["hidden"], config["feature_dim"])
    gen = make_generator(derive_seed("dlc-toy", "data", seed))
    hinge = None
    if arm != "baseline":
        hinge = StarConvexHinge(
            lambda w, y: model(w, y),
            BoxSampler(config["radius"]),
            lam=config["lam"],
            mu=config["mu"],
            rho=config["rho"],
            n_samples=config["n_samples"],
            aggregate=config["aggregate"],
            terms=tuple(config["terms"]),
            stacked=True,
        )
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    losses = []
    for _ in range(config["steps"]):
        w_star, y = sensor.observe(config["batch"], config["noise"], gen)
        loss = torch.zeros(())
        if arm in ("baseline", "dlc"):
            w0 = 2 * torch.rand(config["batch"], 2, generator=gen) - 1
            w_k = adaptive_gd(lambda w, y=y: model(w, y), w0, config["n_unroll"], create_graph=True)
            loss = loss + (w_k - w_star).square().sum(-1).mean()
        if hinge is not None:
            out = hinge(w_star, y, generator=gen)
            loss = loss + out.total + (out.energy_star if arm == "prise" else 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model, {"final_train_loss": float(np.mean(losses[-20:])) if losses else None}


def evaluate_toy(model: ToyEnergy, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Gradient descent from random starts on test data: success share and final distances."""
    gen = make_generator(derive_seed("dlc-toy", "test", seed))
    n, r = config["test_points"], config["starts_per_point"]
    w_star, y = model.sensor.observe(n, config["noise"], gen)
    w0 = 2 * torch.rand(n * r, 2, generator=gen) - 1
    ws, ys = w_star.repeat_interleave(r, 0), y.repeat_interleave(r, 0)
    w_end = adaptive_gd(lambda w: model(w, ys), w0, config["test_steps"])
    dist = (w_end - ws).norm(dim=-1)
    frac = star_convexity_fraction(
        lambda w, yy: model(w, yy),
        BoxSampler(config["radius"]),
        w_star,
        y,
        n_samples=8,
        generator=gen,
        stacked=True,
    )
    return {
        "success_rate": float((dist < config["eps"]).double().mean()),
        "median_distance": float(dist.median()),
        "star_convex_fraction": frac.fraction,
    }


def landscape_grid(model: ToyEnergy, config: dict[str, Any], n: int = 41):
    """Energy on a grid over [-1.2, 1.2]^2 for a few fixed test observations (for the figure)."""
    gen = make_generator(derive_seed("dlc-toy", "landscape"))
    w_star, y = model.sensor.observe(config["landscape_examples"], 0.0, gen)
    axis = torch.linspace(-1.2, 1.2, n)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)  # (n*n, 2)
    with torch.no_grad():
        values = model(grid[:, None, :], y).T.reshape(-1, n, n)  # (examples, n, n)
    return w_star.tolist(), values.tolist()


@register
class DLCToy(Experiment):
    name = "dlc-toy"
    title = "DLC on a learned 2-D energy solved by gradient descent"
    claim = (
        "Training the energy with the star-convexity hinges (DLC / PRISE-style) raises the share "
        "of gradient-descent runs from random starts that reach the ground truth, compared with "
        "training by unrolling the solver, at the same network, training steps and test solver."
    )
    expected_seconds = {"quick": 12, "full": 240}

    def config(self, preset: str) -> dict[str, Any]:
        quick = preset == "quick"
        return {
            "seeds": list(range(3 if quick else 5)),
            "arms": list(ARMS),
            "n_freq": 8,
            "min_freq": 2.0,
            "max_freq": 6.0,
            "sensor_seed": 0,
            "hidden": 32,
            "feature_dim": 16,
            "noise": 0.01,
            "steps": 300 if quick else 1500,
            "batch": 64,
            "lr": 3e-3,
            "n_unroll": 8,
            "radius": 2.0,
            "lam": 0.5,
            "mu": 0.1,
            "rho": 1.0,
            "n_samples": 8,
            "aggregate": "sum",
            "terms": ["H1", "H2", "H3"],
            "test_points": 100 if quick else 400,
            "starts_per_point": 4,
            "test_steps": 100,
            "eps": 0.05,
            "landscape_examples": 2,
        }

    def units(self, config: dict[str, Any]) -> list[Unit]:
        units = [Unit(f"init/seed={s}", {"arm": "init", "seed": s}) for s in config["seeds"][:1]]
        return units + [
            Unit(f"{a}/seed={s}", {"arm": a, "seed": s})
            for s in config["seeds"]
            for a in config["arms"]
        ]

    def run_unit(self, unit: Unit, config: dict[str, Any]) -> dict[str, Any]:
        arm, seed = unit.params["arm"], unit.params["seed"]
        if arm == "init":  # the untrained energy: what training starts from
            config_init = dict(config, steps=0)
            model, stats = train_toy("baseline", config_init, seed)
            stats = {}
        else:
            model, stats = train_toy(arm, config, seed)
        record = evaluate_toy(model, config, seed)
        record.update(stats)
        record["landscape_w_star"], record["landscape"] = landscape_grid(model, config)
        return finite_or_none(record)

    def analyze(self, config, records, out_dir: Path) -> Report:
        seeds, arms = config["seeds"], config["arms"]

        worst = {"success_rate": 0.0, "star_convex_fraction": 0.0}

        def vals(arm, field):
            raw = [records[f"{arm}/seed={s}"][field] for s in seeds]
            return or_value(raw, worst.get(field, math.inf))

        rows = [
            [
                arm,
                median_range(vals(arm, "success_rate")),
                median_range(vals(arm, "median_distance")),
                median_range(vals(arm, "star_convex_fraction")),
            ]
            for arm in arms
        ]
        init = records[f"init/seed={seeds[0]}"]
        rows.insert(
            0,
            [
                "untrained",
                median_range(or_value([init["success_rate"]], 0.0)),
                median_range(or_value([init["median_distance"]], math.inf)),
                median_range(or_value([init["star_convex_fraction"]], 0.0)),
            ],
        )
        verdicts = []
        for arm in [a for a in arms if a != "baseline"]:
            if "baseline" not in arms:
                break
            cmp = compare_paired(
                vals(arm, "success_rate"), vals("baseline", "success_rate"), lower_is_better=False
            )
            verdicts.append(
                Verdict(
                    f"{arm} raises the share of converged gradient-descent runs over the baseline",
                    cmp.status,
                    cmp.evidence(arm, "baseline", "success rate"),
                )
            )
        figures = [self._plot(config, records, out_dir)]
        return Report(
            self.title,
            self.claim,
            paragraphs=[
                f"w* uniform in [-1, 1]^2 observed through {config['n_freq']} periodic features "
                f"(frequencies up to {config['max_freq']}); energy ||g(phi(w)) - g(y)||^2 with a "
                f"{config['hidden']}-unit tanh MLP g; {config['steps']} Adam steps of batch "
                f"{config['batch']} per arm; test: {config['test_points']} observations x "
                f"{config['starts_per_point']} random starts, {config['test_steps']} adaptive "
                f"gradient-descent steps; success = within {config['eps']} of w*. Hinges: box "
                f"perturbations of radius {config['radius']}, terms {config['terms']}, rho "
                f"{config['rho']}, mu {config['mu']}, lambda {config['lam']}, "
                f"{config['n_samples']} samples ({config['aggregate']}). The baseline unrolls "
                f"{config['n_unroll']} solver steps.",
            ],
            tables=[
                Table(
                    "Gradient descent on the learned energy (median [min, max] over seeds)",
                    ["arm", "success rate", "median final distance", "star-convex fraction"],
                    rows,
                    note="star-convex fraction: share of sampled segments from w* on which the "
                    "energy lies below its chord from w* (star_convexity_fraction).",
                )
            ],
            verdicts=verdicts,
            figures=figures,
        )

    def _plot(self, config, records, out_dir: Path) -> Figure:
        from beyondgd.experiments.plotting import _pyplot

        plt = _pyplot()
        s0 = config["seeds"][0]
        panels = [("untrained", records[f"init/seed={s0}"])] + [
            (arm, records[f"{arm}/seed={s0}"]) for arm in config["arms"]
        ]
        n_ex = config["landscape_examples"]
        fig, axes = plt.subplots(
            n_ex, len(panels), figsize=(3.6 * len(panels), 3.1 * n_ex), squeeze=False
        )
        for j, (label, rec) in enumerate(panels):
            for i in range(n_ex):
                ax = axes[i, j]
                z = np.log10(np.asarray(rec["landscape"][i], dtype=float) + 1e-4)
                im = ax.imshow(z, extent=(-1.2, 1.2, -1.2, 1.2), origin="lower", cmap="viridis")
                fig.colorbar(im, ax=ax, shrink=0.85).set_label("log10 energy", fontsize=7)
                ax.contour(
                    np.linspace(-1.2, 1.2, z.shape[1]),
                    np.linspace(-1.2, 1.2, z.shape[0]),
                    z,
                    levels=12,
                    colors="w",
                    linewidths=0.4,
                )
                wx, wy = rec["landscape_w_star"][i]
                ax.plot(wx, wy, "r*", ms=10)
                ax.tick_params(labelsize=7)
                ax.set_xlabel("w1", fontsize=7)
                ax.set_ylabel("w2", fontsize=7)
                if i == 0:
                    ax.set_title(label, fontsize=10)
        fig.suptitle("log10 energy around w* (red star), seed 0", fontsize=10)
        fig.tight_layout()
        fig.savefig(out_dir / "landscapes.png", dpi=90)
        plt.close(fig)
        return Figure("landscapes.png", "Learned energy landscapes before and after training")
