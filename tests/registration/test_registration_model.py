"""The PointNet registration model and its trainer; the modules' docstring examples."""

import math

import pytest
import torch

from beyondgd.landscape import SO3Sampler, StarConvexHinge
from beyondgd.registration import (
    PointNetFeature,
    PointNetRegistration,
    RegistrationTrainer,
    random_rotations,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _batch(b=4, n=64, angle=0.5, seed=0):
    x = torch.randn(b, n, 3, generator=gen(seed)) * torch.tensor([1.0, 0.5, 0.25])
    r = random_rotations(b, angles=torch.full((b,), angle), generator=gen(seed + 1))
    return x, x @ r.transpose(1, 2), r


def test_feature_is_normalised_and_permutation_invariant():
    torch.manual_seed(0)
    g = PointNetFeature((8, 16))
    x = torch.randn(3, 20, 3)
    f = g(x)
    assert f.shape == (3, 16)
    assert torch.allclose(f.norm(dim=-1), torch.ones(3))
    assert torch.allclose(g(x[:, torch.randperm(20)]), f, atol=1e-6)


def test_energy_broadcasts_over_sample_dimension_and_is_zero_at_identity_match():
    torch.manual_seed(0)
    model = PointNetRegistration((8, 16))
    x, y, r = _batch()
    gy = model.features(y)
    assert torch.allclose(model.energy(r, x, gy), torch.zeros(4), atol=1e-10)
    stacked = torch.stack([r, torch.eye(3).expand(4, 3, 3)])
    e = model.energy(stacked, x, gy)
    assert e.shape == (2, 4) and torch.allclose(e[1], model.energy(torch.eye(3), x, gy))


def test_forward_and_finite_difference_jacobians_agree():
    from beyondgd.registration.solvers import _jacobian

    torch.manual_seed(0)
    model = PointNetRegistration((16, 32)).double()
    x, y, r = _batch(angle=0.3)
    x, y, r = x.double(), y.double(), r.double()
    gy = model.features(y)

    def residual(rot):
        return model.residual(rot, x, gy)

    with torch.no_grad():
        res = residual(r)
        exact = _jacobian(residual, "so3", r, res, 3, "forward", 1e-7)
        approx = _jacobian(residual, "so3", r, res, 3, "finite-difference", 1e-7)
    assert exact.shape == (4, 32, 3)
    assert float((exact - approx).norm() / exact.norm()) < 1e-4


@pytest.mark.parametrize("loss", ["baseline", "dlc", "prise"])
def test_trainer_losses_update_the_network(loss):
    torch.manual_seed(0)
    model = PointNetRegistration((8, 16))
    before = [p.detach().clone() for p in model.parameters()]
    trainer = RegistrationTrainer(model, loss=loss, n_samples=2, n_unroll=2, lr=1e-2)
    x, y, r = _batch()
    stats = trainer.step(x, y, r, generator=gen())
    assert ("unrolled" in stats) == (loss != "prise")
    assert ("hinge" in stats) == (loss != "baseline")
    assert math.isfinite(stats["loss"])
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_registration_hinge_gradient_reaches_pointnet():
    torch.manual_seed(0)
    model = PointNetRegistration((8, 16))
    x, y, r = _batch()
    hinge = StarConvexHinge(
        lambda rot, batch: model.energy(rot, *batch), SO3Sampler(math.radians(90)), mu=1.0
    )
    out = hinge(r, (x, model.features(y)), generator=gen())
    out.total.backward()
    assert float(out.total.detach()) > 0
    assert all(float(p.grad.abs().sum()) > 0 for p in model.parameters())


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def test_dlc_trainer_gradient_is_baseline_plus_rho_times_hinge():
    # The unrolled term alone moves the weights too, so "the network changed" cannot show that
    # the trainer's hinge carries gradient: compare the gradients term by term instead.
    torch.manual_seed(0)
    model = PointNetRegistration((8, 16)).double()
    x, y, r = (t.double() for t in _batch())
    dlc = RegistrationTrainer(model, loss="dlc", rho=2.5, n_samples=2, n_unroll=2)
    baseline = RegistrationTrainer(model, loss="baseline", n_unroll=2)
    g_dlc = _grads(model, dlc.loss(x, y, r, generator=gen(3))[0])
    g_base = _grads(model, baseline.loss(x, y, r)[0])
    hinge = dlc.hinge(r, (x, model.features(y)), generator=gen(3))
    g_hinge = _grads(model, hinge.total)
    assert float(g_hinge.norm()) > 1e-3 * float(g_base.norm())
    torch.testing.assert_close(g_dlc, g_base + g_hinge, rtol=1e-9, atol=1e-12)
    # rho scales the hinge term
    dlc_half = RegistrationTrainer(model, loss="dlc", rho=1.25, n_samples=2, n_unroll=2)
    g_half = _grads(model, dlc_half.loss(x, y, r, generator=gen(3))[0])
    torch.testing.assert_close(g_half, g_base + 0.5 * g_hinge, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "loss, jacobian, want",
    [
        # target features + residual at the identity + n_unroll x (3 Jacobian columns + residual)
        ("baseline", "forward", 1 + 1 + 2 * 4),
        ("baseline", "finite-difference", 1 + 1 + 2 * 4),
        # ... + the hinges: R*, then R' and R_lam per sample (target features shared)
        ("dlc", "forward", 1 + 1 + 2 * 4 + 1 + 2 * 3),
        ("prise", "forward", 1 + 1 + 2 * 3),
    ],
)
def test_trainer_counts_energy_evaluations_per_step(loss, jacobian, want):
    torch.manual_seed(0)
    model = PointNetRegistration((8, 16))
    trainer = RegistrationTrainer(model, loss=loss, n_samples=3, n_unroll=2, jacobian=jacobian)
    x, y, r = _batch(b=4)
    assert trainer.step(x, y, r, generator=gen())["evaluations"] == 4 * want
    assert trainer.step(x, y, r, generator=gen())["evaluations"] == 4 * want
    assert model.feature.evaluations == 2 * 4 * want


def _unrolled_grad(jacobian, jacobian_grad=True):
    torch.manual_seed(0)
    model = PointNetRegistration((16, 32))
    x, y, r = _batch(b=4, angle=0.6)
    trainer = RegistrationTrainer(
        model, loss="baseline", n_unroll=2, jacobian=jacobian, jacobian_grad=jacobian_grad
    )
    loss, _ = trainer.loss(x, y, r)
    return float(loss.detach()), _grads(model, loss)


def test_unrolled_gradient_through_a_finite_difference_jacobian_is_unusable():
    # The diagnosis of the dlc-registration baseline: backpropagating through a
    # finite-difference Jacobian of the max-pooled PointNet divides the jumps of the pooled
    # argmax by the step, so the parameter gradient is orders of magnitude too large; the
    # forward-mode Jacobian (or a detached one) gives gradients of the scale of the loss.
    loss_fwd, g_fwd = _unrolled_grad("forward")
    loss_fd, g_fd = _unrolled_grad("finite-difference")
    loss_det, g_det = _unrolled_grad("finite-difference", jacobian_grad=False)
    assert loss_fd == pytest.approx(loss_fwd, rel=1e-2)
    assert loss_det == pytest.approx(loss_fd, rel=1e-6)
    assert float(g_fd.norm()) > 20 * float(g_fwd.norm())
    assert float(g_det.norm()) < 5 * float(g_fwd.norm())


def test_unrolled_loss_on_the_last_iterate_or_all_iterates():
    torch.manual_seed(0)
    model = PointNetRegistration((8, 16))
    x, y, r = _batch(angle=1.2)
    final = RegistrationTrainer(model, loss="baseline", n_unroll=3).loss(x, y, r)[0]
    mean = RegistrationTrainer(model, loss="baseline", n_unroll=3, unrolled_loss="mean")
    iterates = model.register(x, y, n_iters=3, return_iterates=True).iterates
    per = [float((w - r).square().sum((-1, -2)).mean()) for w in iterates]
    assert float(final) == pytest.approx(per[-1], rel=1e-5)
    assert float(mean.loss(x, y, r)[0]) == pytest.approx(sum(per) / 3, rel=1e-5)


def test_trainer_input_errors():
    model = PointNetRegistration((8,))
    with pytest.raises(ValueError, match="loss"):
        RegistrationTrainer(model, loss="unrolled")
    with pytest.raises(ValueError, match="lam"):
        RegistrationTrainer(model, loss="dlc", lam=1.0)
    with pytest.raises(ValueError, match="n_samples"):
        RegistrationTrainer(model, loss="prise", n_samples=0)
    with pytest.raises(ValueError, match="unrolled_loss"):
        RegistrationTrainer(model, unrolled_loss="first")
    with pytest.raises(TypeError, match="model"):
        RegistrationTrainer(torch.nn.Linear(3, 3))
    x, y, r = _batch()
    with pytest.raises(ValueError, match="source"):
        RegistrationTrainer(model).step(x * float("nan"), y, r)
