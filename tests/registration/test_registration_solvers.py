"""Gauss-Newton, Kabsch and ICP on problems with a known answer; batched == unbatched."""

import math

import numpy as np
import pytest
import torch

from beyondgd.data import make_registration_pairs, procedural_shapes
from beyondgd.registration import (
    PointNetRegistration,
    gauss_newton,
    geodesic_error,
    icp,
    kabsch,
    random_rotations,
    so3_exp,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _cloud(n=300, seed=0):
    return torch.randn(n, 3, generator=gen(seed), dtype=torch.float64) * torch.tensor(
        [1.0, 0.6, 0.3], dtype=torch.float64
    )


@pytest.fixture(params=["compiled", "numpy"])
def icp_path(request, monkeypatch):
    """Runs an ICP test on the numba-compiled path and on the NumPy path (no numba)."""
    from beyondgd.registration import solvers

    if request.param == "compiled":
        pytest.importorskip("numba")
    else:
        monkeypatch.setattr(solvers, "_compiled_icp", lambda: None)
    return request.param


# ------------------------------------------------------------------------------ Gauss-Newton


def _quadratic(seed=0, b=4, k=6, d=3):
    g = gen(seed)
    a = torch.randn(k, d, generator=g, dtype=torch.float64)
    c = torch.randn(b, k, generator=g, dtype=torch.float64)
    w0 = torch.randn(b, d, generator=g, dtype=torch.float64)
    w_opt = torch.linalg.lstsq(a.expand(b, k, d), c[..., None]).solution[..., 0]
    return a, c, w0, w_opt


@pytest.mark.parametrize("jacobian", ["forward", "analytic", "finite-difference"])
def test_gauss_newton_solves_a_quadratic_in_one_step(jacobian):
    a, c, w0, w_opt = _quadratic()
    jac = (lambda w: a.expand(len(w), *a.shape)) if jacobian == "analytic" else jacobian
    res = gauss_newton(lambda w: w @ a.T - c, w0, n_iters=1, damping=0.0, jacobian=jac)
    atol = 1e-5 if jacobian == "finite-difference" else 1e-10
    assert torch.allclose(res.w, w_opt, atol=atol)
    assert bool((res.energies[1] <= res.energies[0]).all())
    assert res.iterations.tolist() == [1, 1, 1, 1]


def test_gauss_newton_batched_equals_unbatched_nonlinear():
    a, c, w0, _ = _quadratic(seed=3)

    def residual_for(target):
        return lambda w: torch.tanh(w @ a.T) - 0.5 * torch.tanh(target)

    kw = dict(n_iters=6, damping=1e-3, max_step=0.5)
    batched = gauss_newton(residual_for(c), w0, **kw)
    for i in range(len(w0)):
        one = gauss_newton(residual_for(c[i : i + 1]), w0[i : i + 1], **kw)
        assert torch.allclose(batched.w[i], one.w[0], atol=1e-12)


def test_gauss_newton_on_so3_recovers_a_rotation_batched_equals_unbatched():
    x = _cloud(50)
    r_true = random_rotations(3, angles=torch.tensor([0.3, 0.8, 1.2]), generator=gen(1))
    r_true = r_true.double()
    y = x @ r_true.transpose(1, 2)  # (3, 50, 3)

    def residual(r):
        return (x @ r.transpose(-1, -2) - y).flatten(1)

    eye = torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
    res = gauss_newton(residual, eye, manifold="so3", n_iters=15, max_step=0.5, tol=1e-10)
    assert float(geodesic_error(res.w, r_true).max()) < 1e-7
    assert bool(res.converged.all())
    for i in range(3):
        yi = y[i : i + 1]
        one = gauss_newton(
            lambda r, yi=yi: (x @ r.transpose(-1, -2) - yi).flatten(1),
            eye[i : i + 1],
            manifold="so3",
            n_iters=15,
            max_step=0.5,
            tol=1e-10,
        )
        assert torch.allclose(one.w[0], res.w[i], atol=1e-10)


def test_gauss_newton_step_clipping_and_tolerance():
    a, c, w0, w_opt = _quadratic()
    res = gauss_newton(lambda w: w @ a.T - c, w0, n_iters=1, damping=0.0, max_step=0.01)
    assert torch.allclose((res.w - w0).norm(dim=-1), torch.full((4,), 0.01, dtype=torch.float64))
    res = gauss_newton(lambda w: w @ a.T - c, w0, n_iters=50, damping=0.0, tol=1e-8)
    assert res.iterations.max() <= 3 and bool(res.converged.all())


def test_gauss_newton_unrolled_is_differentiable():
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    a, c, w0, _ = _quadratic()
    res = gauss_newton(
        lambda w: torch.tanh(scale * w @ a.T) - 0.3, w0, n_iters=2, create_graph=True
    )
    res.w.sum().backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)


def test_gauss_newton_input_errors():
    a, c, w0, _ = _quadratic()
    with pytest.raises(ValueError, match="manifold"):
        gauss_newton(lambda w: w, w0, manifold="sphere")
    with pytest.raises(ValueError, match="w0"):
        gauss_newton(lambda w: w, torch.zeros(2, 3), manifold="so3")
    with pytest.raises(ValueError, match="w0"):
        gauss_newton(lambda w: w, torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="damping"):
        gauss_newton(lambda w: w, w0, damping=-1.0)
    with pytest.raises(ValueError, match="jacobian"):
        gauss_newton(lambda w: w, w0, jacobian="numeric")
    with pytest.raises(ValueError, match="residual must return"):
        gauss_newton(lambda w: w.sum(-1), w0)


# ------------------------------------------------------------------------------------- ICP


def test_kabsch_recovers_a_rigid_motion_and_never_reflects():
    x = _cloud(40).expand(3, 40, 3)
    r = random_rotations(3, generator=gen(4), dtype=torch.float64)
    t = torch.randn(3, 3, generator=gen(5), dtype=torch.float64)
    r_hat, t_hat = kabsch(x, x @ r.transpose(1, 2) + t[:, None])
    assert torch.allclose(r_hat, r, atol=1e-10) and torch.allclose(t_hat, t, atol=1e-10)
    mirrored = x[0] * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    r_m, _ = kabsch(x[0], mirrored)
    assert math.isclose(float(torch.linalg.det(r_m)), 1.0, rel_tol=1e-9)


@pytest.mark.parametrize("estimate_translation", [True, False])
def test_icp_recovers_a_known_rotation_with_exact_correspondences(estimate_translation, icp_path):
    x = _cloud()
    r = so3_exp(torch.tensor([0.2, -0.3, 0.25], dtype=torch.float64))
    t = torch.tensor([0.1, -0.05, 0.02], dtype=torch.float64) if estimate_translation else 0
    out = icp(x, x @ r.T + t, estimate_translation=estimate_translation, n_iters=50)
    assert float(geodesic_error(out.rotation, r)) < 1e-8
    assert float(out.rmse) < 1e-8 and bool(out.converged)
    if estimate_translation:
        assert torch.allclose(out.translation, t, atol=1e-8)


def test_icp_batched_equals_unbatched(icp_path):
    xs = torch.stack([_cloud(200, s) for s in range(3)])
    r = random_rotations(3, angles=torch.tensor([0.2, 0.4, 0.6]), generator=gen(6)).double()
    ys = xs @ r.transpose(1, 2) + 0.01 * torch.randn(3, 200, 3, generator=gen(7)).double()
    ys = ys[:, torch.randperm(200, generator=gen(8))]  # shuffled: no index correspondence
    init = so3_exp(torch.tensor([[0.05, 0.0, 0.0]] * 3, dtype=torch.float64))
    batched = icp(xs, ys, init_rotation=init, n_iters=40)
    for i in range(3):
        one = icp(xs[i], ys[i], init_rotation=init[i], n_iters=40)
        assert torch.allclose(one.rotation, batched.rotation[i], atol=1e-12)
        assert torch.allclose(one.translation, batched.translation[i], atol=1e-12)
        assert int(one.iterations) == int(batched.iterations[i])
    assert float(geodesic_error(batched.rotation, r).max()) < 0.02


def test_icp_output_keeps_the_input_dtype(icp_path):
    x = _cloud(50).float()
    out = icp(x, x, n_iters=3)
    assert out.rotation.dtype == torch.float32 and out.rotation.shape == (3, 3)


@pytest.mark.parametrize(
    "source, target, word",
    [
        (torch.zeros(10, 3), torch.zeros(10, 2), "target"),
        (torch.zeros(10, 2), torch.zeros(10, 3), "source"),
        (torch.zeros(0, 3), torch.zeros(10, 3), "source is empty"),
        (torch.zeros(10, 3), torch.zeros(1, 0, 3), "target is empty"),
        (torch.full((10, 3), float("nan")), torch.zeros(10, 3), "source must contain only finite"),
        (torch.zeros(10, 3), torch.zeros(2, 10, 3), "both"),
        (torch.zeros(2, 10, 3), torch.zeros(3, 10, 3), "same number of clouds"),
    ],
)
def test_icp_input_errors_name_the_argument(source, target, word):
    with pytest.raises(ValueError, match=word):
        icp(source, target)


def test_kabsch_and_model_input_errors():
    with pytest.raises(ValueError, match="same shape"):
        kabsch(torch.zeros(5, 3), torch.zeros(6, 3))
    with pytest.raises(ValueError, match="target"):
        PointNetRegistration((8,)).register(torch.zeros(1, 5, 3), torch.zeros(1, 5, 2))
    with pytest.raises(ValueError, match="source is empty"):
        PointNetRegistration((8,)).register(torch.zeros(1, 0, 3), torch.zeros(1, 5, 3))
    with pytest.raises(ValueError, match="target must contain only finite"):
        PointNetRegistration((8,)).register(
            torch.zeros(1, 5, 3), torch.full((1, 5, 3), float("nan"))
        )


def test_icp_max_distance_ignores_far_outliers(icp_path):
    x = _cloud(200)
    r = so3_exp(torch.tensor([0.0, 0.1, 0.2], dtype=torch.float64))
    y = torch.cat([x @ r.T, torch.full((20, 3), 50.0, dtype=torch.float64)])
    x_out = torch.cat([x, torch.full((20, 3), -50.0, dtype=torch.float64)])
    plain = icp(x_out, y, n_iters=50)
    robust = icp(x_out, y, n_iters=50, max_distance=1.0)
    assert float(geodesic_error(robust.rotation, r)) < 1e-6
    assert float(geodesic_error(plain.rotation, r)) > float(geodesic_error(robust.rotation, r))


# ------------------------------------------------------- ICP against the straightforward loop


def _reference_icp(src, tgt, n_iters, tol, estimate_translation=True, max_distance=None):
    """The former implementation: one cKDTree query per pair per iteration, then Kabsch."""
    from scipy.spatial import cKDTree

    from beyondgd.registration.solvers import _kabsch

    b = src.shape[0]
    rot, trans = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1), torch.zeros(b, 3).double()
    tgt_np = tgt.numpy()
    trees = [cKDTree(t) for t in tgt_np]
    prev, rmse = np.full(b, np.inf), np.zeros(b)
    iterations, active = np.zeros(b, dtype=np.int64), np.ones(b, dtype=bool)
    matched, weights = np.empty(src.shape), np.ones(src.shape[:2])
    for _ in range(n_iters):
        idx = np.flatnonzero(active)
        moved = (src[idx] @ rot[idx].transpose(1, 2) + trans[idx, None, :]).numpy()
        for k, i in enumerate(idx):
            dist, nn = trees[i].query(moved[k])
            matched[i] = tgt_np[i][nn]
            if max_distance is not None:
                weights[i] = dist <= max_distance
                dist = dist[dist <= max_distance]
            rmse[i] = np.sqrt(np.mean(dist**2)) if dist.size else np.inf
        p, q, w = src[idx], torch.from_numpy(matched[idx]), torch.from_numpy(weights[idx])
        if estimate_translation:
            rot[idx], trans[idx] = _kabsch(p, q, w)
        else:
            rot[idx] = _kabsch(p, q, w, center=False)[0]
        iterations[idx] += 1
        change = np.abs(prev[idx] - rmse[idx]) <= tol * np.maximum(rmse[idx], 1e-12)
        prev[idx] = rmse[idx]
        active[idx[change]] = False
        if not active.any():
            break
    return rot, trans, torch.from_numpy(rmse), torch.from_numpy(iterations)


def _shape_pairs(n_pairs, n_points, seed):
    shapes = procedural_shapes(4, seed=seed, kinds=("superquadric", "blob"))
    pairs = make_registration_pairs(
        shapes, n_pairs, n_points=n_points, angle_range=(0.0, 60.0), seed=seed,
        dtype=torch.float64,
    )  # fmt: skip
    return pairs.source, pairs.target


@pytest.mark.parametrize(
    "estimate_translation, max_distance", [(True, None), (False, None), (True, 0.3)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_icp_equals_the_per_pair_reference(estimate_translation, max_distance, seed, icp_path):
    src, tgt = _shape_pairs(12, 96, seed)
    kw = dict(estimate_translation=estimate_translation, max_distance=max_distance)
    out = icp(src, tgt, n_iters=30, tol=1e-6, **kw)
    rot, trans, rmse, iterations = _reference_icp(src, tgt, 30, 1e-6, **kw)
    assert float((out.rotation - rot).abs().max()) < 1e-6
    assert float((out.translation - trans).abs().max()) < 1e-6
    assert torch.allclose(out.rmse, rmse, rtol=1e-9, atol=1e-12)
    assert torch.equal(out.iterations, iterations)


def test_icp_single_pair_and_a_pair_converged_at_once(icp_path):
    src, tgt = _shape_pairs(3, 80, 2)
    tgt[1] = src[1]  # identical clouds: RMSE ~0 from the start, done within 3 iterations
    out = icp(src, tgt, n_iters=30)
    rot, _, _, iterations = _reference_icp(src, tgt, 30, 1e-6)
    assert int(out.iterations[1]) <= 3 and bool(out.converged[1])
    assert int(out.iterations.max()) > 5  # the others go on
    assert torch.equal(out.iterations, iterations)
    assert torch.allclose(out.rotation[1], torch.eye(3, dtype=torch.float64), atol=1e-12)
    one = icp(src[:1], tgt[:1], n_iters=30)  # B = 1
    assert one.rotation.shape == (1, 3, 3)
    assert float((one.rotation[0] - rot[0]).abs().max()) < 1e-6


def test_icp_targets_with_fewer_points_than_cached_candidates(icp_path):
    src, tgt = _shape_pairs(2, 40, 3)
    tiny = tgt[:, :3].contiguous()  # 3 target points: as many as the neighbours asked for
    out = icp(src, tiny, n_iters=10)
    rot, trans, rmse, iterations = _reference_icp(src, tiny, 10, 1e-6)
    assert float((out.rotation - rot).abs().max()) < 1e-6
    assert torch.allclose(out.rmse, rmse) and torch.equal(out.iterations, iterations)


@pytest.mark.parametrize("n_targets", [50, 2, 1])  # 2, 1: fewer than the k + 1 neighbours asked
def test_cached_nearest_neighbours_equal_fresh_kd_tree_queries(n_targets):
    from scipy.spatial import cKDTree

    from beyondgd.registration.solvers import _CachedNearest

    rng = np.random.default_rng(n_targets)
    targets = rng.normal(size=(3, n_targets, 3))
    points = rng.normal(size=(3, 40, 3))
    nearest = _CachedNearest(targets, 40)
    trees = [cKDTree(t) for t in targets]
    for step in range(25):  # small and large moves, some pairs left out
        points = points + rng.normal(scale=0.3 if step % 5 == 0 else 0.02, size=points.shape)
        idx = np.arange(3) if step % 3 else np.array([0, 2])
        matched, sq = nearest(idx, points[idx])
        for k, i in enumerate(idx):
            d, j = trees[i].query(points[i])
            assert (j < n_targets).all()
            np.testing.assert_array_equal(matched[k], targets[i][j])
            np.testing.assert_allclose(sq[k], d**2, rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(init_rotation=torch.full((3, 3), float("nan"))), "init_rotation"),
        (dict(init_translation=torch.tensor([0.0, float("inf"), 0.0])), "init_translation"),
    ],
)
def test_icp_non_finite_inputs_name_the_argument(kwargs, word):
    x = _cloud(20)
    with pytest.raises(ValueError, match=word):
        icp(x, x, **kwargs)
    with pytest.raises(ValueError, match="target must contain only finite"):
        icp(x, torch.where(x > 1, float("nan"), x))


@pytest.mark.parametrize("n_targets", [500, 9, 3, 2, 1])
def test_compiled_kd_tree_gives_the_3_nearest_of_cKDTree(n_targets):
    """The compiled KD-tree's 3 nearest points and distances equal cKDTree's (k = 3), also on a
    cloud of repeated points and one with fewer than 3 points."""
    pytest.importorskip("numba")
    from scipy.spatial import cKDTree

    from beyondgd.registration._icp_compiled import build_tree, query3

    rng = np.random.default_rng(n_targets)
    targets = rng.normal(size=(n_targets, 3)) * np.array([1.0, 0.5, 0.01])  # flat: deep splits
    if n_targets == 9:
        targets[:] = targets[0]  # all points equal: one leaf of any size
    ordered, perm, *tree = build_tree(targets)
    np.testing.assert_array_equal(ordered, targets[perm])
    stack_node, stack_bound = np.zeros(128, dtype=np.int64), np.zeros(128)
    ref = cKDTree(targets)
    for x in rng.normal(size=(300, 3)) * 1.5:
        i0, i1, i2, d0, d1, d2 = query3(*x, ordered, *tree, stack_node, stack_bound)
        d, j = ref.query(x, k=3)
        np.testing.assert_allclose([d0, d1, d2], d**2, rtol=1e-12)
        for got, want, dist in zip((i0, i1, i2), j, d):
            if want == n_targets:  # fewer than 3 points: cKDTree's "missing" index
                assert got == -1 and np.isinf(dist)
            else:
                np.testing.assert_allclose(  # the same point, or one at the same distance
                    np.sum((targets[perm[got]] - x) ** 2), dist**2, rtol=1e-12
                )


def test_compiled_icp_equals_the_numpy_path(monkeypatch):
    """Both paths of icp() run the same iterations on CGAL-like pairs, angles up to 60 deg."""
    pytest.importorskip("numba")
    from beyondgd.registration import solvers

    src, tgt = _shape_pairs(24, 128, 4)
    init = so3_exp(0.1 * torch.randn(24, 3, generator=gen(9), dtype=torch.float64))
    compiled = icp(src, tgt, init_rotation=init, n_iters=40, max_distance=0.5)
    monkeypatch.setattr(solvers, "_compiled_icp", lambda: None)
    plain = icp(src, tgt, init_rotation=init, n_iters=40, max_distance=0.5)
    assert torch.equal(compiled.iterations, plain.iterations)
    assert torch.equal(compiled.converged, plain.converged)
    assert float((compiled.rotation - plain.rotation).abs().max()) < 1e-9
    assert float((compiled.translation - plain.translation).abs().max()) < 1e-9
    assert torch.allclose(compiled.rmse, plain.rmse, rtol=1e-9, atol=1e-12)
