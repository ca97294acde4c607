"""beyondgd: optimization methods beyond plain gradient descent, for PyTorch.

Subpackages (each one concern; dependencies point downward):

- :mod:`beyondgd.optim` -- FUSE / FUSE-PV (Adam, then L-BFGS after a switch criterion).
- :mod:`beyondgd.experiments` -- the reproduction harness behind ``beyondgd reproduce``.
- :mod:`beyondgd.core` -- validation, cost accounting, atomic checkpoints, seeding.
"""

__version__ = "0.1.0"
