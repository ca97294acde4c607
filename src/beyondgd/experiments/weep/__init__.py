"""The WEEP reproductions (weep.md): importing this package registers ``weep-recovery``,
``weep-tv1d`` and ``weep-denoise``."""

from beyondgd.experiments.weep import denoise, recovery, tv1d

__all__ = ["denoise", "recovery", "tv1d"]
