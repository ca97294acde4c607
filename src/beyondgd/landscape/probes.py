r"""Loss-landscape probes around trained weights: 1-D and 2-D slices along random
filter-normalized directions (Li et al., 2018) and sharpness (the top Hessian eigenvalue by power
iteration on Hessian-vector products), with PNG plots.

Every probe is generic: it takes a model, a callable ``loss_fn(model) -> scalar tensor`` that
evaluates the loss on whatever data you bind into it, and a seed or ``torch.Generator``. The
weights are restored exactly afterwards (also when ``loss_fn`` raises). Only parameters with
``requires_grad`` are probed (pass ``params=`` to choose others); buffers are left alone.

References
----------
.. [1] H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of Neural
   Nets", NeurIPS 2018, arXiv:1712.09913.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from beyondgd.core import check_choice, check_int, check_number, make_generator

__all__ = [
    "SharpnessResult",
    "Slice1D",
    "Slice2D",
    "filter_normalized_direction",
    "plot_slices_1d",
    "plot_slices_2d",
    "sharpness",
    "slice_1d",
    "slice_2d",
]

LossFn = Callable[[nn.Module], torch.Tensor]


def _params(model: nn.Module, params: Iterable[torch.Tensor] | None) -> list[torch.Tensor]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    chosen = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
    if not chosen:
        raise ValueError("there are no parameters to probe (none with requires_grad=True)")
    for i, p in enumerate(chosen):
        if not isinstance(p, torch.Tensor) or not p.is_floating_point():
            raise TypeError(f"params[{i}] must be a floating-point tensor")
    return chosen


def _generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    return make_generator(check_int("seed", 0 if seed is None else seed, low=0))


def _check_loss_fn(loss_fn: object) -> None:
    if not callable(loss_fn):
        raise TypeError(
            f"loss_fn must be callable as loss_fn(model) -> scalar tensor, got "
            f"{type(loss_fn).__name__}"
        )


@contextlib.contextmanager
def _restored(params: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    saved = [p.detach().clone() for p in params]
    try:
        yield saved
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


def filter_normalized_direction(
    params: Sequence[torch.Tensor],
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    bias: str = "zero",
) -> list[torch.Tensor]:
    r"""A random Gaussian direction scaled filter by filter to the weights' norms.

    For a weight ``theta`` with ``ndim >= 2`` each filter (slice along dim 0, e.g. a row of a
    linear layer's matrix) of the direction ``d`` is rescaled as
    ``d_i <- d_i / ||d_i|| * ||theta_i||`` (Li et al., 2018). One-dimensional parameters (biases,
    norm-layer scales) get a zero direction with ``bias="zero"`` (the paper's default), or are
    treated as a single filter with ``bias="filter"``. Draws happen on the CPU (same direction on
    every device) and are cast to each parameter's device and dtype.
    """
    check_choice("bias", bias, ("zero", "filter"))
    gen = _generator(generator, seed)
    out = []
    for p in params:
        d = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.device, p.dtype)
        w = p.detach()
        if p.ndim <= 1:
            if bias == "zero":
                d.zero_()
            else:
                d = d * (w.norm() / d.norm().clamp_min(1e-12))
        else:
            dims = tuple(range(1, p.ndim))
            d_norm = d.norm(dim=dims, keepdim=True).clamp_min(1e-12)
            d = d * (w.norm(dim=dims, keepdim=True) / d_norm)
        out.append(d)
    return out


def _check_direction(name: str, direction, params) -> list[torch.Tensor]:
    direction = list(direction)
    if len(direction) != len(params) or any(d.shape != p.shape for d, p in zip(direction, params)):
        raise ValueError(
            f"{name} must hold one tensor per probed parameter with the same shapes "
            f"({[tuple(p.shape) for p in params]})"
        )
    return [d.to(p.device, p.dtype) for d, p in zip(direction, params)]


@dataclass
class Slice1D:
    """``losses[i] = loss(theta* + alphas[i] d)``; ``center_loss`` is the loss at ``theta*``.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> s = slice_1d(model, lambda m: m.weight.pow(2).sum(), steps=3, seed=0)
    >>> s.alphas.tolist()
    [-1.0, 0.0, 1.0]
    """

    alphas: np.ndarray
    losses: np.ndarray
    center_loss: float
    direction: list[torch.Tensor]


@dataclass
class Slice2D:
    """``losses[i, j] = loss(theta* + alphas[j] d1 + betas[i] d2)`` (rows follow ``betas``).

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> s = slice_2d(model, lambda m: m.weight.pow(2).sum(), steps=3, seed=0)
    >>> s.losses.shape, len(s.directions)
    ((3, 3), 2)
    """

    alphas: np.ndarray
    betas: np.ndarray
    losses: np.ndarray
    center_loss: float
    directions: tuple[list[torch.Tensor], list[torch.Tensor]]


def _eval(loss_fn: LossFn, model: nn.Module, no_grad: bool) -> float:
    with torch.no_grad() if no_grad else contextlib.nullcontext():
        value = loss_fn(model)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise TypeError("loss_fn(model) must return a scalar tensor")
    value = float(value)
    return value if math.isfinite(value) else math.nan


def slice_1d(
    model: nn.Module,
    loss_fn: LossFn,
    *,
    span: float = 1.0,
    steps: int = 21,
    direction: Sequence[torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    params: Iterable[torch.Tensor] | None = None,
    bias: str = "zero",
    no_grad: bool = True,
) -> Slice1D:
    r"""The loss along a line through the current weights: ``f(alpha) = L(theta* + alpha d)``
    for ``alpha`` in ``linspace(-span, span, steps)``.

    ``d`` is a random filter-normalized direction (:func:`filter_normalized_direction`) unless
    given. Non-finite losses are stored as NaN. The weights are restored afterwards.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(3, 1)
    >>> x, y = torch.randn(16, 3), torch.randn(16, 1)
    >>> s = slice_1d(model, lambda m: ((m(x) - y) ** 2).mean(), steps=5, seed=0)
    >>> s.losses.shape, bool(s.losses[2] == s.center_loss)
    ((5,), True)
    """
    _check_loss_fn(loss_fn)
    span = check_number("span", span, low=0.0, low_inclusive=False)
    steps = check_int("steps", steps, low=2)
    ps = _params(model, params)
    gen = _generator(generator, seed)
    d = (
        filter_normalized_direction(ps, generator=gen, bias=bias)
        if direction is None
        else _check_direction("direction", direction, ps)
    )
    alphas = np.linspace(-span, span, steps)
    losses = np.empty(steps)
    with _restored(ps) as saved:
        center = _eval(loss_fn, model, no_grad)
        for i, a in enumerate(alphas):
            with torch.no_grad():
                for p, s, di in zip(ps, saved, d):
                    p.copy_(s + float(a) * di)
            losses[i] = _eval(loss_fn, model, no_grad)
    return Slice1D(alphas, losses, center, d)


def slice_2d(
    model: nn.Module,
    loss_fn: LossFn,
    *,
    span: float = 1.0,
    steps: int = 11,
    directions: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]] | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    params: Iterable[torch.Tensor] | None = None,
    bias: str = "zero",
    no_grad: bool = True,
) -> Slice2D:
    r"""The loss on a plane through the current weights:
    ``f(alpha, beta) = L(theta* + alpha d1 + beta d2)`` on a ``steps x steps`` grid over
    ``[-span, span]^2``, with two independent random filter-normalized directions unless given.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(3, 1)
    >>> x, y = torch.randn(16, 3), torch.randn(16, 1)
    >>> slice_2d(model, lambda m: ((m(x) - y) ** 2).mean(), steps=3, seed=0).losses.shape
    (3, 3)
    """
    _check_loss_fn(loss_fn)
    span = check_number("span", span, low=0.0, low_inclusive=False)
    steps = check_int("steps", steps, low=2)
    ps = _params(model, params)
    gen = _generator(generator, seed)
    if directions is None:
        d1 = filter_normalized_direction(ps, generator=gen, bias=bias)
        d2 = filter_normalized_direction(ps, generator=gen, bias=bias)
    else:
        if len(directions) != 2:
            raise ValueError("directions must be a pair (d1, d2)")
        d1 = _check_direction("directions[0]", directions[0], ps)
        d2 = _check_direction("directions[1]", directions[1], ps)
    alphas = np.linspace(-span, span, steps)
    betas = np.linspace(-span, span, steps)
    losses = np.empty((steps, steps))
    with _restored(ps) as saved:
        center = _eval(loss_fn, model, no_grad)
        for i, b in enumerate(betas):
            for j, a in enumerate(alphas):
                with torch.no_grad():
                    for p, s, u, v in zip(ps, saved, d1, d2):
                        p.copy_(s + float(a) * u + float(b) * v)
                losses[i, j] = _eval(loss_fn, model, no_grad)
    return Slice2D(alphas, betas, losses, center, (d1, d2))


@dataclass
class SharpnessResult:
    """Top Hessian eigenvalue and how the iteration ended.

    ``residual`` is the relative eigen-residual ``||H v - lambda v|| / |lambda|`` of the returned
    eigenvector (power) or its Lanczos estimate; ``converged`` says it fell below ``tol``.

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> r = sharpness(model, lambda m: 2.0 * m.weight.pow(2).sum(), method="lanczos", seed=0)
    >>> round(r.eigenvalue, 6), r.converged
    (4.0, True)
    """

    eigenvalue: float
    n_iter: int
    converged: bool
    residual: float
    eigenvector: list[torch.Tensor]


def _flat_dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    *,
    n_iter: int = 100,
    tol: float = 1e-3,
    method: str = "power",
    generator: torch.Generator | None = None,
    seed: int | None = None,
    params: Iterable[torch.Tensor] | None = None,
) -> SharpnessResult:
    r"""Sharpness: the top eigenvalue of the Hessian of ``loss_fn`` at the current weights.

    Matrix-free, from Hessian-vector products ``H v`` (double back-propagation):

    - ``method="power"``: power iteration ``v <- H v / ||H v||``, estimate ``lambda = v^T H v``
      (the eigenvalue of largest *magnitude*; near a minimum, the top positive one), stopped
      when the eigen-residual ``||H v - lambda v|| <= tol |lambda|`` (a change-based test stops
      too early when the top eigenvalues cluster) or after ``n_iter`` products.
    - ``method="lanczos"``: Lanczos with full re-orthogonalisation, returning the largest
      *algebraic* Ritz value; usually needs far fewer products than the power method when the
      top of the spectrum is clustered. Stopped by the same residual test (Lanczos's estimate
      ``beta_j |s_j|``).

    ``loss_fn`` must be twice differentiable by autograd. The weights are not changed.

    Examples
    --------
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    >>> model = torch.nn.Module(); model.w = w
    >>> h = torch.tensor([3.0, 1.0])
    >>> round(sharpness(model, lambda m: 0.5 * (h * m.w ** 2).sum(), seed=0).eigenvalue, 3)
    3.0
    """
    _check_loss_fn(loss_fn)
    n_iter = check_int("n_iter", n_iter, low=1)
    tol = check_number("tol", tol, low=0.0)
    check_choice("method", method, ("power", "lanczos"))
    ps = _params(model, params)
    gen = _generator(generator, seed)
    v = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.device, p.dtype) for p in ps]
    norm = math.sqrt(float(_flat_dot(v, v)))
    v = [x / norm for x in v]
    with _restored(ps):
        loss = loss_fn(model)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError("loss_fn(model) must return a scalar tensor")
        grads = torch.autograd.grad(loss, ps, create_graph=True, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(ps, grads)]

        def hvp(vec: list[torch.Tensor]) -> list[torch.Tensor]:
            out = torch.autograd.grad(
                _flat_dot(grads, vec), ps, retain_graph=True, allow_unused=True
            )
            return [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(ps, out)]

        if method == "power":
            return _power(hvp, v, n_iter, tol)
        return _lanczos(hvp, v, n_iter, tol)


def _power(hvp, v, n_iter: int, tol: float) -> SharpnessResult:
    eig, residual, it = math.nan, math.inf, 0
    for it in range(1, n_iter + 1):
        hv = hvp(v)
        eig = float(_flat_dot(hv, v))
        hv_norm = math.sqrt(float(_flat_dot(hv, hv)))
        if not math.isfinite(eig) or not math.isfinite(hv_norm):
            return SharpnessResult(math.nan, it, False, math.nan, v)
        if hv_norm == 0.0:
            return SharpnessResult(0.0, it, True, 0.0, v)
        res = math.sqrt(max(hv_norm**2 - eig**2, 0.0))  # ||H v - (v^T H v) v|| for ||v|| = 1
        residual = res / abs(eig) if eig != 0 else math.inf
        if residual <= tol:
            return SharpnessResult(eig, it, True, residual, v)
        v = [h / hv_norm for h in hv]
    return SharpnessResult(eig, it, False, residual, v)


def _lanczos(hvp, q, n_iter: int, tol: float) -> SharpnessResult:
    basis: list[list[torch.Tensor]] = []
    alphas: list[float] = []
    betas: list[float] = []
    eig, residual, it, coeffs = math.nan, math.inf, 0, np.ones(1)
    for it in range(1, n_iter + 1):
        basis.append(q)
        w = hvp(q)
        a = float(_flat_dot(w, q))
        alphas.append(a)
        for _ in range(2):  # full re-orthogonalisation, twice for stability
            for b_vec in basis:
                c = _flat_dot(w, b_vec)
                w = [x - c * y for x, y in zip(w, b_vec)]
        beta = math.sqrt(float(_flat_dot(w, w)))
        if not math.isfinite(a) or not math.isfinite(beta):
            return SharpnessResult(math.nan, it, False, math.nan, q)
        t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        evals, evecs = np.linalg.eigh(t)
        eig, coeffs = float(evals[-1]), evecs[:, -1]
        residual = beta * abs(coeffs[-1]) / abs(eig) if eig != 0 else math.inf
        if residual <= tol or beta <= 1e-12 * max(abs(eig), 1e-300):
            break
        betas.append(beta)
        q = [x / beta for x in w]
    vec = [sum(float(c) * b[i] for c, b in zip(coeffs, basis)) for i in range(len(basis[0]))]
    return SharpnessResult(eig, it, bool(residual <= tol), float(residual), vec)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_slices_1d(
    path: str | Path,
    slices: Mapping[str, Slice1D],
    *,
    title: str = "",
    ylabel: str = "training loss",
    logy: bool = False,
) -> None:
    """One curve per labelled :class:`Slice1D` on a common axis, saved as a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for label, s in slices.items():
        ax.plot(s.alphas, s.losses, label=label, lw=1.6)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step along a filter-normalized direction (alpha)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_slices_2d(
    path: str | Path,
    slices: Mapping[str, Slice2D],
    *,
    ncols: int = 4,
    title: str = "",
    log: bool = True,
) -> None:
    """Filled contours of each labelled :class:`Slice2D` (log10 of the loss by default)."""
    plt = _pyplot()
    n = len(slices)
    if n == 0:
        raise ValueError("slices must not be empty")
    ncols = min(check_int("ncols", ncols, low=1), n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 3.0 * nrows), squeeze=False)
    for ax, (label, s) in zip(axes.flat, slices.items()):
        z = np.asarray(s.losses, dtype=float)
        if log:
            z = np.log10(np.where(z > 0, z, np.nan))
        cs = ax.contourf(s.alphas, s.betas, z, levels=20, cmap="viridis")
        ax.contour(s.alphas, s.betas, z, levels=10, colors="k", linewidths=0.3)
        fig.colorbar(cs, ax=ax, fraction=0.046)
        ax.plot([0], [0], "r+", ms=8)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("alpha", fontsize=7)
        ax.set_ylabel("beta", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title + (" (log10 loss)" if log else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
