"""The reproduction harness: one module per reproduction, a registry, a runner and a report.

Use it from the command line (``beyondgd list``, ``beyondgd reproduce NAME``, ``beyondgd report``)
or from Python::

    from beyondgd.experiments import get, run_experiment
    result = run_experiment(get("fuse-testfns"), preset="quick", out_dir="results")
    print(result.report.verdicts)
"""

from beyondgd.experiments.base import (
    Experiment,
    Figure,
    Report,
    Table,
    Unit,
    Verdict,
)
from beyondgd.experiments.registry import get, names, register
from beyondgd.experiments.report import write_index
from beyondgd.experiments.runner import RunResult, resolve_config, run_experiment

__all__ = [
    "Experiment",
    "Figure",
    "Report",
    "RunResult",
    "Table",
    "Unit",
    "Verdict",
    "get",
    "names",
    "register",
    "resolve_config",
    "run_experiment",
    "write_index",
]
