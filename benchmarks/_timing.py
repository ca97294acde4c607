"""Shared by the benchmark scripts (``python benchmarks/NAME.py`` puts this folder on the path)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def rotated(items: list, round_: int) -> list:
    """``items`` starting ``round_`` places later (wrapping): timing arms in this order, each
    round starting one arm later, lets a slow spell of the machine fall on different arms."""
    shift = round_ % len(items)
    return items[shift:] + items[:shift]
