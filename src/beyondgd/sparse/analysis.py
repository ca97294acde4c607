r"""Analysis-penalty denoising ``1/2 ||x - y||^2 + lam P(D x)`` with a matrix-free ``D``.

:func:`solve` stores ``A`` and ``D`` as dense matrices, which does not scale to images (``A = I``
of a 128 x 128 image is 16384 x 16384). :func:`solve_denoise` runs the same methods with ``A = I``
and ``D`` a :class:`~beyondgd.unfolding.operators.LinearOperator` (``forward`` / ``adjoint``),
e.g. :class:`~beyondgd.unfolding.operators.FiniteDifference2D` for anisotropic total variation:

- ``"adam"``, ``"gd"``, ``"lbfgs"``: the very iterations of :func:`solve` (same code), on
  ``x - y + lam D^T P'(D x)``;
- ``"admm"``: ADMM on the split ``z = D x`` with the penalty's closed-form prox in the
  ``z``-step and the exact ``x``-step ``(I + rho D^T D)^{-1}`` from ``D.solve_shifted``.

Stopping rules are those of :func:`solve` with ``scale = ||y||_inf``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from beyondgd.core.validation import check_choice, check_finite_tensor, check_int, check_number
from beyondgd.sparse.solvers import (
    SolveResult,
    _check_penalty,
    _Problem,
    _Recorder,
    _run_adam,
    _run_gd,
    _run_lbfgs,
)

__all__ = ["DENOISE_METHODS", "solve_denoise"]

DENOISE_METHODS = ("admm", "adam", "gd", "lbfgs")


class _DenoiseProblem(_Problem):
    """``A = I`` and a matrix-free ``D``."""

    def __init__(self, y: Tensor, lam: float, penalty, op):
        super().__init__(y.new_empty(0, 0), y, lam, penalty, None, 1.0)  # A = I is implicit
        self.op = op

    def with_penalty(self, penalty) -> _DenoiseProblem:
        return _DenoiseProblem(self.y, self.lam, penalty, self.op)

    def matvec(self, x: Tensor) -> Tensor:
        return x

    def rmatvec(self, r: Tensor) -> Tensor:
        return r

    def dx(self, x: Tensor) -> Tensor:
        return self.op(x)

    def dtx(self, z: Tensor) -> Tensor:
        return self.op.adjoint(z)

    def uses_gradient_measure(self) -> bool:
        return True


def _run_admm_denoise(prob: _DenoiseProblem, x: Tensor, rec: _Recorder, opts: dict) -> Tensor:
    rho = opts["rho"]
    tau = prob.lam / rho
    z = prob.dx(x)
    u = torch.zeros_like(z)
    rec.record(prob.objective(x, x - prob.y), torch.full_like(rec.tol_abs, math.inf), x)
    for _ in range(rec.max_iter):
        x_new = prob.op.solve_shifted(prob.y + rho * prob.dtx(z - u), rho)
        Dx = prob.dx(x_new)
        z_new = prob._prox(Dx + u, tau)
        u_new = u + Dx - z_new
        primal = (Dx - z_new).abs().amax(dim=-1)
        dual = prob.dtx(z_new - z).abs().amax(dim=-1)
        stat = torch.maximum(primal, dual) * rho
        x = rec.freeze(x_new, x)
        z = rec.freeze(z_new, z)
        u = rec.freeze(u_new, u)
        rec.step()
        rec.record(prob.objective(x, x - prob.y), stat, x)
        if rec.stop():
            break
    return x


_DENOISE_RUNNERS = {
    "admm": _run_admm_denoise,
    "adam": _run_adam,
    "gd": _run_gd,
    "lbfgs": _run_lbfgs,
}


def solve_denoise(
    y: Tensor,
    penalty,
    lam: float,
    D,
    method: str = "admm",
    *,
    x0: Tensor | None = None,
    max_iter: int = 300,
    tol: float = 1e-6,
    rho: float | None = None,
    lr: float = 1e-2,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    history_size: int = 10,
    normD2: float | None = None,
) -> SolveResult:
    r"""Minimize ``1/2 ||x - y||^2 + lam * sum P(D x)`` for each row of ``y``.

    Parameters
    ----------
    y : Tensor
        ``(n,)`` or ``(B, n)`` (flattened images), floating point.
    penalty : Penalty
        Elementwise penalty (``prox`` for ADMM; ``grad`` for Adam; finite ``smoothness`` for
        GD and L-BFGS).
    D : LinearOperator
        ``forward`` / ``adjoint`` on ``(..., n)``; ADMM also needs ``solve_shifted(r, rho)``
        ``= (I + rho D^T D)^{-1} r`` (e.g. :class:`~beyondgd.unfolding.FiniteDifference2D`).
    method : {"admm", "adam", "gd", "lbfgs"}
    x0 : Tensor, optional
        Start (default: ``y``, the noisy data).
    max_iter, tol
        Iteration budget and relative stationarity tolerance (threshold ``tol * ||y||_inf``).
    rho : float, optional
        ADMM parameter; default ``max(1, 2 lam * P.weak_convexity)`` (``||A||^2 = 1``).
    lr, betas, eps, history_size
        Adam's and L-BFGS's options, as in :func:`~beyondgd.sparse.solve`.
    normD2 : float, optional
        ``||D||_2^2`` for GD's and L-BFGS's step bound (default ``D.squared_norm_bound`` when
        the operator has one, else ``D.norm()**2``).

    Examples
    --------
    >>> import torch
    >>> from beyondgd.penalties import L1
    >>> from beyondgd.unfolding import FiniteDifference2D
    >>> y = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    >>> res = solve_denoise(y, L1(1.0), 0.1, FiniteDifference2D(2, 2), tol=1e-10, max_iter=2000)
    >>> res.x.round(decimals=4).tolist()
    [0.1, 0.1, 0.9, 0.9]
    """
    method = check_choice("method", method, DENOISE_METHODS)
    y = check_finite_tensor("y", y)
    if y.dim() not in (1, 2) or y.shape[-1] != D.in_features:
        raise ValueError(
            f"y must have shape (n,) or (B, n) with n = D.in_features = {D.in_features}, got "
            f"{tuple(y.shape)}"
        )
    lam = check_number("lam", lam, low=0.0)
    max_iter = check_int("max_iter", max_iter, low=0)
    tol = check_number("tol", tol, low=0.0)
    _check_penalty(penalty, method if method != "admm" else "admm", None)
    if method == "admm" and not hasattr(D, "solve_shifted"):
        raise TypeError(f"method 'admm' needs D.solve_shifted(r, rho); {type(D).__name__} lacks it")
    Y = y if y.dim() == 2 else y.unsqueeze(0)
    X = Y.clone() if x0 is None else check_finite_tensor("x0", x0).to(Y).expand_as(Y).clone()
    prob = _DenoiseProblem(Y, lam, penalty, D)
    scale = Y.abs().amax(dim=-1)
    tol_abs = tol * torch.where(scale > 0, scale, torch.ones_like(scale))
    opts = {
        "lr": check_number("lr", lr, low=0.0, low_inclusive=False),
        "betas": betas,
        "eps": eps,
        "history_size": check_int("history_size", history_size, low=1),
    }
    if method in ("gd", "lbfgs"):
        if normD2 is None:
            bound = getattr(D, "squared_norm_bound", None)
            normD2 = float(bound) if bound is not None else float(D.norm(dtype=Y.dtype)) ** 2
        opts["normD2"] = float(normD2)
    if method == "admm":
        wc = float(getattr(penalty, "weak_convexity", 0.0))
        floor = 2.0 * lam * (wc if math.isfinite(wc) else 0.0)
        rho = (
            max(1.0, floor)
            if rho is None
            else check_number("rho", rho, low=0.0, low_inclusive=False)
        )
        opts["rho"] = rho
    limit = torch.full((Y.shape[0],), max_iter, dtype=torch.long, device=Y.device)
    rec = _Recorder(tol_abs, limit, None, squeeze=y.dim() == 1)
    X = _DENOISE_RUNNERS[method](prob, X, rec, opts)
    if method == "admm":
        stat, converged = rec.stat[-1], rec.converged
    else:
        stat = (X - Y + lam * prob.pen_grad(X)).abs().amax(dim=-1)
        converged = stat <= tol_abs
    obj_h, stat_h = torch.stack(rec.obj), torch.stack(rec.stat)
    if y.dim() == 2:
        return SolveResult(X, rec.n_iter, converged, obj_h, stat, stat_h, tol_abs, method)
    return SolveResult(
        X[0],
        int(rec.n_iter[0]),
        bool(converged[0]),
        obj_h[:, 0],
        float(stat[0]),
        stat_h[:, 0],
        float(tol_abs[0]),
        method,
    )
