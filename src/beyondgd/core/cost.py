"""Cost accounting for equal-cost comparisons: gradient evaluations in samples, and wall time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class CostMeter:
    """Counts the work an optimizer spends.

    ``samples`` counts per-sample gradient evaluations (a full-batch gradient on ``n`` points adds
    ``n``), so ``epochs = samples / dataset_size`` is the epoch-equivalent cost that makes an
    L-BFGS epoch (several passes) comparable with an Adam epoch (one pass). ``evaluations`` counts
    closure calls (function+gradient evaluations), whatever their batch size.

    Examples
    --------
    >>> meter = CostMeter(dataset_size=100)
    >>> meter.add(50); meter.add(50)
    >>> meter.epochs
    1.0
    """

    dataset_size: int | None = None
    samples: int = 0
    evaluations: int = 0
    _started: float = field(default_factory=time.perf_counter, repr=False)
    _elapsed_before: float = field(default=0.0, repr=False)

    def add(self, n_samples: int) -> None:
        """Record one function+gradient evaluation on ``n_samples`` samples."""
        self.samples += int(n_samples)
        self.evaluations += 1

    @property
    def epochs(self) -> float:
        """Samples divided by the dataset size (epoch-equivalents)."""
        if not self.dataset_size:
            raise ValueError("dataset_size must be set on the CostMeter to report epochs")
        return self.samples / self.dataset_size

    @property
    def wall_time(self) -> float:
        """Seconds since the meter was created (or reset)."""
        return self._elapsed_before + time.perf_counter() - self._started

    def reset(self) -> None:
        self.samples = 0
        self.evaluations = 0
        self._elapsed_before = 0.0
        self._started = time.perf_counter()

    def state_dict(self) -> dict:
        return {
            "dataset_size": self.dataset_size,
            "samples": self.samples,
            "evaluations": self.evaluations,
            "wall_time": self.wall_time,
        }

    def load_state_dict(self, state: dict) -> None:
        self.dataset_size = state["dataset_size"]
        self.samples = int(state["samples"])
        self.evaluations = int(state["evaluations"])
        self._elapsed_before = float(state["wall_time"])
        self._started = time.perf_counter()
