"""Figures of the experiments not yet on the harness (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_median_curves(ax, x, curves, logy: bool) -> None:
    for label, runs in curves.items():
        arr = np.asarray(runs, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != len(x):
            raise ValueError(f"curves[{label!r}] must be (n_seeds, {len(x)}), got {arr.shape}")
        (line,) = ax.plot(x, np.median(arr, axis=0), label=label, lw=1.6)
        if arr.shape[0] > 1:
            ax.fill_between(x, arr.min(axis=0), arr.max(axis=0), color=line.get_color(), alpha=0.15)
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)


def plot_median_curves(
    path: str | Path,
    x: Sequence[float],
    panels: Mapping[str, Mapping[str, Sequence[Sequence[float]]]],
    *,
    xlabel: str,
    ylabel: str,
    logy: bool = True,
    ncols: int = 3,
) -> None:
    """One panel per problem, one line per method: the median over seeds, min-max shaded.

    ``panels[title][label]`` is a list (one per seed) of values sampled at the common grid ``x``.
    """
    plt = _pyplot()
    n = len(panels)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax, (title, curves) in zip(axes.flat, panels.items()):
        _draw_median_curves(ax, x, curves, logy)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.07 if nrows == 1 else 0.04, 1, 1))
    fig.savefig(path, dpi=100, bbox_inches="tight")  # legends stay inside the canvas
    plt.close(fig)


def plot_grouped_bars(
    path: str | Path,
    groups: Sequence[str],
    values: Mapping[str, Sequence[Sequence[float]]],
    *,
    ylabel: str,
    title: str = "",
    logy: bool = True,
) -> None:
    """Median (bar) and min-max (error bar) per method within each group.

    ``values[method][g]`` is the list of per-seed values for group ``groups[g]``.
    """
    plt = _pyplot()
    methods = list(values)
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(groups) * len(methods) * 0.35), 4.2))
    for i, method in enumerate(methods):
        med, lo, hi = [], [], []
        for g in range(len(groups)):
            arr = np.asarray(values[method][g], dtype=float)
            med.append(np.median(arr))
            lo.append(np.median(arr) - arr.min())
            hi.append(arr.max() - np.median(arr))
        pos = np.arange(len(groups)) + (i - (len(methods) - 1) / 2) * width
        ax.bar(pos, med, width, yerr=[lo, hi], label=method, capsize=2)
    ax.set_xticks(np.arange(len(groups)), groups)
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
