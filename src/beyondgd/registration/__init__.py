"""Point-cloud registration: SO(3)/SE(3) geometry, batched iterative solvers (damped Gauss-Newton
on a residual, point-to-point ICP with Kabsch), and a learned PointNetLK-like energy trained with
unrolled solver steps (baseline), with the DLC star-convexity hinges, or PRISE-style.

References
----------
.. [1] Y. Aoki et al., "PointNetLK", CVPR 2019.
.. [2] P. J. Besl, N. D. McKay, "A Method for Registration of 3-D Shapes", IEEE TPAMI 1992.
.. [3] Z. Zhang et al., "Deep Loss Convexification for Learning Iterative Models", IEEE TPAMI 2024,
   arXiv:2411.10649.
.. [4] Y. Zhang, X. Huang, Z. Zhang, "PRISE", CVPR 2023.
"""

from beyondgd.registration.geometry import (
    geodesic_error,
    hat,
    matrix_to_quaternion,
    random_rotations,
    se3_exp,
    se3_log,
    so3_exp,
    so3_log,
    transform_points,
    vee,
)
from beyondgd.registration.model import (
    LOSSES,
    PointNetFeature,
    PointNetRegistration,
    RegistrationTrainer,
)
from beyondgd.registration.solvers import (
    MANIFOLDS,
    GaussNewtonResult,
    ICPResult,
    gauss_newton,
    icp,
    kabsch,
)

__all__ = [
    "LOSSES",
    "MANIFOLDS",
    "GaussNewtonResult",
    "ICPResult",
    "PointNetFeature",
    "PointNetRegistration",
    "RegistrationTrainer",
    "gauss_newton",
    "geodesic_error",
    "hat",
    "icp",
    "kabsch",
    "matrix_to_quaternion",
    "random_rotations",
    "se3_exp",
    "se3_log",
    "so3_exp",
    "so3_log",
    "transform_points",
    "vee",
]
