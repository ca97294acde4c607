"""The reproduction harness: declare problems, methods, presets and claims; it runs the units on
an executor (serial, a local process pool or Ray), keeps one tidy results table and computes the
tables, figures and verdicts from it with one statistics core."""

from beyondgd.experiments.harness.base import (
    PRESETS,
    Claim,
    CurveSpec,
    Figure,
    Method,
    MetricSpec,
    Problem,
    Reproduction,
    Table,
    UnitResult,
)
from beyondgd.experiments.harness.config import apply_set, deep_merge, parse_set
from beyondgd.experiments.harness.executors import UnitFailed, default_workers
from beyondgd.experiments.harness.report import Report, write_index
from beyondgd.experiments.harness.results import Results, evaluate_claims
from beyondgd.experiments.harness.runner import (
    RunResult,
    count_units,
    resolve_config,
    run_experiment,
)

__all__ = [
    "PRESETS",
    "Claim",
    "CurveSpec",
    "Figure",
    "Method",
    "MetricSpec",
    "Problem",
    "Report",
    "Reproduction",
    "Results",
    "RunResult",
    "Table",
    "UnitFailed",
    "UnitResult",
    "apply_set",
    "count_units",
    "deep_merge",
    "default_workers",
    "evaluate_claims",
    "parse_set",
    "resolve_config",
    "run_experiment",
    "write_index",
]
