"""FISTA for one problem on the CPU, compiled with numba: no Python in the iterations.

The same iterations as ``_run_fista`` in :mod:`beyondgd.sparse.solvers` (adaptive restart, the
cheap test at ``z`` and the exact test at ``x_new``, the same histories) for one matrix, no
callback, no Anderson, and a penalty listed in :func:`penalty_spec`; with backtracking (the
working sets of smooth penalties), ``L`` grows where a step shows more curvature, as
``_grown_lipschitz`` does. On small
problems the torch loop spent its time dispatching about 80 small operations per iteration
(0.27 ms per iteration at 160 x 400, where skglm's whole fit takes about 2 ms); here an
iteration is two BLAS products and a few loops over ``n``. Imported only when numba is installed
(the ``sparse`` extra); otherwise ``solve`` keeps the torch loop.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from beyondgd.penalties import L1, MCP, WEEP

_L1, _MCP, _WEEP = 0, 1, 2


def penalty_spec(penalty) -> tuple[int, np.ndarray] | None:
    """``(kind, params)`` of a penalty the kernel knows, else None (exact classes only: a
    subclass may change the maps)."""
    if type(penalty) is L1:
        return _L1, np.array([penalty.alpha], dtype=np.float64)
    if type(penalty) is MCP:
        return _MCP, np.array([penalty.alpha, penalty.gamma], dtype=np.float64)
    if type(penalty) is WEEP:
        p = [penalty._a, penalty._b, penalty._c, penalty._k, penalty._x1, penalty._x2]
        return _WEEP, np.array(p, dtype=np.float64)
    return None


# ---- the penalties' elementwise maps (as in beyondgd.penalties, for t = |x| >= 0) --------------
@njit(cache=True)
def _value(kind, p, x):
    t = abs(x)
    if kind == _L1:
        return p[0] * t
    if kind == _MCP:
        alpha, gamma = p[0], p[1]
        return alpha * t - t * t / (2.0 * gamma) if t < gamma * alpha else 0.5 * gamma * alpha**2
    a, b, c, x2 = p[0], p[1], p[2], p[5]
    if t <= p[4]:
        return a * t * t
    return b + c * t - 0.5 * max(x2 - t, 0.0) ** 2


@njit(cache=True)
def _grad(kind, p, x):
    t = abs(x)
    if kind == _L1:
        g = p[0]
    elif kind == _MCP:
        g = max(p[0] - t / p[1], 0.0)
    else:
        g = min(2.0 * p[0] * t, max(p[3] * p[4] - t, p[2]))
    return np.sign(x) * g


@njit(cache=True)
def _prox(kind, p, y, tau):
    """The prox of ``tau * penalty`` at ``y`` (the closed forms of the torch penalties)."""
    s, t = np.sign(y), abs(y)
    if kind == _L1:
        return s * max(t - tau * p[0], 0.0)
    if kind == _MCP:
        alpha, gamma = p[0], p[1]
        if tau < gamma:  # firm thresholding
            if t <= tau * alpha:
                return 0.0
            if t <= gamma * alpha:
                return s * (t - tau * alpha) / (1.0 - tau / gamma)
            return y
        # hard thresholding: the better of 0 and max(t, gamma alpha), 0 on ties
        big = max(t, gamma * alpha)
        obj_zero = t * t / (2.0 * tau)
        obj_big = _value(kind, p, big) + (big - t) ** 2 / (2.0 * tau)
        return s * big if obj_big < obj_zero else 0.0
    a, c, k, x1, x2 = p[0], p[2], p[3], p[4], p[5]
    d = 1.0 + 2.0 * a * tau
    if tau < 1.0:
        if t <= d * x1:
            return s * t / d
        if t < x2 + tau * c:
            return s * (t - tau * k * x1) / (1.0 - tau)
        return s * (t - tau * c)
    core = min(t / d, x1)
    tail = max(t - tau * c, x2)
    obj_core = _value(kind, p, core) + (core - t) ** 2 / (2.0 * tau)
    obj_tail = _value(kind, p, tail) + (tail - t) ** 2 / (2.0 * tau)
    return s * (tail if obj_tail < obj_core else core)


@njit(cache=True)
def _objective(kind, p, lam, x, Ax, y):
    f = 0.0
    for i in range(Ax.shape[0]):
        f += (Ax[i] - y[i]) ** 2
    pen = 0.0
    for j in range(x.shape[0]):
        pen += _value(kind, p, x[j])
    return 0.5 * f + lam * pen


@njit(cache=True)
def _stationarity(kind, p, smooth, lam, L, tau, x, g):
    """The solvers' stopping measure: ``max |g + lam p'(x)|`` for a smooth penalty, else the
    prox-gradient mapping ``max L |x - prox(x - g / L)|``."""
    out = 0.0
    for j in range(x.shape[0]):
        if smooth:
            v = abs(g[j] + lam * _grad(kind, p, x[j]))
        else:
            v = L * abs(x[j] - _prox(kind, p, x[j] - g[j] / L, tau))
        out = max(out, v)
    return out


@njit(cache=True)
def _push(hist, i, value):
    if i == hist.shape[0]:
        grown = np.empty(2 * hist.shape[0])
        grown[:i] = hist
        hist = grown
    hist[i] = value
    return hist


@njit(cache=True)
def _grown_lipschitz(L, x_new, z, Ax_new, Az, rounding, tiny):
    """``_grown_lipschitz`` of the solvers for one problem: the grown ``L``, or -1 where ``L``
    majorizes the data term along ``x_new - z`` (or ``A d`` is rounding noise)."""
    d2, ad2, nz, nx = 0.0, 0.0, 0.0, 0.0
    for j in range(x_new.shape[0]):
        d2 += (x_new[j] - z[j]) ** 2
    for i in range(Ax_new.shape[0]):
        ad2 += (Ax_new[i] - Az[i]) ** 2
        nz += Az[i] ** 2
        nx += Ax_new[i] ** 2
    ad = math.sqrt(ad2)
    relative_noise = rounding * (math.sqrt(nz) + math.sqrt(nx)) / max(ad, tiny)
    curvature = ad * ad / max(d2, tiny)
    if d2 > 0 and relative_noise < 1e-2 and curvature > (1.0 + 1e-3 + 2.0 * relative_noise) * L:
        return 1.01 * curvature
    return -1.0


@njit(cache=True)
def fista(A, y, x, L, lam, tol, limit, kind, p, smooth, backtrack, rounding, tiny):
    """FISTA from ``x`` (copied) with the step ``1 / L`` (grown by backtracking if asked);
    returns ``x``, the iterations, whether the test held, the objective and stationarity
    histories, the products with ``A`` and the final ``L``."""
    n = x.shape[0]
    tau = lam / L
    x = x.copy()
    Ax = A @ x
    z, Az = x.copy(), Ax.copy()
    x_new = np.empty_like(x)
    theta = 1.0
    n_iter, converged, products = 0, False, 1
    obj = np.empty(min(limit + 1, 1024))
    stat = np.empty(min(limit + 1, 1024))
    T = 0
    for _ in range(limit + 1):
        gz = (Az - y) @ A
        products += 1
        while True:
            for j in range(n):
                x_new[j] = _prox(kind, p, z[j] - gz[j] / L, tau)
            Ax_new = A @ x_new
            products += 1
            grown = _grown_lipschitz(L, x_new, z, Ax_new, Az, rounding, tiny) if backtrack else -1.0
            if grown < 0:
                break
            L, tau = grown, lam / grown
        # the cheap test at z; the exact one at x_new only where it passes
        if smooth:
            cheap = _stationarity(kind, p, smooth, lam, L, tau, z, gz)
        else:  # the prox-gradient mapping at z, whose prox step is x_new
            cheap = 0.0
            for j in range(n):
                cheap = max(cheap, L * abs(z[j] - x_new[j]))
        passed = False
        rec_stat = cheap
        if cheap <= tol and n_iter < limit:
            g_new = (Ax_new - y) @ A
            products += 1
            rec_stat = _stationarity(kind, p, smooth, lam, L, tau, x_new, g_new)
            passed = rec_stat <= tol
        if passed:
            x[:] = x_new
            Ax[:] = Ax_new
        obj = _push(obj, T, _objective(kind, p, lam, x, Ax, y))
        stat = _push(stat, T, rec_stat)
        T += 1
        converged = rec_stat <= tol
        active = not converged and n_iter < limit
        if passed:
            n_iter += 1
        if not active:
            break
        # adaptive restart: momentum is dropped where it points uphill
        uphill = 0.0
        for j in range(n):
            uphill += (z[j] - x_new[j]) * (x_new[j] - x[j])
        theta_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * theta * theta))
        beta = 0.0 if uphill > 0 else (theta - 1.0) / theta_new
        theta = 1.0 if uphill > 0 else theta_new
        for j in range(n):
            z[j] = x_new[j] + beta * (x_new[j] - x[j])
            x[j] = x_new[j]
        for i in range(Ax.shape[0]):
            Az[i] = Ax_new[i] + beta * (Ax_new[i] - Ax[i])
            Ax[i] = Ax_new[i]
        n_iter += 1
    return x, n_iter, converged, obj[:T].copy(), stat[:T].copy(), products, L
