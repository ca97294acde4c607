r"""Deep Loss Convexification (DLC): star-convexity hinges on the landscape of a learned energy.

A learned iterative model predicts, for a datum :math:`x`, the minimizer of
:math:`h(w) = \ell(f(x;\theta), w)` over the prediction :math:`w` (a rotation solved by
Gauss-Newton, a label, ...). DLC trains :math:`\theta` so that :math:`h` is (strongly) star-convex
around the ground truth :math:`w^*`: for perturbations :math:`\delta` drawn by a sampler,
:math:`w' = w^* \oplus \delta` and :math:`w_\lambda = w^* \oplus \lambda\delta`,

.. math::

    H_1 &= [h(w^*) - h(w_\lambda)]_+ \\
    H_2 &= [h(w^*) - h(w') + \tfrac{\mu}{2}\|\delta\|^2]_+ \\
    H_3 &= [h(w_\lambda) - (1-\lambda) h(w^*) - \lambda h(w')
            + \tfrac{\mu}{2}\lambda(1-\lambda)\|\delta\|^2]_+

(:math:`w^*` below the segment; quadratic growth; :math:`\mu`-strong star-convexity) and the
penalty :math:`\rho\,\mathrm{mean}_i\,\mathrm{AGG}_{\delta \in S_i}(H_1 + H_2 + H_3)` with AGG a sum
or a max over the samples. The full DLC loss of the paper is
:math:`\mathrm{mean}_i h_i(w^*_i) + \text{penalty}` (the PRISE recipe); the penalty can also be
added to any other training loss. All three hinges are zero when :math:`h` is
:math:`\mu`-strongly star-convex around :math:`w^*` (for :math:`\mu = 0`: star-convex with
minimum at :math:`w^*`).

Reconstruction notes: the hinge formulas follow the two public code bases (PRISE in TensorFlow and
the PRNet demo of the TPAMI paper); no table of the TPAMI paper could be read. Unlike the PRNet
demo, the penalty is computed with gradients enabled (the demo's ``no_grad`` meant the network
never learnt from it) and rotations are perturbed on the manifold.

References
----------
.. [1] Z. Zhang, Y. Shao, Y. Zhang, F. Lin, H. Zhang, E. Rundensteiner, "Deep Loss Convexification
   for Learning Iterative Models", IEEE TPAMI 2024, arXiv:2411.10649.
.. [2] Y. Zhang, X. Huang, Z. Zhang, "PRISE: Demystifying Deep Lucas-Kanade with Strongly
   Star-Convex Constraints for Multimodel Image Alignment", CVPR 2023.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from beyondgd.core import check_choice, check_int, check_number
from beyondgd.landscape.samplers import PerturbationSampler

__all__ = [
    "HINGE_TERMS",
    "HingeOutput",
    "StarConvexHinge",
    "StarConvexityResult",
    "segment_profile",
    "star_convexity_fraction",
]

HINGE_TERMS = ("H1", "H2", "H3")

Energy = Callable[[torch.Tensor, Any], torch.Tensor]


@dataclass
class HingeOutput:
    """What :class:`StarConvexHinge` returns.

    Attributes
    ----------
    total
        The penalty :math:`\\rho\\,\\mathrm{mean}_i \\mathrm{AGG}_s \\sum_{terms} H` (scalar; add it
        to a training loss).
    parts
        ``{"H1": ..., "H2": ..., "H3": ...}``: each selected term's mean over samples and data
        (unweighted, scalar tensors; for logging and ablations).
    energy_star
        :math:`\\mathrm{mean}_i h_i(w^*_i)` (scalar, with gradient): the data term of the full
        DLC/PRISE loss ``energy_star + total``.
    per_datum
        ``AGG_s sum_terms H`` per datum, shape ``(B,)`` (without ``rho``).
    lam, mu
        The values used (tensors; trainable when the hinge is ``learnable``).

    Examples
    --------
    >>> import torch
    >>> from beyondgd.landscape import BoxSampler, StarConvexHinge
    >>> out = StarConvexHinge(lambda w, b: (w**2).sum(-1), BoxSampler(1.0))(torch.zeros(3, 2))
    >>> float(out.total), out.per_datum.shape
    (0.0, torch.Size([3]))
    """

    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    energy_star: torch.Tensor
    per_datum: torch.Tensor
    lam: torch.Tensor
    mu: torch.Tensor


def _check_energy(energy: object) -> None:
    if not callable(energy):
        raise TypeError(
            f"energy must be callable as energy(w, batch) -> per-datum values, got "
            f"{type(energy).__name__}"
        )


def _check_sampler(sampler: object) -> None:
    if not isinstance(sampler, PerturbationSampler):
        raise TypeError(
            "sampler must be a beyondgd.landscape PerturbationSampler (BoxSampler, SO3Sampler, "
            f"...), got {type(sampler).__name__}"
        )


def _evaluate(energy: Energy, w: torch.Tensor, batch: Any, stacked: bool) -> torch.Tensor:
    """``energy`` on points ``w`` of shape ``(S, B, ...)`` -> ``(S, B)``."""
    b = w.shape[1]
    if stacked:
        out = energy(w, batch)
        want = tuple(w.shape[:2])
    else:
        out = torch.stack([energy(w[s], batch) for s in range(w.shape[0])], 0)
        want = (w.shape[0], b)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        per = "(S, B)" if stacked else "(B,)"
        raise ValueError(f"energy must return per-datum values of shape {per}; got {got}")
    return out


class StarConvexHinge(nn.Module):
    r"""The DLC star-convexity penalty of an energy :math:`h(w) = \ell(f(x;\theta), w)`.

    Parameters
    ----------
    energy
        ``energy(w, batch) -> (B,)``: the per-datum energy of predictions ``w`` of shape
        ``(B, *point_shape)`` (``batch`` is passed through untouched). With ``stacked=True`` it is
        called with ``w`` of shape ``(S, B, *point_shape)`` and must return ``(S, B)`` (one call
        for all samples instead of one per sample; faster for networks).
    sampler
        A :class:`~beyondgd.landscape.samplers.PerturbationSampler` (``BoxSampler``,
        ``GaussianSampler``, ``RelativeSampler``, ``SO3Sampler``, ``SE3Sampler``,
        ``SimplexSampler``).
    lam
        :math:`\lambda \in (0, 1)`: where on the segment :math:`H_1, H_3` look.
    mu
        :math:`\mu \ge 0`: the strong-star-convexity modulus (quadratic growth margin).
    rho
        Weight :math:`\rho \ge 0` of the penalty in ``total``.
    n_samples
        Perturbations per datum (``>= 1``).
    aggregate
        ``"sum"`` or ``"max"`` over the samples of each datum.
    terms
        Which of ``"H1"``, ``"H2"``, ``"H3"`` to use (PRISE: ``("H2", "H3")``).
    learnable
        Make :math:`\lambda = \mathrm{sigmoid}(\Lambda)` and :math:`\mu = \exp(m)` trainable
        parameters (as in the PRNet demo; they are then minimized with the network, which drives
        :math:`\mu` down, so prefer fixed values unless you regularise them). Needs ``mu > 0``.
    antithetic
        Draw the samples in mirrored pairs :math:`\pm\epsilon` (PRISE).
    stacked
        See ``energy``.

    Examples
    --------
    A double-well in 1-D: the deeper minimum at 2 breaks star-convexity around ``w* = -1``.

    >>> import torch
    >>> from beyondgd.landscape import BoxSampler, StarConvexHinge
    >>> def energy(w, batch):
    ...     return ((w + 1) ** 2 * (w - 2) ** 2 - w).sum(-1)
    >>> hinge = StarConvexHinge(energy, BoxSampler(3.0), n_samples=16)
    >>> out = hinge(torch.tensor([[-1.0]]), generator=torch.Generator().manual_seed(0))
    >>> bool(out.total > 0), sorted(out.parts)
    (True, ['H1', 'H2', 'H3'])

    References
    ----------
    .. [1] Z. Zhang et al., "Deep Loss Convexification for Learning Iterative Models", IEEE TPAMI
       2024, arXiv:2411.10649.
    .. [2] Y. Zhang, X. Huang, Z. Zhang, "PRISE", CVPR 2023.
    """

    def __init__(
        self,
        energy: Energy,
        sampler: PerturbationSampler,
        lam: float = 0.5,
        mu: float = 0.1,
        rho: float = 1.0,
        n_samples: int = 4,
        aggregate: str = "sum",
        terms: Sequence[str] = HINGE_TERMS,
        learnable: bool = False,
        antithetic: bool = False,
        stacked: bool = False,
    ):
        super().__init__()
        _check_energy(energy)
        _check_sampler(sampler)
        lam = check_number("lam", lam, low=0, high=1, low_inclusive=False, high_inclusive=False)
        mu = check_number("mu", mu, low=0)
        self.rho = check_number("rho", rho, low=0)
        self.n_samples = check_int("n_samples", n_samples, low=1)
        self.aggregate = check_choice("aggregate", aggregate, ("sum", "max"))
        if isinstance(terms, str):
            terms = (terms,)
        terms = tuple(terms)
        if not terms or any(t not in HINGE_TERMS for t in terms) or len(set(terms)) != len(terms):
            raise ValueError(
                f"terms must be a non-empty selection of distinct {HINGE_TERMS}, got {terms!r}"
            )
        self.terms = tuple(t for t in HINGE_TERMS if t in terms)
        self.learnable = bool(learnable)
        self.antithetic = bool(antithetic)
        self.stacked = bool(stacked)
        self.energy = energy
        self.sampler = sampler
        if self.learnable:
            if mu <= 0:
                raise ValueError("mu must be > 0 when learnable=True (mu = exp(m))")
            self.lam_logit = nn.Parameter(torch.tensor(math.log(lam / (1 - lam))))
            self.log_mu = nn.Parameter(torch.tensor(math.log(mu)))
        else:
            self.register_buffer("_lam", torch.tensor(lam))
            self.register_buffer("_mu", torch.tensor(mu))

    @property
    def lam(self) -> torch.Tensor:
        return torch.sigmoid(self.lam_logit) if self.learnable else self._lam

    @property
    def mu(self) -> torch.Tensor:
        return torch.exp(self.log_mu) if self.learnable else self._mu

    def extra_repr(self) -> str:
        return (
            f"terms={self.terms}, rho={self.rho}, n_samples={self.n_samples}, "
            f"aggregate={self.aggregate!r}, learnable={self.learnable}, "
            f"antithetic={self.antithetic}, sampler={type(self.sampler).__name__}"
        )

    def forward(
        self,
        w_star: torch.Tensor,
        batch: Any = None,
        *,
        generator: torch.Generator | None = None,
        delta: torch.Tensor | None = None,
    ) -> HingeOutput:
        """Penalty and parts for ground truths ``w_star`` ``(B, *point_shape)``.

        ``delta`` (``(S, B, *tangent)``) replaces the random draw, for reproducible probes.
        """
        w_star = self.sampler.check_w_star(w_star)
        if delta is None:
            delta = self.sampler._sample(w_star, self.n_samples, generator, self.antithetic)
        elif not isinstance(delta, torch.Tensor) or delta.ndim < 2 or delta.shape[1] != len(w_star):
            raise ValueError("delta must be a tensor of shape (S, B, *tangent_shape)")
        delta = delta.detach()
        lam = self.lam.to(dtype=w_star.dtype, device=w_star.device)
        mu = self.mu.to(dtype=w_star.dtype, device=w_star.device)
        need_prime = "H2" in self.terms or "H3" in self.terms
        need_lam = "H1" in self.terms or "H3" in self.terms
        s = delta.shape[0]
        points = []
        if need_prime:
            points.append(self.sampler.retract(w_star, delta))
        if need_lam:
            points.append(self.sampler.retract(w_star, lam * delta))
        # One call for w*, w' and w_lam: (1 + S * k, B, ...) points.
        w_all = torch.cat([w_star[None], *points], 0)
        values = _evaluate(self.energy, w_all, batch, self.stacked)
        h0 = values[0]
        rest = values[1:]
        h_prime = rest[:s] if need_prime else None
        h_lam = rest[-s:] if need_lam else None
        sq = self.sampler.sq_norm(delta).to(h0.dtype)
        relu = torch.relu
        terms: dict[str, torch.Tensor] = {}
        if "H1" in self.terms:
            terms["H1"] = relu(h0 - h_lam)
        if "H2" in self.terms:
            terms["H2"] = relu(h0 - h_prime + 0.5 * mu * sq)
        if "H3" in self.terms:
            terms["H3"] = relu(
                h_lam - (1 - lam) * h0 - lam * h_prime + 0.5 * mu * lam * (1 - lam) * sq
            )
        summed = sum(terms.values())  # (S, B)
        per_datum = summed.sum(0) if self.aggregate == "sum" else summed.amax(0)
        return HingeOutput(
            total=self.rho * per_datum.mean(),
            parts={k: v.mean() for k, v in terms.items()},
            energy_star=h0.mean(),
            per_datum=per_datum,
            lam=lam,
            mu=mu,
        )


def segment_profile(
    energy: Energy,
    sampler: PerturbationSampler,
    w_star: torch.Tensor,
    delta: torch.Tensor,
    ts: Sequence[float] | torch.Tensor,
    batch: Any = None,
    *,
    stacked: bool = False,
) -> torch.Tensor:
    r"""The energy along segments (geodesics) from :math:`w^*`: :math:`h(w^* \oplus t\delta)`.

    Returns ``(T, S, B)`` for ``T`` values ``ts``, ``S`` directions ``delta`` ``(S, B, ...)``.
    Negative ``t`` walks the other way (on the simplex it may leave the simplex). Gradients flow
    if enabled; wrap in ``torch.no_grad()`` for plots.
    """
    _check_energy(energy)
    _check_sampler(sampler)
    w_star = sampler.check_w_star(w_star)
    ts = torch.as_tensor(ts, dtype=w_star.dtype, device=w_star.device).reshape(-1)
    if not isinstance(delta, torch.Tensor) or delta.ndim < 2 or delta.shape[1] != len(w_star):
        raise ValueError("delta must be a tensor of shape (S, B, *tangent_shape)")
    t_shape = (-1,) + (1,) * (delta.ndim)
    scaled = (ts.reshape(t_shape) * delta[None]).flatten(0, 1)  # (T*S, B, ...)
    w = sampler.retract(w_star, scaled)
    values = _evaluate(energy, w, batch, stacked)
    return values.reshape(len(ts), delta.shape[0], len(w_star))


@dataclass
class StarConvexityResult:
    """Output of :func:`star_convexity_fraction`.

    ``fraction``: share of sampled segments on which :math:`h` is star-convex around
    :math:`w^*`; ``per_datum``: that share per datum ``(B,)``; ``n_segments``: segments tested.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.landscape import BoxSampler
    >>> l1 = lambda w, b: w.abs().sum(-1)
    >>> res = star_convexity_fraction(l1, BoxSampler(1.0), torch.zeros(2, 2))
    >>> res.fraction, res.n_segments
    (1.0, 32)
    """

    fraction: float
    per_datum: torch.Tensor
    n_segments: int


def star_convexity_fraction(
    energy: Energy,
    sampler: PerturbationSampler,
    w_star: torch.Tensor,
    batch: Any = None,
    *,
    n_samples: int = 16,
    n_points: int = 8,
    generator: torch.Generator | None = None,
    rtol: float = 1e-6,
    stacked: bool = False,
) -> StarConvexityResult:
    r"""Fraction of sampled segments :math:`[w^*, w^* \oplus \delta]` on which the landscape is
    star-convex around :math:`w^*`.

    On a segment with profile :math:`g(t) = h(w^* \oplus t\delta)` evaluated at
    :math:`t_k = k/K`, star-convexity around :math:`w^*` (for every point of the segment, the
    function lies below the chord from :math:`w^*`) is equivalent to: :math:`g(t_k) \ge g(0)` and
    the chord slopes :math:`(g(t_k) - g(0))/t_k` are non-decreasing in :math:`k`. Both are checked
    up to ``rtol`` times the profile's range. A diagnostic, evaluated without gradients.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.landscape import BoxSampler
    >>> bowl = lambda w, b: (w**2).sum(-1)
    >>> star_convexity_fraction(bowl, BoxSampler(1.0), torch.zeros(3, 2)).fraction
    1.0
    """
    _check_energy(energy)
    _check_sampler(sampler)
    n_samples = check_int("n_samples", n_samples, low=1)
    n_points = check_int("n_points", n_points, low=2)
    rtol = check_number("rtol", rtol, low=0)
    w_star = sampler.check_w_star(w_star)
    with torch.no_grad():
        delta = sampler._sample(w_star, n_samples, generator, False)
        ts = torch.arange(0, n_points + 1, dtype=w_star.dtype, device=w_star.device) / n_points
        g = segment_profile(energy, sampler, w_star, delta, ts, batch, stacked=stacked)
        g = g.to(torch.float64)
        scale = (g.amax(0) - g.amin(0)).clamp_min(torch.finfo(torch.float64).tiny)
        tol = rtol * scale + 1e-12 * g[0].abs()
        rise = g[1:] - g[0:1]  # (K, S, B)
        above = (rise >= -tol).all(0)
        slopes = rise / ts[1:].to(torch.float64).reshape(-1, 1, 1)
        monotone = (slopes[1:] - slopes[:-1] >= -tol * n_points).all(0)
        ok = (above & monotone).to(torch.float64)  # (S, B)
    return StarConvexityResult(float(ok.mean()), ok.mean(0), int(ok.numel()))
