"""Scribble-supervised segmentation with regularized (Potts / CRF) losses: relaxed losses for
gradient descent, alpha-expansion proposals, and ADM, the alternating-direction trainer of Marin
et al. (CVPR 2019) that optimizes the grid-CRF loss beyond gradient descent.

alpha-expansion needs the ``seg`` extra (``pip install "beyondgd[seg]"``: numba for beyondgd's
own compiled solver, gco-wrapper for GCO); they are imported only when a proposal is computed.
"""

from beyondgd.segmentation.grid import (
    OFFSETS,
    GridWeights,
    contrast_weights,
    edge_list,
    potts_energy,
)
from beyondgd.segmentation.losses import (
    DenseCRFLoss,
    GridPottsLoss,
    bilateral_filter,
    relaxed_potts_energy,
)
from beyondgd.segmentation.metrics import (
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)
from beyondgd.segmentation.networks import SegNet, load_segnet, save_segnet
from beyondgd.segmentation.proposals import (
    BatchExpansionResult,
    ExpansionPool,
    ExpansionResult,
    alpha_expansion,
    alpha_expansion_batch,
)
from beyondgd.segmentation.training import SegmentationResult, SegmentationTrainer, predict

__all__ = [
    "OFFSETS",
    "BatchExpansionResult",
    "DenseCRFLoss",
    "ExpansionPool",
    "ExpansionResult",
    "GridPottsLoss",
    "GridWeights",
    "SegNet",
    "SegmentationResult",
    "SegmentationTrainer",
    "alpha_expansion",
    "alpha_expansion_batch",
    "bilateral_filter",
    "confusion_matrix",
    "contrast_weights",
    "edge_list",
    "iou_per_class",
    "load_segnet",
    "mean_iou",
    "pixel_accuracy",
    "potts_energy",
    "predict",
    "relaxed_potts_energy",
    "save_segnet",
]
