"""FUSE / FUSE-PV: Adam first, L-BFGS after a switch-over criterion.

References
----------
.. [1] Z. Jiang, M. Z. Hasan, A. Balu, J. R. Waite, G. Huang, S. Sarkar, "FUSE: First-Order and
   Second-Order Unified SynthEsis in Stochastic Optimization", IEEE CAI 2025, arXiv:2503.04204.
.. [2] J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., Springer, 2006.
.. [3] A. S. Berahas, J. Nocedal, M. Takac, "A Multi-Batch L-BFGS Method for Machine Learning",
   NeurIPS 2016.
.. [4] D. P. Kingma, J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
"""

from __future__ import annotations

import copy
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from beyondgd.core.distributed import all_ranks_agree, all_reduce_sum, is_distributed, world_size
from beyondgd.core.validation import check_choice, check_int, check_number
from beyondgd.optim.criteria import SwitchCriterion, SwitchObservation, as_criterion
from beyondgd.optim.lbfgs import LBFGSMemory, LineSearchResult, fixed_step, strong_wolfe

__all__ = ["FUSE"]

_MODES = ("full", "minibatch", "overlap")
_LINE_SEARCHES = ("strong_wolfe", None)
_STATE_FORMAT = 1
#: ``steps_per_epoch`` default: one epoch per step while ``step()`` gets a closure (full batch).
_AUTO = "auto"

Closure = Callable[[], Any]
SwitchCallback = Callable[["FUSE", str, str], Any]


def _user_stacklevel() -> int:
    """``stacklevel`` that points a warning at the first caller outside FUSE and torch.optim."""
    frame, level = sys._getframe(1), 1
    internal = (os.path.dirname(__file__), os.path.dirname(torch.__file__))
    while frame is not None and frame.f_code.co_filename.startswith(internal):
        frame, level = frame.f_back, level + 1
    return level


def _check_tolerance(name: str, value: object) -> float:
    """A tolerance >= 0; ``inf`` is allowed (as in torch: stop every step at once)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == math.inf:
        return math.inf
    return check_number(name, value, low=0.0)


def _check_closure_loss(loss: Any) -> None:
    """The closure's return value must be the loss: a scalar tensor or a real number."""
    if isinstance(loss, Tensor):
        if loss.numel() != 1:
            raise ValueError(
                "the closure must return the loss as a scalar; it returned a tensor of shape "
                f"{tuple(loss.shape)} (reduce it, e.g. loss.mean(), before backward())"
            )
        return
    if loss is None:
        raise TypeError("the closure returned None; it must return the loss it computed")
    if isinstance(loss, bool) or not isinstance(loss, (int, float)):
        raise TypeError(
            f"the closure must return the loss (a scalar tensor or a float), got "
            f"{type(loss).__name__}"
        )


def _needs_reduction(closure: Closure | None, distributed: bool | None) -> bool:
    """Under a process group, a loss that may differ across ranks must be reduced before a branch
    reads it; a closure marked ``rank_consistent`` (``distributed_full_batch_closure``) already
    returns the same loss and gradient on every rank."""
    if distributed is False or not is_distributed():
        return False
    return not getattr(closure, "rank_consistent", False)


def _reduce_loss(loss: float, grad_norm: float = 0.0) -> tuple[float, float]:
    """Means over ranks of a rank-local loss and gradient norm (one small all-reduce); the loss
    is NaN on every rank when it is NaN (not finite) on any."""
    bad = not (math.isfinite(loss) and math.isfinite(grad_norm))
    values = torch.tensor(
        [0.0 if bad else loss, 0.0 if bad else grad_norm, float(bad)], dtype=torch.float64
    )
    total = all_reduce_sum(values).tolist()
    n = world_size()
    if total[2] > 0:
        return math.nan, math.nan
    return total[0] / n, total[1] / n


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_device(v, device) for v in obj]
    return obj


class FUSE(Optimizer):
    r"""FUSE-PV: Adam steps until a switch criterion fires, then L-BFGS steps.

    **Adam phase** (:math:`\theta = 1`). With the gradient :math:`g_k` (plus
    ``weight_decay`` :math:`\cdot x_k`, as in ``torch.optim.Adam``),

    .. math::
        m_k = \beta_1 m_{k-1} + (1-\beta_1) g_k,\quad
        v_k = \beta_2 v_{k-1} + (1-\beta_2) g_k^2,\quad
        x_{k+1} = x_k - \frac{\eta}{1-\beta_1^k}\,
        \frac{m_k}{\sqrt{v_k/(1-\beta_2^k)} + \epsilon},

    computed with ``torch._foreach_*`` ops; it matches ``torch.optim.Adam`` to rounding. A step
    whose loss or gradient is not finite is skipped (moments untouched) and counted in
    ``n_skipped``.

    **L-BFGS phase** (:math:`\theta = 0`). Each ``step(closure)`` runs up to ``max_iter`` iterations
    :math:`x \leftarrow x + t\,d`, :math:`d = -H g` from the two-loop recursion over the last
    ``history_size`` pairs :math:`(s_i, y_i)`, :math:`t` from a strong Wolfe line search started at
    ``lbfgs_lr`` (at :math:`\min(1, 1/\|g\|_1)\cdot` ``lbfgs_lr`` when the memory is empty), as
    ``torch.optim.LBFGS`` does. The memory survives across ``step()`` calls. Where the curvature
    pairs come from is set by ``lbfgs_mode``:

    - ``"full"`` (default): the closure is the full-batch loss; classic L-BFGS. With
      ``strict_max_eval=True`` (torch's line-search budget) it makes the same iterates and closure
      calls as ``torch.optim.LBFGS(line_search_fn="strong_wolfe")`` with the same
      ``history_size`` and tolerances (a test checks it on Rosenbrock where the budget binds), as
      long as no line search ends without a lower point (FUSE then halves the next trial step,
      where torch repeats the same search from the same point), a line search that runs out of
      trials ends at its lowest trial (FUSE keeps that one, torch the low end of its bracket) and
      no curvature pair falls between the two acceptance tests (below). With the default budgets
      the iterates are the same whenever ``max_eval`` does not bind. With
      ``reuse_last_eval=True`` the evaluation made by the line search at the accepted point is
      reused as the start evaluation of the next step when the parameters are bit-for-bit
      unchanged: one closure call saved per step (half the calls with ``max_iter=1``), same
      iterates. It assumes the closure is a fixed function, and a converged step may then make no
      closure call at all (a loop ``while calls < budget`` would not end); hence opt-in.
    - ``"minibatch"``: ``torch.optim.LBFGS`` behaviour, as in the authors' code. Each step evaluates
      a new batch :math:`S_{k+1}` at its start and forms
      :math:`y_k = \nabla f_{S_{k+1}}(x_{k+1}) - \nabla f_{S_k}(x_k)`: a pair from two different
      batches (reproduced on purpose; it is not a secant pair of any single function).
    - ``"overlap"``: curvature from the same samples,
      :math:`y_k = \nabla f_{S_k}(x_{k+1}) - \nabla f_{S_k}(x_k)`, where the gradient at
      :math:`x_{k+1}` is the one the line search computed on batch :math:`S_k` at the accepted
      point (no extra evaluation). This is the multi-batch L-BFGS of Berahas, Nocedal & Takac
      (2016) with full overlap; :class:`~beyondgd.optim.OverlappingBatchSampler` draws batches
      that also share samples from one step to the next.

    **Blend** (``theta``).
    :math:`x_{k+1} = \theta\,x^{Adam}_{k+1} + (1-\theta)\,x^{L\text{-}BFGS}_{k+1}`, both
    computed from :math:`x_k` with the gradient of one start evaluation. This general form is a
    *reconstruction* from a third-party summary of the paper; FUSE-PV (the default,
    ``theta=None``) is the hard switch :math:`\theta \in \{1, 0\}` decided by ``switch``. When
    ``theta`` is given it alone decides every step (``switch`` must then be left ``None``); the
    phase is ``"adam"`` at :math:`\theta=1`, ``"lbfgs"`` at :math:`\theta=0` and ``"blend"`` in
    between. After a blend step the next curvature pair uses the actual displacement.

    **When a switch takes effect.** After step :math:`k` (0-based) the criterion sees a
    :class:`~beyondgd.optim.SwitchObservation` (start-of-step loss, norm of the gradient of the last
    closure call, epoch counter) and decides the phase of step :math:`k+1`; ``switch_step`` is then
    :math:`k+1`, the index of the first step run in the new phase, and callbacks are called with
    ``(optimizer, old_phase, new_phase)`` right away. With ``steps_per_epoch=None`` the observation
    of step :math:`k` is handed over when its epoch status is known: at ``end_epoch()`` (then
    ``epoch_end=True``) or at the start of the next ``step()``. A criterion that holds before any
    step (``AfterEpochs(0)``, or ``theta(0) < 1``) switches when step 0 starts (``switch_step=0``).
    When the phase goes back to Adam (``latch=False``) the L-BFGS memory is kept but the pair that
    would span the Adam steps is dropped; the Adam moments are frozen during L-BFGS steps.

    **Budgets** (pytorch issue #49993). ``max_iter`` is the number of L-BFGS iterations per
    ``step()``; ``max_eval`` (default ``max_iter * 5 // 4``, as torch) is checked after each
    iteration: once the closure calls of this ``step()`` (the start evaluation included, counted
    even when reused) reach it, no further iteration starts. By default each line search makes up
    to ``max_ls + 1`` trials (``max_ls`` defaults to 25) whatever is left of ``max_eval``, so one
    step makes at most ``min(max_iter * (max_ls + 1), max(max_eval, 2) + max_ls - 1) + 1`` closure
    calls (``max_iter * (max_ls + 1) + 1`` when ``max_eval`` does not bind). With
    ``strict_max_eval=True`` each line search gets only what is left of ``max_eval`` (at most
    ``max_eval - calls so far`` trials after the first, and never more than ``max_ls``), as
    ``torch.optim.LBFGS`` does since PyTorch 2.5 (pytorch PR 135026): a step then makes at most
    ``max_eval + 1`` calls. Without ``reuse_last_eval`` every step calls the closure at least
    once. ``n_evals`` (closure calls) and ``n_lbfgs_iters`` are reported, so budgets can be counted
    in evaluations rather than in steps. With ``line_search=None`` each iteration moves by the
    fixed step ``lbfgs_lr`` and evaluates the new point (halving the step while it is not finite),
    so a step costs one call more than torch's fixed-step LBFGS.

    **Closures.** A closure zeroes the gradients, computes the loss, calls ``backward()`` and
    returns the loss as a scalar (a 0-d or one-element tensor, or a float). A closure that returns
    something else, or leaves every gradient as it was (no ``backward()``), raises an error that
    says so. A non-finite loss or gradient is counted in ``n_nonfinite_evals`` and warned about
    once per optimizer.

    **Mini-batch loops.** With the default ``steps_per_epoch="auto"`` a ``step(closure)`` is one
    epoch (full-batch training). The first ``step()`` without a closure (an ordinary mini-batch
    loop: ``loss.backward(); opt.step()``) stops counting epochs by steps, with a one-time warning:
    epochs then end at :meth:`end_epoch` (or give ``steps_per_epoch=len(loader)``), so
    ``AfterEpochs(5)`` waits for five real epochs. After the switch ``step()`` needs a closure of
    the full-batch loss (:func:`~beyondgd.optim.full_batch_closure`).

    **Robustness** (pytorch issue #5953). Inside the line search a non-finite loss or gradient is a
    failed trial: the step is bisected toward the last good point instead of interpolated. A line
    search that finds no finite lower point restores the start of the iteration (parameters are
    never left non-finite) and counts as a failure; the next trial step is halved per consecutive
    failure, and every ``max_failures`` consecutive failures the memory is reset (scaled steepest
    descent). Pairs with :math:`y^\top s \le \varepsilon\, y^\top y` (L-BFGS-B's
    scale-invariant test; torch's absolute :math:`10^{-10}` stalls convergence) or with non-finite
    entries are rejected, a non-descent direction resets the memory, and a step whose start
    evaluation is not finite is skipped. When the Wolfe conditions are not met within the budget,
    the lowest finite trial is kept (if it lowers the loss).

    **More than one process** (``torch.distributed``; pytorch issue #30439). Under a process
    group every branch FUSE takes (the switch criterion, the line-search tests, curvature-pair
    acceptance, the non-finite skip) must read the same numbers on every rank. FUSE checks at its
    first step that the parameters are the same on every rank (``RuntimeError`` otherwise). A
    closure marked ``rank_consistent`` (:func:`~beyondgd.optim.distributed_full_batch_closure`,
    the full-batch loss over every rank's shard) is used as is; for any other closure (a
    mini-batch closure on a ``DistributedDataParallel`` model, whose gradients DDP averages) and
    for ``step()`` without a closure, FUSE averages the loss and gradient norm over ranks with one
    small all-reduce per evaluation, and a non-finite value on any rank makes it non-finite on
    all, so every rank skips the same steps and line-search trials. The gradients themselves must
    be the same on every rank (DDP or the distributed closure make them so). The closure must be a
    fixed function: no dropout, batch norm frozen. Run with ``torchrun --nproc_per_node 2
    examples/fuse_torchrun.py``. ``n_evals`` counts closure calls (the same on every rank).

    **From the authors' code** (not the paper): Adam lr 1e-3 then ``LBFGS(history_size=10,
    max_eval=4, line_search_fn="strong_wolfe")``, lr 1, one step per mini-batch
    (``lbfgs_mode="minibatch"``, ``max_iter=20, max_eval=4`` here), and the switch rules of
    :func:`~beyondgd.optim.paper_code_criterion` (``switch="epoch" | "gradient" | "loss"``).

    Parameters
    ----------
    params : iterable of Tensor or dict
        Parameters or parameter groups; at least one with ``requires_grad=True`` (parameters with
        ``requires_grad=False`` are kept in their group and never updated). Adam options can
        differ per group; the L-BFGS phase treats all trainable parameters as one vector.
    lr, betas, eps, weight_decay : float
        Adam options (``weight_decay`` is an L2 term added to the gradient in Adam steps only; put
        it in the loss to have it in both phases).
    switch : SwitchCriterion, callable, {"epoch", "gradient", "loss"} or None
        When to use L-BFGS; a callable ``fn(obs) -> bool`` is wrapped in
        :class:`~beyondgd.optim.CallableCriterion`; a string means
        ``paper_code_criterion(switch)``; ``None`` means ``AfterEpochs(5)`` (the authors' default).
    lbfgs_mode : {"full", "minibatch", "overlap"}, default "full"
    lbfgs_lr : float, default 1.0
        Initial (or fixed) L-BFGS step length, ``> 0``.
    history_size : int, default 10
    max_iter : int, default 1
    max_eval : int or None
    line_search : {"strong_wolfe", None}, default "strong_wolfe"
    tolerance_grad : float, default 1e-9
        Stop a step when :math:`\|g\|_\infty \le` ``tolerance_grad`` (``inf``: every L-BFGS
        step stops at its start evaluation, as in torch).
    tolerance_change : float, default 1e-12
        Stop a step when :math:`g^\top d > -` ``tolerance_change``, or when the loss change or the
        largest parameter change falls below it. These tests are absolute, as in torch: on a
        quadratic with curvature 1 the default stops near :math:`\|x - x^*\| \approx 10^{-6}`;
        lower both tolerances for high-accuracy full-batch runs.
    steps_per_epoch : int, None or "auto", default "auto"
        An epoch ends every ``steps_per_epoch`` steps; ``None``: call :meth:`end_epoch` yourself;
        ``"auto"``: every step while steps get a closure, :meth:`end_epoch` from the first step
        without one (see *Mini-batch loops*).
    theta : float, callable or None
        Blend weight of the Adam step, in [0, 1], or ``theta(step) -> float``.
    on_switch : callable or list of callables, optional
        ``fn(optimizer, old_phase, new_phase)`` called at each phase change.
    max_failures : int, default 3
        Consecutive failed line searches before the L-BFGS memory is reset.
    max_ls : int, default 25
        Most trials of one line search (halvings on non-finite values for ``line_search=None``).
    reuse_last_eval : bool, default False
        ``"full"`` mode only: reuse the line search's evaluation at the accepted point as the next
        step's start evaluation (see above).
    strict_max_eval : bool, default False
        Cap each line search by what is left of ``max_eval``, as ``torch.optim.LBFGS`` (see
        *Budgets*).
    distributed : bool or None, default None
        ``None``: keep the ranks consistent (see *More than one process*) whenever a
        ``torch.distributed`` process group is initialised. ``False``: behave as a single process
        even then (an optimizer that runs on one rank only, whose collectives would wait for the
        other ranks forever).

    Attributes
    ----------
    phase : str
        ``"adam"``, ``"lbfgs"`` (or ``"blend"`` with ``theta``): the phase of the next step.
    switch_step : int or None
        Index of the first step of the last switch to L-BFGS.
    switch_history : list of (int, str, str)
        ``(step, old_phase, new_phase)`` for every phase change.
    n_steps, n_evals, n_lbfgs_iters, epoch : int
        ``step()`` calls, closure calls, L-BFGS iterations, completed epochs.
    n_skipped, n_line_search_failures, n_memory_resets, n_nonfinite_evals : int
        Robustness counters.
    last_start_loss, last_loss : float or None
        Loss at the start of the last step, and at its accepted end point when known (L-BFGS).
    memory : LBFGSMemory
        The curvature pairs.
    criterion : SwitchCriterion

    References
    ----------
    .. [1] Z. Jiang et al., "FUSE: First-Order and Second-Order Unified SynthEsis in Stochastic
       Optimization", IEEE CAI 2025, arXiv:2503.04204.
    .. [2] J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., 2006 (Alg. 7.4, 3.5-3.6).
    .. [3] A. S. Berahas, J. Nocedal, M. Takac, "A Multi-Batch L-BFGS Method for Machine
       Learning", NeurIPS 2016.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.optim import FUSE, AfterEpochs
    >>> x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    >>> def closure():
    ...     x.grad = None
    ...     loss = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
    ...     loss.backward()
    ...     return loss
    >>> opt = FUSE([x], lr=1e-2, switch=AfterEpochs(10), max_iter=20)
    >>> for _ in range(20):
    ...     _ = opt.step(closure)
    >>> opt.phase, opt.switch_step, bool(torch.allclose(x, torch.ones(2, dtype=x.dtype)))
    ('lbfgs', 10, True)
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        switch: SwitchCriterion | Callable[[SwitchObservation], bool] | str | None = None,
        lbfgs_mode: str = "full",
        lbfgs_lr: float = 1.0,
        history_size: int = 10,
        max_iter: int = 1,
        max_eval: int | None = None,
        line_search: str | None = "strong_wolfe",
        tolerance_grad: float = 1e-9,
        tolerance_change: float = 1e-12,
        steps_per_epoch: int | str | None = _AUTO,
        theta: float | Callable[[int], float] | None = None,
        on_switch: SwitchCallback | Iterable[SwitchCallback] | None = None,
        max_failures: int = 3,
        reuse_last_eval: bool = False,
        max_ls: int = 25,
        strict_max_eval: bool = False,
        distributed: bool | None = None,
    ) -> None:
        if isinstance(lr, Tensor):
            raise ValueError(
                "lr must be a Python float, got a Tensor: FUSE's Adam phase uses foreach ops, and "
                "torch.optim.Adam does not support a tensor lr with foreach=True either"
            )
        lr = check_number("lr", lr, low=0.0)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        betas = (
            check_number("betas[0]", betas[0], low=0.0, high=1.0, high_inclusive=False),
            check_number("betas[1]", betas[1], low=0.0, high=1.0, high_inclusive=False),
        )
        eps = check_number("eps", eps, low=0.0, low_inclusive=False)
        weight_decay = check_number("weight_decay", weight_decay, low=0.0)
        self.lbfgs_mode = check_choice("lbfgs_mode", lbfgs_mode, _MODES)
        self.lbfgs_lr = check_number("lbfgs_lr", lbfgs_lr, low=0.0, low_inclusive=False)
        self.history_size = check_int("history_size", history_size, low=1)
        self.max_iter = check_int("max_iter", max_iter, low=1)
        if max_eval is None:
            max_eval = self.max_iter * 5 // 4
        self.max_eval = check_int("max_eval", max_eval, low=1)
        self.line_search = check_choice("line_search", line_search, _LINE_SEARCHES)
        self.tolerance_grad = _check_tolerance("tolerance_grad", tolerance_grad)
        self.tolerance_change = _check_tolerance("tolerance_change", tolerance_change)
        # "auto" counts an epoch per step until a step comes without a closure (_epochs_by_steps).
        self._epochs_by_steps = steps_per_epoch is not None
        if steps_per_epoch == _AUTO:
            self._auto_epochs = True
            steps_per_epoch = 1
        else:
            self._auto_epochs = False
            if steps_per_epoch is not None:
                steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, low=1)
        self.steps_per_epoch = steps_per_epoch
        self.max_failures = check_int("max_failures", max_failures, low=1)
        self.max_ls = check_int("max_ls", max_ls, low=1)
        if not isinstance(reuse_last_eval, bool):
            raise TypeError(f"reuse_last_eval must be a bool, got {type(reuse_last_eval).__name__}")
        self.reuse_last_eval = reuse_last_eval
        if not isinstance(strict_max_eval, bool):
            raise TypeError(f"strict_max_eval must be a bool, got {type(strict_max_eval).__name__}")
        self.strict_max_eval = strict_max_eval
        if distributed not in (None, False):
            raise ValueError(
                f"distributed must be None (automatic) or False, got {distributed!r}; with no "
                "process group FUSE is a single process anyway"
            )
        self.distributed = distributed

        if theta is not None:
            if switch is not None:
                raise ValueError(
                    "theta and switch cannot both be given: a theta schedule decides every step"
                )
            if not callable(theta):
                theta = check_number("theta", theta, low=0.0, high=1.0)
        self._theta = theta
        self.criterion = as_criterion(switch)

        self._callbacks: list[SwitchCallback] = []
        if on_switch is not None:
            for fn in [on_switch] if callable(on_switch) else list(on_switch):  # type: ignore[arg-type]
                if not callable(fn):
                    raise TypeError(f"on_switch must be callable(s), got {type(fn).__name__}")
                self._callbacks.append(fn)

        if isinstance(params, Tensor):
            raise TypeError("params must be an iterable of tensors or dicts, got a single Tensor")
        params = list(params)
        if not params:
            raise ValueError("params is empty: give at least one tensor with requires_grad=True")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        self._params: list[Tensor] = [
            p for group in self.param_groups for p in group["params"] if p.requires_grad
        ]
        if not self._params:
            raise ValueError("params has no tensor with requires_grad=True: nothing to optimize")
        for p in self._params:
            if not p.is_floating_point():
                raise TypeError(f"params must be real floating-point tensors, got {p.dtype}")
        self._one_dtype = len({p.dtype for p in self._params}) == 1

        self.memory = LBFGSMemory(self.history_size)
        self.phase = "adam"
        self.switch_step: int | None = None
        self.switch_history: list[tuple[int, str, str]] = []
        self.n_steps = 0
        self.n_evals = 0
        self.n_lbfgs_iters = 0
        self.epoch = 0
        self._steps_in_epoch = 0
        self.n_skipped = 0
        self.n_line_search_failures = 0
        self.n_memory_resets = 0
        self.n_nonfinite_evals = 0
        self._warned_nonfinite = False
        self.last_start_loss: float | None = None
        self.last_loss: float | None = None
        self._pending: SwitchObservation | None = None
        self._last_grad: Tensor | None = None
        self._obs_grad_norm = math.nan
        self._lb: dict[str, Any] = self._fresh_lbfgs_state()
        self._ranks_checked = False  # parameters compared across ranks (first step under DDP)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group; the L-BFGS memory is reset (the flat vector changes length)."""
        super().add_param_group(param_group)
        if hasattr(self, "_params"):  # not during __init__
            self._params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
            self._one_dtype = len({p.dtype for p in self._params}) == 1
            self.memory.reset()
            self._lb = self._fresh_lbfgs_state()

    # ------------------------------------------------------------------ small helpers
    @staticmethod
    def _fresh_lbfgs_state() -> dict[str, Any]:
        return {
            "d": None,  # direction of the last accepted iteration (or a blend displacement)
            "t": None,  # its step length
            "prev_flat_grad": None,  # gradient where that iteration started
            "prev_loss": None,
            "pair_pending": False,  # (d*t, g_next - prev_flat_grad) still to be stored
            "n_fail": 0,  # consecutive failed line searches
            "cache_x": None,  # "full" mode: accepted point and its evaluation
            "cache_f": None,
            "cache_g": None,
        }

    def _gather_flat_grad(self) -> Tensor:
        views = []
        for p in self._params:
            if p.grad is None:
                views.append(p.new_zeros(p.numel()))
            elif p.grad.is_sparse:
                views.append(p.grad.to_dense().view(-1))
            else:
                views.append(p.grad.reshape(-1))
        return torch.cat(views, 0)

    def _flat_params(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self._params], 0)

    def _add_grad(self, step_size: float, update: Tensor) -> None:
        offset = 0
        for p in self._params:
            numel = p.numel()
            p.add_(update[offset : offset + numel].view_as(p), alpha=step_size)
            offset += numel

    def _clone_params(self) -> list[Tensor]:
        return [p.detach().clone(memory_format=torch.contiguous_format) for p in self._params]

    def _set_params(self, values: list[Tensor]) -> None:
        for p, v in zip(self._params, values):
            p.copy_(v)

    def _call(self, closure: Closure) -> Any:
        before = [(p.grad, None if p.grad is None else p.grad._version) for p in self._params]
        with torch.enable_grad():
            loss = closure()
        self.n_evals += 1
        _check_closure_loss(loss)
        if all(p.grad is None for p in self._params) or all(
            p.grad is g and (g is None or g._version == v)
            for p, (g, v) in zip(self._params, before)
        ):
            raise RuntimeError(
                "the closure left every gradient as it was: it must zero the gradients, compute "
                "the loss, call loss.backward() and return the loss"
            )
        return loss

    def _note_nonfinite(self, count: int = 1) -> None:
        """Count non-finite evaluations; the first one is also a warning."""
        if count <= 0:
            return
        self.n_nonfinite_evals += count
        if not self._warned_nonfinite:
            self._warned_nonfinite = True
            warnings.warn(
                f"FUSE: the closure returned a non-finite loss or gradient at step {self.n_steps}; "
                "that step (or line-search trial) was skipped. Later ones are counted in "
                "n_nonfinite_evals and n_skipped without a warning.",
                RuntimeWarning,
                stacklevel=_user_stacklevel(),
            )

    def _evaluate(self, closure: Closure) -> tuple[Any, float, Tensor]:
        raw = self._call(closure)
        flat_grad = self._gather_flat_grad()
        self._last_grad = flat_grad
        loss = float(raw)
        if _needs_reduction(closure, self.distributed):
            finite = math.isfinite(loss) and bool(torch.isfinite(flat_grad).all())
            loss = _reduce_loss(loss if finite else math.nan)[0]
        return raw, loss, flat_grad

    def _check_ranks_agree(self) -> None:
        """Once, at the first step under a process group: the parameters must be the same on
        every rank (DDP broadcasts them at construction; a model built per rank from different
        seeds, or a checkpoint loaded on one rank only, would make the ranks diverge)."""
        self._ranks_checked = True
        if self.distributed is False or not is_distributed():
            return
        if not all_ranks_agree(self._flat_params()):
            raise RuntimeError(
                f"FUSE: the parameters differ across the {world_size()} ranks at the first step. "
                "Every rank must start from the same parameters: wrap the model in "
                "DistributedDataParallel (it broadcasts rank 0's parameters), or seed the model "
                "the same way / load the same checkpoint on every rank"
            )

    def _theta_at(self, step: int) -> float:
        value = self._theta(step) if callable(self._theta) else self._theta
        return check_number("theta", value, low=0.0, high=1.0)

    # ------------------------------------------------------------------ public API
    def add_switch_callback(self, fn: SwitchCallback) -> None:
        """Call ``fn(optimizer, old_phase, new_phase)`` at every phase change."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self._callbacks.append(fn)

    def end_epoch(self) -> None:
        """Mark the end of an epoch (only with ``steps_per_epoch=None``).

        The observation of the last step is then handed to the criterion with ``epoch_end=True``,
        so a switch it triggers applies from the next step on.
        """
        if self._epochs_by_steps:
            raise RuntimeError(
                "end_epoch() is for steps_per_epoch=None; epochs are counted automatically every "
                f"{self.steps_per_epoch} step(s) here"
            )
        self.epoch += 1
        if self._pending is not None:
            obs = replace(self._pending, epoch=self.epoch, epoch_end=True)
            self._pending = None
            self._observe(obs)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        """Run one FUSE step and return the loss at its start (what ``closure`` returned).

        Parameters
        ----------
        closure : callable, optional
            Zeroes the gradients, computes the loss, calls ``backward()`` and returns the loss.
            Required in the L-BFGS and blend phases; optional for Adam steps (then the gradients
            already in ``.grad`` are used and the loss is unknown).

        Returns
        -------
        loss
            The closure's value at the start of the step (``None`` without a closure), as
            ``torch.optim.Adam`` and ``torch.optim.LBFGS`` return. ``last_start_loss`` holds it as
            a float and ``last_loss`` the loss at the accepted end point (L-BFGS steps).
        """
        if closure is not None and not callable(closure):
            raise TypeError(f"closure must be callable, got {type(closure).__name__}")
        if closure is None and self._auto_epochs and self._epochs_by_steps and self.phase == "adam":
            self._epochs_by_steps = False
            warnings.warn(
                "FUSE.step() without a closure: this looks like a mini-batch loop, so a step is "
                "no longer counted as an epoch. Call opt.end_epoch() after each pass over the "
                "data (or give steps_per_epoch=len(loader)) so that epoch-based switch criteria "
                "see real epochs; after the switch, step() needs a closure of the full-batch "
                "loss (beyondgd.optim.full_batch_closure).",
                UserWarning,
                stacklevel=_user_stacklevel(),
            )
        if self._pending is not None:
            obs, self._pending = self._pending, None
            self._observe(obs)
        theta = None
        if self._theta is not None:
            theta = self._theta_at(self.n_steps)
            new = "adam" if theta == 1.0 else "lbfgs" if theta == 0.0 else "blend"
            if new != self.phase:
                self._set_phase(new, self.n_steps)
        elif self.n_steps == 0 and self.phase == "adam" and self.criterion.at_start():
            self._set_phase("lbfgs", 0)
        if self.phase != "adam" and closure is None:
            when = "" if self.switch_step is None else f" since step {self.switch_step}"
            raise ValueError(
                f"closure is required in the {self.phase!r} phase{when} (criterion "
                f"{self.criterion!r}): L-BFGS evaluates the loss several times per step. Pass "
                "opt.step(closure) with a closure of the full-batch loss, e.g. "
                "beyondgd.optim.full_batch_closure(model, loss_fn, loader)"
            )

        if not self._ranks_checked:
            self._check_ranks_agree()
        self.last_loss = None
        if self.phase == "adam":
            raw, loss = self._adam_phase(closure)
        elif self.phase == "lbfgs":
            raw, loss = self._lbfgs_phase(closure)  # type: ignore[arg-type]
        else:
            raw, loss = self._blend_phase(closure, theta)  # type: ignore[arg-type]
        self.last_start_loss = loss
        self._finish_step(loss)
        return raw

    # ------------------------------------------------------------------ phases
    def _grad_stats(self, raw: Any) -> tuple[float, float]:
        """(loss, gradient L2 norm) as floats with a single device sync."""
        grads = [p.grad for p in self._params if p.grad is not None]
        if grads:
            norms = torch._foreach_norm(grads)
            if not self._one_dtype:
                norms = [n.double() for n in norms]
            total = torch.linalg.vector_norm(torch.stack(norms))
        else:
            total = torch.zeros((), dtype=self._params[0].dtype, device=self._params[0].device)
        if isinstance(raw, Tensor):
            both = torch.stack([raw.detach().reshape(()).to(total.dtype), total]).tolist()
            return float(both[0]), float(both[1])
        loss = math.nan if raw is None else float(raw)
        return loss, float(total)

    def _adam_phase(self, closure: Closure | None) -> tuple[Any, float | None]:
        raw = self._call(closure) if closure is not None else None
        loss, grad_norm = self._grad_stats(raw)
        if _needs_reduction(closure, self.distributed):
            # Rank-local loss (a mini-batch closure on a DDP model, or no closure): every rank
            # reads the mean over ranks, NaN when any rank's loss or gradient is not finite.
            bad = not math.isfinite(grad_norm) or (raw is not None and not math.isfinite(loss))
            mean_loss, grad_norm = _reduce_loss(
                math.nan if bad else (0.0 if raw is None else loss), grad_norm
            )
            loss = loss if raw is None else mean_loss
            if not math.isfinite(mean_loss):
                loss = grad_norm = math.nan  # some rank saw a non-finite value: every rank skips
        self._obs_grad_norm = grad_norm
        if math.isfinite(grad_norm) and (raw is None or math.isfinite(loss)):
            self._adam_update()
        else:
            self.n_skipped += 1
            self._note_nonfinite(0 if raw is None else 1)
        # Adam moved x: a pending L-BFGS pair would no longer describe a step.
        self._lb["pair_pending"] = False
        return raw, (None if raw is None else loss)

    def _adam_update(self) -> None:
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            steps: list[int] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, weight_decay = group["eps"], group["weight_decay"]
            if weight_decay != 0:
                grads = torch._foreach_add(grads, params, alpha=weight_decay)
            # Same operations, in the same order, as torch.optim.Adam (foreach, not capturable).
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
            step_size = [(lr / (1 - beta1**s)) * -1 for s in steps]
            bias_correction2_sqrt = [(1 - beta2**s) ** 0.5 for s in steps]
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denom, bias_correction2_sqrt)
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)

    def _start_eval(self, closure: Closure, use_cache: bool) -> tuple[Any, float, Tensor]:
        lb = self._lb
        if (
            use_cache
            and lb["cache_x"] is not None
            and torch.equal(self._flat_params(), lb["cache_x"])
        ):
            f, g = lb["cache_f"], lb["cache_g"]
            self._last_grad = g
            return torch.tensor(f, dtype=g.dtype, device=g.device), f, g
        return self._evaluate(closure)

    def _lbfgs_phase(self, closure: Closure) -> tuple[Any, float]:
        lb = self._lb
        reuse = self.reuse_last_eval and self.lbfgs_mode == "full"
        raw, loss, flat_grad = self._start_eval(closure, use_cache=reuse)
        lb["cache_x"] = lb["cache_f"] = lb["cache_g"] = None
        if not (math.isfinite(loss) and bool(torch.isfinite(flat_grad).all())):
            self.n_skipped += 1
            self._note_nonfinite()
            return raw, loss
        end_loss, flat_grad = self._lbfgs_iterations(closure, loss, flat_grad)
        self.last_loss = end_loss
        if reuse:
            lb["cache_x"], lb["cache_f"], lb["cache_g"] = self._flat_params(), end_loss, flat_grad
        return raw, loss

    def _blend_phase(self, closure: Closure, theta: float) -> tuple[Any, float]:
        lb = self._lb
        raw, loss, flat_grad = self._evaluate(closure)
        lb["cache_x"] = lb["cache_f"] = lb["cache_g"] = None
        if not (math.isfinite(loss) and bool(torch.isfinite(flat_grad).all())):
            self.n_skipped += 1
            self._note_nonfinite()
            return raw, loss
        x0 = self._clone_params()
        flat_x0 = self._flat_params()
        self._adam_update()  # uses the .grad left by the start evaluation
        x_adam = self._clone_params()
        self._set_params(x0)
        self._lbfgs_iterations(closure, loss, flat_grad)
        torch._foreach_lerp_(self._params, x_adam, theta)
        if self.lbfgs_mode != "overlap":
            # Next pair: the displacement actually taken and the start gradient.
            lb["d"], lb["t"] = self._flat_params() - flat_x0, 1.0
            lb["prev_flat_grad"], lb["prev_loss"] = flat_grad, loss
            lb["pair_pending"] = True
        return raw, loss

    def _lbfgs_iterations(
        self, closure: Closure, loss: float, flat_grad: Tensor
    ) -> tuple[float, Tensor]:
        """Up to ``max_iter`` L-BFGS iterations from the current point; returns (loss, grad)."""
        lb = self._lb
        mem = self.memory
        if float(flat_grad.abs().max()) <= self.tolerance_grad:
            return loss, flat_grad
        current_evals = 1  # the start evaluation counts against max_eval, even when reused
        n_iter = 0
        while n_iter < self.max_iter:
            n_iter += 1
            self.n_lbfgs_iters += 1

            if lb["pair_pending"]:
                mem.update(lb["d"].mul(lb["t"]), flat_grad.sub(lb["prev_flat_grad"]))
                lb["pair_pending"] = False
            fresh = len(mem) == 0
            d = flat_grad.neg() if fresh else mem.direction(flat_grad)
            gtd = float(flat_grad.dot(d))
            if not fresh and not gtd < 0.0:
                # Not a descent direction (rounding or a bad pair): restart from steepest descent.
                mem.reset()
                self.n_memory_resets += 1
                fresh = True
                d = flat_grad.neg()
                gtd = float(flat_grad.dot(d))
            lb["prev_flat_grad"], lb["prev_loss"] = flat_grad, loss

            if fresh:
                g_l1 = float(flat_grad.abs().sum())
                t = min(1.0, 1.0 / g_l1) * self.lbfgs_lr if g_l1 > 0 else self.lbfgs_lr
            else:
                t = self.lbfgs_lr
            t *= 0.5 ** min(lb["n_fail"], 60)
            if gtd > -self.tolerance_change:
                break

            result = self._line_search(closure, t, d, loss, flat_grad, gtd, current_evals)
            current_evals += result.n_evals
            self._note_nonfinite(result.n_nonfinite)
            if not result.success:
                self.n_line_search_failures += 1
                lb["n_fail"] += 1
                if lb["n_fail"] % self.max_failures == 0:
                    mem.reset()
                    self.n_memory_resets += 1
                break
            lb["n_fail"] = 0
            t = result.t
            self._add_grad(t, d)
            prev_grad = flat_grad
            loss, flat_grad = result.f, result.g
            lb["d"], lb["t"] = d, t
            if self.lbfgs_mode == "overlap":
                # Same batch at both ends: y = g_S(x_new) - g_S(x_old).
                mem.update(d.mul(t), flat_grad.sub(prev_grad))
            else:
                lb["pair_pending"] = True

            if n_iter == self.max_iter or current_evals >= self.max_eval:
                break
            if float(flat_grad.abs().max()) <= self.tolerance_grad:
                break
            if float(d.abs().max()) * abs(t) <= self.tolerance_change:
                break
            if abs(loss - lb["prev_loss"]) < self.tolerance_change:
                break
        return loss, flat_grad

    def _line_search(
        self,
        closure: Closure,
        t: float,
        d: Tensor,
        loss: float,
        flat_grad: Tensor,
        gtd: float,
        current_evals: int,
    ) -> LineSearchResult:
        x0 = self._clone_params()
        max_ls = self.max_ls
        if self.strict_max_eval:  # torch: the line search gets what is left of max_eval
            max_ls = max(0, min(max_ls, self.max_eval - current_evals))

        def obj_func(step: float) -> tuple[float, Tensor]:
            self._add_grad(step, d)
            _, f, g = self._evaluate(closure)
            self._set_params(x0)  # always restore: a NaN trial never stays in the parameters
            return f, g

        if self.line_search == "strong_wolfe":
            return strong_wolfe(obj_func, t, d, loss, flat_grad, gtd, max_ls=max_ls)
        return fixed_step(obj_func, t, loss, flat_grad, max_trials=max(1, max_ls))

    # ------------------------------------------------------------------ switching
    def _finish_step(self, loss: float | None) -> None:
        if self.phase == "adam":
            grad_norm = self._obs_grad_norm
        else:
            g = self._last_grad
            grad_norm = math.nan if g is None else float(torch.linalg.vector_norm(g))
        obs_loss = math.nan if loss is None else loss
        index = self.n_steps
        self.n_steps += 1
        if not self._epochs_by_steps:
            self._pending = SwitchObservation(index, self.epoch, obs_loss, grad_norm, False)
            return
        self._steps_in_epoch += 1
        epoch_end = self._steps_in_epoch >= self.steps_per_epoch
        if epoch_end:
            self.epoch += 1
            self._steps_in_epoch = 0
        self._observe(SwitchObservation(index, self.epoch, obs_loss, grad_norm, epoch_end))

    def _observe(self, obs: SwitchObservation) -> None:
        if self._theta is not None:
            return
        new = "lbfgs" if self.criterion(obs) else "adam"
        if new != self.phase:
            self._set_phase(new, obs.step + 1)

    def _set_phase(self, new: str, step: int) -> None:
        old, self.phase = self.phase, new
        self.switch_history.append((step, old, new))
        if new == "lbfgs":
            self.switch_step = step
        for fn in list(self._callbacks):
            fn(self, old, new)

    # ------------------------------------------------------------------ state
    def _fuse_state(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "format": _STATE_FORMAT,
                "phase": self.phase,
                "switch_step": self.switch_step,
                "switch_history": [tuple(h) for h in self.switch_history],
                "n_steps": self.n_steps,
                "n_evals": self.n_evals,
                "n_lbfgs_iters": self.n_lbfgs_iters,
                "epoch": self.epoch,
                "steps_in_epoch": self._steps_in_epoch,
                "epochs_by_steps": self._epochs_by_steps,
                "n_skipped": self.n_skipped,
                "n_line_search_failures": self.n_line_search_failures,
                "n_memory_resets": self.n_memory_resets,
                "n_nonfinite_evals": self.n_nonfinite_evals,
                "last_start_loss": self.last_start_loss,
                "last_loss": self.last_loss,
                "pending": None if self._pending is None else asdict(self._pending),
                "last_grad": self._last_grad,
                "criterion": self.criterion.state_dict(),
                "memory": self.memory.state_dict(),
                "lbfgs": dict(self._lb),
            }
        )

    def state_dict(self) -> dict[str, Any]:
        """Torch optimizer state (Adam moments per parameter) plus a ``"fuse"`` entry.

        The ``"fuse"`` entry holds the phase, counters, criterion state and the L-BFGS memory and
        step state (a deep copy), so that a fresh FUSE built with the same arguments and loaded
        with it takes the same next step, bit for bit, in either phase.
        """
        state = super().state_dict()
        state["fuse"] = self._fuse_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load what :meth:`state_dict` returned (tensors are copied, never shared)."""
        if not isinstance(state_dict, dict) or "fuse" not in state_dict:
            raise ValueError("state_dict must come from FUSE.state_dict() (no 'fuse' entry)")
        state_dict = copy.deepcopy(state_dict)
        fuse = state_dict.pop("fuse")
        if fuse.get("format") != _STATE_FORMAT:
            raise ValueError(f"unsupported FUSE state format {fuse.get('format')!r}")
        super().load_state_dict(state_dict)
        fuse = _to_device(fuse, self._params[0].device)
        self.phase = fuse["phase"]
        self.switch_step = fuse["switch_step"]
        self.switch_history = [tuple(h) for h in fuse["switch_history"]]
        self.n_steps = fuse["n_steps"]
        self.n_evals = fuse["n_evals"]
        self.n_lbfgs_iters = fuse["n_lbfgs_iters"]
        self.epoch = fuse["epoch"]
        self._steps_in_epoch = fuse["steps_in_epoch"]
        self._epochs_by_steps = fuse.get("epochs_by_steps", self.steps_per_epoch is not None)
        self.n_skipped = fuse["n_skipped"]
        self.n_line_search_failures = fuse["n_line_search_failures"]
        self.n_memory_resets = fuse["n_memory_resets"]
        self.n_nonfinite_evals = fuse["n_nonfinite_evals"]
        self.last_start_loss = fuse["last_start_loss"]
        self.last_loss = fuse["last_loss"]
        pending = fuse["pending"]
        self._pending = None if pending is None else SwitchObservation(**pending)
        self._last_grad = fuse["last_grad"]
        self.criterion.load_state_dict(fuse["criterion"])
        self.memory.load_state_dict(fuse["memory"])
        self._lb = {**self._fresh_lbfgs_state(), **fuse["lbfgs"]}

    def __getstate__(self) -> dict[str, Any]:
        # torch's Optimizer pickles only defaults/state/param_groups; keep FUSE's attributes too
        # so that copy.deepcopy(optimizer) gives a working optimizer.
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return (
            f"FUSE(phase={self.phase!r}, switch={self.criterion!r}, "
            f"lbfgs_mode={self.lbfgs_mode!r}, n_steps={self.n_steps}, n_evals={self.n_evals})"
        )
