r"""Iterative registration solvers, batched: damped Gauss-Newton on a residual, Kabsch, and ICP.

Gauss-Newton minimizes :math:`E(w) = \|r(w)\|^2` for a residual :math:`r` (a learned feature
difference :math:`g(R X) - g(Y)` in PointNetLK-style registration) by linearising on the manifold:
with the Jacobian :math:`J = \partial r(w \oplus \xi)/\partial \xi|_{\xi=0}`,

.. math::

    \xi = -(J^\top J + \lambda\,\bar d\,I)^{-1} J^\top r, \qquad w \leftarrow w \oplus \xi,

where :math:`\bar d = \mathrm{tr}(J^\top J)/p` makes the damping :math:`\lambda` scale-free,
:math:`\|\xi\|` is clipped to ``max_step`` and :math:`\oplus` is ``+`` (Euclidean),
:math:`\exp(\xi) R` (SO(3)) or :math:`\exp(\xi) T` (SE(3)). With the residual built from a network
the iterations are differentiable (``create_graph=True``), which is how the unrolled baseline of
the registration trainer learns. This is the inverse-compositional Lucas-Kanade / PointNetLK step
with an exact forward-mode Jacobian instead of PointNetLK's finite differences (both offered).

ICP (point-to-point) alternates nearest-neighbour correspondences (a KD-tree per target cloud:
compiled with numba where it is installed, else ``scipy.spatial.cKDTree``) and the closed-form
rigid fit of Kabsch/Umeyama:
:math:`\min_{R,t} \sum_i w_i\|R p_i + t - q_i\|^2`, solved by the SVD of the weighted
cross-covariance with the reflection fix :math:`\mathrm{diag}(1, 1, \det(VU^\top))`.

References
----------
.. [1] Y. Aoki, H. Goforth, R. A. Srivatsan, S. Lucey, "PointNetLK: Robust & Efficient Point Cloud
   Registration using PointNet", CVPR 2019.
.. [2] P. J. Besl, N. D. McKay, "A Method for Registration of 3-D Shapes", IEEE TPAMI 14(2), 1992.
.. [3] W. Kabsch, "A solution for the best rotation to relate two sets of vectors", Acta Cryst.
   A32, 1976; S. Umeyama, IEEE TPAMI 13(4), 1991.
.. [4] S. Baker, I. Matthews, "Lucas-Kanade 20 Years On: A Unifying Framework", IJCV 2004.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.autograd.forward_ad as fwAD

from beyondgd.core import check_choice, check_finite_tensor, check_int, check_number
from beyondgd.registration.geometry import hat, se3_exp, so3_exp

__all__ = [
    "GaussNewtonResult",
    "ICPResult",
    "MANIFOLDS",
    "gauss_newton",
    "icp",
    "kabsch",
]

MANIFOLDS = ("euclidean", "so3", "se3")

Residual = Callable[[torch.Tensor], torch.Tensor]


def _retract(manifold: str, w: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    if manifold == "euclidean":
        return w + xi
    if manifold == "so3":
        return so3_exp(xi) @ w
    return se3_exp(xi) @ w


def _retract_first_order(manifold: str, w: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """``(I + xi^) w``: the same derivative at ``xi = 0`` as the exponential, with fewer ops
    (used for forward-mode Jacobians)."""
    if manifold == "euclidean":
        return w + xi
    if manifold == "so3":
        return w + hat(xi) @ w
    top = torch.cat([hat(xi[..., :3]), xi[..., 3:, None]], -1)  # (B, 3, 4)
    twist = torch.cat([top, torch.zeros_like(top[..., :1, :])], -2)
    return w + twist @ w


def _tangent_dim(manifold: str, w: torch.Tensor) -> int:
    return {"so3": 3, "se3": 6}.get(manifold, w.shape[-1] if w.ndim > 1 else 0)


def _check_point(manifold: str, w0: object) -> torch.Tensor:
    w0 = check_finite_tensor("w0", w0)
    want = {"euclidean": None, "so3": (3, 3), "se3": (4, 4)}[manifold]
    if manifold == "euclidean":
        if w0.ndim != 2 or w0.shape[0] == 0 or w0.shape[1] == 0:
            raise ValueError(
                f"w0 must have shape (B, d) for manifold='euclidean', got {tuple(w0.shape)}"
            )
    elif w0.ndim != 3 or tuple(w0.shape[1:]) != want or w0.shape[0] == 0:
        raise ValueError(
            f"w0 must have shape (B, {want[0]}, {want[1]}) for manifold={manifold!r}, "
            f"got {tuple(w0.shape)}"
        )
    return w0


def _jacobian(residual, manifold, w, r, p, method, fd_step):
    """J (B, K, p) of xi -> residual(w (+) xi) at xi = 0."""
    b = w.shape[0]
    cols = []
    for j in range(p):
        e = torch.zeros(b, p, dtype=w.dtype, device=w.device)
        e[:, j] = 1
        if method == "forward":
            with fwAD.dual_level():
                with warnings.catch_warnings():
                    # torch loads its jit-scripted jvp decompositions on first use (deprecated)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    xi = fwAD.make_dual(torch.zeros_like(e), e)
                out = residual(_retract_first_order(manifold, w, xi))
                tangent = fwAD.unpack_dual(out).tangent
            if tangent is None:  # the residual does not depend on w
                tangent = torch.zeros_like(r)
            cols.append(tangent)
        else:
            cols.append((residual(_retract(manifold, w, fd_step * e)) - r) / fd_step)
    return torch.stack(cols, -1)


@dataclass
class GaussNewtonResult:
    """Output of :func:`gauss_newton`.

    ``w``: the solutions ``(B, ...)``; ``energy``: :math:`\\|r(w)\\|^2` at them ``(B,)``;
    ``iterations``: steps taken per datum ``(B,)``; ``converged``: step norm fell below ``tol``
    ``(B,)``; ``energies``: energy before each step and at the end ``(n + 1, B)``;
    ``iterates``: the list of iterates (only with ``return_iterates=True``, for unrolled losses).

    Examples
    --------
    >>> import torch
    >>> res = gauss_newton(lambda w: w - 1.0, torch.zeros(2, 3), n_iters=1, damping=0.0)
    >>> res.w.tolist(), res.energy.tolist()
    ([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], [0.0, 0.0])
    """

    w: torch.Tensor
    energy: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    energies: torch.Tensor
    iterates: list[torch.Tensor] | None = None


def gauss_newton(
    residual: Residual,
    w0: torch.Tensor,
    *,
    manifold: str = "euclidean",
    n_iters: int = 10,
    tol: float | None = None,
    damping: float = 1e-4,
    max_step: float | None = None,
    jacobian: str | Callable[[torch.Tensor], torch.Tensor] = "forward",
    fd_step: float = 1e-3,
    create_graph: bool = False,
    jacobian_grad: bool = True,
    return_iterates: bool = False,
) -> GaussNewtonResult:
    r"""Batched damped Gauss-Newton on :math:`E(w) = \|r(w)\|^2` (see the module docstring).

    Parameters
    ----------
    residual
        ``residual(w) -> (B, K)`` for a batch of points ``w`` (``(B, d)``, ``(B, 3, 3)`` or
        ``(B, 4, 4)``); datum ``b``'s residual must depend only on ``w[b]``.
    w0
        Starting points, ``(B, d)`` / ``(B, 3, 3)`` / ``(B, 4, 4)`` for ``manifold``
        ``"euclidean"`` / ``"so3"`` / ``"se3"``.
    n_iters
        Maximum number of steps (a fixed count when ``tol`` is ``None``).
    tol
        Stop updating a datum once its step norm is below ``tol``; stop when all have.
    damping
        :math:`\lambda \ge 0` (relative to the mean diagonal of :math:`J^\top J`). 0 is pure
        Gauss-Newton, which solves a linear least-squares problem in one step.
    max_step
        Clip the step norm (radians for rotations) to this value.
    jacobian
        ``"forward"`` (exact, forward-mode autodiff; one pass per tangent dimension),
        ``"finite-difference"`` (PointNetLK's choice, step ``fd_step``) or a callable
        ``jacobian(w) -> (B, K, p)`` (an analytic Jacobian in the tangent coordinates).
    create_graph
        Keep the graph through the iterations (for training by unrolling); otherwise every
        iterate is detached and no graph is built.
    jacobian_grad
        With ``create_graph``: also differentiate through the Jacobian (``False`` computes it
        without a graph at the detached iterate, so gradients flow through the residuals only;
        cheaper). Differentiating through a ``"finite-difference"`` Jacobian of a max-pooled
        network amplifies by ``1/fd_step`` the jumps of the pooled argmax: its parameter
        gradients are unusable for training; the forward-mode Jacobian has none of that.
    return_iterates
        Also return the list of iterates ``[w_1, ..., w_n]``.

    Examples
    --------
    A linear residual: one undamped step is exact.

    >>> import torch
    >>> A = torch.tensor([[2.0, 0.0], [1.0, 3.0], [0.0, 1.0]], dtype=torch.float64)
    >>> b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    >>> res = gauss_newton(lambda w: w @ A.T - b, torch.zeros(1, 2, dtype=torch.float64),
    ...                    n_iters=1, damping=0.0)
    >>> torch.allclose(res.w[0], torch.linalg.lstsq(A, b).solution)
    True

    References
    ----------
    .. [1] Y. Aoki et al., "PointNetLK", CVPR 2019.
    .. [2] S. Baker, I. Matthews, "Lucas-Kanade 20 Years On", IJCV 2004.
    """
    if not callable(residual):
        raise TypeError(f"residual must be callable, got {type(residual).__name__}")
    manifold = check_choice("manifold", manifold, MANIFOLDS)
    w = _check_point(manifold, w0)
    n_iters = check_int("n_iters", n_iters, low=0)
    if tol is not None:
        tol = check_number("tol", tol, low=0)
    damping = check_number("damping", damping, low=0)
    if max_step is not None:
        max_step = check_number("max_step", max_step, low=0, low_inclusive=False)
    if not callable(jacobian):
        jacobian = check_choice("jacobian", jacobian, ("forward", "finite-difference"))
    fd_step = check_number("fd_step", fd_step, low=0, low_inclusive=False)

    p = _tangent_dim(manifold, w)
    b = w.shape[0]
    grad_ctx = torch.enable_grad() if create_graph else torch.no_grad()
    iterations = torch.zeros(b, dtype=torch.long, device=w.device)
    active = torch.ones(b, dtype=torch.bool, device=w.device)
    energies, iterates = [], []
    with grad_ctx:
        if not create_graph:
            w = w.detach()
        r = residual(w)
        if not isinstance(r, torch.Tensor) or r.ndim != 2 or r.shape[0] != b:
            got = tuple(r.shape) if isinstance(r, torch.Tensor) else type(r).__name__
            raise ValueError(f"residual must return shape (B, K) with B = {b}, got {got}")
        eye = torch.eye(p, dtype=r.dtype, device=r.device)
        for _ in range(n_iters):
            energies.append(r.square().sum(-1))
            if callable(jacobian):
                jac = jacobian(w)
                if tuple(jac.shape) != (b, r.shape[1], p):
                    raise ValueError(
                        f"jacobian must return shape (B, K, p) = {(b, r.shape[1], p)}, "
                        f"got {tuple(jac.shape)}"
                    )
            elif create_graph and not jacobian_grad:
                with torch.no_grad():
                    wd, rd = w.detach(), r.detach()
                    jac = _jacobian(residual, manifold, wd, rd, p, jacobian, fd_step)
            else:
                jac = _jacobian(residual, manifold, w, r, p, jacobian, fd_step)
            jtj = jac.transpose(1, 2) @ jac
            jtr = (jac.transpose(1, 2) @ r[..., None])[..., 0]
            scale = jtj.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-12)
            a = jtj + (damping * scale + 1e-12)[:, None, None] * eye
            step = -torch.linalg.solve(a, jtr)
            norm = torch.linalg.vector_norm(step, dim=-1)
            if max_step is not None:
                step = step * (max_step / norm.clamp_min(max_step))[:, None]
            if tol is not None:
                done = norm < tol
                step = torch.where((active & ~done)[:, None], step, torch.zeros_like(step))
                iterations = iterations + (active & ~done).long()
                active = active & ~done
            else:
                iterations = iterations + 1
            w = _retract(manifold, w, step)
            if not create_graph:
                w = w.detach()
            if return_iterates:
                iterates.append(w)
            r = residual(w)
            if tol is not None and not bool(active.any()):
                break
        final = r.square().sum(-1)
        energies.append(final)
    return GaussNewtonResult(
        w=w,
        energy=final,
        iterations=iterations,
        converged=~active if tol is not None else torch.zeros_like(active),
        energies=torch.stack(energies, 0),
        iterates=iterates if return_iterates else None,
    )


def kabsch(
    source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Rigid fit :math:`\min_{R,t}\sum_i w_i\|R p_i + t - q_i\|^2` for corresponding points.

    Batched over leading dimensions: ``source``, ``target`` ``(..., N, 3)``, ``weights``
    ``(..., N)``; returns ``R`` ``(..., 3, 3)`` (a proper rotation) and ``t`` ``(..., 3)``.
    Differentiable (through the SVD) where the singular values are distinct.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.registration import so3_exp
    >>> P = torch.randn(20, 3, dtype=torch.float64)
    >>> R = so3_exp(torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64))
    >>> R_hat, t_hat = kabsch(P, P @ R.T + 1.0)
    >>> torch.allclose(R_hat, R) and torch.allclose(t_hat, torch.ones(3, dtype=torch.float64))
    True

    References
    ----------
    .. [1] W. Kabsch, Acta Cryst. A32, 1976; S. Umeyama, IEEE TPAMI 13(4), 1991.
    """
    _check_cloud("source", source)
    _check_cloud("target", target)
    if source.shape != target.shape:
        raise ValueError(
            f"source and target must be corresponding clouds of the same shape, got "
            f"{tuple(source.shape)} and {tuple(target.shape)}"
        )
    if weights is None:
        weights = torch.ones(source.shape[:-1], dtype=source.dtype, device=source.device)
    else:
        weights = check_finite_tensor("weights", weights)
        if weights.shape != source.shape[:-1] or bool((weights < 0).any()):
            raise ValueError(
                f"weights must be non-negative with shape {tuple(source.shape[:-1])}, "
                f"got {tuple(weights.shape)}"
            )
    return _kabsch(source, target, weights)


def _kabsch(p, q, w, center: bool = True):
    wsum = w.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    wn = (w / wsum)[..., None]
    if center:
        mp, mq = (wn * p).sum(-2), (wn * q).sum(-2)
        p, q = p - mp[..., None, :], q - mq[..., None, :]
    rot = _proper_rotation((wn * p).transpose(-1, -2) @ q)  # of sum w p q^T
    if not center:
        return rot, torch.zeros_like(rot[..., 0])
    t = mq - (rot @ mp[..., None])[..., 0]
    return rot, t


def _proper_rotation(cov):
    """The rotation maximising ``tr(R cov)``: ``V diag(1, 1, det(V U^T)) U^T``."""
    u, _, vh = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(vh.transpose(-1, -2) @ u.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    diag = torch.ones(*d.shape, 3, dtype=cov.dtype, device=cov.device)
    diag[..., 2] = d
    return vh.transpose(-1, -2) @ (diag[..., None] * u.transpose(-1, -2))


def _check_cloud(name: str, x: object, *, batched_ok: bool = True) -> torch.Tensor:
    x = check_finite_tensor(name, x)
    if x.ndim < 2 or x.shape[-1] != 3:
        raise ValueError(
            f"{name} must be a point cloud of shape (N, 3) or (B, N, 3) (3-D points), "
            f"got {tuple(x.shape)}"
        )
    if x.shape[-2] == 0:
        raise ValueError(f"{name} is empty (0 points); a cloud needs at least 3 points")
    return x


class _CachedNearest:
    """Exact nearest target point of every moved source point, reusing the last KD-tree answer.

    A point last queried at ``ref`` (in its pair's KD-tree) got its 2 nearest target points
    (the candidates) and the distance ``r`` of the 3rd. After it moved by
    ``delta = |p - ref|``, every non-candidate is at least ``r - delta`` away from it, so the
    nearest candidate is the nearest target point while its distance plus ``delta`` is below
    ``r`` (less a rounding margin): only the points failing that test are queried again, with
    one KD-tree call per pair that has any. ICP moves the points less and less, so most queries
    are skipped, and the answers are the KD-tree's, not approximations.
    """

    def __init__(self, targets: np.ndarray, n_points: int) -> None:
        from scipy.spatial import cKDTree  # on first use, as before

        b, m = targets.shape[:2]
        self.b, self.m = b, m
        self.flat = targets.reshape(b * m, 3)
        self.trees = [cKDTree(t) for t in targets]
        self.ref = np.full((b, n_points, 3), np.nan)  # NaN: never queried, so queried first
        self.cand = np.zeros((b, n_points, 2, 3))  # the 2 candidates' coordinates
        self.bound = np.full((b, n_points), np.nan)  # distance of the 3rd nearest from ref
        self.extent = float(np.abs(targets).max())

    def _query(self, pairs: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidates ``(n, 2)`` (flat indices) and bounds ``(n,)`` of points of ``pairs``
        (sorted)."""
        d = np.empty((len(pts), 3))
        nn = np.empty((len(pts), 3), dtype=np.int64)
        cuts = np.flatnonzero(np.diff(pairs)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(pts)]):
            d[lo:hi], nn[lo:hi] = self.trees[pairs[lo]].query(pts[lo:hi], k=3)
        cand = np.where(nn[:, :2] < self.m, nn[:, :2], nn[:, :1])  # a target of < 3 points
        return cand + (pairs * self.m)[:, None], d[:, 2]

    def __call__(self, idx: np.ndarray, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest target points ``(A, N, 3)`` of ``moved`` (of the pairs ``idx``) and their
        squared distances ``(A, N)``."""
        sel = slice(None) if len(idx) == self.b else idx
        diff = moved - self.ref[sel]
        delta = np.sqrt(np.einsum("bnk,bnk->bn", diff, diff))
        cand = self.cand[sel]
        diff = moved[:, :, None, :] - cand
        sq2 = np.einsum("bnck,bnck->bnc", diff, diff)
        second = sq2[..., 1] < sq2[..., 0]
        sq = np.where(second, sq2[..., 1], sq2[..., 0])
        matched = np.where(second[..., None], cand[..., 1, :], cand[..., 0, :])
        # rounding of the distances: far above the float64 errors of coordinates this large
        margin = 1e-9 * (1.0 + self.extent + np.abs(moved).max() + delta)
        stale = ~(np.sqrt(sq) + delta < self.bound[sel] - margin)  # NaN (never queried): stale
        j, rows = np.nonzero(stale)
        if j.size:
            i = idx[j]
            pts = moved[j, rows]
            found, bound = self._query(i, pts)
            near = np.take(self.flat, found, axis=0)
            self.cand[i, rows], self.bound[i, rows], self.ref[i, rows] = near, bound, pts
            matched[j, rows] = near[:, 0]
            diff = pts - near[:, 0]
            sq[j, rows] = np.einsum("nk,nk->n", diff, diff)
        return matched, sq


def _compiled_icp():
    """The numba-compiled ICP module, or None where numba is not installed."""
    try:
        from beyondgd.registration import _icp_compiled
    except ImportError:
        return None
    return _icp_compiled


def _icp_numpy(src64, tgt_np, rot, trans, n_iters, tol, estimate_translation, max_distance):
    """ICP without numba: the batch's iterations in NumPy/torch, KD-tree queries by cKDTree.
    Updates ``rot``, ``trans`` in place; returns RMSE, iterations and convergence per pair."""
    b = src64.shape[0]
    nearest = _CachedNearest(tgt_np, src64.shape[1])
    # unit weights: the source centroid is fixed and sum (p - mp)(q - mq)^T = sum (p - mp) q^T
    src_mean = src64.mean(1)
    src_centered_t = (src64 - src_mean[:, None, :]).transpose(1, 2).contiguous()
    prev = np.full(b, np.inf)
    rmse = np.zeros(b)
    iterations = np.zeros(b, dtype=np.int64)
    active = np.ones(b, dtype=bool)
    idx = np.arange(b)
    for _ in range(n_iters):
        sel = slice(None) if len(idx) == b else torch.from_numpy(idx)
        moved = torch.baddbmm(trans[sel, None, :], src64[sel], rot[sel].transpose(1, 2)).numpy()
        matched, sq = nearest(idx, moved)
        q = torch.from_numpy(matched)
        if max_distance is not None:
            keep = sq <= max_distance * max_distance
            count = keep.sum(1)
            total = np.where(keep, sq, 0.0).sum(1)
            rmse[idx] = np.where(count > 0, np.sqrt(total / np.maximum(count, 1)), np.inf)
            w = torch.from_numpy(keep.astype(np.float64))
            if estimate_translation:
                r_new, t_new = _kabsch(src64[sel], q, w)
            else:
                r_new = _kabsch(src64[sel], q, w, center=False)[0]
        else:
            rmse[idx] = np.sqrt(sq.mean(1))
            if estimate_translation:
                mq = q.mean(1)
                r_new = _proper_rotation(src_centered_t[sel] @ q)
                t_new = mq - (r_new @ src_mean[sel, :, None])[..., 0]
            else:
                r_new = _proper_rotation(src64[sel].transpose(1, 2) @ q)
        if not estimate_translation:
            t_new = torch.zeros(len(idx), 3, dtype=torch.float64)
        rot[idx], trans[idx] = r_new, t_new
        iterations[idx] += 1
        change = np.abs(prev[idx] - rmse[idx]) <= tol * np.maximum(rmse[idx], 1e-12)
        prev[idx] = rmse[idx]
        active[idx[change]] = False
        if not active.any():
            break
        idx = np.flatnonzero(active)
    return rmse, iterations, ~active


@dataclass
class ICPResult:
    """Output of :func:`icp`: ``rotation`` ``(B, 3, 3)``, ``translation`` ``(B, 3)``,
    ``rmse`` of the last correspondences ``(B,)``, ``iterations`` ``(B,)``, ``converged``
    ``(B,)`` (relative RMSE change below ``tol``). Unbatched inputs give unbatched outputs.

    Examples
    --------
    >>> import torch
    >>> X = torch.randn(50, 3, dtype=torch.float64)
    >>> out = icp(X, X + torch.tensor([0.1, 0.0, 0.0], dtype=torch.float64))
    >>> round(float(out.translation[0]), 6), bool(out.converged)
    (0.1, True)
    """

    rotation: torch.Tensor
    translation: torch.Tensor
    rmse: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor


def icp(
    source: torch.Tensor,
    target: torch.Tensor,
    *,
    init_rotation: torch.Tensor | None = None,
    init_translation: torch.Tensor | None = None,
    n_iters: int = 30,
    tol: float = 1e-6,
    estimate_translation: bool = True,
    max_distance: float | None = None,
) -> ICPResult:
    r"""Point-to-point ICP aligning ``source`` onto ``target``: ``target ~ source @ R.T + t``.

    Each iteration matches every transformed source point to its nearest target point (KD-tree
    built once per target cloud) and solves the rigid fit of those pairs in closed form
    (:func:`kabsch`; rotation only when ``estimate_translation=False``). Pairs farther than
    ``max_distance`` are ignored. A datum stops when the relative change of its RMSE is below
    ``tol``, and costs nothing afterwards. Batched: ``source`` ``(B, N, 3)``, ``target``
    ``(B, M, 3)`` (or both unbatched), computed in float64 and returned in the input dtype.
    The matches are exact, but a KD-tree query is made only for the points whose last answer
    may have changed: each point keeps its 2 nearest target points and the distance of the
    3rd from where it was last queried, and while it has moved less than the margin these
    leave, its nearest target point is the nearer of the two (a bound from the triangle
    inequality). With numba installed (the ``registration`` extra) each pair's iterations run
    compiled, with a KD-tree of its own (faster than open3d's ``registration_icp`` in
    ``benchmarks/dlc_cost.py``; compiled on first use, then cached on disk);
    without it, the batch iterates in NumPy and queries ``scipy.spatial.cKDTree``, one call per
    pair with stale points.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.registration import geodesic_error, so3_exp
    >>> X = torch.randn(200, 3, dtype=torch.float64)
    >>> R = so3_exp(torch.tensor([0.0, 0.0, 0.3], dtype=torch.float64))
    >>> out = icp(X, X @ R.T)
    >>> float(geodesic_error(out.rotation, R)) < 1e-6
    True

    References
    ----------
    .. [1] P. J. Besl, N. D. McKay, "A Method for Registration of 3-D Shapes", IEEE TPAMI 14(2),
       1992.
    """
    _check_cloud("source", source)
    _check_cloud("target", target)
    if source.ndim != target.ndim or source.ndim not in (2, 3):
        raise ValueError(
            f"source and target must both be (N, 3) or both (B, N, 3), got "
            f"{tuple(source.shape)} and {tuple(target.shape)}"
        )
    unbatched = source.ndim == 2
    src = source[None] if unbatched else source
    tgt = target[None] if unbatched else target
    if src.shape[0] != tgt.shape[0]:
        raise ValueError(
            f"source and target must hold the same number of clouds, got {src.shape[0]} and "
            f"{tgt.shape[0]}"
        )
    n_iters = check_int("n_iters", n_iters, low=1)
    tol = check_number("tol", tol, low=0)
    if max_distance is not None:
        max_distance = check_number("max_distance", max_distance, low=0, low_inclusive=False)
    b = src.shape[0]
    dtype, device = source.dtype, source.device
    rot = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    trans = torch.zeros(b, 3, dtype=torch.float64)
    if init_rotation is not None:
        init_rotation = check_finite_tensor("init_rotation", init_rotation)
        ir = init_rotation[None] if unbatched and init_rotation.ndim == 2 else init_rotation
        if tuple(ir.shape) != (b, 3, 3):
            raise ValueError(f"init_rotation must have shape ({b}, 3, 3), got {tuple(ir.shape)}")
        rot = ir.detach().cpu().to(torch.float64).clone()
    if init_translation is not None:
        init_translation = check_finite_tensor("init_translation", init_translation)
        it = (
            init_translation[None] if unbatched and init_translation.ndim == 1 else init_translation
        )
        if tuple(it.shape) != (b, 3):
            raise ValueError(f"init_translation must have shape ({b}, 3), got {tuple(it.shape)}")
        trans = it.detach().cpu().to(torch.float64).clone()

    src64 = src.detach().cpu().to(torch.float64).contiguous()
    tgt_np = np.ascontiguousarray(tgt.detach().cpu().to(torch.float64).numpy())
    rot, trans = rot.contiguous(), trans.contiguous()
    compiled = _compiled_icp()
    if compiled is not None:  # the same iterations, compiled: no Python per pair or iteration
        max_sq = np.inf if max_distance is None else max_distance * max_distance
        rmse, iterations, converged = compiled.icp_batch(
            src64.numpy(), tgt_np, rot.numpy(), trans.numpy(), n_iters, tol,
            estimate_translation, max_sq,
        )  # fmt: skip
    else:
        rmse, iterations, converged = _icp_numpy(
            src64, tgt_np, rot, trans, n_iters, tol, estimate_translation, max_distance
        )
    out = ICPResult(
        rotation=rot.to(dtype=dtype, device=device),
        translation=trans.to(dtype=dtype, device=device),
        rmse=torch.from_numpy(rmse).to(dtype=dtype, device=device),
        iterations=torch.from_numpy(iterations).to(device),
        converged=torch.from_numpy(converged).to(device),
    )
    if unbatched:
        out = ICPResult(
            *(
                x[0]
                for x in (out.rotation, out.translation, out.rmse, out.iterations, out.converged)
            )
        )
    return out
