"""
Deep Loss Convexification: a learned landscape before and after the hinges
==========================================================================

A learned energy :math:`E_\\theta(w; y)` is minimised over :math:`w` by gradient descent at test
time; a landscape with spurious minima around the ground truth :math:`w^*` traps the solver.
The star-convexity hinges of :class:`~beyondgd.landscape.StarConvexHinge` penalise every sampled
segment :math:`[w^*, w^* + \\delta]` on which the energy is not star-convex around :math:`w^*`:

.. math::
    H_1 &= [E(w^*) - E(w_\\lambda)]_+ \\\\
    H_2 &= [E(w^*) - E(w') + \\tfrac{\\mu}{2}\\|\\delta\\|^2]_+ \\\\
    H_3 &= [E(w_\\lambda) - (1-\\lambda) E(w^*) - \\lambda E(w')
    + \\tfrac{\\mu}{2}\\lambda(1-\\lambda)\\|\\delta\\|^2]_+,

with :math:`w' = w^* + \\delta` and :math:`w_\\lambda = w^* + \\lambda\\delta`.

The toy: a point :math:`w^* \\in [-1, 1]^2` is observed through a periodic sensor
:math:`\\phi(w) = (\\cos(Aw + b), \\sin(Aw + b))` and the energy is the feature-matching
:math:`E_\\theta(w; y) = \\|g_\\theta(\\phi(w)) - g_\\theta(y)\\|^2` with a small MLP
:math:`g_\\theta`. We draw the landscape of one datum at the network's initial weights and after
training with energy-at-truth plus hinges (the PRISE recipe), and measure the fraction of
star-convex segments with :func:`~beyondgd.landscape.star_convexity_fraction`.
"""

import matplotlib.pyplot as plt
import torch

from beyondgd.landscape import GaussianSampler, StarConvexHinge, star_convexity_fraction

torch.set_num_threads(1)
gen = torch.Generator().manual_seed(0)
direction = torch.nn.functional.normalize(torch.randn(8, 2, generator=gen), dim=1)
A = direction * (1 + 3 * torch.rand(8, 1, generator=gen))  # frequencies between 1 and 4
b = 2 * torch.pi * torch.rand(8, generator=gen)


def sensor(w):
    z = w @ A.T + b
    return torch.cat([torch.cos(z), torch.sin(z)], -1)


torch.manual_seed(0)
g = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 16))


def energy(w, y):  # (..., B, 2), (B, 16) -> (..., B)
    return (g(sensor(w)) - g(y)).square().sum(-1)


def observe(n):
    w_star = 2 * torch.rand(n, 2, generator=gen) - 1
    return w_star, sensor(w_star) + 0.05 * torch.randn(n, 16, generator=gen)


w_test, y_test = observe(256)
sampler = GaussianSampler(0.5)
grid = torch.linspace(-1.5, 1.5, 121)
W1, W2 = torch.meshgrid(grid, grid, indexing="xy")
points = torch.stack([W1, W2], -1).reshape(-1, 1, 2)  # every grid point, for one datum


def landscape(k=0):
    with torch.no_grad():
        return energy(points, y_test[k : k + 1]).reshape(W1.shape)


def fraction():
    res = star_convexity_fraction(
        energy, sampler, w_test, y_test, n_samples=16, generator=torch.Generator().manual_seed(1)
    )
    return res.fraction


before, frac_before = landscape(), fraction()

# %%
# Training with the hinges
# ------------------------
# Energy at the truth plus the hinges, 300 Adam steps on batches of 64 fresh observations.

hinge = StarConvexHinge(energy, sampler, lam=0.5, mu=0.1, rho=1.0, n_samples=4)
opt = torch.optim.Adam(g.parameters(), lr=3e-3)
for _ in range(300):
    w_star, y = observe(64)
    out = hinge(w_star, y, generator=gen)
    loss = energy(w_star, y).mean() + out.total
    opt.zero_grad()
    loss.backward()
    opt.step()
after, frac_after = landscape(), fraction()
print(f"star-convex segments: {frac_before:.2f} before, {frac_after:.2f} after the hinges")

# %%
# The landscape of one datum
# --------------------------
# The white star is the ground truth. Before training the energy has many basins; after, the
# valley around :math:`w^*` is star-convex, so gradient descent from a start inside it reaches
# the truth.

fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
for ax, z, title in (
    (axes[0], before, f"initial weights ({frac_before:.0%} star-convex)"),
    (axes[1], after, f"after the hinges ({frac_after:.0%} star-convex)"),
):
    cs = ax.contourf(W1, W2, z / z.max(), levels=30, cmap="viridis")
    ax.plot(*w_test[0], marker="*", color="white", ms=14, mec="black")
    ax.set(title=title, xlabel="w[0]", ylabel="w[1]", aspect="equal")
_ = fig.colorbar(cs, ax=axes, shrink=0.8, label="energy / max")
