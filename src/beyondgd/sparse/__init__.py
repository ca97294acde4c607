"""Solvers and a scikit-learn-style estimator for sparse penalized least squares.

``solve(A, y, penalty, lam, method=...)`` minimizes ``1/2 ||A x - y||^2 + lam P(D x)`` for one or
many problems at once (Adam, GD, L-BFGS, proximal gradient, FISTA, ADMM), with warm starts and
continuation; :func:`solve_denoise` runs them with ``A = I`` and a matrix-free analysis
operator ``D`` (images); :class:`SparseRegressor` wraps it with scikit-learn conventions.
"""

from beyondgd.sparse.analysis import DENOISE_METHODS, solve_denoise
from beyondgd.sparse.continuation import GeometricContinuation
from beyondgd.sparse.estimator import SparseRegressor
from beyondgd.sparse.operators import first_difference_matrix, squared_spectral_norm
from beyondgd.sparse.solvers import METHODS, SolveResult, solve

__all__ = [
    "DENOISE_METHODS",
    "METHODS",
    "GeometricContinuation",
    "SolveResult",
    "SparseRegressor",
    "first_difference_matrix",
    "solve",
    "solve_denoise",
    "squared_spectral_norm",
]
