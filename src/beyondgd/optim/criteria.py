"""Switch criteria: when FUSE-PV hands over from Adam to L-BFGS.

A criterion sees one :class:`SwitchObservation` after every optimizer step and answers whether the
*next* step should be an L-BFGS step. The shared machinery (warm-up, patience, smoothing, latch)
lives in :class:`SwitchCriterion`; concrete rules only implement :meth:`SwitchCriterion.condition`.

References
----------
.. [1] Z. Jiang, M. Z. Hasan, A. Balu, J. R. Waite, G. Huang, S. Sarkar, "FUSE: First-Order and
   Second-Order Unified SynthEsis in Stochastic Optimization", IEEE CAI 2025, arXiv:2503.04204.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from beyondgd.core.validation import check_choice, check_int, check_number

__all__ = [
    "AfterEpochs",
    "CallableCriterion",
    "GradNormBelow",
    "LossBelow",
    "LossPlateau",
    "SwitchCriterion",
    "SwitchObservation",
    "as_criterion",
    "paper_code_criterion",
]

_SMOOTHINGS = ("epoch", "ema", "none")


@dataclass(frozen=True)
class SwitchObservation:
    """What a switch criterion sees after one optimizer step.

    Attributes
    ----------
    step : int
        0-based index of the step that just finished.
    epoch : int
        Completed epochs once this step is accounted for (the optimizer's epoch counter), i.e. the
        index of the epoch the *next* step belongs to.
    loss : float
        Loss at the start of the step (what ``step(closure)`` returned); ``nan`` when unknown
        (``step()`` called without a closure).
    grad_norm : float
        L2 norm, over all parameters, of the gradient left by the last closure call of the step.
    epoch_end : bool
        Whether this step was the last one of its epoch.

    Examples
    --------
    >>> obs = SwitchObservation(step=4, epoch=5, loss=0.3, grad_norm=0.1, epoch_end=True)
    >>> AfterEpochs(5)(obs)
    True
    """

    step: int
    epoch: int
    loss: float
    grad_norm: float
    epoch_end: bool


class SwitchCriterion:
    r"""Base class of switch criteria (warm-up, patience, smoothing, latch).

    After each step :meth:`should_use_lbfgs` receives a :class:`SwitchObservation`. It

    1. smooths the raw values (``smoothing``): ``"epoch"`` averages loss and gradient norm over the
       epoch and decides only at epoch ends; ``"ema"`` keeps an exponential moving average
       :math:`m \leftarrow \beta m + (1-\beta) v` (``ema_decay`` :math:`=\beta`, started at the
       first value) and decides every step; ``"none"`` uses the last mini-batch value every step
       (what the authors' code does). Non-finite values are left out of the averages;
    2. evaluates :meth:`condition` on the smoothed values (every check, warm-up included, so that
       reference values such as the first gradient norm are recorded);
    3. counts consecutive satisfied checks that happen after the warm-up (``obs.epoch >= warmup``)
       and answers ``True`` once ``patience`` of them are in a row;
    4. with ``latch=True`` keeps answering ``True`` once it has; with ``latch=False`` the answer is
       recomputed at every check, so FUSE can switch back to Adam.

    Between checks (``smoothing="epoch"`` inside an epoch) the previous answer is repeated.

    Parameters
    ----------
    warmup : int, default 0
        Epochs during which the criterion never fires: it can only answer ``True`` when
        ``obs.epoch >= warmup`` (at least ``warmup`` epochs completed).
    patience : int, default 1
        Consecutive satisfied checks needed.
    smoothing : {"epoch", "ema", "none"}, default "epoch"
    ema_decay : float, default 0.9
        :math:`\beta` of the EMA, in [0, 1).
    latch : bool, default True

    Notes
    -----
    Subclasses implement ``condition(loss, grad_norm, obs) -> bool`` and list any extra state
    attribute names in ``_extra_state`` so that :meth:`state_dict` saves them.

    References
    ----------
    .. [1] Z. Jiang et al., "FUSE: First-Order and Second-Order Unified SynthEsis in Stochastic
       Optimization", IEEE CAI 2025, arXiv:2503.04204.

    Examples
    --------
    >>> class StepAtLeast(SwitchCriterion):
    ...     def condition(self, loss, grad_norm, obs):
    ...         return obs.step >= 2
    >>> crit = StepAtLeast(smoothing="none")
    >>> [crit(SwitchObservation(k, k + 1, 1.0, 1.0, True)) for k in range(4)]
    [False, False, True, True]
    """

    _base_state = (
        "_latched",
        "_count",
        "_decision",
        "_sum_loss",
        "_n_loss",
        "_sum_grad",
        "_n_grad",
        "_ema_loss",
        "_ema_grad",
    )
    _extra_state: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        warmup: int = 0,
        patience: int = 1,
        smoothing: str = "epoch",
        ema_decay: float = 0.9,
        latch: bool = True,
    ) -> None:
        self.warmup = check_int("warmup", warmup, low=0)
        self.patience = check_int("patience", patience, low=1)
        self.smoothing = check_choice("smoothing", smoothing, _SMOOTHINGS)
        self.ema_decay = check_number(
            "ema_decay", ema_decay, low=0.0, high=1.0, high_inclusive=False
        )
        if not isinstance(latch, bool):
            raise TypeError(f"latch must be a bool, got {type(latch).__name__}")
        self.latch = latch
        self.reset()

    # -- to override ------------------------------------------------------------------------
    def condition(self, loss: float, grad_norm: float, obs: SwitchObservation) -> bool:
        """Whether the rule holds for the smoothed ``loss`` and ``grad_norm``."""
        raise NotImplementedError

    def at_start(self) -> bool:
        """Whether the very first step should already be an L-BFGS step (default: no)."""
        return False

    def _reset_extra(self) -> None:
        """Reset subclass state (reference values)."""

    # -- machinery --------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything seen so far (counts, averages, latch, reference values)."""
        self._latched = False
        self._count = 0
        self._decision = False
        self._sum_loss = 0.0
        self._n_loss = 0
        self._sum_grad = 0.0
        self._n_grad = 0
        self._ema_loss: float | None = None
        self._ema_grad: float | None = None
        self._reset_extra()

    def _ema(self, old: float | None, value: float) -> float | None:
        if not math.isfinite(value):
            return old
        if old is None:
            return value
        return self.ema_decay * old + (1.0 - self.ema_decay) * value

    def _smoothed(self, obs: SwitchObservation) -> tuple[float, float] | None:
        """Smoothed (loss, grad_norm) when this observation triggers a check, else None."""
        if self.smoothing == "none":
            return float(obs.loss), float(obs.grad_norm)
        if self.smoothing == "ema":
            self._ema_loss = self._ema(self._ema_loss, float(obs.loss))
            self._ema_grad = self._ema(self._ema_grad, float(obs.grad_norm))
            nan = math.nan
            return (
                nan if self._ema_loss is None else self._ema_loss,
                nan if self._ema_grad is None else self._ema_grad,
            )
        # "epoch": accumulate finite values, decide at the epoch end on their mean.
        if math.isfinite(obs.loss):
            self._sum_loss += float(obs.loss)
            self._n_loss += 1
        if math.isfinite(obs.grad_norm):
            self._sum_grad += float(obs.grad_norm)
            self._n_grad += 1
        if not obs.epoch_end:
            return None
        loss = self._sum_loss / self._n_loss if self._n_loss else math.nan
        grad = self._sum_grad / self._n_grad if self._n_grad else math.nan
        self._sum_loss, self._n_loss, self._sum_grad, self._n_grad = 0.0, 0, 0.0, 0
        return loss, grad

    def should_use_lbfgs(self, obs: SwitchObservation) -> bool:
        """Whether the step after ``obs`` should be an L-BFGS step."""
        if self.latch and self._latched:
            return True
        values = self._smoothed(obs)
        if values is None:
            return self._decision
        holds = bool(self.condition(values[0], values[1], obs))
        if holds and obs.epoch >= self.warmup:
            self._count += 1
        else:
            self._count = 0
        self._decision = self._count >= self.patience
        if self._decision and self.latch:
            self._latched = True
        return self._decision

    def __call__(self, obs: SwitchObservation) -> bool:
        return self.should_use_lbfgs(obs)

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python snapshot of the criterion's state (safe for ``torch.save``)."""
        keys = self._base_state + self._extra_state
        return {"type": type(self).__name__, **{k: getattr(self, k) for k in keys}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        kind = state.get("type")
        if kind != type(self).__name__:
            raise ValueError(
                f"state is for a {kind} criterion, cannot load it into {type(self).__name__}"
            )
        for k in self._base_state + self._extra_state:
            setattr(self, k, state[k])

    def _options(self) -> str:
        return (
            f"warmup={self.warmup}, patience={self.patience}, smoothing={self.smoothing!r}, "
            f"latch={self.latch}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._options()})"


class AfterEpochs(SwitchCriterion):
    """L-BFGS from the moment ``n`` epochs have completed (epoch counter ``>= n``).

    ``AfterEpochs(5)`` is the authors' default ("epoch"): Adam for epochs 0-4, L-BFGS after.
    ``AfterEpochs(0)`` starts in L-BFGS (plain L-BFGS through FUSE). Latched.

    Parameters
    ----------
    n : int
        Number of Adam epochs, ``>= 0``.
    warmup, patience, smoothing, ema_decay, latch
        Accepted for a uniform interface (see :class:`SwitchCriterion`); the rule only reads the
        epoch counter, so only ``patience`` and ``warmup`` can delay it further.

    Examples
    --------
    >>> crit = AfterEpochs(2)
    >>> [crit(SwitchObservation(k, k + 1, 1.0, 1.0, True)) for k in range(3)]
    [False, True, True]
    """

    def __init__(
        self,
        n: int,
        *,
        warmup: int = 0,
        patience: int = 1,
        smoothing: str = "none",
        ema_decay: float = 0.9,
        latch: bool = True,
    ) -> None:
        self.n = check_int("n", n, low=0)
        super().__init__(
            warmup=warmup, patience=patience, smoothing=smoothing, ema_decay=ema_decay, latch=latch
        )

    def condition(self, loss: float, grad_norm: float, obs: SwitchObservation) -> bool:
        return obs.epoch >= self.n

    def at_start(self) -> bool:
        return self.n == 0 and self.warmup == 0 and self.patience == 1

    def __repr__(self) -> str:
        return f"AfterEpochs({self.n})"


class GradNormBelow(SwitchCriterion):
    r"""Switch when the (smoothed) gradient norm falls to ``tau`` or below.

    The condition is :math:`\bar g \le \tau\, g_0` with ``relative=True``, where :math:`g_0` is the
    first finite smoothed gradient norm seen (warm-up included), or :math:`\bar g \le \tau` with
    ``relative=False``.

    Parameters
    ----------
    tau : float
        Threshold, ``> 0``.
    relative : bool, default True
    warmup, patience, smoothing, ema_decay, latch
        See :class:`SwitchCriterion`.

    Examples
    --------
    >>> crit = GradNormBelow(0.5, smoothing="none")
    >>> [crit(SwitchObservation(k, 0, 1.0, g, False)) for k, g in enumerate([2.0, 1.5, 0.9])]
    [False, False, True]
    """

    _extra_state = ("_reference",)

    def __init__(
        self,
        tau: float,
        relative: bool = True,
        *,
        warmup: int = 0,
        patience: int = 1,
        smoothing: str = "epoch",
        ema_decay: float = 0.9,
        latch: bool = True,
    ) -> None:
        self.tau = check_number("tau", tau, low=0.0, low_inclusive=False)
        if not isinstance(relative, bool):
            raise TypeError(f"relative must be a bool, got {type(relative).__name__}")
        self.relative = relative
        super().__init__(
            warmup=warmup, patience=patience, smoothing=smoothing, ema_decay=ema_decay, latch=latch
        )

    def _reset_extra(self) -> None:
        self._reference: float | None = None

    def condition(self, loss: float, grad_norm: float, obs: SwitchObservation) -> bool:
        if not math.isfinite(grad_norm):
            return False
        if not self.relative:
            return grad_norm <= self.tau
        if self._reference is None:
            self._reference = grad_norm
        return grad_norm <= self.tau * self._reference

    def __repr__(self) -> str:
        return f"GradNormBelow({self.tau}, relative={self.relative}, {self._options()})"


class LossPlateau(SwitchCriterion):
    r"""Switch when the (smoothed) loss stops decreasing.

    At each check the relative decrease :math:`(\bar f_{prev} - \bar f)/|\bar f_{prev}|` between
    consecutive checks is compared with ``rel_change``; the condition holds when it is below (an
    increase counts as a plateau). The first check only records :math:`\bar f`.

    Parameters
    ----------
    rel_change : float, default 1e-3
        ``>= 0``.
    patience : int, default 3
        Consecutive plateau checks needed.
    warmup, smoothing, ema_decay, latch
        See :class:`SwitchCriterion`.

    Examples
    --------
    >>> crit = LossPlateau(rel_change=0.1, patience=2, smoothing="none")
    >>> losses = [1.0, 0.5, 0.48, 0.47, 0.46]
    >>> [crit(SwitchObservation(k, 0, f, 1.0, False)) for k, f in enumerate(losses)]
    [False, False, False, True, True]
    """

    _extra_state = ("_previous",)

    def __init__(
        self,
        rel_change: float = 1e-3,
        patience: int = 3,
        *,
        warmup: int = 0,
        smoothing: str = "epoch",
        ema_decay: float = 0.9,
        latch: bool = True,
    ) -> None:
        self.rel_change = check_number("rel_change", rel_change, low=0.0)
        super().__init__(
            warmup=warmup, patience=patience, smoothing=smoothing, ema_decay=ema_decay, latch=latch
        )

    def _reset_extra(self) -> None:
        self._previous: float | None = None

    def condition(self, loss: float, grad_norm: float, obs: SwitchObservation) -> bool:
        if not math.isfinite(loss):
            return False
        previous, self._previous = self._previous, loss
        if previous is None:
            return False
        decrease = (previous - loss) / max(abs(previous), 1e-300)
        return decrease < self.rel_change

    def __repr__(self) -> str:
        return f"LossPlateau({self.rel_change}, {self._options()})"


class LossBelow(SwitchCriterion):
    """Switch when the (smoothed) loss is strictly below ``value``.

    Parameters
    ----------
    value : float
    warmup, patience, smoothing, ema_decay, latch
        See :class:`SwitchCriterion`.

    Examples
    --------
    >>> crit = LossBelow(1.0, smoothing="none")
    >>> [crit(SwitchObservation(k, 0, f, 1.0, False)) for k, f in enumerate([3.0, 1.0, 0.9])]
    [False, False, True]
    """

    def __init__(
        self,
        value: float,
        *,
        warmup: int = 0,
        patience: int = 1,
        smoothing: str = "epoch",
        ema_decay: float = 0.9,
        latch: bool = True,
    ) -> None:
        self.value = check_number("value", value)
        super().__init__(
            warmup=warmup, patience=patience, smoothing=smoothing, ema_decay=ema_decay, latch=latch
        )

    def condition(self, loss: float, grad_norm: float, obs: SwitchObservation) -> bool:
        return loss < self.value

    def __repr__(self) -> str:
        return f"LossBelow({self.value}, {self._options()})"


class CallableCriterion(SwitchCriterion):
    """Wrap any ``fn(obs) -> bool`` as a criterion (raw observations, checked every step).

    ``fn`` sees the unsmoothed :class:`SwitchObservation`; warm-up, patience and latch still apply.
    :class:`~beyondgd.optim.FUSE` wraps plain callables in this class automatically (latched).

    Parameters
    ----------
    fn : callable
        ``fn(obs) -> bool``; ``True`` means "L-BFGS for the next step".
    warmup, patience, latch
        See :class:`SwitchCriterion`.

    Examples
    --------
    >>> crit = CallableCriterion(lambda obs: obs.step >= 1, latch=False)
    >>> [crit(SwitchObservation(k, 0, 1.0, 1.0, False)) for k in range(3)]
    [False, True, True]
    """

    def __init__(
        self,
        fn: Callable[[SwitchObservation], bool],
        *,
        warmup: int = 0,
        patience: int = 1,
        latch: bool = True,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        super().__init__(warmup=warmup, patience=patience, smoothing="none", latch=latch)

    def condition(self, loss: float, grad_norm: float, obs: SwitchObservation) -> bool:
        return bool(self.fn(obs))

    def __repr__(self) -> str:
        return f"CallableCriterion({self.fn!r}, {self._options()})"


_PAPER_KINDS = ("epoch", "gradient", "loss")


def paper_code_criterion(kind: str) -> SwitchCriterion:
    """The switch rules of the authors' public code, thresholds hard-coded as there.

    - ``"epoch"`` (their default): Adam for epochs 0-4, then L-BFGS: ``AfterEpochs(5)``.
    - ``"gradient"``: Adam for 3 warm-up epochs, then L-BFGS while the *last* mini-batch gradient
      norm is ``<= 0.5`` (absolute), re-checked after every batch so it can switch back:
      ``GradNormBelow(0.5, relative=False, warmup=3, smoothing="none", latch=False)``.
    - ``"loss"``: 3 warm-up epochs, then L-BFGS while the last mini-batch loss is ``< 2.0``,
      re-checked every batch: ``LossBelow(2.0, warmup=3, smoothing="none", latch=False)``.

    These reproduce the code, not a recommendation: absolute thresholds depend on the loss scale.

    Parameters
    ----------
    kind : {"epoch", "gradient", "loss"}

    Returns
    -------
    SwitchCriterion

    Examples
    --------
    >>> paper_code_criterion("gradient")
    GradNormBelow(0.5, relative=False, warmup=3, patience=1, smoothing='none', latch=False)
    """
    kind = check_choice("kind", kind, _PAPER_KINDS)
    if kind == "epoch":
        return AfterEpochs(5)
    if kind == "gradient":
        return GradNormBelow(0.5, relative=False, warmup=3, smoothing="none", latch=False)
    return LossBelow(2.0, warmup=3, smoothing="none", latch=False)


def as_criterion(switch: object) -> SwitchCriterion:
    """Turn FUSE's ``switch`` argument into a :class:`SwitchCriterion`.

    ``None`` gives ``AfterEpochs(5)``; a string gives :func:`paper_code_criterion`; a criterion is
    used as is; any other callable is wrapped in :class:`CallableCriterion`.
    """
    if switch is None:
        return AfterEpochs(5)
    if isinstance(switch, SwitchCriterion):
        return switch
    if isinstance(switch, str):
        return paper_code_criterion(check_choice("switch", switch, _PAPER_KINDS))
    if callable(switch):
        return CallableCriterion(switch)
    raise TypeError(
        "switch must be a SwitchCriterion, a callable(obs) -> bool, one of "
        f"{', '.join(map(repr, _PAPER_KINDS))} or None; got {type(switch).__name__}"
    )
