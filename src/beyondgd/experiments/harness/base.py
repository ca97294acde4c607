"""What a reproduction declares: problems, methods as data, presets as data, claims as data,
and one ``run(problem, method, seed)`` function (in the spirit of benchopt's Objective / Solver /
Dataset). The harness forms the units, runs them, keeps the results table and computes the
tables, figures and verdicts from it.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from beyondgd.experiments.harness.config import deep_merge
from beyondgd.experiments.harness.stats import KINDS

if TYPE_CHECKING:
    from pathlib import Path

    from beyondgd.experiments.harness.results import Results

#: smoke: seconds, for tests and a first try; quick: `make run`; full: one machine;
#: paper: the papers' whole grids, for a Ray cluster or a GPU
PRESETS = ("smoke", "quick", "full", "paper")
AGGREGATES = ("mean", "median", "sum")
SCALES = ("linear", "log10")


@dataclass(frozen=True)
class Problem:
    """One problem instance family (a dataset, a test function, a sparsity level).

    ``params`` with scalar values become columns of the results table."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """One method with its hyperparameters (from the config's ``methods`` object)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """A claim as data: what is compared, on which replicates, and at which cost.

    Parameters
    ----------
    sentence
        What the report says is tested; may use ``{column}`` placeholders of ``group_by``.
    metric, lower_is_better
        The results-table column and its direction.
    method, baseline
        Names of the two arms (values of the ``method`` column).
    kind, margin
        ``"superiority"``, ``"noninferiority"`` (the method is not worse by more than
        ``margin``) or ``"equivalence"`` (within ``margin``); the margin is on the ``scale``.
    replicate
        Columns that identify one independent replicate (``("seed",)``; ``("problem",
        "seed")`` when independent instances are pooled over problems).
    aggregate
        How rows of one replicate are reduced before pairing (``"mean"`` test NMSE over the
        trials of one seed).
    scale
        ``"log10"`` takes differences of log10 values (a 10x gain counts the same at any scale).
    where
        Row filter ``{column: value or [values]}`` applied first.
    group_by
        One verdict per value of these columns (per K, per lambda).
    primary
        Primary claims share Holm's correction and lead the report; the others are exploratory.
    cost
        The cost column that must be equal (ratio in [0.95, 1.05]) between the arms, or ``None``
        when the claim is about cost itself (then ``cost_note`` says what was held equal).
    """

    sentence: str
    metric: str
    method: str
    baseline: str
    lower_is_better: bool = True
    kind: str = "superiority"
    margin: float = 0.0
    replicate: tuple[str, ...] = ("seed",)
    aggregate: str = "mean"
    scale: str = "linear"
    where: Mapping[str, Any] = field(default_factory=dict)
    group_by: tuple[str, ...] = ()
    primary: bool = True
    cost: str | None = None
    cost_note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Claim.kind must be one of {KINDS}, got {self.kind!r}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"Claim.aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")
        if self.scale not in SCALES:
            raise ValueError(f"Claim.scale must be one of {SCALES}, got {self.scale!r}")
        if self.kind != "superiority" and not (
            isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and self.margin > 0
        ):
            raise ValueError(f"a {self.kind} claim needs a margin > 0, got {self.margin!r}")
        if self.method == self.baseline:
            raise ValueError(f"Claim.method and baseline are both {self.method!r}")
        if not self.replicate:
            raise ValueError("Claim.replicate must name at least one column")
        if self.cost is None and not self.cost_note:
            raise ValueError(
                f"claim {self.sentence!r}: give the cost column that must be equal, or a "
                "cost_note saying what was held equal"
            )


@dataclass
class UnitResult:
    """What one run returns: flat rows (JSON numbers/strings) and optional curves.

    ``curves[name] = {"x": [...], "y": [...]}``; ``None`` in ``y`` marks a diverged point."""

    rows: list[dict[str, Any]]
    curves: dict[str, dict[str, list]] = field(default_factory=dict)


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class Figure:
    filename: str
    caption: str


@dataclass(frozen=True)
class CurveSpec:
    """How the standard figure draws the curve ``name``."""

    name: str
    xlabel: str
    ylabel: str
    logy: bool = True
    logx: bool = False


@dataclass(frozen=True)
class MetricSpec:
    """A metric shown in the standard summary table and figure."""

    column: str
    label: str
    lower_is_better: bool = True
    logy: bool = False


class Reproduction(abc.ABC):
    """Base class of a declarative reproduction; register subclasses with ``@register``.

    Subclasses set the class attributes and implement :meth:`problems` and :meth:`run`; the
    methods come from ``config["methods"]`` (an object: name -> hyperparameters), the seeds are
    ``range(config["seeds"])``.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    #: what the paper claims, in one paragraph
    summary: ClassVar[str]
    base_config: ClassVar[dict[str, Any]]
    #: per preset, what changes against ``base_config`` (deep-merged; None drops a key)
    presets: ClassVar[dict[str, dict[str, Any]]]
    #: expected wall time in seconds on 2 cores with ``--workers 2``, per preset
    expected_seconds: ClassVar[dict[str, float]]
    #: torch intra-op threads (and Ray CPUs) per unit
    cpus_per_unit: ClassVar[int] = 1
    metrics: ClassVar[tuple[MetricSpec, ...]] = ()
    curves: ClassVar[tuple[CurveSpec, ...]] = ()
    #: cost columns shown in the standard cost table
    cost_columns: ClassVar[tuple[str, ...]] = ()

    # ---- configuration ------------------------------------------------------------------
    def config(self, preset: str) -> dict[str, Any]:
        if preset not in self.presets:
            raise ValueError(
                f"preset must be one of {sorted(self.presets)} for {self.name!r}, got {preset!r}"
            )
        return deep_merge(self.base_config, self.presets[preset])

    def methods(self, config: Mapping[str, Any]) -> list[Method]:
        return [Method(name, dict(params)) for name, params in config["methods"].items()]

    def seeds(self, config: Mapping[str, Any]) -> list[int]:
        return list(range(int(config["seeds"])))

    @abc.abstractmethod
    def problems(self, config: Mapping[str, Any]) -> list[Problem]:
        """The problems of this config, in report order."""

    def applies(self, problem: Problem, method: Method, config: Mapping[str, Any]) -> bool:
        """Whether ``method`` runs on ``problem`` (default: every method on every problem)."""
        return True

    def claims(self, config: Mapping[str, Any]) -> list[Claim]:
        """The claims tested on this config's results."""
        return list(getattr(self, "CLAIMS", ()))

    def prepare(self, config: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Runs on the driver before any unit is dispatched (fill on-disk caches, check data)."""
        return None

    # ---- work ---------------------------------------------------------------------------
    def needs_tuning(self, method: Method, config: Mapping[str, Any]) -> bool:
        """Whether ``method`` is tuned (one tuning unit per problem) before its runs."""
        return False

    def tune(self, problem: Problem, method: Method, config: Mapping[str, Any]) -> dict[str, Any]:
        """Choose ``method``'s hyperparameters for ``problem`` on validation data only."""
        raise NotImplementedError(f"{self.name} declares tuning but does not implement tune()")

    @abc.abstractmethod
    def run(
        self,
        problem: Problem,
        method: Method,
        seed: int,
        config: Mapping[str, Any],
        tuned: Mapping[str, Mapping[str, Any]],
    ) -> dict[str, Any] | list[dict[str, Any]] | UnitResult:
        """Run ``method`` on ``problem`` with ``seed``; ``tuned[method_name]`` holds the tuning
        results of every tuned method on this problem. Rows are flat and JSON-able; a failed
        run reports ``None`` for its metrics."""

    # ---- report extras --------------------------------------------------------------------
    def describe(self, config: Mapping[str, Any]) -> list[str]:
        """Paragraphs describing the setup, built from ``config`` (Markdown inline)."""
        return []

    def extra_tables(self, results: Results) -> list[Table]:
        return []

    def extra_figures(self, results: Results, out_dir: Path) -> list[Figure]:
        return []


def as_unit_result(value: Any, key: str) -> UnitResult:
    """Normalise what ``run`` returned and check it is flat and JSON-able."""
    if isinstance(value, UnitResult):
        result = value
    elif isinstance(value, Mapping):
        result = UnitResult([dict(value)])
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        result = UnitResult([dict(r) for r in value])
    else:
        raise TypeError(f"unit {key}: run() must return a dict, a list of dicts or a UnitResult")
    for row in result.rows:
        for col, v in row.items():
            if v is not None and not isinstance(v, (bool, int, float, str)):
                raise TypeError(
                    f"unit {key}: row column {col!r} holds {type(v).__name__}; rows must be flat "
                    "(numbers, strings, None)"
                )
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(
                    f"unit {key}: row column {col!r} is {v}; report a failed value as None"
                )
    return result
