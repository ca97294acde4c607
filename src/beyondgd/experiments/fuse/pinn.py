"""``fuse-pinn``: a 1-D Poisson PINN trained with Adam, L-BFGS and FUSE-PV at equal cost.

``u'' = f`` on (0, 1), ``u(0) = u(1) = 0``, exact solution ``u = sin(K pi x)`` (fuse.md,
reproduction 2). The residual is divided by ``(K pi)^4`` so the loss starts at O(1) for every K.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from beyondgd.core import derive_seed
from beyondgd.experiments.fuse.common import (
    cost_grid,
    fuse_method,
    method_label,
    methods_paragraph,
    run_full_batch,
    tanh_mlp,
)
from beyondgd.experiments.harness import (
    Claim,
    CurveSpec,
    Method,
    MetricSpec,
    Problem,
    Reproduction,
    UnitResult,
)
from beyondgd.experiments.registry import register

MAIN = "fuse-pv"


def pinn_mlp(width: int, seed: int) -> nn.Sequential:
    """The 1-width-width-1 tanh MLP of the spec, float64, initialised from ``seed`` (the global
    torch RNG is left as it was)."""
    return tanh_mlp([1, width, width, 1], seed, torch.float64)


def value_and_second_derivative(net: nn.Sequential, x: torch.Tensor):
    """``u(x)`` and ``u''(x)`` of a scalar-input MLP of ``Linear`` and ``Tanh`` layers, by forward
    propagation of the first two derivatives (one graph, one backward for the loss gradient;
    the same values as nested autograd, several times cheaper)."""
    h, dh, d2h = x, torch.ones_like(x), torch.zeros_like(x)
    for layer in net:
        if isinstance(layer, nn.Linear):
            h = layer(h)
            dh = dh @ layer.weight.T
            d2h = d2h @ layer.weight.T
        elif isinstance(layer, nn.Tanh):
            t = torch.tanh(h)
            s = 1.0 - t * t
            d2h = s * d2h - 2.0 * t * s * dh * dh
            dh = s * dh
            h = t
        else:
            raise TypeError(
                f"only Linear and Tanh layers are supported, got {type(layer).__name__}"
            )
    return h, d2h


class PoissonPINN:
    """The loss ``mean((u'' - f)^2) / (K pi)^4 + mean(u(0)^2, u(1)^2)`` of a network ``u``."""

    def __init__(self, k: float, n_collocation: int = 128):
        self.w = k * math.pi
        self.x = torch.linspace(0, 1, n_collocation + 2, dtype=torch.float64)[1:-1, None]
        self.f = -(self.w**2) * torch.sin(self.w * self.x)
        self.boundary = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
        self.x_test = torch.linspace(0, 1, 1001, dtype=torch.float64)[:, None]
        self.u_test = torch.sin(self.w * self.x_test)

    def loss(self, net: nn.Sequential) -> torch.Tensor:
        _, d2u = value_and_second_derivative(net, self.x)
        residual = ((d2u - self.f) ** 2).mean() / self.w**4
        return residual + (net(self.boundary) ** 2).mean()

    def relative_l2_error(self, net: nn.Module) -> float:
        with torch.no_grad():
            u = net(self.x_test)
        return float(torch.linalg.norm(u - self.u_test) / torch.linalg.norm(self.u_test))


_EMA = {"smoothing": "ema", "ema_decay": 0.98}


@register
class FusePINN(Reproduction):
    name = "fuse-pinn"
    title = "FUSE-PV on a 1-D Poisson PINN at equal gradient evaluations"
    summary = (
        "FUSE-PV (Adam first, then L-BFGS) is claimed to be cheaper than first-order methods. "
        "On a 1-D Poisson PINN with a budget of full-batch gradient evaluations, we test whether "
        "FUSE-PV (Adam, then L-BFGS after a third of the budget) reaches a lower training loss "
        "than Adam alone and than L-BFGS alone at the same budget; the relative L2 error, other "
        "frequencies K, other switch criteria and K = 6 as a negative control are exploratory."
    )
    base_config: dict[str, Any] = {
        "seeds": 10,
        "ks": [1, 2, 4, 6],
        "headline_k": 4,
        "negative_control_k": 6,
        "n_collocation": 128,
        "width": 32,
        "budget": 3000,
        "methods": {
            "adam": {"label": "Adam", "optimizer": "adam", "lr": 1e-3},
            "lbfgs": fuse_method("L-BFGS", {"rule": "after_epochs", "n": 0}),
            MAIN: fuse_method("FUSE-PV", {"rule": "after_fraction", "fraction": 0.333333}),
            "fuse-early": fuse_method(
                "FUSE-PV (switch at 1/10)", {"rule": "after_fraction", "fraction": 0.1}
            ),
            "fuse-gradnorm": fuse_method(
                "FUSE-PV (grad-norm)",
                {"rule": "grad_norm_below", "tau": 0.05, "relative": True, "warmup": 50, **_EMA},
            ),
            "fuse-plateau": fuse_method(
                "FUSE-PV (plateau)",
                {"rule": "loss_plateau", "rel_change": 1e-3, "patience": 20, "warmup": 50, **_EMA},
            ),
        },
    }
    presets = {
        "smoke": {
            "seeds": 2,
            "ks": [1],
            "headline_k": 1,
            "budget": 60,
            "methods": {"fuse-early": None, "fuse-gradnorm": None, "fuse-plateau": None},
        },
        "quick": {
            "seeds": 8,
            "ks": [4, 6],
            "budget": 1500,
            "methods": {"fuse-early": None, "fuse-gradnorm": None, "fuse-plateau": None},
        },
        "full": {},
    }
    # measured wall time on 2 cores, --workers 2, idle machine (quick: 98 s of compute, 52 s
    # wall in a fresh-clone make run; full: 740 s of compute, 375 s wall)
    expected_seconds = {"smoke": 2, "quick": 55, "full": 380}
    metrics = (
        MetricSpec("final_loss", "final PINN loss", logy=True),
        MetricSpec("rel_l2_error", "relative L2 error", logy=True),
    )
    curves = (CurveSpec("loss", "full-batch gradient evaluations", "best PINN loss"),)
    cost_columns = ("evals", "evals_charged")

    def problems(self, config: Mapping[str, Any]) -> list[Problem]:
        return [Problem(f"K={k}", {"k": k}) for k in config["ks"]]

    def claims(self, config: Mapping[str, Any]) -> list[Claim]:
        methods, ks = config["methods"], list(config["ks"])
        head, control = config["headline_k"], config["negative_control_k"]

        def label(name: str) -> str:
            return method_label(methods[name], name)

        def claim(method, base, metric, where, primary, note="", group=()):
            what = {"final_loss": "final PINN loss", "rel_l2_error": "relative L2 error"}[metric]
            at = "at K = {k}" if group else f"at K = {where['k']}"
            return Claim(
                f"{label(method)} reaches a lower {what} than {label(base)} {at}{note}",
                metric,
                method,
                base,
                scale="log10",
                where=where,
                group_by=group,
                primary=primary,
                cost="evals_charged",
            )

        out = []
        bases = [b for b in ("adam", "lbfgs") if b in methods]
        if MAIN not in methods:
            return out
        if head in ks:
            out += [claim(MAIN, b, "final_loss", {"k": head}, True) for b in bases]
            out += [claim(MAIN, b, "rel_l2_error", {"k": head}, False) for b in bases]
        others = [k for k in ks if k not in (head, control)]
        if others:
            out += [claim(MAIN, b, "final_loss", {"k": others}, False, group=("k",)) for b in bases]
        if control in ks and control != head:
            out += [
                claim(MAIN, b, "final_loss", {"k": control}, False, " (negative control)")
                for b in bases
            ]
        if head in ks:
            for other in ("fuse-early", "fuse-gradnorm", "fuse-plateau"):
                if other in methods:
                    out += [claim(other, b, "final_loss", {"k": head}, False) for b in bases]
        return out

    def run(self, problem, method: Method, seed, config, tuned) -> UnitResult:
        k = problem.params["k"]
        pinn = PoissonPINN(k, config["n_collocation"])
        # Same initial network for every method at a given (K, seed).
        net = pinn_mlp(config["width"], derive_seed(self.name, k, seed) % 2**31)
        budget = int(config["budget"])
        run = run_full_batch(method.params, list(net.parameters()), lambda: pinn.loss(net), budget)
        row = {
            "final_loss": run.final_loss,
            "rel_l2_error": pinn.relative_l2_error(net) if run.final_loss is not None else None,
            "stop": run.stop,
            "evals": run.evals,
            "evals_charged": run.evals_charged,
            "switch_step": run.switch_step,
        }
        grid = cost_grid(budget, 61)
        return UnitResult([row], {"loss": {"x": grid, "y": run.curve(grid)}})

    def describe(self, config: Mapping[str, Any]) -> list[str]:
        w = config["width"]
        return [
            f"MLP 1-{w}-{w}-1 tanh in float64, {config['n_collocation']} collocation points, "
            f"K in {config['ks']} (headline K = {config['headline_k']}, negative control "
            f"K = {config['negative_control_k']}); {config['seeds']} seeds, each drawing the "
            "initial network (the same for every method at a given K and seed); budget "
            f"**{config['budget']}** full-batch gradient evaluations per run.",
            methods_paragraph(config["methods"], "in Adam steps, one evaluation each"),
            "Cost counts every closure call, L-BFGS line-search trials included; each L-BFGS "
            "step's line search is capped so that it fits in the budget left, so `evals` never "
            "exceeds the budget. A run that stops early (L-BFGS converged, or the evaluations "
            "left are too few for one more step) is charged its whole budget (`evals_charged`), "
            "which the claims hold equal. Loss and error are "
            "compared on a log10 scale (a 10x gain counts the same at any level).",
        ]
