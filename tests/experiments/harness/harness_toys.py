"""Tiny reproductions for the harness tests (importable by spawned and Ray workers)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from beyondgd.core import derive_seed, make_generator
from beyondgd.experiments.harness import (
    Claim,
    CurveSpec,
    MetricSpec,
    Problem,
    Reproduction,
    UnitResult,
)


class Toy(Reproduction):
    """``better`` is lower than ``base`` by ``effect`` plus noise; three trials per seed."""

    name = "toy"
    title = "A toy reproduction"
    summary = "better beats base."
    base_config = {
        "seeds": 8,
        "effect": 1.0,
        "noise": 0.5,
        "methods": {"base": {"shift": 0.0}, "better": {"shift": 1.0, "lr": 0.1}},
        "problems": ["p1", "p2"],
    }
    presets = {"smoke": {"seeds": 3}, "quick": {}, "full": {"seeds": 10}}
    expected_seconds = {"smoke": 1, "quick": 1, "full": 2}
    metrics = (MetricSpec("loss", "loss"),)
    curves = (CurveSpec("trace", "step", "loss"),)
    cost_columns = ("evals",)

    def problems(self, config):
        return [Problem(p, {"k": i + 1}) for i, p in enumerate(config["problems"])]

    def claims(self, config):
        return [
            Claim(
                "better beats base", "loss", "better", "base", group_by=("problem",), cost="evals"
            ),
            Claim(
                "better beats base, pooled",
                "loss",
                "better",
                "base",
                replicate=("problem", "seed"),
                primary=False,
                cost="evals",
            ),
        ]

    def run(self, problem, method, seed, config, tuned):
        # the instance depends on (problem, seed) only; the method's own noise on its key
        gen = make_generator(derive_seed("toy", problem.name, seed))
        level = float(torch.randn(1, generator=gen)) + 5.0
        own = float(torch.randn(1)) * config["noise"]  # torch seeded per unit by the harness
        rows = [
            {
                "trial": t,
                "loss": level + own + 0.01 * t - method.params["shift"] * config["effect"],
                "evals": 100,
            }
            for t in range(3)
        ]
        trace = [level + 1.0, level + 0.5, rows[0]["loss"]]
        return UnitResult(rows, {"trace": {"x": [0, 1, 2], "y": trace}})


class Tuned(Toy):
    """Chooses ``better``'s shift on validation data before the runs."""

    name = "toy-tuned"

    def needs_tuning(self, method, config):
        return method.name == "better"

    def tune(self, problem, method, config):
        return {"shift": 2.0 * method.params["shift"], "score": float(np.float64(1.5))}

    def run(self, problem, method, seed, config, tuned):
        shift = tuned[method.name]["shift"] if method.name in tuned else method.params["shift"]
        return {"loss": 5.0 - shift + 0.1 * seed, "evals": 100}


class Failing(Toy):
    """The unit ``p2/better/seed=1`` raises."""

    name = "toy-failing"

    def run(self, problem, method, seed, config, tuned):
        if (problem.name, method.name, seed) == ("p2", "better", 1):
            raise RuntimeError("boom in the toy unit")
        return super().run(problem, method, seed, config, tuned)


class DiesOnce(Toy):
    """The unit ``p1/better/seed=0`` kills its worker process the first time it runs (a marker
    file under ``config["marker_dir"]`` remembers it)."""

    name = "toy-dies-once"
    base_config = {**Toy.base_config, "marker_dir": ""}

    def run(self, problem, method, seed, config, tuned):
        if (problem.name, method.name, seed) == ("p1", "better", 0):
            marker = Path(config["marker_dir"]) / "died"
            if not marker.exists():
                marker.write_text("1")
                os._exit(1)
        return super().run(problem, method, seed, config, tuned)


class Slow(Toy):
    """Like :class:`Toy`, each unit taking a little time (for kill-and-resume tests)."""

    name = "toy-slow"

    def run(self, problem, method, seed, config, tuned):
        import time

        time.sleep(0.3)
        return super().run(problem, method, seed, config, tuned)


KILL_SCRIPT = """
import sys
sys.path.insert(0, {toys_dir!r})
from harness_toys import Slow
from beyondgd.experiments.harness import run_experiment
run_experiment(Slow(), out_dir={out!r}, workers={workers}, progress=False)
"""
