"""Point-to-point ICP compiled with numba: one loop per pair, no Python in the iterations.

The same algorithm as the NumPy path of :func:`beyondgd.registration.icp` (exact nearest
neighbours with the cached-candidates bound, then the Kabsch fit), with the nearest-neighbour
search in a KD-tree built here: cKDTree answers from Python cost a call per pair and iteration,
which made that path 2x slower than open3d's C++ ICP. Imported only when numba is installed
(the ``registration`` extra); otherwise :func:`icp` keeps the NumPy path.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_LEAF_SIZE = 8
_STACK = 128  # entries of the query stack: two per level of a tree of depth < 64


@njit(cache=True)
def build_tree(points):
    """KD-tree over ``points`` ``(M, 3)``: points reordered by leaf, their original indices, and
    per node its range, split dimension and value, and children (``-1`` for a leaf).

    Each inner node splits its range at the median of the dimension of largest spread, so the
    left child's points have coordinates <= the split value and the right child's >= it.
    """
    m = points.shape[0]
    perm = np.arange(m)
    n_max = 2 * m + 1
    lo = np.zeros(n_max, dtype=np.int64)
    hi = np.zeros(n_max, dtype=np.int64)
    dim = np.zeros(n_max, dtype=np.int64)
    split = np.zeros(n_max)
    left = np.full(n_max, -1, dtype=np.int64)
    right = np.full(n_max, -1, dtype=np.int64)
    hi[0] = m
    count = 1
    todo = np.zeros(n_max, dtype=np.int64)
    n_todo = 1
    while n_todo > 0:
        n_todo -= 1
        node = todo[n_todo]
        a, b = lo[node], hi[node]
        if b - a <= _LEAF_SIZE:
            continue
        best, best_spread = 0, -1.0
        for d in range(3):
            vmin, vmax = np.inf, -np.inf
            for k in range(a, b):
                v = points[perm[k], d]
                vmin = min(vmin, v)
                vmax = max(vmax, v)
            if vmax - vmin > best_spread:
                best, best_spread = d, vmax - vmin
        if best_spread <= 0.0:  # all points equal: a leaf of any size
            continue
        sub = perm[a:b].copy()
        order = np.argsort(points[sub, best])
        perm[a:b] = sub[order]
        mid = (a + b) // 2
        dim[node], split[node] = best, points[perm[mid], best]
        left[node], right[node] = count, count + 1
        lo[count], hi[count], lo[count + 1], hi[count + 1] = a, mid, mid, b
        todo[n_todo], todo[n_todo + 1] = count, count + 1
        n_todo += 2
        count += 2
    ordered = np.empty((m, 3))
    for k in range(m):
        for d in range(3):
            ordered[k, d] = points[perm[k], d]
    return ordered, perm, lo, hi, dim, split, left, right


@njit(cache=True)
def query3(x0, x1, x2, ordered, lo, hi, dim, split, left, right, stack_node, stack_bound):
    """Positions (in ``ordered``) and squared distances of the 3 nearest points to ``x``,
    nearest first; ``-1`` and ``inf`` where the tree has fewer than 3 points."""
    i0 = i1 = i2 = -1
    d0 = d1 = d2 = np.inf
    stack_node[0], stack_bound[0] = 0, 0.0
    sp = 1
    while sp > 0:
        sp -= 1
        node, bound = stack_node[sp], stack_bound[sp]
        if bound >= d2:
            continue
        if left[node] < 0:
            for k in range(lo[node], hi[node]):
                e0, e1, e2 = ordered[k, 0] - x0, ordered[k, 1] - x1, ordered[k, 2] - x2
                dd = e0 * e0 + e1 * e1 + e2 * e2
                if dd < d2:
                    if dd < d1:
                        d2, i2 = d1, i1
                        if dd < d0:
                            d1, i1, d0, i0 = d0, i0, dd, k
                        else:
                            d1, i1 = dd, k
                    else:
                        d2, i2 = dd, k
            continue
        c = dim[node]
        diff = (x0 if c == 0 else x1 if c == 1 else x2) - split[node]
        near, far = (left[node], right[node]) if diff < 0 else (right[node], left[node])
        stack_node[sp], stack_bound[sp] = far, max(bound, diff * diff)
        stack_node[sp + 1], stack_bound[sp + 1] = near, bound
        sp += 2
    return i0, i1, i2, d0, d1, d2


@njit(cache=True)
def _fit(src, matched, weights, estimate_translation, rot, trans):
    """Kabsch: the rigid motion minimising ``sum w |R p + t - q|^2``, written into rot, trans."""
    n = src.shape[0]
    wsum = 0.0
    mp = np.zeros(3)
    mq = np.zeros(3)
    for j in range(n):
        wsum += weights[j]
    wsum = max(wsum, np.finfo(np.float64).tiny)
    if estimate_translation:
        for j in range(n):
            for d in range(3):
                mp[d] += weights[j] * src[j, d]
                mq[d] += weights[j] * matched[j, d]
        mp /= wsum
        mq /= wsum
    cov = np.zeros((3, 3))  # sum w (p - mp) q^T: centring q changes nothing, sum w (p - mp) = 0
    for j in range(n):
        w = weights[j]
        if w == 0.0:
            continue
        for a in range(3):
            pa = w * (src[j, a] - mp[a])
            for c in range(3):
                cov[a, c] += pa * matched[j, c]
    u, _, vh = np.linalg.svd(cov)
    sign = 1.0 if np.linalg.det(vh.T @ u.T) >= 0 else -1.0
    for d in range(3):
        vh[2, d] *= sign  # V diag(1, 1, sign) U^T: the rotation nearest, never a reflection
    rot[:, :] = vh.T @ u.T
    for d in range(3):
        trans[d] = mq[d] - (rot[d, 0] * mp[0] + rot[d, 1] * mp[1] + rot[d, 2] * mp[2])


@njit(cache=True)
def icp_pair(src, tgt, rot, trans, n_iters, tol, estimate_translation, max_sq):
    """ICP of one pair from the pose ``rot``, ``trans`` (updated in place); returns the RMSE of
    the last correspondences, the iterations run and whether the relative RMSE change fell
    below ``tol``."""
    n = src.shape[0]
    ordered, perm, lo, hi, dim, split, left, right = build_tree(tgt)
    stack_node = np.zeros(_STACK, dtype=np.int64)
    stack_bound = np.zeros(_STACK)
    extent = np.abs(tgt).max()
    ref = np.full((n, 3), np.nan)  # where each point was last queried (NaN: never)
    cand = np.zeros((n, 2), dtype=np.int64)  # its 2 nearest target points then (in ordered)
    bound = np.full(n, np.nan)  # and the distance of the 3rd
    moved = np.empty((n, 3))
    matched = np.empty((n, 3))
    sq = np.empty(n)
    weights = np.ones(n)
    prev, rmse = np.inf, 0.0
    iterations = 0
    converged = False
    for _ in range(n_iters):
        top = 0.0
        for j in range(n):
            for d in range(3):
                moved[j, d] = (
                    rot[d, 0] * src[j, 0] + rot[d, 1] * src[j, 1] + rot[d, 2] * src[j, 2] + trans[d]
                )
                top = max(top, abs(moved[j, d]))
        for j in range(n):
            x0, x1, x2 = moved[j, 0], moved[j, 1], moved[j, 2]
            r0, r1, r2 = x0 - ref[j, 0], x1 - ref[j, 1], x2 - ref[j, 2]
            delta = np.sqrt(r0 * r0 + r1 * r1 + r2 * r2)
            best, best_sq = cand[j, 0], 0.0
            for c in range(2):
                k = cand[j, c]
                e0, e1, e2 = x0 - ordered[k, 0], x1 - ordered[k, 1], x2 - ordered[k, 2]
                dd = e0 * e0 + e1 * e1 + e2 * e2
                if c == 0 or dd < best_sq:
                    best, best_sq = k, dd
            # the nearer candidate is the nearest target point while no other can be nearer
            # (triangle inequality); NaN (never queried) fails the test; the margin covers
            # rounding, far above float64's error at coordinates this large
            margin = 1e-9 * (1.0 + extent + top + delta)
            if not (np.sqrt(best_sq) + delta < bound[j] - margin):
                i0, i1, _, d0, _, d2 = query3(
                    x0, x1, x2, ordered, lo, hi, dim, split, left, right, stack_node, stack_bound
                )
                cand[j, 0], cand[j, 1] = i0, (i1 if i1 >= 0 else i0)
                bound[j] = np.sqrt(d2)
                ref[j, 0], ref[j, 1], ref[j, 2] = x0, x1, x2
                best, best_sq = i0, d0
            matched[j, :] = ordered[best, :]
            sq[j] = best_sq
        total, count = 0.0, 0
        for j in range(n):
            if sq[j] <= max_sq:
                total += sq[j]
                count += 1
                weights[j] = 1.0
            else:
                weights[j] = 0.0
        rmse = np.sqrt(total / count) if count > 0 else np.inf
        _fit(src, matched, weights, estimate_translation, rot, trans)
        iterations += 1
        change = abs(prev - rmse) <= tol * max(rmse, 1e-12)
        prev = rmse
        if change:
            converged = True
            break
    return rmse, iterations, converged


@njit(cache=True)
def icp_batch(src, tgt, rot, trans, n_iters, tol, estimate_translation, max_sq):
    """:func:`icp_pair` over a batch; ``rot`` ``(B, 3, 3)`` and ``trans`` ``(B, 3)`` in place."""
    b = src.shape[0]
    rmse = np.zeros(b)
    iterations = np.zeros(b, dtype=np.int64)
    converged = np.zeros(b, dtype=np.bool_)
    for i in range(b):
        rmse[i], iterations[i], converged[i] = icp_pair(
            src[i], tgt[i], rot[i], trans[i], n_iters, tol, estimate_translation, max_sq
        )
    return rmse, iterations, converged
