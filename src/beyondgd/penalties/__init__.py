"""Elementwise sparse penalties as ``torch.nn.Module`` subclasses: WEEP and reference penalties.

Each penalty has ``value``/``grad``/``prox``/``support``, the constants ``smoothness`` and
``weak_convexity``, and sums itself over a tensor or an iterable of parameters when called
(``loss + lam * penalty(model.parameters())``). The skglm plug-in (a WEEP penalty for skglm's
coordinate-descent solvers) lives in :mod:`beyondgd.penalties.skglm` and needs the ``sparse`` extra.
"""

from beyondgd.penalties.base import Penalty, PenaltyProtocol
from beyondgd.penalties.reference import L1, MCP, SCAD, CappedL1, LogSum, QuadEnvelopeL0
from beyondgd.penalties.weep import WEEP, weep_breakpoints

__all__ = [
    "L1",
    "MCP",
    "SCAD",
    "WEEP",
    "CappedL1",
    "LogSum",
    "Penalty",
    "PenaltyProtocol",
    "QuadEnvelopeL0",
    "weep_breakpoints",
]
