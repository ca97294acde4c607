"""Perturbation samplers: on the manifold, with the requested distribution, reproducible."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from beyondgd.landscape import (
    BoxSampler,
    GaussianSampler,
    RelativeSampler,
    SE3Sampler,
    SimplexSampler,
    SO3Sampler,
)
from beyondgd.registration import geodesic_error, random_rotations


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _is_rotation(r, atol=1e-5):
    eye = torch.eye(3, dtype=r.dtype)
    ortho = torch.allclose(r.transpose(-1, -2) @ r, eye.expand_as(r), atol=atol)
    ones = torch.ones(r.shape[:-2], dtype=r.dtype)
    return ortho and torch.allclose(torch.linalg.det(r), ones, atol=atol)


@pytest.mark.parametrize("distribution", ["uniform", "fixed", "gaussian"])
def test_so3_perturbations_are_rotations_at_the_sampled_angle(distribution):
    s = SO3Sampler(math.radians(60) if distribution != "gaussian" else 0.3, distribution)
    w_star = random_rotations(4, generator=gen(1), dtype=torch.float64)
    delta = s.sample(w_star, 50, generator=gen())
    r = s.retract(w_star, delta)
    assert r.shape == (50, 4, 3, 3) and _is_rotation(r)
    angle = geodesic_error(r, w_star.expand_as(r))
    assert torch.allclose(angle, delta.norm(dim=-1), atol=1e-6)
    assert torch.allclose(s.sq_norm(delta), angle**2, atol=1e-6)
    # every point of the segment is a rotation at lam x the angle from R*
    r_half = s.retract(w_star, 0.5 * delta)
    assert _is_rotation(r_half)
    assert torch.allclose(geodesic_error(r_half, w_star.expand_as(r)), 0.5 * angle, atol=1e-6)


def test_so3_angle_distributions():
    w_star = torch.eye(3, dtype=torch.float64).expand(100, 3, 3)
    max_angle = math.radians(90)
    fixed = SO3Sampler(max_angle, "fixed").sample(w_star, 20, generator=gen()).norm(dim=-1)
    assert torch.allclose(fixed, torch.full_like(fixed, max_angle))
    uni = SO3Sampler(max_angle, "uniform").sample(w_star, 20, generator=gen()).norm(dim=-1)
    assert float(uni.max()) <= max_angle + 1e-9
    assert stats.kstest(uni.flatten().numpy() / max_angle, "uniform").pvalue > 1e-3
    gauss = SO3Sampler(0.1, "gaussian").sample(w_star, 20, generator=gen()).norm(dim=-1)
    assert stats.kstest(gauss.flatten().numpy() / 0.1, stats.chi(3).cdf).pvalue > 1e-3
    # axes are uniform on the sphere: the mean direction is near zero
    axes = SO3Sampler(max_angle, "fixed").sample(w_star, 20, generator=gen()) / max_angle
    assert float(axes.reshape(-1, 3).mean(0).norm()) < 0.1


def test_se3_perturbations_are_rigid_motions():
    s = SE3Sampler(math.radians(30), 0.2)
    w_star = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    w_star[:, :3, 3] = torch.randn(3, 3, generator=gen(2), dtype=torch.float64)
    delta = s.sample(w_star, 10, generator=gen())
    t = s.retract(w_star, delta)
    assert t.shape == (10, 3, 4, 4) and _is_rotation(t[..., :3, :3])
    bottom = torch.tensor([0, 0, 0, 1], dtype=torch.float64)
    assert torch.equal(t[..., 3, :], bottom.expand(10, 3, 4))
    assert float(delta[..., :3].norm(dim=-1).max()) <= math.radians(30) + 1e-9
    assert float(delta[..., 3:].abs().max()) <= 0.2


def test_euclidean_samplers_bounds_and_reproducibility():
    w = torch.tensor([[10.0, 0.0, -2.0]])
    box = BoxSampler(0.5).sample(w, 200, generator=gen())
    assert float(box.abs().max()) <= 0.5 and float(box.abs().max()) > 0.45
    assert torch.equal(box, BoxSampler(0.5).sample(w, 200, generator=gen()))
    rel = RelativeSampler(0.1, floor=0.01).sample(w, 200, generator=gen())
    assert bool((rel.abs() <= torch.tensor([1.0, 0.001, 0.2]) + 1e-6).all())
    g = GaussianSampler(2.0).sample(torch.zeros(50, 4), 100, generator=gen())
    assert abs(float(g.std()) - 2.0) < 0.05
    assert torch.equal(BoxSampler(0.5).retract(w, box), w + box)


def test_simplex_segments_stay_on_the_simplex():
    labels = torch.nn.functional.one_hot(torch.tensor([0, 3, 1]), 4).double()
    s = SimplexSampler(2.0)
    delta = s.sample(labels, 8, generator=gen(), antithetic=True)
    assert torch.allclose(delta.sum(-1), torch.zeros(8, 3, dtype=torch.float64), atol=1e-12)
    for t in (0.25, 0.5, 1.0):
        p = s.retract(labels, t * delta)
        assert bool((p >= -1e-12).all()) and torch.allclose(p.sum(-1), torch.ones(8, 3).double())
    with pytest.raises(ValueError, match="probability"):
        s.sample(torch.tensor([[0.5, 0.7]]), 2)


@pytest.mark.parametrize(
    "make, word",
    [
        (lambda: BoxSampler(0.0), "radius"),
        (lambda: GaussianSampler(-1.0), "sigma"),
        (lambda: SO3Sampler(0.1, "cauchy"), "distribution"),
        (lambda: SO3Sampler(-0.1), "max_angle"),
        (lambda: SE3Sampler(0.1, -1.0), "max_translation"),
        (lambda: SimplexSampler(1.0, smoothing=0.0), "smoothing"),
    ],
)
def test_bad_sampler_arguments(make, word):
    with pytest.raises(ValueError, match=word):
        make()


def test_bad_sample_calls():
    with pytest.raises(ValueError, match="n_samples"):
        BoxSampler(1.0).sample(torch.zeros(2, 2), 0)
    with pytest.raises(ValueError, match="w_star"):
        SO3Sampler(0.1).sample(torch.zeros(2, 4, 4), 1)
    with pytest.raises(ValueError, match="w_star"):
        BoxSampler(1.0).sample(torch.zeros(0, 2), 1)
    with pytest.raises(TypeError, match="w_star"):
        BoxSampler(1.0).sample(np.zeros((2, 2)), 1)
