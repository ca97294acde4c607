"""Linear operators used with the sparse solvers: finite differences and spectral norms."""

from __future__ import annotations

import torch
from torch import Tensor

from beyondgd.core.validation import check_int

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
    A: Tensor, *, exact_below: int = 400, n_power_iter: int = 300, safety: float = 1.01
) -> Tensor:
    r"""``||A||_2^2`` (largest eigenvalue of ``A^T A``) of a ``(m, n)`` or ``(B, m, n)`` tensor.

    Exact (eigenvalues of the smaller Gram matrix) when ``min(m, n) <= exact_below``; otherwise
    power iteration on ``A^T A`` from a fixed start (deterministic), stopped when the Rayleigh
    quotient changes by less than ``1e-7`` relatively, then multiplied by ``safety`` so that a
    step ``1 / L`` stays safe. Returns a tensor of shape ``()`` or ``(B,)``.

    Examples
    --------
    >>> A = torch.diag(torch.tensor([3.0, 1.0], dtype=torch.float64))
    >>> float(squared_spectral_norm(A))
    9.0
    """
    if not isinstance(A, Tensor) or A.dim() not in (2, 3):
        raise ValueError("A must be a tensor of shape (m, n) or (B, m, n)")
    m, n = A.shape[-2:]
    if min(m, n) <= exact_below:
        G = A @ A.transpose(-1, -2) if m <= n else A.transpose(-1, -2) @ A
        return torch.linalg.eigvalsh(G)[..., -1].clamp_min(0.0)
    gen = torch.Generator(device="cpu").manual_seed(0)
    v = torch.randn(*A.shape[:-2], n, 1, generator=gen, dtype=A.dtype).to(A.device)
    v = v / torch.linalg.vector_norm(v, dim=-2, keepdim=True)
    est = torch.zeros(A.shape[:-2], dtype=A.dtype, device=A.device)
    for it in range(n_power_iter):
        w = A.transpose(-1, -2) @ (A @ v)
        new = (v * w).sum(dim=(-2, -1))
        v = w / torch.linalg.vector_norm(w, dim=-2, keepdim=True).clamp_min(1e-300)
        if it % 10 == 9:
            done = bool(((new - est).abs() <= 1e-7 * new.abs()).all())
            est = new
            if done:
                break
        else:
            est = new
    return est * safety
