"""StarConvexHinge and the star-convexity diagnostic on landscapes with a known answer."""

import math

import pytest
import torch
from torch import nn

from beyondgd.landscape import (
    BoxSampler,
    GaussianSampler,
    SO3Sampler,
    StarConvexHinge,
    segment_profile,
    star_convexity_fraction,
)


def bowl(w, batch=None):
    """Convex quadratic around 0: 2-strongly convex, so mu-star-convex for mu <= 2."""
    return (w**2).sum(-1)


def flower(w, batch=None):
    """Star-convex around 0 but not convex: r^2 (2 + sin(3 theta))."""
    theta = torch.atan2(w[..., 1], w[..., 0])
    return (w**2).sum(-1) * (2 + torch.sin(3 * theta))


def double_well(w, batch=None):
    """Minima near -1 (value ~ +1) and near 2 (value ~ -2, deeper): not star-convex around -1."""
    x = w[..., 0]
    return (x + 1) ** 2 * (x - 2) ** 2 - x


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("energy", [bowl, flower])
@pytest.mark.parametrize("aggregate", ["sum", "max"])
def test_hinges_vanish_on_star_convex_landscapes(energy, aggregate):
    hinge = StarConvexHinge(energy, BoxSampler(2.0), mu=0.5, n_samples=32, aggregate=aggregate)
    out = hinge(torch.zeros(5, 2), generator=gen())
    assert float(out.total) == 0.0
    assert all(float(v) == 0.0 for v in out.parts.values())
    assert float(out.energy_star) == 0.0


def test_hinges_positive_with_a_deeper_second_minimum():
    hinge = StarConvexHinge(double_well, BoxSampler(3.5), mu=0.0, n_samples=64)
    out = hinge(torch.full((1, 1), -1.0), generator=gen())
    assert float(out.total) > 0
    assert float(out.parts["H2"]) > 0  # some w' lies below w*
    # ...but around the global minimum (x ~ 2.05) the landscape is star-convex on a small box.
    grid = torch.linspace(1.5, 2.5, 100001, dtype=torch.float64)[:, None]
    w_min = grid[double_well(grid).argmin()][None]
    out_global = StarConvexHinge(double_well, BoxSampler(0.5), mu=0.0, n_samples=64)(
        w_min, generator=gen()
    )
    assert float(out_global.total) < 1e-6


def test_mu_margin_makes_a_flat_landscape_positive():
    flat = StarConvexHinge(lambda w, b: 0 * w.sum(-1), GaussianSampler(1.0), mu=1.0, terms="H2")
    assert float(flat(torch.zeros(3, 2), generator=gen()).total) > 0


def test_parts_terms_rho_and_aggregation():
    w = torch.full((2, 1), -1.0)
    kw = dict(n_samples=16)
    full = StarConvexHinge(double_well, BoxSampler(3.5), **kw)(w, generator=gen())
    h2 = StarConvexHinge(double_well, BoxSampler(3.5), terms=("H2",), **kw)(w, generator=gen())
    assert sorted(full.parts) == ["H1", "H2", "H3"] and list(h2.parts) == ["H2"]
    assert torch.allclose(full.parts["H2"], h2.parts["H2"])
    rho3 = StarConvexHinge(double_well, BoxSampler(3.5), rho=3.0, **kw)(w, generator=gen())
    assert torch.allclose(rho3.total, 3 * full.total)
    mx = StarConvexHinge(double_well, BoxSampler(3.5), aggregate="max", **kw)(w, generator=gen())
    assert bool((mx.per_datum <= full.per_datum + 1e-6).all())
    assert bool((mx.per_datum * 16 >= full.per_datum - 1e-5).all())


def test_stacked_energy_gives_the_same_numbers():
    a = StarConvexHinge(double_well, BoxSampler(3.0), n_samples=5)
    b = StarConvexHinge(double_well, BoxSampler(3.0), n_samples=5, stacked=True)
    w = torch.tensor([[-1.0], [0.5]])
    assert torch.allclose(a(w, generator=gen()).total, b(w, generator=gen()).total)


def test_antithetic_samples_come_in_mirrored_pairs():
    delta = BoxSampler(1.0).sample(torch.zeros(3, 2), 6, generator=gen(), antithetic=True)
    assert torch.equal(delta[3:], -delta[:3])
    odd = BoxSampler(1.0).sample(torch.zeros(3, 2), 5, generator=gen(), antithetic=True)
    assert odd.shape == (5, 3, 2) and torch.equal(odd[3:], -odd[:2])


class LinearEnergy(nn.Module):
    """h(w) = ||A(x) w - b(x)||^2 with a network producing A and b: parameters to train."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(3, 4)

    def forward(self, w, x):
        out = self.net(x)  # (B, 4)
        a, b = out[..., :2], out[..., 2:]
        return ((a * w - b) ** 2).sum(-1) + torch.sin(3 * w).sum(-1)


def test_hinge_gradient_reaches_the_network_parameters():
    energy = LinearEnergy()
    hinge = StarConvexHinge(energy, BoxSampler(2.0), mu=0.5, n_samples=8)
    x = torch.randn(6, 3, generator=gen())
    out = hinge(torch.zeros(6, 2), x, generator=gen())
    assert float(out.total.detach()) > 0
    assert out.total.requires_grad  # fails if the energy was computed under no_grad
    out.total.backward()
    grads = [p.grad for p in energy.parameters()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_an_energy_computed_under_no_grad_gives_no_gradient():
    energy = LinearEnergy()

    def frozen(w, x):
        with torch.no_grad():  # the PRNet demo's bug
            return energy(w, x)

    out = StarConvexHinge(frozen, BoxSampler(2.0), n_samples=4)(
        torch.zeros(2, 2), torch.randn(2, 3), generator=gen()
    )
    assert not out.total.requires_grad


def test_learnable_lam_mu_are_parameters_with_gradients():
    hinge = StarConvexHinge(double_well, BoxSampler(3.0), lam=0.3, mu=0.2, learnable=True)
    assert math.isclose(float(hinge.lam), 0.3, rel_tol=1e-6)
    assert math.isclose(float(hinge.mu), 0.2, rel_tol=1e-6)
    names = {n for n, _ in hinge.named_parameters()}
    assert names == {"lam_logit", "log_mu"}
    out = hinge(torch.full((2, 1), -1.0), generator=gen())
    out.total.backward()
    assert hinge.log_mu.grad is not None and float(hinge.log_mu.grad) != 0
    assert hinge.lam_logit.grad is not None


def test_fixed_lam_mu_are_not_parameters():
    assert list(StarConvexHinge(bowl, BoxSampler(1.0)).parameters()) == []


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"lam": 0.0}, "lam"),
        ({"lam": 1.0}, "lam"),
        ({"lam": 1.5}, "lam"),
        ({"mu": -0.1}, "mu"),
        ({"rho": -1.0}, "rho"),
        ({"aggregate": "mean"}, "aggregate"),
        ({"terms": ("H4",)}, "terms"),
        ({"terms": ()}, "terms"),
        ({"mu": 0.0, "learnable": True}, "mu"),
    ],
)
def test_bad_hinge_arguments_name_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        StarConvexHinge(bowl, BoxSampler(1.0), **kwargs)


def test_bad_energy_sampler_and_w_star():
    with pytest.raises(TypeError, match="energy"):
        StarConvexHinge(3.0, BoxSampler(1.0))
    with pytest.raises(TypeError, match="sampler"):
        StarConvexHinge(bowl, "box")
    hinge = StarConvexHinge(bowl, BoxSampler(1.0))
    with pytest.raises(ValueError, match="w_star"):
        hinge(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="w_star"):
        StarConvexHinge(bowl, SO3Sampler(0.1))(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="energy must return"):
        StarConvexHinge(lambda w, b: w, BoxSampler(1.0))(torch.zeros(2, 3))


def test_star_convexity_fraction_separates_landscapes():
    assert star_convexity_fraction(bowl, BoxSampler(2.0), torch.zeros(4, 2)).fraction == 1.0
    assert star_convexity_fraction(flower, BoxSampler(2.0), torch.zeros(4, 2)).fraction == 1.0
    res = star_convexity_fraction(
        double_well, BoxSampler(3.5), torch.full((2, 1), -1.0), n_samples=64, generator=gen()
    )
    assert 0.0 < res.fraction < 1.0
    assert res.n_segments == 128 and res.per_datum.shape == (2,)


def test_segment_profile_walks_the_geodesic():
    delta = torch.tensor([[[0.0, 0.0, 0.5]]])  # rotation about z, 0.5 rad
    ts = torch.linspace(-1, 1, 5)

    def angle_energy(r, b):
        return torch.atan2(r[..., 1, 0], r[..., 0, 0])

    prof = segment_profile(angle_energy, SO3Sampler(1.0), torch.eye(3)[None], delta, ts)
    assert torch.allclose(prof[:, 0, 0], 0.5 * ts, atol=1e-6)
