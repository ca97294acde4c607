"""Unfolding networks for compressed sensing: measurement operators, DECONET, continuation (C-DEC),
the log-cosh loss and a trainer with generalization-gap tracking.

Measurements ``y = A x + e`` of a signal ``x`` in ``R^n`` (``A`` is ``m x n``, ``m < n``) are
mapped back to ``x`` by a network that unrolls a solver of analysis-L1 basis pursuit with a
learned redundant analysis operator ``W`` (DECONET); C-DEC runs it in warm-started stages
(continuation) and trains with log-cosh.

References
----------
.. [1] V. Kouni, "How to warm-start your unfolding network", SampTA 2025, arXiv:2502.01854.
.. [2] V. Kouni, Y. Panagakis, "DECONET: an Unfolding Network for Analysis-based Compressed
   Sensing with Generalization Error Bounds", IEEE Trans. Signal Process., 2023, arXiv:2205.07050.
.. [3] S. Becker, E. J. Candes, M. Grant, "Templates for convex cone problems with
   applications to sparse signal recovery" (TFOCS), Math. Prog. Comp. 3, 2011.
"""

from beyondgd.unfolding.losses import LogCoshLoss, get_loss, log_cosh_loss
from beyondgd.unfolding.networks import CDEC, DECONET, Continued, DualState
from beyondgd.unfolding.operators import (
    FiniteDifference2D,
    FunctionOperator,
    GaussianCS,
    Haar2D,
    LinearOperator,
    MatrixOperator,
    haar_analysis_matrix,
)
from beyondgd.unfolding.training import Trainer, TrainingResult, evaluate

__all__ = [
    "CDEC",
    "FiniteDifference2D",
    "Haar2D",
    "DECONET",
    "Continued",
    "DualState",
    "FunctionOperator",
    "GaussianCS",
    "LinearOperator",
    "LogCoshLoss",
    "MatrixOperator",
    "Trainer",
    "TrainingResult",
    "evaluate",
    "get_loss",
    "haar_analysis_matrix",
    "log_cosh_loss",
]
