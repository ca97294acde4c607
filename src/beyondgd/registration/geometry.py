r"""Rotations and rigid motions: the exponential and logarithm maps of SO(3) and SE(3).

A rotation is a ``(..., 3, 3)`` matrix, a rigid motion a ``(..., 4, 4)`` homogeneous matrix, and
their tangent vectors are ``omega`` in :math:`\mathbb{R}^3` (axis times angle) and
``xi = (omega, v)`` in :math:`\mathbb{R}^6`. Every function is batched over leading dimensions,
differentiable (also at the identity, where the series expansions are used) and runs on the input's
device and dtype.

.. math::

    \exp(\omega) = I + \frac{\sin\theta}{\theta}[\omega]_\times
        + \frac{1-\cos\theta}{\theta^2}[\omega]_\times^2, \qquad \theta = \|\omega\|

(Rodrigues), :math:`\exp(\xi) = \begin{pmatrix}\exp(\omega) & V v\\ 0 & 1\end{pmatrix}` with
:math:`V = I + \frac{1-\cos\theta}{\theta^2}[\omega]_\times
+ \frac{\theta-\sin\theta}{\theta^3}[\omega]_\times^2`. The logarithm goes through the unit
quaternion of the rotation (Shepperd's method), which stays accurate near angle :math:`\pi` where
the trace formula loses all precision. Points are row vectors: ``R`` acts on a cloud ``X`` of shape
``(N, 3)`` as ``X @ R.T``.

References
----------
.. [1] J. Sola, J. Deray, D. Atchuthan, "A micro Lie theory for state estimation in robotics",
   arXiv:1812.01537, 2018.
.. [2] S. W. Shepperd, "Quaternion from rotation matrix", J. Guidance and Control 1(3), 1978.
"""

from __future__ import annotations

import torch

from beyondgd.core import check_finite_tensor, check_int

__all__ = [
    "geodesic_error",
    "hat",
    "matrix_to_quaternion",
    "random_rotations",
    "se3_exp",
    "se3_log",
    "so3_exp",
    "so3_log",
    "transform_points",
    "vee",
]

_SMALL = 1e-4  # below this angle (rad) the series expansions are used


def _check_last(name: str, x: object, shape: tuple[int, ...]) -> None:
    """Type and trailing-shape check (no finiteness scan: these maps run inside solver loops)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got {type(x).__name__}")
    if x.ndim < len(shape) or tuple(x.shape[x.ndim - len(shape) :]) != shape:
        want = "(..., " + ", ".join(map(str, shape)) + ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")


def hat(omega: torch.Tensor) -> torch.Tensor:
    r"""The skew-symmetric matrix :math:`[\omega]_\times` with :math:`[\omega]_\times x =
    \omega \times x`; ``(..., 3) -> (..., 3, 3)``."""
    _check_last("omega", omega, (3,))
    x, y, z = omega.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack(
        [torch.stack([o, -z, y], -1), torch.stack([z, o, -x], -1), torch.stack([-y, x, o], -1)],
        -2,
    )


def vee(m: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hat` (of the skew part of ``m``); ``(..., 3, 3) -> (..., 3)``."""
    return 0.5 * torch.stack(
        [m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1
    )


def _coefficients(omega: torch.Tensor):
    """sin(t)/t, (1-cos t)/t^2, (t - sin t)/t^3 with series near 0 (safe for autograd)."""
    t2 = (omega * omega).sum(-1)
    small = t2 < _SMALL**2
    t2_safe = torch.where(small, torch.ones_like(t2), t2)
    t = torch.sqrt(t2_safe)
    a = torch.where(small, 1 - t2 / 6 + t2 * t2 / 120, torch.sin(t) / t)
    b = torch.where(small, 0.5 - t2 / 24 + t2 * t2 / 720, (1 - torch.cos(t)) / t2_safe)
    c = torch.where(small, 1.0 / 6 - t2 / 120 + t2 * t2 / 5040, (t - torch.sin(t)) / (t2_safe * t))
    return a, b, c, t2


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    r"""Rotation matrix :math:`\exp([\omega]_\times)` of axis-angle vectors ``(..., 3)``.

    Examples
    --------
    >>> import math, torch
    >>> R = so3_exp(torch.tensor([0.0, 0.0, math.pi / 2]))
    >>> torch.allclose(R @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    True
    """
    _check_last("omega", omega, (3,))
    a, b, _, _ = _coefficients(omega)
    k = hat(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def matrix_to_quaternion(rotation: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(w, x, y, z)`` with ``w >= 0`` of rotation matrices ``(..., 3, 3)``.

    Shepperd's method: the largest of the four candidate pivots is used, so the result is accurate
    for every rotation (also near the angle pi).
    """
    _check_last("rotation", rotation, (3, 3))
    m = rotation
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    tr = m00 + m11 + m22
    pivots = torch.stack([tr, m00, m11, m22], -1)
    best = pivots.argmax(-1)
    # Candidate (unnormalised) quaternions, each well conditioned when its pivot is the largest.
    q0 = torch.stack(
        [
            1 + tr,
            m[..., 2, 1] - m[..., 1, 2],
            m[..., 0, 2] - m[..., 2, 0],
            m[..., 1, 0] - m[..., 0, 1],
        ],
        -1,
    )
    q1 = torch.stack(
        [
            m[..., 2, 1] - m[..., 1, 2],
            1 + m00 - m11 - m22,
            m[..., 0, 1] + m[..., 1, 0],
            m[..., 0, 2] + m[..., 2, 0],
        ],
        -1,
    )
    q2 = torch.stack(
        [
            m[..., 0, 2] - m[..., 2, 0],
            m[..., 0, 1] + m[..., 1, 0],
            1 - m00 + m11 - m22,
            m[..., 1, 2] + m[..., 2, 1],
        ],
        -1,
    )
    q3 = torch.stack(
        [
            m[..., 1, 0] - m[..., 0, 1],
            m[..., 0, 2] + m[..., 2, 0],
            m[..., 1, 2] + m[..., 2, 1],
            1 - m00 - m11 + m22,
        ],
        -1,
    )
    cand = torch.stack([q0, q1, q2, q3], -2)  # (..., 4, 4)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def so3_log(rotation: torch.Tensor) -> torch.Tensor:
    r"""Axis-angle vector ``(..., 3)`` (angle in :math:`[0, \pi]`) of rotation matrices.

    Computed from the unit quaternion ``(w, v)`` as :math:`2\,\mathrm{atan2}(\|v\|, w)\,
    v/\|v\|`, accurate over the whole range (the inverse of :func:`so3_exp` for angles below pi).
    """
    q = matrix_to_quaternion(rotation)
    w, v = q[..., 0], q[..., 1:]
    s2 = (v * v).sum(-1)
    small = s2 < 1e-12
    s = torch.sqrt(torch.where(small, torch.ones_like(s2), s2))
    theta = 2 * torch.atan2(s, w)
    # near the identity theta / sin(theta/2) -> 2 / w
    factor = torch.where(small, 2 / w.clamp_min(1e-12), theta / s)
    return factor[..., None] * v


def geodesic_error(
    rotation_a: torch.Tensor, rotation_b: torch.Tensor, *, degrees: bool = False
) -> torch.Tensor:
    r"""Rotation angle of :math:`R_a^\top R_b` (the geodesic distance on SO(3)), batched.

    With :math:`M = R_a^\top R_b`, :math:`\theta = \mathrm{atan2}(\|\mathrm{vee}(M)\|,
    (\mathrm{tr} M - 1)/2)` where :math:`\mathrm{vee}(M) = \sin\theta\,\mathrm{axis}`: accurate near
    0 and pi (unlike ``acos`` of the trace), and symmetric in its arguments. Either argument may
    also be a ``(..., 4, 4)`` rigid motion (its rotation block is used).

    Examples
    --------
    >>> import torch
    >>> a = so3_exp(torch.tensor([0.1, 0.2, 0.3]))
    >>> float(geodesic_error(a, torch.eye(3))) == float(geodesic_error(torch.eye(3), a))
    True
    """
    for name, r in (("rotation_a", rotation_a), ("rotation_b", rotation_b)):
        check_finite_tensor(name, r)
        if r.ndim < 2 or r.shape[-1] != r.shape[-2] or r.shape[-1] not in (3, 4):
            raise ValueError(
                f"{name} must have shape (..., 3, 3) or (..., 4, 4), got {tuple(r.shape)}"
            )
    ra, rb = rotation_a[..., :3, :3], rotation_b[..., :3, :3]
    m = ra.transpose(-1, -2) @ rb
    sin = torch.linalg.vector_norm(vee(m), dim=-1)
    cos = 0.5 * (m.diagonal(dim1=-2, dim2=-1).sum(-1) - 1)
    theta = torch.atan2(sin, cos)
    return torch.rad2deg(theta) if degrees else theta


def se3_exp(xi: torch.Tensor) -> torch.Tensor:
    r"""Rigid motion ``(..., 4, 4)`` of twists ``xi = (omega, v)`` of shape ``(..., 6)``."""
    _check_last("xi", xi, (6,))
    omega, v = xi[..., :3], xi[..., 3:]
    a, b, c, _ = _coefficients(omega)
    k = hat(omega)
    k2 = k @ k
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device)
    rot = eye + a[..., None, None] * k + b[..., None, None] * k2
    jac = eye + b[..., None, None] * k + c[..., None, None] * k2
    t = (jac @ v[..., None])[..., 0]
    top = torch.cat([rot, t[..., None]], -1)
    bottom = torch.zeros(*xi.shape[:-1], 1, 4, dtype=xi.dtype, device=xi.device)
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], -2)


def se3_log(motion: torch.Tensor) -> torch.Tensor:
    r"""Twist ``(..., 6) = (omega, v)`` of rigid motions ``(..., 4, 4)`` (inverse of
    :func:`se3_exp`): :math:`v = V^{-1} t`, :math:`V^{-1} = I - \tfrac12[\omega]_\times +
    \frac{1}{\theta^2}\left(1 - \frac{a}{2b}\right)[\omega]_\times^2` with the coefficients
    ``a = sin(theta)/theta``, ``b = (1-cos(theta))/theta^2``."""
    _check_last("motion", motion, (4, 4))
    omega = so3_log(motion[..., :3, :3])
    t = motion[..., :3, 3]
    a, b, _, t2 = _coefficients(omega)
    small = t2 < _SMALL**2
    t2_safe = torch.where(small, torch.ones_like(t2), t2)
    d = torch.where(small, 1.0 / 12 + t2 / 720, (1 - a / (2 * b)) / t2_safe)
    k = hat(omega)
    eye = torch.eye(3, dtype=motion.dtype, device=motion.device)
    vinv = eye - 0.5 * k + d[..., None, None] * (k @ k)
    return torch.cat([omega, (vinv @ t[..., None])[..., 0]], -1)


def transform_points(transform: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply rotations ``(..., 3, 3)`` or rigid motions ``(..., 4, 4)`` to clouds ``(..., N, 3)``
    (row vectors: ``points @ R.T + t``)."""
    if not isinstance(transform, torch.Tensor) or transform.shape[-2:] not in ((3, 3), (4, 4)):
        raise ValueError("transform must be a tensor of shape (..., 3, 3) or (..., 4, 4)")
    _check_last("points", points, (3,))
    rot = transform[..., :3, :3]
    out = points @ rot.transpose(-1, -2)
    if transform.shape[-1] == 4:
        out = out + transform[..., None, :3, 3]
    return out


def random_rotations(
    n: int,
    *,
    angles: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """``n`` random rotations ``(n, 3, 3)``.

    With ``angles`` (radians, shape ``(n,)``) the axes are uniform on the sphere and the angles
    are exactly those given; without, the rotations are uniform (Haar) on SO(3) (normalised
    Gaussian quaternions).
    """
    n = check_int("n", n, low=0)
    if angles is None:
        q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
        q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
        q = torch.where(q[:, :1] < 0, -q, q)
        theta = 2 * torch.atan2(torch.linalg.vector_norm(q[:, 1:], dim=-1), q[:, 0])
        axis = q[:, 1:] / torch.linalg.vector_norm(q[:, 1:], dim=-1, keepdim=True).clamp_min(1e-300)
        omega = axis * theta[:, None]
    else:
        angles = check_finite_tensor("angles", angles)
        if angles.shape != (n,):
            raise ValueError(f"angles must have shape ({n},), got {tuple(angles.shape)}")
        axis = torch.randn(n, 3, generator=generator, dtype=torch.float64)
        axis = axis / torch.linalg.vector_norm(axis, dim=-1, keepdim=True)
        omega = axis * angles.to(torch.float64)[:, None]
    return so3_exp(omega).to(dtype=dtype, device=device)
