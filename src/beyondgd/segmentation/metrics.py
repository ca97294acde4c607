"""Segmentation metrics from a confusion matrix accumulated over a whole data set (PASCAL VOC
style: IoU per class over all pixels of all images, then the mean over classes that occur)."""

from __future__ import annotations

import torch

from beyondgd.core import check_int


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, n_classes: int, *, ignore_index: int = 255
) -> torch.Tensor:
    """``(K, K)`` int64 counts, rows = ground truth, columns = prediction; pixels whose target
    is ``ignore_index`` are left out."""
    check_int("n_classes", n_classes, low=1)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    keep = target != ignore_index
    t, p = target[keep].long(), pred[keep].long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_classes):
        raise ValueError(f"target labels must lie in [0, {n_classes}) or be {ignore_index}")
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= n_classes):
        raise ValueError(f"pred labels must lie in [0, {n_classes})")
    return torch.bincount(t * n_classes + p, minlength=n_classes**2).reshape(n_classes, n_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU of each class; NaN for a class absent from both prediction and ground truth."""
    conf = confusion.double()
    inter = conf.diagonal()
    union = conf.sum(0) + conf.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean IoU over the classes that occur (in the ground truth or the prediction)."""
    iou = iou_per_class(confusion)
    present = ~torch.isnan(iou)
    if not bool(present.any()):
        raise ValueError("confusion matrix is empty: no labelled pixels")
    return float(iou[present].mean())


def pixel_accuracy(confusion: torch.Tensor) -> float:
    total = confusion.sum()
    if int(total) == 0:
        raise ValueError("confusion matrix is empty: no labelled pixels")
    return float(confusion.diagonal().sum().double() / total)
