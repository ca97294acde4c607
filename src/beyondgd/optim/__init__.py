"""FUSE optimizer (Adam, then L-BFGS after a switch criterion), switch criteria, robust L-BFGS
pieces and closure helpers.

References
----------
.. [1] Z. Jiang et al., "FUSE: First-Order and Second-Order Unified SynthEsis in Stochastic
   Optimization", IEEE CAI 2025, arXiv:2503.04204.
"""

from beyondgd.optim.closures import (
    OverlappingBatchSampler,
    distributed_full_batch_closure,
    full_batch_closure,
    make_closure,
)
from beyondgd.optim.criteria import (
    AfterEpochs,
    CallableCriterion,
    GradNormBelow,
    LossBelow,
    LossPlateau,
    SwitchCriterion,
    SwitchObservation,
    paper_code_criterion,
)
from beyondgd.optim.fuse import FUSE
from beyondgd.optim.lbfgs import LBFGSMemory, LineSearchResult, strong_wolfe

__all__ = [
    "FUSE",
    "AfterEpochs",
    "CallableCriterion",
    "GradNormBelow",
    "LBFGSMemory",
    "LineSearchResult",
    "LossBelow",
    "LossPlateau",
    "OverlappingBatchSampler",
    "SwitchCriterion",
    "SwitchObservation",
    "distributed_full_batch_closure",
    "full_batch_closure",
    "make_closure",
    "paper_code_criterion",
    "strong_wolfe",
]
