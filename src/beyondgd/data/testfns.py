"""Classic optimization test functions in PyTorch (any dtype; float64 for accuracy).

Each :class:`TestFunction` knows its minimum value ``f_star`` and a box to draw starts from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from beyondgd.core import check_int, make_generator


@dataclass(frozen=True)
class TestFunction:
    name: str
    dim: int
    f_star: float
    low: float
    high: float
    fn: Callable[[torch.Tensor], torch.Tensor]

    __test__ = False  # not a pytest test class

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def random_start(self, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """A start drawn uniformly from the box, reproducibly from ``seed``."""
        gen = make_generator(seed)
        return self.low + (self.high - self.low) * torch.rand(self.dim, generator=gen, dtype=dtype)


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def beale(x: torch.Tensor) -> torch.Tensor:
    a, b = x[0], x[1]
    return (1.5 - a + a * b) ** 2 + (2.25 - a + a * b**2) ** 2 + (2.625 - a + a * b**3) ** 2


def rastrigin(x: torch.Tensor) -> torch.Tensor:
    return 10.0 * x.numel() + (x**2 - 10.0 * torch.cos(2 * math.pi * x)).sum()


def ackley(x: torch.Tensor) -> torch.Tensor:
    # The tiny constant keeps the gradient finite at the optimum, where sqrt has a kink.
    r = torch.sqrt((x**2).mean() + 1e-300)
    return -20.0 * torch.exp(-0.2 * r) - torch.exp(torch.cos(2 * math.pi * x).mean()) + math.e + 20


def styblinski_tang(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x**4 - 16.0 * x**2 + 5.0 * x).sum()


_ST_MIN = -39.16616570377142  # per coordinate, at x = -2.903534...


def ill_conditioned_quadratic(dim: int = 20, condition: float = 1e4, seed: int = 0) -> TestFunction:
    """``f(x) = 1/2 (x - 1)^T Q diag(logspace(0, log10 cond)) Q^T (x - 1)``, Q a fixed rotation."""
    check_int("dim", dim, low=1)
    gen = make_generator(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    h = q @ torch.diag(torch.logspace(0, math.log10(condition), dim, dtype=torch.float64)) @ q.T

    def fn(x: torch.Tensor) -> torch.Tensor:
        d = x - 1.0
        return 0.5 * d @ (h.to(x.dtype) @ d)

    return TestFunction(f"quadratic-{dim}d-cond{condition:.0e}", dim, 0.0, -2.0, 2.0, fn)


def test_functions() -> dict[str, TestFunction]:
    """The suite of ``fuse-testfns``, by name."""
    fns = [
        TestFunction("rosenbrock", 2, 0.0, -2.0, 2.0, rosenbrock),
        TestFunction("beale", 2, 0.0, -2.0, 2.0, beale),
        TestFunction("rastrigin", 2, 0.0, -5.12, 5.12, rastrigin),
        TestFunction("ackley", 2, 0.0, -5.0, 5.0, ackley),
        TestFunction("styblinski-tang", 2, 2 * _ST_MIN, -5.0, 5.0, styblinski_tang),
        ill_conditioned_quadratic(),
    ]
    return {f.name: f for f in fns}
