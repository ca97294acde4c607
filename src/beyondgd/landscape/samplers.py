r"""Perturbation samplers for the star-convexity hinges: where to look around a ground truth.

A sampler draws tangent perturbations :math:`\delta` around a batch of ground truths :math:`w^*`
and maps them back to the space of predictions with a retraction :math:`w^* \oplus t\delta`, so
that ``t = 1`` gives the perturbed point :math:`w'` and ``t = lam`` the point :math:`w_\lambda` of
the hinges (:class:`~beyondgd.landscape.StarConvexHinge`). On a vector space
:math:`w \oplus \delta = w + \delta`; on SO(3) and SE(3) it is the group exponential
:math:`\exp(\delta)\,w` (left perturbation, so ``||delta||`` is the rotation angle and every
point of the segment is a rotation); on the probability simplex the perturbation is drawn on the
logits and the segment is the straight one inside the simplex.

Shapes: ``w_star`` is ``(B, *point_shape)``; ``sample`` returns ``delta`` of shape
``(S, B, *tangent_shape)`` for ``S`` samples per datum; ``retract`` and ``sq_norm`` broadcast over
the leading sample dimension.

References
----------
.. [1] Z. Zhang, Y. Shao, Y. Zhang, F. Lin, H. Zhang, E. Rundensteiner, "Deep Loss Convexification
   for Learning Iterative Models", IEEE TPAMI 2024, arXiv:2411.10649.
.. [2] Y. Zhang, X. Huang, Z. Zhang, "PRISE: Demystifying Deep Lucas-Kanade with Strongly
   Star-Convex Constraints for Multimodel Image Alignment", CVPR 2023 (antithetic, relative
   uniform perturbations).
"""

from __future__ import annotations

import abc
import math

import torch

from beyondgd.core import check_choice, check_finite_tensor, check_int, check_number

__all__ = [
    "BoxSampler",
    "GaussianSampler",
    "PerturbationSampler",
    "RelativeSampler",
    "SE3Sampler",
    "SO3Sampler",
    "SimplexSampler",
]


class PerturbationSampler(abc.ABC):
    """Base class: draw perturbations, retract them, measure them.

    Subclasses set ``point_shape``/``tangent_shape`` (``None`` entries: any size, taken from
    ``w_star``) and implement :meth:`_noise`, :meth:`_tangent` (noise -> tangent vector; the
    antithetic sample uses the negated noise), :meth:`retract` and :meth:`sq_norm`.

    Examples
    --------
    >>> import torch
    >>> class Cross(PerturbationSampler):  # perturb along the coordinate axes only
    ...     def _noise(self, w_star, n, generator):
    ...         return torch.eye(w_star.shape[1])[:n, None, :].expand(n, *w_star.shape)
    ...     def retract(self, w_star, delta):
    ...         return w_star + delta
    >>> Cross().sample(torch.zeros(1, 2), 2)[:, 0]
    tensor([[1., 0.],
            [0., 1.]])
    """

    #: trailing shape of one prediction ``w`` (``None`` = any size)
    point_shape: tuple[int | None, ...] = (None,)

    def check_w_star(self, w_star: object) -> torch.Tensor:
        """Validate a batch of ground truths ``(B, *point_shape)`` (finite, floating point)."""
        w_star = check_finite_tensor("w_star", w_star)
        shape = self.point_shape
        ok = w_star.ndim == 1 + len(shape) and all(
            s is None or s == w_star.shape[1 + i] for i, s in enumerate(shape)
        )
        if not ok or w_star.shape[0] == 0:
            want = "(B, " + ", ".join("d" if s is None else str(s) for s in shape) + ")"
            raise ValueError(
                f"w_star must have shape {want} with B >= 1 for {type(self).__name__}, "
                f"got {tuple(w_star.shape)}"
            )
        return w_star

    def sample(
        self,
        w_star: torch.Tensor,
        n_samples: int,
        *,
        generator: torch.Generator | None = None,
        antithetic: bool = False,
    ) -> torch.Tensor:
        """``n_samples`` tangent perturbations per datum, shape ``(n_samples, B, *tangent)``.

        With ``antithetic=True`` the samples come in pairs built from noise ``+e`` and ``-e``
        (the first ``ceil(n_samples / 2)`` are drawn, the rest are their mirror images).
        """
        w_star = self.check_w_star(w_star)
        n_samples = check_int("n_samples", n_samples, low=1)
        return self._sample(w_star, n_samples, generator, bool(antithetic))

    def _sample(self, w_star, n_samples, generator, antithetic) -> torch.Tensor:
        n_draw = math.ceil(n_samples / 2) if antithetic else n_samples
        noise = self._noise(w_star, n_draw, generator)
        if antithetic:
            noise = torch.cat([noise, -noise], 0)[:n_samples]
        return self._tangent(w_star, noise)

    @abc.abstractmethod
    def _noise(self, w_star: torch.Tensor, n: int, generator) -> torch.Tensor:
        """Raw noise ``(n, B, ...)``."""

    def _tangent(self, w_star: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return noise

    @abc.abstractmethod
    def retract(self, w_star: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        r""":math:`w^* \oplus \delta` for ``delta`` of shape ``(..., B, *tangent)``."""

    def sq_norm(self, delta: torch.Tensor) -> torch.Tensor:
        r""":math:`\|\delta\|^2` summed over the tangent dimensions (``(..., B)``)."""
        n_tangent = len(self.tangent_shape())
        return delta.square().flatten(delta.ndim - n_tangent).sum(-1)

    def tangent_shape(self) -> tuple[int | None, ...]:
        return self.point_shape

    def _draw(self, shape, w_star, generator, kind: str) -> torch.Tensor:
        # Draw in float64 on the CPU generator's device, then cast: same numbers for any dtype.
        dev = generator.device if generator is not None else w_star.device
        if kind == "uniform":
            x = torch.rand(shape, generator=generator, dtype=torch.float64, device=dev) * 2 - 1
        else:
            x = torch.randn(shape, generator=generator, dtype=torch.float64, device=dev)
        return x.to(dtype=w_star.dtype, device=w_star.device)


class _Euclidean(PerturbationSampler):
    point_shape = (None,)

    def retract(self, w_star: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return w_star + delta


class BoxSampler(_Euclidean):
    r"""Uniform perturbations in the box :math:`[-r, r]^d` around :math:`w^* \in \mathbb{R}^d`.

    Examples
    --------
    >>> import torch
    >>> s = BoxSampler(0.5)
    >>> delta = s.sample(torch.zeros(2, 3), 4, generator=torch.Generator().manual_seed(0))
    >>> delta.shape, bool(delta.abs().max() <= 0.5)
    (torch.Size([4, 2, 3]), True)
    """

    def __init__(self, radius: float = 1.0):
        self.radius = check_number("radius", radius, low=0, low_inclusive=False)

    def _noise(self, w_star, n, generator):
        return self.radius * self._draw((n, *w_star.shape), w_star, generator, "uniform")


class GaussianSampler(_Euclidean):
    r"""Gaussian perturbations :math:`\delta \sim \mathcal{N}(0, \sigma^2 I)` in
    :math:`\mathbb{R}^d`.

    Examples
    --------
    >>> import torch
    >>> GaussianSampler(0.1).sample(torch.zeros(5, 2), 3).shape
    torch.Size([3, 5, 2])
    """

    def __init__(self, sigma: float = 1.0):
        self.sigma = check_number("sigma", sigma, low=0, low_inclusive=False)

    def _noise(self, w_star, n, generator):
        return self.sigma * self._draw((n, *w_star.shape), w_star, generator, "normal")


class RelativeSampler(_Euclidean):
    r"""Relative uniform perturbations (PRISE): :math:`\delta_i = s\,u_i\,\max(|w^*_i|, f)` with
    :math:`u_i \sim U(-1, 1)`, scale ``s`` and floor ``f`` (so zero entries still move).

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([[10.0, -2.0]])
    >>> d = RelativeSampler(0.1, floor=1.0).sample(w, 8)
    >>> bool((d.abs() <= torch.tensor([1.0, 0.2]) + 1e-6).all())
    True
    """

    def __init__(self, scale: float = 0.1, floor: float = 1e-3):
        self.scale = check_number("scale", scale, low=0, low_inclusive=False)
        self.floor = check_number("floor", floor, low=0)

    def _noise(self, w_star, n, generator):
        u = self._draw((n, *w_star.shape), w_star, generator, "uniform")
        return self.scale * u * w_star.abs().clamp_min(self.floor)


def _angle_noise(sampler, w_star, n, generator, max_angle, distribution):
    """Axis uniform on the sphere times an angle from ``distribution``: ``(n, B, 3)``."""
    b = w_star.shape[0]
    g = sampler._draw((n, b, 3), w_star, generator, "normal")
    if distribution == "gaussian":
        return max_angle * g  # per-axis std = max_angle
    axis = g / torch.linalg.vector_norm(g, dim=-1, keepdim=True).clamp_min(1e-12)
    if distribution == "fixed":
        angle = torch.full((n, b, 1), max_angle, dtype=w_star.dtype, device=w_star.device)
    else:  # uniform in [0, max_angle]
        u = sampler._draw((n, b, 1), w_star, generator, "uniform")
        angle = max_angle * (u + 1) / 2
    return axis * angle


_ANGLES = ("uniform", "fixed", "gaussian")


class SO3Sampler(PerturbationSampler):
    r"""On-manifold rotation perturbations :math:`R' = \exp([\delta]_\times) R^*` with
    :math:`\|\delta\|` the rotation angle (radians) between :math:`R'` and :math:`R^*`.

    ``distribution``: ``"uniform"`` (axis uniform on the sphere, angle uniform in
    ``[0, max_angle]``), ``"fixed"`` (angle exactly ``max_angle``) or ``"gaussian"``
    (:math:`\delta \sim \mathcal{N}(0, \mathrm{max\_angle}^2 I_3)`). Points along the segment,
    :math:`\exp(t\delta) R^*`, are on the geodesic from :math:`R^*` through :math:`R'`.

    Examples
    --------
    >>> import math, torch
    >>> s = SO3Sampler(math.radians(30), distribution="fixed")
    >>> R = s.retract(torch.eye(3)[None], s.sample(torch.eye(3)[None], 5))
    >>> R.shape, bool(torch.allclose(torch.linalg.det(R), torch.ones(5, 1), atol=1e-5))
    (torch.Size([5, 1, 3, 3]), True)
    """

    point_shape = (3, 3)

    def __init__(self, max_angle: float = math.pi / 4, distribution: str = "uniform"):
        self.max_angle = check_number("max_angle", max_angle, low=0, low_inclusive=False)
        self.distribution = check_choice("distribution", distribution, _ANGLES)

    def tangent_shape(self):
        return (3,)

    def _noise(self, w_star, n, generator):
        return _angle_noise(self, w_star, n, generator, self.max_angle, self.distribution)

    def retract(self, w_star: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        from beyondgd.registration.geometry import so3_exp

        return so3_exp(delta) @ w_star


class SE3Sampler(PerturbationSampler):
    r"""On-manifold rigid-motion perturbations :math:`T' = \exp(\xi) T^*`, :math:`\xi = (\omega,
    v)`: the rotation part as in :class:`SO3Sampler`, the translation part ``v`` uniform in the box
    ``[-max_translation, max_translation]^3``. :math:`\|\xi\|^2 = \|\omega\|^2 + s^2\|v\|^2` with
    ``translation_scale`` ``s`` (radians per unit length).

    Examples
    --------
    >>> import torch
    >>> s = SE3Sampler(0.3, 0.1)
    >>> T = s.retract(torch.eye(4)[None], s.sample(torch.eye(4)[None], 2))
    >>> T.shape
    torch.Size([2, 1, 4, 4])
    """

    point_shape = (4, 4)

    def __init__(
        self,
        max_angle: float = math.pi / 4,
        max_translation: float = 0.1,
        distribution: str = "uniform",
        translation_scale: float = 1.0,
    ):
        self.max_angle = check_number("max_angle", max_angle, low=0, low_inclusive=False)
        self.max_translation = check_number("max_translation", max_translation, low=0)
        self.distribution = check_choice("distribution", distribution, _ANGLES)
        self.translation_scale = check_number("translation_scale", translation_scale, low=0)

    def tangent_shape(self):
        return (6,)

    def _noise(self, w_star, n, generator):
        omega = _angle_noise(self, w_star, n, generator, self.max_angle, self.distribution)
        v = self.max_translation * self._draw((n, w_star.shape[0], 3), w_star, generator, "uniform")
        return torch.cat([omega, v], -1)

    def retract(self, w_star: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        from beyondgd.registration.geometry import se3_exp

        return se3_exp(delta) @ w_star

    def sq_norm(self, delta: torch.Tensor) -> torch.Tensor:
        return delta[..., :3].square().sum(-1) + self.translation_scale**2 * delta[
            ..., 3:
        ].square().sum(-1)


class SimplexSampler(PerturbationSampler):
    r"""Perturbations on the probability simplex through perturbed logits.

    With :math:`z^* = \log(\mathrm{smooth}(w^*))` (label smoothing ``smoothing`` keeps one-hot
    targets finite), :math:`w' = \mathrm{softmax}(z^* + \epsilon)`,
    :math:`\epsilon \sim \mathcal{N}(0, \sigma^2 I)`; the tangent vector is
    :math:`\delta = w' - w^*` (entries sum to zero) and the segment :math:`w^* + t\delta`,
    :math:`t \in [0, 1]`, stays in the simplex because the simplex is convex. The antithetic
    sample uses :math:`-\epsilon` on the logits.

    Examples
    --------
    >>> import torch
    >>> w = torch.eye(3)[:2]  # two one-hot labels
    >>> p = SimplexSampler(2.0).retract(w, SimplexSampler(2.0).sample(w, 4))
    >>> bool(torch.allclose(p.sum(-1), torch.ones(4, 2))) and bool((p >= 0).all())
    True
    """

    point_shape = (None,)

    def __init__(self, sigma: float = 1.0, smoothing: float = 0.01):
        self.sigma = check_number("sigma", sigma, low=0, low_inclusive=False)
        self.smoothing = check_number("smoothing", smoothing, low=0, high=1, low_inclusive=False)

    def check_w_star(self, w_star: object) -> torch.Tensor:
        w_star = super().check_w_star(w_star)
        if bool((w_star < 0).any()) or not torch.allclose(
            w_star.sum(-1), torch.ones((), dtype=w_star.dtype, device=w_star.device), atol=1e-4
        ):
            raise ValueError("w_star must hold probability vectors (non-negative, rows sum to 1)")
        return w_star

    def _noise(self, w_star, n, generator):
        return self.sigma * self._draw((n, *w_star.shape), w_star, generator, "normal")

    def _tangent(self, w_star, noise):
        k = w_star.shape[-1]
        smooth = (1 - self.smoothing) * w_star + self.smoothing / k
        return torch.softmax(smooth.log() + noise, -1) - w_star

    def retract(self, w_star: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return w_star + delta
