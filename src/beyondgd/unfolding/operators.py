"""Linear measurement operators ``A: R^n -> R^m`` for compressed sensing, and fixed analysis
transforms (identity, orthonormal 2-D Haar).

Every operator acts on flat vectors with any leading batch dimensions: ``forward`` maps
``(..., n) -> (..., m)`` and ``adjoint`` maps ``(..., m) -> (..., n)``, with
``<A x, y> = <x, A^T y>``. Operators are :class:`torch.nn.Module` s whose matrices are buffers, so
``op.to(device, dtype)`` moves them and they travel inside a network's ``state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from beyondgd.core import check_finite_tensor, check_int, check_number, make_generator

__all__ = [
    "FiniteDifference2D",
    "FunctionOperator",
    "GaussianCS",
    "Haar2D",
    "LinearOperator",
    "MatrixOperator",
    "haar_analysis_matrix",
]


class LinearOperator(nn.Module):
    r"""A linear map ``A: R^n -> R^m`` with its adjoint; subclass it for your own operator.

    Subclasses call ``super().__init__(in_features, out_features)`` and implement
    :meth:`forward` (``(..., n) -> (..., m)``) and :meth:`adjoint` (``(..., m) -> (..., n)``);
    :meth:`norm`, :meth:`check_adjoint` and :meth:`to_matrix` then come for free.

    Parameters
    ----------
    in_features
        ``n``, the length of a (flattened) signal.
    out_features
        ``m``, the number of measurements.

    Examples
    --------
    >>> import torch
    >>> class Subsample(LinearOperator):
    ...     '''Keep every second entry.'''
    ...     def __init__(self, n):
    ...         super().__init__(n, (n + 1) // 2)
    ...     def forward(self, x):
    ...         return x[..., ::2]
    ...     def adjoint(self, y):
    ...         x = y.new_zeros(*y.shape[:-1], self.in_features)
    ...         x[..., ::2] = y
    ...         return x
    >>> op = Subsample(6)
    >>> op.check_adjoint() < 1e-6, round(op.norm(), 4)
    (True, 1.0)
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features = check_int("in_features", in_features, low=1)
        self.out_features = check_int("out_features", out_features, low=1)

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``, as for the matrix of the operator."""
        return (self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``A x`` for ``x`` of shape ``(..., n)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x)")

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """``A^T y`` for ``y`` of shape ``(..., m)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement adjoint(y)")

    def _dtype_device(
        self, dtype: torch.dtype | None, device: torch.device | str | None
    ) -> tuple[torch.dtype, torch.device]:
        ref = next(iter(self.buffers()), None)
        if ref is None:
            ref = next(iter(self.parameters()), None)
        if dtype is None:
            dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        if device is None:
            device = ref.device if ref is not None else torch.device("cpu")
        return dtype, torch.device(device)

    def _random(self, shape, generator, dtype, device) -> torch.Tensor:
        # Drawn on the CPU so the same seed gives the same probe on every device.
        return torch.randn(*shape, generator=generator, dtype=dtype).to(device)

    @torch.no_grad()
    def norm(
        self,
        n_iter: int = 1000,
        tol: float = 1e-6,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> float:
        r"""Spectral norm ``||A||_2 = sqrt(lambda_max(A^T A))`` by the power method.

        Iterates ``v <- A^T A v / ||A^T A v||`` from a random start until the eigen-residual
        ``||A^T A v - lambda v|| <= tol * lambda`` with ``lambda = ||A v||^2`` (the Rayleigh
        quotient, whose error is then of order ``tol^2``), or for ``n_iter`` iterations.
        """
        n_iter = check_int("n_iter", n_iter, low=1)
        tol = check_number("tol", tol, low=0.0)
        dtype, device = self._dtype_device(dtype, device)
        gen = generator if generator is not None else make_generator(0)
        v = self._random((self.in_features,), gen, dtype, device)
        v = v / torch.linalg.vector_norm(v)
        for _ in range(n_iter):
            w = self.adjoint(self.forward(v))
            lam = float(torch.dot(w, v))  # ||A v||^2
            w_norm = float(torch.linalg.vector_norm(w))
            if w_norm == 0.0:
                return 0.0
            residual = math.sqrt(max(w_norm**2 - lam**2, 0.0))
            v = w / w_norm
            if residual <= tol * lam:
                break
        return float(torch.linalg.vector_norm(self.forward(v)))

    @torch.no_grad()
    def check_adjoint(
        self,
        n_trials: int = 3,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> float:
        r"""The largest relative adjointness error over random ``x, y``.

        ``|<A x, y> - <x, A^T y>| / (||A x|| ||y|| + ||x|| ||A^T y||)``: about machine epsilon
        for a correct adjoint, O(1) for a wrong one. Also checks the output shapes.
        """
        n_trials = check_int("n_trials", n_trials, low=1)
        dtype, device = self._dtype_device(dtype, device)
        gen = generator if generator is not None else make_generator(0)
        worst = 0.0
        for _ in range(n_trials):
            x = self._random((2, self.in_features), gen, dtype, device)
            y = self._random((2, self.out_features), gen, dtype, device)
            ax, aty = self.forward(x), self.adjoint(y)
            if ax.shape != y.shape:
                raise ValueError(
                    f"{type(self).__name__}.forward maps (2, {self.in_features}) to "
                    f"{tuple(ax.shape)}, expected (2, {self.out_features})"
                )
            if aty.shape != x.shape:
                raise ValueError(
                    f"{type(self).__name__}.adjoint maps (2, {self.out_features}) to "
                    f"{tuple(aty.shape)}, expected (2, {self.in_features})"
                )
            lhs, rhs = (ax * y).sum(-1), (x * aty).sum(-1)
            scale = ax.norm(dim=-1) * y.norm(dim=-1) + x.norm(dim=-1) * aty.norm(dim=-1)
            err = (lhs - rhs).abs() / scale.clamp_min(torch.finfo(dtype).tiny)
            worst = max(worst, float(err.max()))
        return worst

    @torch.no_grad()
    def to_matrix(
        self, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """The dense ``(m, n)`` matrix of the operator (applies it to the identity)."""
        dtype, device = self._dtype_device(dtype, device)
        eye = torch.eye(self.in_features, dtype=dtype, device=device)
        return self.forward(eye).T.contiguous()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class MatrixOperator(LinearOperator):
    r"""The operator of a dense matrix ``A`` of shape ``(m, n)``: ``x -> A x``, ``y -> A^T y``.

    The matrix is copied into a buffer (not trained); move it with ``.to(device, dtype)``.

    Examples
    --------
    >>> import torch
    >>> op = MatrixOperator(torch.tensor([[1.0, 2.0], [0.0, 3.0], [1.0, 0.0]]))
    >>> op(torch.tensor([1.0, 1.0]))
    tensor([3., 3., 1.])
    >>> op.adjoint(torch.tensor([1.0, 0.0, 0.0]))
    tensor([1., 2.])
    """

    matrix: torch.Tensor

    def __init__(self, matrix: torch.Tensor):
        check_finite_tensor("matrix", matrix)
        if matrix.ndim != 2:
            raise ValueError(f"matrix must be 2-D (m, n), got shape {tuple(matrix.shape)}")
        super().__init__(matrix.shape[1], matrix.shape[0])
        self.register_buffer("matrix", matrix.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix.T

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self.matrix

    def to_matrix(self, *, dtype=None, device=None) -> torch.Tensor:
        dtype, device = self._dtype_device(dtype, device)
        return self.matrix.to(device=device, dtype=dtype).clone()


class GaussianCS(MatrixOperator):
    r"""Gaussian compressed-sensing matrix ``A`` with i.i.d. ``N(0, 1/m)`` entries.

    With this scaling ``E ||A x||^2 = ||x||^2``. The matrix is drawn on the CPU from ``seed``
    (same matrix on every device), then cast to ``dtype`` and moved to ``device``.

    Parameters
    ----------
    m
        Number of measurements.
    n
        Signal length.
    seed
        Seed of the draw.

    References
    ----------
    .. [1] V. Kouni, Y. Panagakis, "DECONET: an Unfolding Network for Analysis-based Compressed
       Sensing with Generalization Error Bounds", IEEE Trans. Signal Process., 2023,
       arXiv:2205.07050 (the measurement model used there).

    Examples
    --------
    >>> op = GaussianCS(49, 196, seed=0)
    >>> op.shape
    (49, 196)
    >>> op.check_adjoint() < 1e-5
    True
    """

    def __init__(
        self,
        m: int,
        n: int,
        seed: int = 0,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        m = check_int("m", m, low=1)
        n = check_int("n", n, low=1)
        seed = check_int("seed", seed, low=0)
        gen = make_generator(seed)
        a = torch.randn(m, n, generator=gen, dtype=torch.float64) / math.sqrt(m)
        super().__init__(a.to(dtype=dtype, device=device))
        self.seed = seed


def _as_shape(name: str, value: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, Sequence) or not value:
        raise TypeError(f"{name} must be an int or a non-empty sequence of ints, got {value!r}")
    return tuple(check_int(f"{name}[{i}]", v, low=1) for i, v in enumerate(value))


class FunctionOperator(LinearOperator):
    r"""An operator from a pair of functions ``forward`` and ``adjoint`` (matrix-free).

    ``forward`` takes a batch of shape ``(B, *in_shape)`` and returns ``(B, *out_shape)``;
    ``adjoint`` the reverse. The wrapper flattens, so the operator itself acts on flat vectors
    like every other :class:`LinearOperator`. The pair is checked at construction: a few random
    probes of :meth:`check_adjoint`, and a ``ValueError`` naming the operator when the relative
    error exceeds ``adjoint_tol`` (a wrong adjoint would otherwise be trained on silently).

    Parameters
    ----------
    forward, adjoint
        The map and its adjoint, on batched tensors.
    in_shape, out_shape
        Shape of one signal and of one measurement (ints or tuples).
    dtype
        Default dtype for :meth:`norm` / :meth:`check_adjoint` probes (the functions hold no
        tensors this class could inspect).
    name : str, optional
        What error messages call the operator (default ``"FunctionOperator"``).
    check_adjoint : bool, default True
        Probe the pair at construction (on the CPU, in ``dtype``); ``False`` skips it, e.g. for
        functions that only run on another device: call :meth:`check_adjoint` there yourself.
    adjoint_tol : float, optional
        Largest relative error accepted; default ``sqrt(eps)`` of the probe dtype (3e-4 in
        float32, 1.5e-8 in float64). A wrong adjoint gives an error of order 1.

    Examples
    --------
    >>> import torch
    >>> blur = FunctionOperator(
    ...     lambda x: x[:, :-1] + x[:, 1:], lambda y: torch.nn.functional.pad(y, (0, 1))
    ...     + torch.nn.functional.pad(y, (1, 0)), in_shape=5, out_shape=4)
    >>> blur(torch.ones(5))
    tensor([2., 2., 2., 2.])
    >>> blur.check_adjoint() < 1e-6
    True
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        adjoint: Callable[[torch.Tensor], torch.Tensor],
        in_shape: int | Sequence[int],
        out_shape: int | Sequence[int],
        *,
        dtype: torch.dtype | None = None,
        name: str = "FunctionOperator",
        check_adjoint: bool = True,
        adjoint_tol: float | None = None,
    ):
        if not callable(forward):
            raise TypeError(f"forward must be callable, got {type(forward).__name__}")
        if not callable(adjoint):
            raise TypeError(f"adjoint must be callable, got {type(adjoint).__name__}")
        self.in_shape = _as_shape("in_shape", in_shape)
        self.out_shape = _as_shape("out_shape", out_shape)
        super().__init__(math.prod(self.in_shape), math.prod(self.out_shape))
        self._forward_fn = forward
        self._adjoint_fn = adjoint
        self._dtype = dtype
        self.name = name
        if not isinstance(check_adjoint, bool):
            raise TypeError(f"check_adjoint must be a bool, got {type(check_adjoint).__name__}")
        if check_adjoint:
            self._verify_adjoint(adjoint_tol)

    def _verify_adjoint(self, tol: float | None) -> None:
        probe_dtype, _ = self._dtype_device(None, None)
        if tol is None:
            tol = math.sqrt(torch.finfo(probe_dtype).eps)
        tol = check_number("adjoint_tol", tol, low=0.0, low_inclusive=False)
        try:
            error = self.check_adjoint()
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ValueError(
                f"{self.name}: probing forward/adjoint at construction failed: {exc}. Pass "
                "check_adjoint=False to skip the probe"
            ) from exc
        if not error <= tol:
            raise ValueError(
                f"{self.name}: adjoint is not the adjoint of forward: relative error "
                f"|<Ax, y> - <x, A^T y>| / scale = {error:.3g} > adjoint_tol = {tol:.3g} on "
                "random probes. Fix the adjoint function, or pass check_adjoint=False to skip "
                "the check (the training would use a wrong gradient step)"
            )

    def _dtype_device(self, dtype, device):
        return super()._dtype_device(dtype if dtype is not None else self._dtype, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-1]
        out = self._forward_fn(x.reshape(-1, *self.in_shape))
        if tuple(out.shape[1:]) != self.out_shape:
            raise ValueError(
                f"the forward function returned shape {tuple(out.shape)}, expected "
                f"(batch, *out_shape) = (batch, {', '.join(map(str, self.out_shape))})"
            )
        return out.reshape(*batch, self.out_features)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        batch = y.shape[:-1]
        out = self._adjoint_fn(y.reshape(-1, *self.out_shape))
        if tuple(out.shape[1:]) != self.in_shape:
            raise ValueError(
                f"the adjoint function returned shape {tuple(out.shape)}, expected "
                f"(batch, *in_shape) = (batch, {', '.join(map(str, self.in_shape))})"
            )
        return out.reshape(*batch, self.in_features)


def _haar_step(x: torch.Tensor, dim: int) -> torch.Tensor:
    """One orthonormal 1-D Haar step along ``dim``: averages first, then differences."""
    even = x.narrow(dim, 0, x.shape[dim] // 2 * 2)
    pairs = even.unflatten(dim, (x.shape[dim] // 2, 2))
    a, d = pairs.select(dim + 1, 0), pairs.select(dim + 1, 1)
    return torch.cat(((a + d) / math.sqrt(2.0), (a - d) / math.sqrt(2.0)), dim=dim)


def haar_analysis_matrix(
    height: int,
    width: int,
    levels: int = 1,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""The orthonormal 2-D Haar wavelet transform of ``height x width`` images as an
    ``(n, n)`` matrix (``n = height * width``, row-major flattening), ``levels`` levels deep.

    Each level applies the 1-D Haar step to rows and columns of the current low-pass block, so
    ``W^T W = I``. A fixed, non-redundant sparsifying transform for analysis-L1 baselines.

    Examples
    --------
    >>> import torch
    >>> W = haar_analysis_matrix(4, 4, levels=2, dtype=torch.float64)
    >>> torch.allclose(W @ W.T, torch.eye(16, dtype=torch.float64))
    True
    """
    height = check_int("height", height, low=1)
    width = check_int("width", width, low=1)
    levels = check_int("levels", levels, low=0)
    factor = 2**levels
    if height % factor or width % factor:
        raise ValueError(
            f"height and width must be divisible by 2**levels = {factor} for a {levels}-level "
            f"Haar transform, got {height} x {width}"
        )
    n = height * width
    images = torch.eye(n, dtype=torch.float64).reshape(n, height, width)
    h, w = height, width
    for _ in range(levels):
        block = images[:, :h, :w]
        block = _haar_step(_haar_step(block, 1), 2)
        images = images.clone()
        images[:, :h, :w] = block
        h, w = h // 2, w // 2
    # Row j of ``images`` is the transform of basis vector e_j, i.e. column j of the matrix.
    return images.reshape(n, n).T.contiguous().to(dtype=dtype, device=device)


def _ihaar_step(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Inverse of :func:`_haar_step` along ``dim``."""
    half = x.shape[dim] // 2
    a, d = x.narrow(dim, 0, half), x.narrow(dim, half, half)
    even = (a + d) / math.sqrt(2.0), (a - d) / math.sqrt(2.0)
    return torch.stack(even, dim=dim + 1).flatten(dim, dim + 1)


class FiniteDifference2D(LinearOperator):
    r"""Forward differences of ``height x width`` images (anisotropic 2-D total variation).

    ``D x = (x[:, 1:] - x[:, :-1], x[1:, :] - x[:-1, :])`` flattened: the ``height * (width - 1)``
    horizontal differences first, then the ``(height - 1) * width`` vertical ones (row-major).
    With ``P = L1``, ``sum P(D x)`` is the anisotropic TV. :meth:`solve_shifted` solves
    ``(I + rho D^T D) x = r`` exactly with the orthonormal DCT-II (``D^T D`` is the Neumann
    Laplacian, diagonal in that basis), which is ADMM's ``x``-step for denoising.
    ``squared_norm_bound = 8`` bounds ``||D||_2^2``.

    Examples
    --------
    >>> import torch
    >>> op = FiniteDifference2D(2, 3)
    >>> op(torch.tensor([1.0, 2.0, 4.0, 1.0, 1.0, 1.0]))
    tensor([ 1.,  2.,  0.,  0.,  0., -1., -3.])
    >>> op.check_adjoint(dtype=torch.float64) < 1e-12
    True
    """

    squared_norm_bound = 8.0

    def __init__(self, height: int, width: int):
        self.height = check_int("height", height, low=2)
        self.width = check_int("width", width, low=2)
        h, w = self.height, self.width
        super().__init__(h * w, h * (w - 1) + (h - 1) * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img = x.reshape(*x.shape[:-1], self.height, self.width)
        dh = img[..., :, 1:] - img[..., :, :-1]
        dv = img[..., 1:, :] - img[..., :-1, :]
        return torch.cat((dh.flatten(-2), dv.flatten(-2)), dim=-1)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        h, w = self.height, self.width
        nh = h * (w - 1)
        dh = y[..., :nh].reshape(*y.shape[:-1], h, w - 1)
        dv = y[..., nh:].reshape(*y.shape[:-1], h - 1, w)
        out = y.new_zeros(*y.shape[:-1], h, w)
        out[..., :, :-1] -= dh
        out[..., :, 1:] += dh
        out[..., :-1, :] -= dv
        out[..., 1:, :] += dv
        return out.flatten(-2)

    def gram_eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of ``D^T D`` in the orthonormal 2-D DCT-II basis, ``(height, width)``."""
        lh = 2.0 - 2.0 * torch.cos(
            math.pi * torch.arange(self.width, dtype=torch.float64) / self.width
        )
        lv = 2.0 - 2.0 * torch.cos(
            math.pi * torch.arange(self.height, dtype=torch.float64) / self.height
        )
        return lv[:, None] + lh[None, :]

    def solve_shifted(self, rhs: torch.Tensor, rho: float) -> torch.Tensor:
        """``(I + rho D^T D)^{-1} rhs`` for ``rhs`` of shape ``(..., height * width)`` (exact;
        the DCT runs through scipy on the CPU)."""
        from scipy import fft

        rho = check_number("rho", rho, low=0.0)
        img = rhs.detach().cpu().double().reshape(*rhs.shape[:-1], self.height, self.width)
        coef = fft.dctn(img.numpy(), axes=(-2, -1), norm="ortho")
        coef /= (1.0 + rho * self.gram_eigenvalues()).numpy()
        out = fft.idctn(coef, axes=(-2, -1), norm="ortho")
        return torch.from_numpy(out).reshape(rhs.shape).to(dtype=rhs.dtype, device=rhs.device)

    def extra_repr(self) -> str:
        return f"height={self.height}, width={self.width}"


class Haar2D(LinearOperator):
    r"""The orthonormal 2-D Haar wavelet transform, matrix-free (``W^T W = W W^T = I``).

    Same coefficient layout as :func:`haar_analysis_matrix` (``Haar2D(h, w, L).to_matrix()``
    equals it): each level transforms rows and columns of the current low-pass block, whose
    ``height / 2^L x width / 2^L`` top-left corner holds the approximation in the end.
    :meth:`detail_mask` marks the other (detail) coefficients, the ones a wavelet-thresholding
    denoiser shrinks. The adjoint is the inverse.

    Examples
    --------
    >>> import torch
    >>> W = Haar2D(4, 4, levels=2)
    >>> x = torch.arange(16.0, dtype=torch.float64)
    >>> torch.allclose(W.adjoint(W(x)), x)
    True
    """

    def __init__(self, height: int, width: int, levels: int = 1):
        self.height = check_int("height", height, low=1)
        self.width = check_int("width", width, low=1)
        self.levels = check_int("levels", levels, low=0)
        factor = 2**self.levels
        if self.height % factor or self.width % factor:
            raise ValueError(
                f"height and width must be divisible by 2**levels = {factor}, got "
                f"{self.height} x {self.width}"
            )
        super().__init__(self.height * self.width, self.height * self.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img = x.reshape(*x.shape[:-1], self.height, self.width).clone()
        r, c = img.dim() - 2, img.dim() - 1
        h, w = self.height, self.width
        for _ in range(self.levels):
            img[..., :h, :w] = _haar_step(_haar_step(img[..., :h, :w], r), c)
            h, w = h // 2, w // 2
        return img.flatten(-2)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        img = y.reshape(*y.shape[:-1], self.height, self.width).clone()
        r, c = img.dim() - 2, img.dim() - 1
        for level in reversed(range(self.levels)):
            h, w = self.height >> level, self.width >> level
            img[..., :h, :w] = _ihaar_step(_ihaar_step(img[..., :h, :w], c), r)
        return img.flatten(-2)

    def detail_mask(self) -> torch.Tensor:
        """Boolean ``(height * width,)``: True for detail coefficients, False for the
        approximation block."""
        mask = torch.ones(self.height, self.width, dtype=torch.bool)
        mask[: self.height >> self.levels, : self.width >> self.levels] = False
        return mask.flatten()

    def extra_repr(self) -> str:
        return f"height={self.height}, width={self.width}, levels={self.levels}"
