"""Helpers shared by the dlc-* reproductions: hinges from config specs, their cost in energy
evaluations, learning-rate tuning on validation data and its report table."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from beyondgd.experiments.harness import Table
from beyondgd.experiments.weep.common import grid_search
from beyondgd.landscape import PerturbationSampler, StarConvexHinge


def or_value(values: list[Any], missing: float) -> list[float]:
    """``values`` with ``None`` (a non-finite result) replaced by ``missing``."""
    return [missing if v is None else v for v in values]


def make_hinge(energy, sampler: PerturbationSampler, spec: Mapping[str, Any]) -> StarConvexHinge:
    """A stacked :class:`~beyondgd.landscape.StarConvexHinge` from a config's ``hinge`` object
    (``lam``, ``mu``, ``rho``, ``n_samples``, ``aggregate``, ``terms``, optional
    ``antithetic``)."""
    return StarConvexHinge(
        energy,
        sampler,
        lam=spec["lam"],
        mu=spec["mu"],
        rho=spec["rho"],
        n_samples=spec["n_samples"],
        aggregate=spec["aggregate"],
        terms=tuple(spec["terms"]),
        antithetic=bool(spec.get("antithetic", False)),
        stacked=True,
    )


def hinge_evaluations(spec: Mapping[str, Any]) -> int:
    """Energy evaluations of the hinges per datum: ``w*``, then per sample ``w'`` (for H2, H3)
    and ``w_lambda`` (for H1, H3)."""
    terms = set(spec["terms"])
    per_sample = int(bool(terms & {"H2", "H3"})) + int(bool(terms & {"H1", "H3"}))
    return 1 + int(spec["n_samples"]) * per_sample


def method_label(methods: Mapping[str, Mapping[str, Any]], name: str) -> str:
    return str(methods[name].get("label", name))


def tune_learning_rate(lrs: Sequence[float], score: Callable[[float], float]) -> dict[str, Any]:
    """The learning rate with the highest validation ``score`` (first on ties); returns
    ``{"params": {"lr"}, "score", "scores", "lrs"}``."""
    result = grid_search(
        [{"lr": float(lr)} for lr in lrs], lambda p: score(p["lr"]), lower_is_better=False
    )
    result["lrs"] = [float(lr) for lr in lrs]
    return result


def tuning_table(results, what: str) -> Table | None:
    """The learning rate each tuned method chose, with its validation scores."""
    if not results.tuned:
        return None
    methods = results.config.get("methods", {})
    rows = [
        [
            problem,
            method_label(methods, method) if method in methods else method,
            _chosen_lr(tuned),
            ", ".join(
                f"{lr:g}: " + ("failed" if s is None else f"{s:.3g}")
                for lr, s in zip(tuned["lrs"], tuned["scores"])
            ),
        ]
        for (problem, method), tuned in results.tuned.items()
    ]
    return Table(
        "Learning rates chosen on validation data",
        ["problem", "method", "chosen lr", f"{what} per lr"],
        rows,
        note="Each learning rate trained at the test runs' budget on validation replicates "
        "drawn with seeds the test units never use. A rate at the edge of the grid means the best "
        "rate may lie outside it; a tie means the validation data could not tell the rates apart.",
    )


def _chosen_lr(tuned) -> str:
    """The chosen rate, and whether it sits at the grid's edge or tied with another rate."""
    lr = tuned["params"]["lr"]
    lrs = list(tuned["lrs"])
    scores = dict(zip(lrs, tuned["scores"]))
    where = "edge of the grid" if len(lrs) > 1 and lr in (min(lrs), max(lrs)) else "inside the grid"
    ties = [o for o in lrs if o != lr and scores[o] is not None and scores[o] == scores.get(lr)]
    if ties:
        where += ", tied with " + ", ".join(f"{o:g}" for o in ties)
    return f"{lr:g} ({where})"
