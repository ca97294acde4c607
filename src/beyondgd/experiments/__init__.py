"""The reproductions and the harness that runs them.

Use it from the command line (``beyondgd list``, ``beyondgd reproduce NAME``, ``beyondgd report``)
or from Python::

    from beyondgd.experiments import get, run_experiment
    result = run_experiment(get("fuse-testfns"), preset="quick", out_dir="results", workers=2)
    for v in result.report.verdicts:
        print(v["status"], v["claim"], v["estimate"], v["ci_low"], v["ci_high"], v["p_adjusted"])
"""

from beyondgd.experiments.harness import (
    Claim,
    Method,
    Problem,
    Report,
    Reproduction,
    RunResult,
    UnitResult,
    resolve_config,
    run_experiment,
    write_index,
)
from beyondgd.experiments.registry import get, names, register

__all__ = [
    "Claim",
    "Method",
    "Problem",
    "Report",
    "Reproduction",
    "RunResult",
    "UnitResult",
    "get",
    "names",
    "register",
    "resolve_config",
    "run_experiment",
    "write_index",
]
