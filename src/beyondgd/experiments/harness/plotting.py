"""The standard figures, drawn from the results table (matplotlib, Agg backend).

Every figure has labelled axes and keeps its legend inside the saved canvas
(``bbox_inches="tight"``)."""

from __future__ import annotations

import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from beyondgd.experiments.harness.base import CurveSpec, MetricSpec

STATUS_COLORS = {
    "holds": "#2e8b57",
    "does not hold": "#c0392b",
    "inconclusive": "#b8860b",
    "too few replicates": "#6a5acd",
    "not at equal cost": "#d2691e",
}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path) -> None:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    pyplot().close(fig)


def plot_verdicts(path: str | Path, verdicts: Sequence[Mapping[str, Any]]) -> None:
    """A forest plot: one row per verdict, its estimate and 95% interval, coloured by status.

    Claims on different metrics share the axis only as "effect in the claim's own units"; each
    row's label names the metric and scale."""
    plt = pyplot()
    rows = [v for v in verdicts if v.get("estimate") is not None]
    if not rows:
        rows = list(verdicts)
    fig, ax = plt.subplots(figsize=(9.5, 0.42 * max(len(rows), 2) + 1.2))
    labels = []
    for i, v in enumerate(rows):
        y = len(rows) - 1 - i
        colour = STATUS_COLORS.get(v["status"], "grey")
        est = v.get("estimate")
        if est is not None:
            lo = v["ci_low"] if v["ci_low"] is not None else est - 1e9
            hi = v["ci_high"] if v["ci_high"] is not None else est + 1e9
            ax.plot([lo, hi], [y, y], color=colour, lw=2)
            ax.plot([est], [y], "o", color=colour, ms=6)
            if v.get("kind") != "superiority" and v.get("margin"):
                ax.plot([-v["margin"]] * 2, [y - 0.35, y + 0.35], "--", color="k", lw=0.8)
                if v["kind"] == "equivalence":
                    ax.plot([v["margin"]] * 2, [y - 0.35, y + 0.35], "--", color="k", lw=0.8)
        tag = "" if v.get("primary", True) else " [exploratory]"
        scale = " (log10)" if v.get("scale") == "log10" else ""
        labels.append(textwrap.shorten(f"{v['claim']}{tag} - {v['metric']}{scale}", 120))
    ests = [v["estimate"] for v in rows if v.get("estimate") is not None]
    bounds = [b for v in rows for b in (v.get("ci_low"), v.get("ci_high")) if b is not None]
    span = ests + bounds + [0.0]
    lo, hi = min(span), max(span)
    pad = 0.08 * (hi - lo) + 1e-12
    ax.set_xlim(lo - pad, hi + pad)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)), labels[::-1], fontsize=7.5)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel(
        "effect, positive = method better (in the claim's metric units; a line reaching the "
        "edge: interval unbounded)"
    )
    handles = [
        plt.Line2D([], [], color=c, marker="o", lw=2, label=s)
        for s, c in STATUS_COLORS.items()
        if any(v["status"] == s for v in verdicts)
    ]
    ax.legend(handles=handles, fontsize=7.5, loc="lower right", framealpha=0.9)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title("Verdicts: effect estimates with 95% intervals", fontsize=10)
    save(fig, path)


def plot_curves(
    path: str | Path,
    data: pd.DataFrame,
    spec: CurveSpec,
    labels: Mapping[str, str] | None = None,
    ncols: int = 3,
) -> None:
    """One panel per problem, one line per method: median over seeds, interquartile band."""
    labels = labels or {}
    plt = pyplot()
    problems = list(dict.fromkeys(data["problem"]))
    ncols = min(ncols, len(problems))
    nrows = -(-len(problems) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.5 * nrows), squeeze=False)
    legend: dict[str, Any] = {}  # one legend for all panels, below them: it hides no curve
    for ax, problem in zip(axes.flat, problems):
        sub = data[data["problem"] == problem]
        for method in dict.fromkeys(sub["method"]):
            m = sub[sub["method"] == method]
            wide = m.pivot_table(
                index="x", columns="seed", values="y", aggfunc="first", dropna=False
            )
            x = wide.index.to_numpy(dtype=float)
            arr = wide.to_numpy(dtype=float)
            with warnings.catch_warnings():  # an x where every seed diverged: NaN, not drawn
                warnings.simplefilter("ignore", RuntimeWarning)
                q1, med, q3 = np.nanquantile(arr, [0.25, 0.5, 0.75], axis=1)
            (line,) = ax.plot(x, med, lw=1.5, label=labels.get(method, method))
            legend.setdefault(line.get_label(), line)
            if arr.shape[1] > 1:
                ax.fill_between(x, q1, q3, color=line.get_color(), alpha=0.15)
        ax.set_title(str(problem), fontsize=10)
        ax.set_xlabel(spec.xlabel)
        ax.set_ylabel(spec.ylabel)
        if spec.logy:
            ax.set_yscale("log")
        if spec.logx:
            ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(problems) :]:
        ax.axis("off")
    ncol = min(len(legend), 4)
    rows = -(-len(legend) // max(ncol, 1))
    below = (0.1 + 0.2 * rows) / fig.get_figheight()  # legend height as a share of the figure
    fig.legend(
        list(legend.values()), list(legend), loc="lower center", ncol=max(ncol, 1), fontsize=8
    )
    fig.tight_layout(rect=(0, below, 1, 1))
    save(fig, path)


def plot_metric(path: str | Path, table: pd.DataFrame, spec: MetricSpec, ncols: int = 3) -> None:
    """Per problem, each method's per-seed values (dots) and their median (bar)."""
    plt = pyplot()
    data = table[["problem", "method", "seed", spec.column]].copy()
    data[spec.column] = pd.to_numeric(data[spec.column], errors="coerce")
    per_seed = data.groupby(["problem", "method", "seed"], sort=False)[spec.column].mean()
    per_seed = per_seed.reset_index()
    problems = list(dict.fromkeys(per_seed["problem"]))
    ncols = min(ncols, len(problems))
    nrows = -(-len(problems) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.6 * nrows), squeeze=False)
    for ax, problem in zip(axes.flat, problems):
        sub = per_seed[per_seed["problem"] == problem]
        methods = list(dict.fromkeys(sub["method"]))
        for i, method in enumerate(methods):
            vals = sub[sub["method"] == method][spec.column].to_numpy(dtype=float)
            finite = vals[np.isfinite(vals)]
            jitter = np.linspace(-0.15, 0.15, max(finite.size, 1))[: finite.size]
            ax.plot(i + jitter, finite, "o", ms=3.5, alpha=0.7, color=f"C{i % 10}")
            if finite.size:
                ax.plot([i - 0.3, i + 0.3], [np.median(finite)] * 2, color="k", lw=1.6)
            n_fail = vals.size - finite.size
            if n_fail:
                ax.annotate(
                    f"{n_fail} failed",
                    (i, 0.02),
                    xycoords=("data", "axes fraction"),
                    ha="center",
                    fontsize=7,
                    color="C3",
                )
        ax.set_xticks(range(len(methods)), methods, rotation=35, ha="right", fontsize=8)
        ax.set_title(str(problem), fontsize=10)
        ax.set_ylabel(
            spec.label + (" (lower is better)" if spec.lower_is_better else " (higher is better)"),
            fontsize=8.5,
        )
        ax.set_xlabel("method")
        positive = sub[spec.column].to_numpy(dtype=float)
        if spec.logy and np.any(np.isfinite(positive) & (positive > 0)):
            ax.set_yscale("log")
        ax.grid(True, axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(problems) :]:
        ax.axis("off")
    fig.tight_layout()
    save(fig, path)
