"""Small tabular sets bundled with scikit-learn, split and standardised reproducibly."""

from __future__ import annotations

import torch

from beyondgd.core import check_number


def standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Scale features with the training set's mean and std (constant features left at 0)."""
    mean = train.mean(0, keepdim=True)
    std = train.std(0, keepdim=True).clamp_min(1e-8)
    return [(t - mean) / std for t in (train, *others)]


def load_digits_split(
    seed: int = 0, test_fraction: float = 0.25, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (1797 images), a stratified split, standardised features.

    Returns ``x_train, y_train, x_test, y_test`` as tensors.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    check_number(
        "test_fraction", test_fraction, low=0.0, high=1.0, low_inclusive=False, high_inclusive=False
    )
    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    xtr, xte = standardize(torch.tensor(xtr, dtype=dtype), torch.tensor(xte, dtype=dtype))
    return xtr, torch.tensor(ytr), xte, torch.tensor(yte)
