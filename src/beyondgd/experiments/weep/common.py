"""Shared by the ``weep-*`` reproductions: metrics, penalties from JSON specs, validation grid
search and the "best route" choice read from the tuning results."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from beyondgd.core import finite_or_none
from beyondgd.penalties import L1, MCP, SCAD, WEEP, QuadEnvelopeL0

__all__ = [
    "best_route",
    "generator",
    "grid_search",
    "make_penalty",
    "nmse_db",
    "snr_db",
    "support_f1",
    "weep_grid",
]


def nmse_db(x_hat: Tensor, x: Tensor) -> Tensor:
    """``10 log10(||x_hat - x||^2 / ||x||^2)`` per row (floored at -400 dB)."""
    err = ((x_hat - x) ** 2).sum(dim=-1)
    ref = (x**2).sum(dim=-1)
    return 10.0 * torch.log10((err / ref).clamp_min(1e-40))


def snr_db(x_hat: Tensor, x: Tensor) -> Tensor:
    """Reconstruction SNR in dB per row, ``-nmse_db``."""
    return -nmse_db(x_hat, x)


def support_f1(estimated: Tensor, true: Tensor) -> Tensor:
    """F1 of a support estimate per row, ``2 TP / (2 TP + FP + FN)`` (1 when both are empty)."""
    est, tru = estimated.bool(), true.bool()
    tp = (est & tru).sum(dim=-1).double()
    fp = (est & ~tru).sum(dim=-1).double()
    fn = (~est & tru).sum(dim=-1).double()
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1.0), torch.ones_like(tp))


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (folded to 63 bits)."""
    return torch.Generator().manual_seed(int(seed) % (2**63 - 1))


def make_penalty(kind: str, params: Mapping[str, float]) -> tuple[Any, float]:
    """``(penalty, lam)`` for one grid point.

    ``"l1"``: ``lam |x|``; ``"mcp"`` / ``"scad"``: ``(alpha, gamma)`` with ``lam = 1``;
    ``"q1l0"``: ``mu`` with ``lam = 1``; ``"weep"``: ``lam * WEEP(a, b, c)`` where ``b`` may be
    given as the flat point ``thr = sqrt(2 b)`` and ``c`` as the tail slope of ``lam * WEEP``,
    ``tail = lam c``.
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


def grid_search(
    grid: Sequence[Mapping[str, Any]],
    score: Callable[[Mapping[str, Any]], float],
    *,
    lower_is_better: bool,
) -> dict[str, Any]:
    """Score every grid point on validation data; keep the best (a failed score is the worst,
    ties go to the first). Returns ``{"params", "score", "scores"}`` (JSON-safe)."""
    if not grid:
        raise ValueError("the grid must not be empty")
    scores = [finite_or_none(score(p)) for p in grid]
    worst = math.inf if lower_is_better else -math.inf
    vals = np.array([worst if s is None else s for s in scores], dtype=float)
    idx = int(np.argmin(vals) if lower_is_better else np.argmax(vals))
    return {"params": dict(grid[idx]), "score": scores[idx], "scores": scores}


def best_route(
    tuned: Mapping[str, Mapping[str, Any]], routes: Sequence[str], *, lower_is_better: bool
) -> str:
    """The route with the best validation score in ``tuned`` (first on ties; a missing or
    failed score is the worst)."""
    if not routes:
        raise ValueError("a best-route method needs at least one route")
    worst = math.inf if lower_is_better else -math.inf

    def key(r: str) -> float:
        s = tuned.get(r, {}).get("score")
        v = worst if s is None else float(s)
        return v if lower_is_better else -v

    return min(routes, key=key)
