"""Loss landscapes: probes around trained weights (1-D / 2-D filter-normalized slices, sharpness).

References
----------
.. [1] H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of Neural
   Nets", NeurIPS 2018, arXiv:1712.09913.
"""

from beyondgd.landscape.probes import (
    SharpnessResult,
    Slice1D,
    Slice2D,
    filter_normalized_direction,
    plot_slices_1d,
    plot_slices_2d,
    sharpness,
    slice_1d,
    slice_2d,
)

__all__ = [
    "SharpnessResult",
    "Slice1D",
    "Slice2D",
    "filter_normalized_direction",
    "plot_slices_1d",
    "plot_slices_2d",
    "sharpness",
    "slice_1d",
    "slice_2d",
]

# Deep Loss Convexification (DLC): star-convexity hinges and perturbation samplers.
