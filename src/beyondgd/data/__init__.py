"""Offline data sets: nothing here downloads. Each loader takes an explicit path (and an
environment variable) so users can point it at their own copy."""

from beyondgd.data.fashion_mnist import DataNotFoundError, load_fashion_mnist, read_idx
from beyondgd.data.tabular import load_digits_split, standardize
from beyondgd.data.testfns import TestFunction, test_functions

__all__ = [
    "DataNotFoundError",
    "load_digits_split",
    "load_fashion_mnist",
    "read_idx",
    "standardize",
    "TestFunction",
    "test_functions",
]

from beyondgd.data.patches import (  # noqa: E402
    SKIMAGE_IMAGES,
    bundled_grey_images,
    load_image_patches,
    pool2x2,
)

__all__ += ["SKIMAGE_IMAGES", "bundled_grey_images", "load_image_patches", "pool2x2"]
