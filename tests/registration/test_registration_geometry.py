"""SO(3)/SE(3) exponential and logarithm, geodesic error."""

import math

import pytest
import torch

from beyondgd.registration import (
    geodesic_error,
    hat,
    random_rotations,
    se3_exp,
    se3_log,
    so3_exp,
    so3_log,
    transform_points,
    vee,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _axis_angle(n, low, high, seed=0):
    g = gen(seed)
    axis = torch.randn(n, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    angle = low + (high - low) * torch.rand(n, 1, generator=g, dtype=torch.float64)
    return axis * angle


@pytest.mark.parametrize(
    "low, high", [(0.0, 1e-7), (1e-5, 1e-3), (0.1, 3.0), (3.1, math.pi - 1e-7)]
)
def test_so3_exp_log_round_trip(low, high):
    omega = _axis_angle(200, low, high)
    r = so3_exp(omega)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(r.transpose(1, 2) @ r, eye.expand_as(r), atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(200, dtype=torch.float64))
    assert torch.allclose(so3_log(r), omega, atol=1e-7)
    assert torch.allclose(so3_exp(so3_log(r)), r, atol=1e-12)


def test_so3_log_of_a_half_turn_has_angle_pi():
    r = so3_exp(torch.tensor([0.0, math.pi, 0.0], dtype=torch.float64))
    omega = so3_log(r)
    assert math.isclose(float(omega.norm()), math.pi, rel_tol=1e-12)
    assert torch.allclose(so3_exp(omega), r, atol=1e-12)


def test_se3_exp_log_round_trip():
    xi = torch.cat([_axis_angle(100, 0.0, 3.0), torch.randn(100, 3, dtype=torch.float64)], -1)
    t = se3_exp(xi)
    assert torch.allclose(se3_log(t), xi, atol=1e-9)
    small = 1e-9 * xi
    assert torch.allclose(se3_log(se3_exp(small)), small, atol=1e-15)
    # SE(3) exp of a pure translation is that translation
    pure = torch.tensor([0, 0, 0, 1.0, 2.0, 3.0], dtype=torch.float64)
    assert torch.allclose(se3_exp(pure)[:3, 3], pure[3:])


def test_geodesic_error_is_symmetric_and_exact():
    a = random_rotations(50, generator=gen(1), dtype=torch.float64)
    b = random_rotations(50, generator=gen(2), dtype=torch.float64)
    assert torch.allclose(geodesic_error(a, b), geodesic_error(b, a), atol=1e-12)
    angles = torch.linspace(0, math.pi, 50, dtype=torch.float64)
    r = random_rotations(50, angles=angles, generator=gen(3), dtype=torch.float64)
    assert torch.allclose(geodesic_error(r, torch.eye(3, dtype=torch.float64)), angles, atol=1e-7)
    assert torch.allclose(geodesic_error(a, a @ r), angles, atol=1e-7)  # right-invariant
    deg = geodesic_error(r, torch.eye(3, dtype=torch.float64), degrees=True)
    assert torch.allclose(deg, torch.rad2deg(angles), atol=1e-5)


def test_hat_vee_and_transform_points():
    v = torch.randn(5, 3, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose((hat(v) @ x[..., None])[..., 0], torch.cross(v, x, dim=-1))
    assert torch.allclose(vee(hat(v)), v)
    t = se3_exp(torch.tensor([0.0, 0.0, math.pi / 2, 1.0, 0.0, 0.0], dtype=torch.float64))
    p = transform_points(t, torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(p, t[:3, :3] @ torch.tensor([1.0, 0, 0]).double() + t[:3, 3])


def test_exp_is_differentiable_at_the_identity():
    omega = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    r = so3_exp(omega)
    (r[1, 0] - r[0, 1]).backward()  # d/d omega_z of 2 sin(theta) at 0 = 2
    assert torch.allclose(omega.grad, torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64))


def test_geometry_input_errors():
    with pytest.raises(ValueError, match="omega"):
        so3_exp(torch.zeros(4))
    with pytest.raises(ValueError, match="rotation"):
        so3_log(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="rotation_b"):
        geodesic_error(torch.eye(3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="rotation_a"):
        geodesic_error(torch.full((3, 3), float("nan")), torch.eye(3))
