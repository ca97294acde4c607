"""Helpers shared by the ``weep-*`` reproductions: metrics, penalties from specs, validation
tuning, the "beats" / "matches or beats" verdict rules and a per-``k`` plot.

The verdict rules (used by all three reproductions and stated in every report):

- **beats** -- :func:`beyondgd.experiments.stats.compare_paired` on the paired test instances: the
  one-sided Wilcoxon signed-rank test for "WEEP better" gives p < 0.05 and WEEP's median is not
  worse;
- **matches or beats** (non-inferiority with a margin ``delta``) -- the same test applied to WEEP's
  values shifted by ``delta`` in its favour: it holds when "WEEP is better than the baseline minus
  ``delta``" is significant (one-sided Wilcoxon p < 0.05), i.e. WEEP is significantly *not worse
  by more than* ``delta``; it does not hold when WEEP's median is more than ``delta`` worse or the
  reverse one-sided test ("WEEP worse by more than ``delta``") is significant; otherwise it is
  inconclusive.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from beyondgd.experiments.base import Verdict
from beyondgd.experiments.stats import PairedComparison, compare_paired
from beyondgd.penalties import L1, MCP, SCAD, WEEP, QuadEnvelopeL0

__all__ = [
    "MATCH_RULE",
    "beats_verdict",
    "config_key",
    "finite",
    "make_penalty",
    "matches_verdict",
    "nmse_db",
    "noninferiority",
    "plot_vs_k",
    "select_on_validation",
    "snr_db",
    "support_f1",
]

MATCH_RULE = (
    "Rules. 'beats': one-sided Wilcoxon signed-rank test over the paired test instances, p < 0.05, "
    "and WEEP's median not worse. 'matches or beats' (non-inferiority with margin d): WEEP's "
    "values shifted by d in its favour beat the baseline by the same test, i.e. WEEP is "
    "significantly not worse than the baseline by more than d; 'does not hold' when WEEP's median "
    "is worse by more than d or the reverse one-sided test (worse by more than d) is significant; "
    "otherwise 'inconclusive'."
)


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------
def nmse_db(x_hat: Tensor, x: Tensor) -> Tensor:
    """Normalized squared error in dB per row: ``10 log10(||x_hat - x||^2 / ||x||^2)``.

    Rows of ``(B, n)`` tensors (or one ``(n,)`` vector). An exact recovery is floored at -400 dB
    so that the value stays finite.
    """
    err = ((x_hat - x) ** 2).sum(dim=-1)
    ref = (x**2).sum(dim=-1)
    ratio = (err / ref).clamp_min(1e-40)
    return 10.0 * torch.log10(ratio)


def snr_db(x_hat: Tensor, x: Tensor) -> Tensor:
    """Reconstruction SNR in dB per row: ``10 log10(||x||^2 / ||x_hat - x||^2) = -NMSE``."""
    return -nmse_db(x_hat, x)


def support_f1(estimated: Tensor, true: Tensor) -> Tensor:
    """F1 score of a support estimate per row: ``2 TP / (2 TP + FP + FN)`` (1 when both empty)."""
    est, tru = estimated.bool(), true.bool()
    tp = (est & tru).sum(dim=-1).double()
    fp = (est & ~tru).sum(dim=-1).double()
    fn = (~est & tru).sum(dim=-1).double()
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1.0), torch.ones_like(tp))


def finite(value: float) -> float | None:
    """``value`` as a float, or ``None`` when it is not finite (JSON records hold no NaN/inf)."""
    value = float(value)
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------------------------
# Penalties from JSON specs
# ------------------------------------------------------------------------------------------------
def make_penalty(kind: str, params: Mapping[str, float]) -> tuple[Any, float]:
    """``(penalty, lam)`` for a penalty kind and one grid point (a JSON dict).

    - ``"l1"``: ``lam * |x|`` (``params["lam"]``);
    - ``"mcp"``: ``MCP(alpha, gamma)`` with ``lam = 1``;
    - ``"scad"``: ``SCAD(alpha, gamma)`` with ``lam = 1``;
    - ``"q1l0"``: ``QuadEnvelopeL0(mu)`` with ``lam = 1``;
    - ``"weep"``: ``lam * WEEP(a, b, c)``; ``b`` may be given as the flat point ``thr = sqrt(2b)``
      and ``c`` as the tail slope of ``lam * WEEP``, ``tail = lam * c``.
    """
    p = dict(params)
    if kind == "l1":
        return L1(1.0), float(p["lam"])
    if kind == "mcp":
        return MCP(float(p["alpha"]), float(p["gamma"])), 1.0
    if kind == "scad":
        return SCAD(float(p["alpha"]), float(p["gamma"])), 1.0
    if kind == "q1l0":
        return QuadEnvelopeL0(float(p["mu"])), 1.0
    if kind == "weep":
        lam = float(p["lam"])
        b = float(p["b"]) if "b" in p else float(p["thr"]) ** 2 / 2.0
        c = float(p.get("c", float(p.get("tail", 0.0)) / lam))
        return WEEP(float(p["a"]), b, c), lam
    raise ValueError(f"unknown penalty kind {kind!r}; expected l1, mcp, scad, q1l0 or weep")


def weep_grid(
    lams: Sequence[float], thrs: Sequence[float], a: float, tails: Sequence[float] = (0.0,)
) -> list[dict[str, float]]:
    """The grid ``lam x thr x tail`` of ``lam * WEEP(a, b = thr^2 / 2, c = tail / lam)``."""
    return [
        {"lam": float(lam), "a": float(a), "thr": float(t), "tail": float(c)}
        for lam in lams
        for t in thrs
        for c in tails
    ]


# ------------------------------------------------------------------------------------------------
# Validation tuning
# ------------------------------------------------------------------------------------------------
def select_on_validation(scores: Sequence[float | None], lower_is_better: bool = True) -> int:
    """Index of the best validation score (``None``/NaN count as the worst; first on ties)."""
    if len(scores) == 0:
        raise ValueError("scores must not be empty")
    worst = math.inf if lower_is_better else -math.inf
    vals = [worst if s is None or not math.isfinite(float(s)) else float(s) for s in scores]
    arr = np.asarray(vals) if lower_is_better else -np.asarray(vals)
    return int(np.argmin(arr))


def tune(
    grid: Sequence[Mapping[str, Any]],
    score: Callable[[Mapping[str, Any]], float],
    lower_is_better: bool = True,
) -> dict[str, Any]:
    """Score every grid point on the validation instances and keep the best.

    Returns ``{"index", "params", "scores", "score"}`` (scores JSON-safe).
    """
    scores = [finite(score(p)) for p in grid]
    idx = select_on_validation(scores, lower_is_better)
    return {"index": idx, "params": dict(grid[idx]), "scores": scores, "score": scores[idx]}


def config_key(config: Mapping[str, Any], *keys: str) -> str:
    """A hashable JSON string of the config entries ``keys`` (for per-process caches)."""
    return json.dumps({k: config[k] for k in keys}, sort_keys=True)


# ------------------------------------------------------------------------------------------------
# Verdicts
# ------------------------------------------------------------------------------------------------
def noninferiority(
    method: Sequence[float],
    baseline: Sequence[float],
    margin: float,
    *,
    lower_is_better: bool = True,
) -> PairedComparison:
    """``compare_paired`` on the method's values moved by ``margin`` in its favour."""
    m = np.asarray(method, dtype=float)
    shifted = m - margin if lower_is_better else m + margin
    cmp = compare_paired(shifted, baseline, lower_is_better=lower_is_better)
    # report the unshifted median of the method
    cmp.median_method = float(np.median(m))
    return cmp


def _clean(values: Sequence[float | None], missing: float) -> list[float]:
    return [missing if v is None else float(v) for v in values]


def beats_verdict(
    claim: str,
    method: Sequence[float | None],
    baseline: Sequence[float | None],
    names: tuple[str, str],
    metric: str,
    *,
    lower_is_better: bool = True,
) -> Verdict:
    """Verdict "method beats baseline" (paired one-sided Wilcoxon, see the module notes)."""
    missing = math.inf if lower_is_better else -math.inf
    m, b = _clean(method, missing), _clean(baseline, missing)
    if not m:
        return Verdict(claim, "inconclusive", "no paired instances")
    cmp = compare_paired(m, b, lower_is_better=lower_is_better)
    return Verdict(claim, cmp.status, cmp.evidence(names[0], names[1], metric))


def matches_verdict(
    claim: str,
    method: Sequence[float | None],
    baseline: Sequence[float | None],
    names: tuple[str, str],
    metric: str,
    margin: float,
    *,
    lower_is_better: bool = True,
) -> Verdict:
    """Verdict "method matches or beats baseline" (non-inferiority with ``margin``)."""
    missing = math.inf if lower_is_better else -math.inf
    m, b = _clean(method, missing), _clean(baseline, missing)
    if not m:
        return Verdict(claim, "inconclusive", "no paired instances")
    cmp = noninferiority(m, b, margin, lower_is_better=lower_is_better)
    diff = np.median(np.asarray(m) - np.asarray(b))
    p = "n/a" if math.isnan(cmp.p_value) else f"{cmp.p_value:.3g}"
    evidence = (
        f"median {metric}: {names[0]} {cmp.median_method:.3g} vs {names[1]} "
        f"{cmp.median_baseline:.3g} (median of the paired differences {names[0]} - {names[1]}: "
        f"{diff:+.3g}); margin {margin:g}; "
        f"non-inferiority one-sided Wilcoxon p = {p} over {cmp.n} paired instances"
    )
    return Verdict(claim, cmp.status, evidence)


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------
def plot_vs_k(
    path,
    ks: Sequence[float],
    panels: Mapping[str, Mapping[str, Sequence[tuple[float, float, float]]]],
    *,
    xlabel: str,
    ylabels: Mapping[str, str],
) -> None:
    """One panel per metric; per method its median over ``ks`` with a min-max band.

    ``panels[title][label]`` is a list (one per k) of ``(median, low, high)``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.0), squeeze=False)
    colors = plt.get_cmap("tab20").colors
    markers = "osD^v<>ph*"
    for ax, (title, curves) in zip(axes.flat, panels.items()):
        for i, (label, pts) in enumerate(curves.items()):
            arr = np.asarray([[np.nan if v is None else v for v in p] for p in pts], dtype=float)
            style = "--" if label.startswith("oracle") else "-"
            color = colors[(2 * i) % 20 + (2 * i) // 20]
            ax.plot(
                ks,
                arr[:, 0],
                style,
                color=color,
                marker=markers[i % len(markers)],
                ms=3.5,
                lw=1.4,
                label=label,
            )
            ax.fill_between(ks, arr[:, 1], arr[:, 2], color=color, alpha=0.10)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabels.get(title, ""))
        ax.grid(True, alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def med(values: Sequence[float | None]) -> float | None:
    """Median of the non-missing values (``None`` when there are none)."""
    v = [float(x) for x in values if x is not None]
    return float(np.median(v)) if v else None


def fmt_params(params: Mapping[str, Any]) -> str:
    """Compact ``k=v`` rendering of a grid point."""
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def as_tensor_seed(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (63-bit seeds are folded to 63 bits)."""
    return torch.Generator().manual_seed(int(seed) % (2**63 - 1))
