"""beyondgd: optimization methods beyond plain gradient descent, for PyTorch.

Subpackages, one concern each, grouped by method (dependencies point downward):

- :mod:`beyondgd.optim` -- FUSE / FUSE-PV: Adam, then L-BFGS after a switch criterion; switch
  criteria, a NaN-safe L-BFGS, full-batch closures.
- :mod:`beyondgd.penalties` -- WEEP (differentiable, L-smooth, weakly-convex sparse penalty) and
  the reference penalties (L1, MCP, SCAD, ...), with an skglm plug-in.
- :mod:`beyondgd.sparse` -- solvers and a scikit-learn-style estimator for sparse penalized least
  squares (FISTA, ADMM, L-BFGS, Adam; continuation; analysis operators).
- :mod:`beyondgd.unfolding` -- C-DEC: measurement operators, DECONET, continuation, log-cosh
  training for compressed sensing.
- :mod:`beyondgd.landscape` -- Deep Loss Convexification's star-convexity hinges and samplers,
  and loss-landscape probes (slices, sharpness).
- :mod:`beyondgd.registration` -- point-cloud registration: SO(3)/SE(3) geometry, batched
  Gauss-Newton and ICP, a learned registration energy trained with or without DLC.
- :mod:`beyondgd.segmentation` -- ADM: scribble-supervised segmentation with Potts / grid-CRF
  losses, alpha-expansion, gradient descent on the relaxed loss, networks and metrics.
- :mod:`beyondgd.data` -- offline data sets (Fashion-MNIST and meshes from Debian packages,
  scikit-learn / scikit-image images, synthetic scenes and test functions); nothing downloads.
- :mod:`beyondgd.experiments` -- the reproductions and the harness behind ``beyondgd reproduce``
  (presets, claims, paired tests with Holm correction, reports; local or Ray executors).
- :mod:`beyondgd.core` -- validation, cost accounting, atomic checkpoints, seeding.

The command line is ``beyondgd`` (``python -m beyondgd``): ``reproduce``, ``segment``, ...
"""

__version__ = "0.1.0"
