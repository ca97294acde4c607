"""What the ``fuse-*`` reproductions share: optimizers from method specs, a budgeted full-batch
loop that never overruns its budget, and resampling of loss traces onto a cost grid.

A method is the config's ``methods[name]`` object, e.g. ``{"label": "FUSE-PV", "optimizer":
"fuse", "lr": 1e-3, "switch": {"rule": "after_fraction", "fraction": 0.333}}``, so the config in
``metrics.json`` says exactly what ran. Cost is counted in gradient evaluations (closure calls on
the full batch, or samples for mini-batch methods), never in steps or epochs of different price.

Budgets are enforced inside the run. An Adam step costs one evaluation; an L-BFGS step
(``FUSE`` with ``max_iter`` iterations, ``max_eval`` and a line search of at most ``max_ls``
extra trials) costs at most ``max(max_eval, 2) + max_ls`` evaluations (:func:`lbfgs_step_bound`).
Before each L-BFGS step, :class:`StepCap` lowers ``max_ls`` (and ``max_eval`` if need be) so
that this bound fits the budget left, or says that no step fits (then the run stops).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
#: FUSE keyword arguments a method spec may set (the rest are harness/loop settings)
_FUSE_KEYS = (
    "lbfgs_mode",
    "history_size",
    "max_iter",
    "max_eval",
    "lbfgs_lr",
    "max_ls",
    "tolerance_grad",
    "tolerance_change",
    "strict_max_eval",
)


def build_switch(spec: Mapping[str, Any], budget_epochs: float) -> SwitchCriterion:
    """A switch criterion from ``{"rule": ..., <its arguments>}``.

    ``"after_fraction"`` switches after ``round(fraction * budget_epochs)`` epochs (full-batch
    runs: one epoch = one step), the budget-relative form of ``"after_epochs"``."""
    rule = spec["rule"]
    common = {k: spec[k] for k in _CRITERIA_KEYS if k in spec}
    if rule == "after_epochs":
        return AfterEpochs(int(spec["n"]), **common)
    if rule == "after_fraction":
        return AfterEpochs(int(round(float(spec["fraction"]) * budget_epochs)), **common)
    if rule == "grad_norm_below":
        return GradNormBelow(spec["tau"], relative=spec.get("relative", True), **common)
    if rule == "loss_plateau":
        return LossPlateau(spec["rel_change"], **common)
    if rule == "loss_below":
        return LossBelow(spec["value"], **common)
    if rule == "paper_code":
        return paper_code_criterion(spec["kind"])
    raise ValueError(f"unknown switch rule {rule!r} in {dict(spec)}")


def build_optimizer(
    spec: Mapping[str, Any],
    params: Sequence[torch.Tensor],
    *,
    budget_epochs: float,
    steps_per_epoch: int | None = 1,
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` / ``SGD`` or a :class:`~beyondgd.optim.FUSE` from a method spec.

    FUSE in ``"full"`` mode reuses the line search's last evaluation as the next step's start
    (one closure call saved per step, same iterates)."""
    kind = spec["optimizer"]
    if kind == "adam":
        return torch.optim.Adam(params, lr=spec["lr"])
    if kind == "sgd":
        return torch.optim.SGD(params, lr=spec["lr"], momentum=spec.get("momentum", 0.9))
    if kind == "fuse":
        options = {k: spec[k] for k in _FUSE_KEYS if k in spec}
        mode = options.get("lbfgs_mode", "full")
        return FUSE(
            params,
            lr=spec.get("lr", 1e-3),
            switch=build_switch(spec["switch"], budget_epochs),
            steps_per_epoch=steps_per_epoch,
            reuse_last_eval=mode == "full",
            **options,
        )
    raise ValueError(f"unknown optimizer {kind!r} in method spec {dict(spec)}")


def lbfgs_step_bound(opt: FUSE) -> int:
    """Most closure calls one L-BFGS ``step()`` of ``opt`` can make with its current ``max_eval``
    and ``max_ls``: the start evaluation, iterations until ``max_eval`` calls are reached, and
    the last iteration's line search (one trial plus ``max_ls``); ``max_eval + 1`` when
    ``strict_max_eval`` caps the line searches too."""
    if opt.strict_max_eval:
        return opt.max_eval + 1
    return max(opt.max_eval, 2) + opt.max_ls


class StepCap:
    """Fits each L-BFGS step of a :class:`~beyondgd.optim.FUSE` into the evaluations left.

    Remembers the optimizer's own ``max_ls`` and ``max_eval`` and, before each step, lowers them
    just enough that the step's calls fit in the budget left (the line search first, then
    ``max_eval`` when even a one-trial line search would not fit). In ``"full"`` mode with
    ``reuse_last_eval``, a step right after an L-BFGS step starts from the cached evaluation,
    so it makes one call fewer than :func:`lbfgs_step_bound` (the caller must not move the
    parameters between steps)."""

    def __init__(self, opt: FUSE):
        self.opt = opt
        self.max_ls = opt.max_ls
        self.max_eval = opt.max_eval

    def start_is_cached(self) -> bool:
        opt = self.opt
        return (
            opt.reuse_last_eval
            and opt.lbfgs_mode == "full"
            and opt.phase == "lbfgs"
            and opt.last_loss is not None
        )

    def fit(self, remaining: int) -> bool:
        """Cap the next step to ``remaining`` evaluations; ``False`` when not even the start
        evaluation and one trial fit (the run must stop there)."""
        room = remaining + (1 if self.start_is_cached() else 0)
        if room < 2:
            return False
        opt = self.opt
        if opt.strict_max_eval:  # the line searches are capped by max_eval already
            opt.max_eval = min(self.max_eval, room - 1)
            return True
        opt.max_eval = min(self.max_eval, room)
        # strong_wolfe accepts max_ls = 0: one trial, kept if it lowers the loss
        opt.max_ls = min(self.max_ls, room - max(opt.max_eval, 2))
        return True


def next_is_lbfgs(opt: torch.optim.Optimizer) -> bool:
    """Whether ``opt``'s next step is an L-BFGS step (a FUSE past its switch, or about to
    switch at its very first step)."""
    if not isinstance(opt, FUSE):
        return False
    return opt.phase != "adam" or (opt.n_steps == 0 and opt.criterion.at_start())


def tanh_mlp(
    widths: Sequence[int], seed: int, dtype: torch.dtype = torch.float32
) -> torch.nn.Sequential:
    """``Linear`` layers of the given ``widths`` with ``Tanh`` between them, initialised from
    ``seed`` (the global torch RNG is left as it was)."""
    layers: list[torch.nn.Module] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [torch.nn.Tanh()] if i else []
            layers.append(torch.nn.Linear(n_in, n_out))
    return torch.nn.Sequential(*layers).to(dtype)


class CountingClosure:
    """A torch closure over a loss function of the parameters that counts its calls."""

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


@dataclass
class BudgetedRun:
    """What :func:`run_full_batch` observed.

    ``trace`` holds ``(evaluations spent, loss)`` at every accepted iterate whose loss is known
    (Adam: the start of each step; L-BFGS: its accepted end point), ``inf`` for non-finite."""

    budget: int
    evals: int
    stop: str
    final_loss: float | None
    trace: list[tuple[int, float]] = field(default_factory=list)
    switch_step: int | None = None
    lbfgs_iters: int | None = None

    @property
    def evals_charged(self) -> int:
        """The whole budget (a run that stopped early had no use for the rest), or what was
        spent if that were more (it cannot be: the loop never overruns)."""
        return max(self.evals, self.budget)

    def cost_to_reach(self, target: float) -> int | None:
        """Evaluations spent when a loss below ``target`` was first known; ``None`` if never."""
        for spent, loss in self.trace:
            if loss < target:
                return spent
        return None

    def curve(self, grid: Sequence[float], offset: float = 0.0, floor: float = 0.0) -> list:
        """Best loss so far (minus ``offset``, at least ``floor``) at each grid cost."""
        xs = [e for e, _ in self.trace]
        ys = [v - offset for _, v in self.trace]
        return [None if not math.isfinite(v) else max(v, floor) for v in resample(xs, ys, grid)]


def run_full_batch(
    spec: Mapping[str, Any],
    params: Sequence[torch.Tensor],
    loss_fn: Callable[[], torch.Tensor],
    budget: int,
    *,
    target: float | None = None,
) -> BudgetedRun:
    """Minimise ``loss_fn`` with the method ``spec`` on at most ``budget`` gradient evaluations.

    Stops with ``stop = "budget"`` when the budget is spent or the next step cannot fit in what
    is left, ``"converged"`` when L-BFGS can make no more progress (a step made no closure call),
    ``"target"`` once a loss below ``target`` is known.
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1 evaluation, got {budget}")
    opt = build_optimizer(spec, params, budget_epochs=budget)
    closure = CountingClosure(opt, loss_fn)
    cap = StepCap(opt) if isinstance(opt, FUSE) else None
    trace: list[tuple[int, float]] = []
    stop = "budget"
    while True:
        remaining = budget - closure.calls
        if remaining < 1:
            break
        if cap is not None and next_is_lbfgs(opt) and not cap.fit(remaining):
            break
        before = closure.calls
        start = opt.step(closure)
        start_loss = float(torch.as_tensor(start).detach()) if start is not None else math.nan
        trace.append((closure.calls, start_loss if math.isfinite(start_loss) else math.inf))
        end = getattr(opt, "last_loss", None)
        if end is not None:
            trace.append((closure.calls, end if math.isfinite(end) else math.inf))
        if closure.calls > budget:
            raise RuntimeError(f"budget overrun: {closure.calls} > {budget} evaluations")
        if target is not None and min(v for _, v in trace[-2:]) < target:
            stop = "target"
            break
        if closure.calls == before:  # L-BFGS reused its cached point and did not move
            stop = "converged"
            break
    # The loss at the final parameters (not counted: it measures, it does not optimise). Not
    # under no_grad, since a loss may differentiate inside.
    final = float(loss_fn().detach())
    return BudgetedRun(
        budget=budget,
        evals=closure.calls,
        stop=stop,
        final_loss=final if math.isfinite(final) else None,
        trace=trace,
        switch_step=opt.switch_step if isinstance(opt, FUSE) else None,
        lbfgs_iters=opt.n_lbfgs_iters if isinstance(opt, FUSE) else None,
    )


def resample(xs: Sequence[float], values: Sequence[float], grid: Sequence[float]) -> list[float]:
    """The best value observed at or before each grid point (a step function of cost); before
    the first observation, the first value."""
    if not len(xs):
        return [math.nan] * len(grid)
    x_arr = np.asarray(xs, dtype=float)
    best = np.minimum.accumulate(np.asarray(values, dtype=float))
    idx = np.searchsorted(x_arr, np.asarray(grid, dtype=float), side="right") - 1
    return best[np.clip(idx, 0, len(best) - 1)].tolist()


def cost_grid(budget: float, points: int, *, log: bool = False) -> list[float]:
    """``points`` costs from 0 (or 1 with ``log``) to ``budget``."""
    if log:
        return np.unique(np.geomspace(1, budget, points).round(6)).tolist()
    return np.linspace(0, budget, points).round(6).tolist()


def method_label(spec: Mapping[str, Any], name: str) -> str:
    return str(spec.get("label", name))


def fuse_method(label: str, switch: dict[str, Any], lr: float = 1e-3, **extra: Any) -> dict:
    """A FUSE method spec: Adam (``lr``) until ``switch`` fires, then L-BFGS (``extra``: FUSE
    options such as ``lbfgs_mode``, loop settings such as ``batch_size``)."""
    return {"label": label, "optimizer": "fuse", "lr": lr, "switch": switch, **extra}


def methods_paragraph(methods: Mapping[str, Mapping[str, Any]], unit: str) -> str:
    """The report's paragraph listing every method of the config; ``unit`` says what the
    budget of ``after_fraction`` is counted in."""
    listed = "; ".join(
        f"**{method_label(spec, name)}** (`{name}`): {describe_method(spec)}"
        for name, spec in methods.items()
    )
    return (
        f"Methods: {listed}. `after_fraction` switches after that fraction of the budget ({unit})."
    )


def describe_method(spec: Mapping[str, Any]) -> str:
    """One phrase saying what a method spec runs."""
    kind = spec["optimizer"]
    if kind != "fuse":
        return f"`{kind}` lr {spec['lr']:g}" + "".join(
            f", {k} {spec[k]:g}" for k in ("momentum", "batch_size") if k in spec
        )
    sw = spec["switch"]
    mode = spec.get("lbfgs_mode", "full")
    lbfgs = f"{mode}-batch L-BFGS" if mode != "minibatch" else "mini-batch L-BFGS"
    if sw["rule"] == "after_epochs" and sw.get("n") == 0:
        return f"{lbfgs} from the first step (FUSE's L-BFGS phase, history 10, strong Wolfe)"
    args = ", ".join(f"{k} {v}" for k, v in sw.items() if k != "rule")
    return f"Adam lr {spec.get('lr', 1e-3):g}, then {lbfgs} once `{sw['rule']}` ({args}) fires"
