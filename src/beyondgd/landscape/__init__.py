"""Loss landscapes: probes around trained weights (1-D / 2-D filter-normalized slices, sharpness)
and star-convexity hinges with their perturbation samplers (Deep Loss Convexification).

References
----------
.. [1] H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of Neural
   Nets", NeurIPS 2018, arXiv:1712.09913.
.. [2] Z. Zhang, Y. Shao, Y. Zhang, F. Lin, H. Zhang, E. Rundensteiner, "Deep Loss Convexification
   for Learning Iterative Models", IEEE TPAMI 2024, arXiv:2411.10649.
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
from beyondgd.landscape.samplers import (
    BoxSampler,
    GaussianSampler,
    PerturbationSampler,
    RelativeSampler,
    SE3Sampler,
    SimplexSampler,
    SO3Sampler,
)
from beyondgd.landscape.star_convex import (
    HINGE_TERMS,
    HingeOutput,
    StarConvexHinge,
    StarConvexityResult,
    segment_profile,
    star_convexity_fraction,
)

__all__ = [
    "BoxSampler",
    "filter_normalized_direction",
    "GaussianSampler",
    "HINGE_TERMS",
    "HingeOutput",
    "PerturbationSampler",
    "plot_slices_1d",
    "plot_slices_2d",
    "RelativeSampler",
    "SE3Sampler",
    "segment_profile",
    "sharpness",
    "SharpnessResult",
    "SimplexSampler",
    "Slice1D",
    "Slice2D",
    "slice_1d",
    "slice_2d",
    "SO3Sampler",
    "star_convexity_fraction",
    "StarConvexHinge",
    "StarConvexityResult",
]
