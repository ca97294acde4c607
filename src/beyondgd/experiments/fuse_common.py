"""Shared pieces of the ``fuse-*`` reproductions: optimizers from JSON specs, budgeted runs.

A method is a JSON dict, e.g. ``{"name": "fuse-after", "optimizer": "fuse", "lr": 1e-3,
"switch": {"rule": "after_epochs", "n": 100}}``, so the config in ``metrics.json`` says exactly
what ran. Cost is counted in gradient evaluations (closure calls on the full batch, or samples
for mini-batch methods), never in steps or epochs of different price.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from beyondgd.optim import (
    FUSE,
    AfterEpochs,
    GradNormBelow,
    LossBelow,
    LossPlateau,
    SwitchCriterion,
    paper_code_criterion,
)

_CRITERIA_KEYS = ("warmup", "patience", "smoothing", "latch", "ema_decay")


def build_switch(spec: dict[str, Any]) -> SwitchCriterion:
    """A switch criterion from ``{"rule": ..., <its arguments>}``."""
    rule = spec["rule"]
    common = {k: spec[k] for k in _CRITERIA_KEYS if k in spec}
    if rule == "after_epochs":
        return AfterEpochs(spec["n"], **common)
    if rule == "grad_norm_below":
        return GradNormBelow(spec["tau"], relative=spec.get("relative", True), **common)
    if rule == "loss_plateau":
        return LossPlateau(spec["rel_change"], **common)
    if rule == "loss_below":
        return LossBelow(spec["value"], **common)
    if rule == "paper_code":
        return paper_code_criterion(spec["kind"])
    raise ValueError(f"unknown switch rule {rule!r}")


def build_optimizer(
    spec: dict[str, Any], params: Sequence[torch.Tensor], **extra
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` / ``SGD`` or a :class:`~beyondgd.optim.FUSE` from a method spec."""
    kind = spec["optimizer"]
    if kind == "adam":
        return torch.optim.Adam(params, lr=spec["lr"])
    if kind == "sgd":
        return torch.optim.SGD(params, lr=spec["lr"], momentum=spec.get("momentum", 0.9))
    if kind == "fuse":
        return FUSE(
            params,
            lr=spec.get("lr", 1e-3),
            switch=build_switch(spec["switch"]),
            lbfgs_mode=spec.get("lbfgs_mode", "full"),
            history_size=spec.get("history_size", 10),
            max_iter=spec.get("max_iter", 1),
            # Full batch: the line search's last evaluation is the next step's start (no re-eval).
            reuse_last_eval=spec.get("lbfgs_mode", "full") == "full",
            **extra,
        )
    raise ValueError(f"unknown optimizer {kind!r} in method spec {spec}")


class CountingClosure:
    """Wraps a loss function of the parameters into a torch closure that counts its calls."""

    def __init__(self, optimizer: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor]):
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.calls = 0

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        self.optimizer.zero_grad(set_to_none=False)
        loss = self.loss_fn()
        loss.backward()
        return loss


def run_full_batch(
    spec: dict[str, Any],
    params: Sequence[torch.Tensor],
    loss_fn: Callable[[], torch.Tensor],
    budget: int,
    grid: Sequence[float],
    *,
    target: float | None = None,
) -> dict[str, Any]:
    """Minimise ``loss_fn`` with the method ``spec`` for at most ``budget`` gradient evaluations.

    Returns the best-so-far loss resampled at the evaluation counts ``grid`` (``curve``), the
    final loss (``None`` if it is not finite: the run diverged), the evaluations spent and, for
    FUSE, the switch step. With ``target`` the run stops once the loss is below it and
    ``cost_to_target`` holds the evaluations spent before that point (``None`` if never).
    """
    opt = build_optimizer(spec, params)
    closure = CountingClosure(opt, loss_fn)
    evals, losses = [], []
    while closure.calls < budget:
        spent = closure.calls
        loss = float(torch.as_tensor(opt.step(closure)).detach())
        evals.append(spent)
        losses.append(loss if math.isfinite(loss) else math.inf)
        if target is not None and loss < target:
            break
        if closure.calls == spent:  # converged: L-BFGS reused its cached point and stopped
            break
    # Not under no_grad: a loss may differentiate inside (a PINN's u'').
    final = float(loss_fn().detach())
    evals.append(closure.calls)
    losses.append(final if math.isfinite(final) else math.inf)
    out: dict[str, Any] = {
        "curve": [v if math.isfinite(v) else None for v in resample(evals, losses, grid)],
        "final_loss": final if math.isfinite(final) else None,
        "total_evals": closure.calls,
    }
    if target is not None:
        cost = cost_to_reach(evals, losses, target)
        out["cost_to_target"] = cost if math.isfinite(cost) else None
    if isinstance(opt, FUSE):
        out["switch_step"] = opt.switch_step
        out["lbfgs_iters"] = opt.n_lbfgs_iters
    return out


def resample(evals: Sequence[int], values: Sequence[float], grid: Sequence[float]) -> list[float]:
    """The last value observed at or before each grid point (a step function of cost)."""
    evals_arr = np.asarray(evals, dtype=float)
    vals = np.minimum.accumulate(np.asarray(values, dtype=float))  # best so far
    idx = np.searchsorted(evals_arr, np.asarray(grid, dtype=float), side="right") - 1
    idx = np.clip(idx, 0, len(vals) - 1)
    return vals[idx].tolist()


def cost_to_reach(evals: Sequence[int], values: Sequence[float], target: float) -> float:
    """Evaluations spent before the first value below ``target``; ``inf`` if never reached."""
    for e, v in zip(evals, values):
        if v < target:
            return float(e)
    return math.inf
