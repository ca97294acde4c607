"""The ``fuse-*`` reproductions (FUSE / FUSE-PV, fuse.md): importing the package registers
``fuse-testfns``, ``fuse-pinn`` and ``fuse-classify``."""

from beyondgd.experiments.fuse import classify, pinn, testfns

__all__ = ["classify", "pinn", "testfns"]
