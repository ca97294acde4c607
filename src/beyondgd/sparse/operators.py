"""Linear operators used with the sparse solvers: finite differences and spectral norms."""

from __future__ import annotations

import torch
from torch import Tensor

from beyondgd.core.validation import check_int, check_number

__all__ = ["first_difference_matrix", "squared_spectral_norm"]


def first_difference_matrix(
    n: int, *, dtype: torch.dtype = torch.float64, device: str | torch.device | None = None
) -> Tensor:
    r"""The ``(n - 1, n)`` first-difference matrix ``D`` with ``(D x)_i = x_{i+1} - x_i``.

    With ``P = L1`` the penalty ``P(D x)`` is the 1-D (anisotropic) total variation; use it as
    ``solve(A, y, penalty, lam, method="admm", D=first_difference_matrix(n))``.
    ``||D||_2^2 <= 4``.

    Examples
    --------
    >>> first_difference_matrix(3)
    tensor([[-1.,  1.,  0.],
            [ 0., -1.,  1.]], dtype=torch.float64)
    """
    n = check_int("n", n, low=2)
    D = torch.zeros(n - 1, n, dtype=dtype, device=device)
    idx = torch.arange(n - 1, device=device)
    D[idx, idx] = -1.0
    D[idx, idx + 1] = 1.0
    return D


def squared_spectral_norm(
    A: Tensor,
    *,
    exact_below: int = 400,
    n_power_iter: int = 300,
    safety: float = 1.01,
    rtol: float = 1e-6,
) -> Tensor:
    r"""``||A||_2^2`` (largest eigenvalue of ``A^T A``) of a ``(m, n)`` or ``(B, m, n)`` tensor.

    Exact (eigenvalues of the smaller Gram matrix) when ``min(m, n) <= exact_below``; otherwise
    Lanczos with full reorthogonalization on the smaller Gram side (``A A^T`` when ``m < n``,
    applied as two matrix-vector products, never formed) from a fixed start (deterministic),
    stopped after at most ``n_power_iter`` steps or when the largest Ritz value changes by less
    than ``rtol`` relatively, then multiplied by ``safety`` so that a step ``1 / L`` stays safe
    (the Ritz value is never above the true value; on Gaussian matrices of the benchmark sizes
    it is within 0.1% of it after about 40 steps, where power iteration needed several hundred).
    Returns a tensor of shape ``()`` or ``(B,)``.

    Examples
    --------
    >>> A = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    >>> float(squared_spectral_norm(A))
    9.0
    >>> B = torch.randn(500, 800, generator=torch.Generator().manual_seed(0), dtype=A.dtype)
    >>> exact = float(torch.linalg.matrix_norm(B, 2) ** 2)
    >>> exact <= float(squared_spectral_norm(B, exact_below=0)) <= 1.01 * exact
    True
    """
    if not isinstance(A, Tensor) or A.dim() not in (2, 3):
        raise ValueError("A must be a tensor of shape (m, n) or (B, m, n)")
    n_power_iter = check_int("n_power_iter", n_power_iter, low=1)
    safety = check_number("safety", safety, low=1.0)
    rtol = check_number("rtol", rtol, low=0.0)
    m, n = A.shape[-2:]
    if min(m, n) <= exact_below:
        G = A @ A.transpose(-1, -2) if m <= n else A.transpose(-1, -2) @ A
        return torch.linalg.eigvalsh(G)[..., -1].clamp_min(0.0)
    small_rows = m < n
    dim = min(m, n)
    At = A.transpose(-1, -2)

    def gram(v: Tensor) -> Tensor:  # v: (..., dim) -> G v, G the smaller Gram matrix
        if small_rows:
            return ((v.unsqueeze(-2) @ A) @ At).squeeze(-2)
        return ((v.unsqueeze(-2) @ At) @ A).squeeze(-2)

    gen = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(*A.shape[:-2], dim, generator=gen, dtype=torch.float64).to(A)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    Q = [q]
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    est = None
    for _ in range(min(n_power_iter, dim)):
        w = gram(Q[-1])
        alphas.append((w * Q[-1]).sum(-1))
        Qm = torch.stack(Q, dim=-2)  # (..., k, dim)
        for _ in range(2):  # full reorthogonalization, twice is enough
            w = w - ((Qm @ w.unsqueeze(-1)).transpose(-1, -2) @ Qm).squeeze(-2)
        beta = torch.linalg.vector_norm(w, dim=-1)
        T = torch.diag_embed(torch.stack(alphas, dim=-1).double())
        if betas:
            off = torch.stack(betas, dim=-1).double()
            T = T + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
        new = torch.linalg.eigvalsh(T)[..., -1]
        done = est is not None and bool(((new - est).abs() <= rtol * new.abs()).all())
        est = new
        if done or bool((beta <= 1e-12 * new.abs().to(beta.dtype)).all()):
            break
        betas.append(beta)
        Q.append(w / beta.clamp_min(torch.finfo(A.dtype).tiny).unsqueeze(-1))
    return (est * safety).to(A.dtype).clamp_min(0.0)
