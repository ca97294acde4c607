r"""DECONET (an unrolled TFOCS solver for analysis-L1 compressed sensing with a learned redundant
analysis operator) and the continuation wrapper that turns it into C-DEC.

The problem unrolled is the smoothed analysis basis pursuit denoising

.. math::

    \min_x \|W x\|_1 + \frac{\mu}{2}\|x - x_0\|_2^2
    \quad\text{s.t.}\quad \|A x - y\|_2 \le \varepsilon,

solved on its dual by TFOCS's smoothed conic dual method. Continuation (TFOCS) re-solves it a
few times, each time re-centred at the previous solution ``x0 <- x_k``; :class:`Continued` does
that with any unrolled network that accepts a warm start.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from beyondgd.core import check_choice, check_finite_tensor, check_int, check_number
from beyondgd.core import make_generator as _make_generator
from beyondgd.unfolding.operators import LinearOperator

__all__ = ["CDEC", "DECONET", "Continued", "DualState"]


class DualState(NamedTuple):
    """Dual variables of the smoothed problem: ``z1`` for ``||W x||_1`` (shape ``(B, N)``) and
    ``z2`` for the data-fit ball (shape ``(B, m)``).

    Examples
    --------
    >>> import torch
    >>> from beyondgd.unfolding import DECONET, GaussianCS
    >>> net = DECONET(GaussianCS(8, 16, seed=0), redundancy=2, layers=2)
    >>> x, duals = net(torch.randn(3, 8), return_duals=True)
    >>> duals.z1.shape, duals.z2.shape
    (torch.Size([3, 32]), torch.Size([3, 8]))
    """

    z1: torch.Tensor
    z2: torch.Tensor


def _check_batch(name: str, value: object, batch: int, width: int, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.shape != (batch, width):
        raise ValueError(
            f"{name} must have shape ({batch}, {width}) ({what}), got {tuple(value.shape)}"
        )
    return value


class DECONET(nn.Module):
    r"""DECONET: the TFOCS iteration for smoothed analysis-L1 basis pursuit, unrolled into
    ``layers`` layers that share one learned redundant analysis operator ``W`` (``N x n``).

    From ``z_1 = 0_N, z_2 = 0_m, u = z, theta = 1, t_1 = t_1^0, t_2 = t_2^0`` each layer computes

    .. math::

        v_i &= (1 - \theta) u_i + \theta z_i \\
        \hat x &= x_0 + (W^T v_1 - A^T v_2) / \mu
            && \text{(primal recovery)} \\
        z_1 &= \operatorname{clip}(v_1 - \tfrac{t_1}{\theta} W \hat x,
            -\tfrac{t_1}{\theta}, \tfrac{t_1}{\theta}) && \text{(truncation)} \\
        z_2 &= \operatorname{soft}(v_2 - \tfrac{t_2}{\theta}(y - A \hat x),
            \tfrac{t_2 \varepsilon}{\theta}) && \text{(soft threshold)} \\
        u_i &= (1 - \theta) u_i + \theta z_i, \quad t_1 \leftarrow a t_1, \quad
            t_2 \leftarrow b t_2, \quad \theta \leftarrow \min(1, \theta s)

    with ``s = (1 - sqrt(mu / Lc)) / (1 + sqrt(mu / Lc))`` and ``x0 = A^T y`` unless a warm start
    is given. The output is the last ``x_hat``. With ``a = b = 1``, ``t1 = t2 = 1``,
    ``lipschitz=None`` (``theta = 1``) and ``block_soft_threshold=True`` every layer is one exact
    proximal-gradient step (unit step; the truncation is then the projection onto the dual unit
    box) on the dual of the smoothed problem, so a deep network with a fixed ``W`` converges to
    its solution when ``||[W; A]||_2^2 <= mu``. With the default decaying steps it does not: the
    network is a fixed-depth map to be trained, not a convergent solver.

    Parameters
    ----------
    operator
        The measurement operator ``A`` (``m x n``), fixed.
    redundancy
        ``N / n`` (the overparameterization); ``N = round(redundancy * n)``. Ignored when
        ``analysis`` is given.
    layers
        Number of unrolled iterations ``L``.
    mu
        Smoothing parameter ``mu > 0``.
    a, b
        Step-size decay factors of ``t1`` and ``t2`` per layer (0.5, 0.3 for MNIST-like data;
        0.7, 0.5 for CIFAR-like data in the authors' code).
    eps
        Default noise bound ``epsilon`` (``||A x - y|| <= eps``); ``forward(eps=...)`` overrides it
        per call, as a scalar or one value per measurement vector.
    t1, t2
        Initial step sizes.
    lipschitz
        ``Lc`` of the theta schedule (must exceed every ``mu`` used); ``None`` keeps ``theta = 1``.
    detach_affine
        Detach the affine pre-activations from the graph, as the public code does (``W`` then
        learns only through the last layer's primal recovery). Default: full backpropagation.
    block_soft_threshold
        Use the exact prox of ``t eps ||.||_2`` (block soft threshold) for ``z2`` instead of the
        public code's elementwise soft threshold.
    clamp
        ``(low, high)`` to clamp the output to, e.g. the training set's range. Never pass the
        ground truth's range of the batch being reconstructed (a test-time leak in the public code).
    analysis
        Initial ``W`` (``N x n``); default a Kaiming-normal draw (std ``sqrt(2 / n)``) from
        ``seed``.
    learn_analysis
        Train ``W`` (a parameter) or keep it fixed (a buffer).
    seed
        Seed of the initial ``W`` (drawn on the CPU, so the same on every device).

    References
    ----------
    .. [1] V. Kouni, Y. Panagakis, "DECONET: an Unfolding Network for Analysis-based Compressed
       Sensing with Generalization Error Bounds", IEEE Trans. Signal Process. 71, 2023,
       arXiv:2205.07050.
    .. [2] S. Becker, E. J. Candes, M. Grant, "Templates for convex cone problems with
       applications to sparse signal recovery" (TFOCS), Math. Prog. Comp. 3, 2011.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.unfolding import DECONET, GaussianCS
    >>> net = DECONET(GaussianCS(8, 16, seed=0), redundancy=2, layers=3)
    >>> y = net.operator(torch.randn(4, 16))
    >>> net(y).shape
    torch.Size([4, 16])
    """

    W: torch.Tensor

    def __init__(
        self,
        operator: LinearOperator,
        redundancy: float = 10,
        layers: int = 10,
        mu: float = 100.0,
        a: float = 0.5,
        b: float = 0.3,
        *,
        eps: float = 0.0,
        t1: float = 1.0,
        t2: float = 1.0,
        lipschitz: float | None = 1000.0,
        detach_affine: bool = False,
        block_soft_threshold: bool = False,
        clamp: tuple[float, float] | None = None,
        analysis: torch.Tensor | None = None,
        learn_analysis: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        if not isinstance(operator, LinearOperator):
            raise TypeError(
                "operator must be a beyondgd.unfolding.LinearOperator (wrap a matrix with "
                "MatrixOperator or functions with FunctionOperator), got "
                f"{type(operator).__name__}"
            )
        self.operator = operator
        n = operator.in_features
        self.layers = check_int("layers", layers, low=1)
        self.mu = check_number("mu", mu, low=0.0, low_inclusive=False)
        self.a = check_number("a", a, low=0.0, low_inclusive=False)
        self.b = check_number("b", b, low=0.0, low_inclusive=False)
        self.eps = check_number("eps", eps, low=0.0)
        self.t1 = check_number("t1", t1, low=0.0, low_inclusive=False)
        self.t2 = check_number("t2", t2, low=0.0, low_inclusive=False)
        if lipschitz is not None:
            lipschitz = check_number("lipschitz", lipschitz, low=self.mu, low_inclusive=False)
        self.lipschitz = lipschitz
        self.detach_affine = bool(detach_affine)
        self.block_soft_threshold = bool(block_soft_threshold)
        if clamp is not None:
            if not isinstance(clamp, (tuple, list)) or len(clamp) != 2:
                raise TypeError(f"clamp must be None or a pair (low, high), got {clamp!r}")
            low = check_number("clamp[0]", clamp[0])
            high = check_number("clamp[1]", clamp[1], low=low, low_inclusive=False)
            clamp = (low, high)
        self.clamp = clamp
        self.seed = check_int("seed", seed, low=0)
        ref = next(iter(operator.buffers()), None)
        dtype = ref.dtype if ref is not None else torch.get_default_dtype()
        device = ref.device if ref is not None else None
        if analysis is None:
            redundancy = check_number("redundancy", redundancy, low=1.0)
            rows = max(1, round(redundancy * n))
            gen = _make_generator(self.seed)
            w = torch.randn(rows, n, generator=gen, dtype=torch.float64) * math.sqrt(2.0 / n)
            w = w.to(dtype=dtype, device=device)
        else:
            check_finite_tensor("analysis", analysis)
            if analysis.ndim != 2 or analysis.shape[1] != n:
                raise ValueError(
                    f"analysis must have shape (N, {n}) to match the operator's n = {n}, got "
                    f"{tuple(analysis.shape)}"
                )
            w = analysis.detach().clone().to(device=device)
        self.redundancy = w.shape[0] / n
        self.learn_analysis = bool(learn_analysis)
        if self.learn_analysis:
            self.W = nn.Parameter(w)
        else:
            self.register_buffer("W", w)

    def extra_repr(self) -> str:
        return (
            f"N={self.W.shape[0]}, n={self.W.shape[1]}, layers={self.layers}, mu={self.mu}, "
            f"a={self.a}, b={self.b}, detach_affine={self.detach_affine}, "
            f"block_soft_threshold={self.block_soft_threshold}, clamp={self.clamp}"
        )

    def _theta_scale(self, mu: float) -> float:
        if self.lipschitz is None:
            return 1.0
        if mu >= self.lipschitz:
            raise ValueError(f"mu must be < lipschitz = {self.lipschitz}, got {mu}")
        r = math.sqrt(mu / self.lipschitz)
        return (1.0 - r) / (1.0 + r)

    def forward(
        self,
        y: torch.Tensor,
        *,
        x0: torch.Tensor | None = None,
        duals: DualState | tuple[torch.Tensor, torch.Tensor] | None = None,
        eps: float | torch.Tensor | None = None,
        mu: float | None = None,
        return_duals: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, DualState]:
        """Reconstruct ``x`` from measurements ``y`` of shape ``(B, m)`` (or ``(m,)``).

        Parameters
        ----------
        x0
            Warm start / prox centre ``(B, n)``; default ``A^T y``.
        duals
            Warm-start dual state ``(z1, z2)`` of shapes ``(B, N)``, ``(B, m)``; default zeros.
        eps
            Noise bound for this call (scalar or shape ``(B,)``); default ``self.eps``.
        mu
            Smoothing parameter for this call; default ``self.mu``.
        return_duals
            Also return the final dual state (the averaged sequence ``u``), for warm starts.
        """
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}")
        m, n = self.operator.out_features, self.operator.in_features
        squeeze = y.ndim == 1
        if squeeze:
            y = y.unsqueeze(0)
        if y.ndim != 2 or y.shape[1] != m:
            raise ValueError(
                f"y must have shape (batch, {m}) to match the operator's m = {m} measurements, "
                f"got {tuple(y.shape) if not squeeze else (y.shape[1],)}"
            )
        batch = y.shape[0]
        op, w = self.operator, self.W
        if x0 is None:
            x0 = op.adjoint(y)
        else:
            x0 = _check_batch("x0", x0.unsqueeze(0) if squeeze else x0, batch, n, "batch, n")
        if duals is None:
            z1 = y.new_zeros(batch, w.shape[0])
            z2 = torch.zeros_like(y)
        else:
            if len(duals) != 2:
                raise ValueError("duals must be a pair (z1, z2)")
            d1, d2 = (d.unsqueeze(0) for d in duals) if squeeze else duals
            z1 = _check_batch("duals.z1", d1, batch, w.shape[0], "batch, N")
            z2 = _check_batch("duals.z2", d2, batch, m, "batch, m")
        mu = self.mu if mu is None else check_number("mu", mu, low=0.0, low_inclusive=False)
        scale = self._theta_scale(mu)
        if eps is None:
            eps = self.eps
        elif isinstance(eps, torch.Tensor):
            if eps.numel() not in (1, batch):
                raise ValueError(f"eps must be a scalar or have {batch} entries, got {eps.numel()}")
            eps = eps.reshape(-1, 1).to(y)
        else:
            eps = check_number("eps", eps, low=0.0)

        u1, u2 = z1, z2
        t1, t2, theta = self.t1, self.t2, 1.0
        xh = x0
        for _ in range(self.layers):
            if theta == 1.0:
                v1, v2 = z1, z2
            else:
                v1 = (1.0 - theta) * u1 + theta * z1
                v2 = (1.0 - theta) * u2 + theta * z2
            xh = x0 + (v1 @ w - op.adjoint(v2)) / mu
            s1, s2 = t1 / theta, t2 / theta
            w1 = v1 - s1 * (xh @ w.T)
            w2 = v2 - s2 * (y - op(xh))
            if self.detach_affine:
                w1, w2 = w1.detach(), w2.detach()
            z1 = torch.clamp(w1, -s1, s1)
            z2 = self._shrink(w2, s2 * eps)
            if theta == 1.0:
                u1, u2 = z1, z2
            else:
                u1 = (1.0 - theta) * u1 + theta * z1
                u2 = (1.0 - theta) * u2 + theta * z2
            t1, t2 = self.a * t1, self.b * t2
            theta = min(1.0, theta * scale)
        if self.clamp is not None:
            xh = torch.clamp(xh, self.clamp[0], self.clamp[1])
        if squeeze:
            xh, u1, u2 = xh.squeeze(0), u1.squeeze(0), u2.squeeze(0)
        if return_duals:
            return xh, DualState(u1, u2)
        return xh

    def _shrink(self, w2: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
        if self.block_soft_threshold:
            norm = torch.sqrt((w2 * w2).sum(-1, keepdim=True) + torch.finfo(w2.dtype).tiny)
            return w2 * torch.clamp(1.0 - tau / norm, min=0.0)
        return torch.sign(w2) * torch.clamp(w2.abs() - tau, min=0.0)

    def training_loss(
        self,
        y: torch.Tensor,
        target: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """The loss to back-propagate for a batch (here simply ``loss_fn(self(y), target)``)."""
        return loss_fn(self(y), target)


def _accepts(fn: Callable, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class Continued(nn.Module):
    r"""Continuation around an unrolled network: ``stages`` warm-started passes (TFOCS-style).

    Stage ``k = 1..K`` runs ``net`` re-centred at the previous stage's output,

    .. math::

        x_0^{(k+1)} = x_k \quad\text{or, with acceleration,}\quad
        x_0^{(k+1)} = x_k + \tfrac{k - 1}{k + 2} (x_k - x_{k-1}),

    with the dual state warm-started from stage ``k`` (``warm_duals``) and
    ``mu_k = mu * mu_decay^(k-1)``. Stage 1 is exactly ``net(y)``, so ``stages=1`` is ``net``.

    This is a *reconstruction* of C-DEC's continuation from TFOCS's ``continuation.m`` and the
    paper's abstract: the method section of Kouni (SampTA 2025) could not be read.

    Parameters
    ----------
    net
        Any module whose ``forward(y, x0=..., duals=..., return_duals=True)`` returns
        ``(x, duals)`` and accepts ``x0=None, duals=None`` (e.g. :class:`DECONET`); with
        ``mu_decay != 1`` it must also take ``mu=`` and have an attribute ``mu``.
    stages
        ``K``, the number of passes (TFOCS's default is 3).
    accelerate
        Extrapolate the centre as above instead of ``x0 <- x_k``.
    warm_duals
        Pass each stage's final dual state to the next; otherwise every stage starts from zero.
    mu_decay
        ``rho_mu``: the smoothing parameter of stage ``k`` is ``mu * rho_mu^(k - 1)``.
    shared_weights
        One network reused by all stages (default), or an independent copy per stage (the copies
        start from the same weights).
    training
        ``"end-to-end"``: back-propagate the final loss through all stages; ``"stagewise"``:
        detach each stage's input in training mode and train on the mean of the per-stage losses
        (see :meth:`training_loss`).

    References
    ----------
    .. [1] V. Kouni, "How to warm-start your unfolding network", SampTA 2025, arXiv:2502.01854.
    .. [2] S. Becker, E. J. Candes, M. Grant, "Templates for convex cone problems with
       applications to sparse signal recovery" (TFOCS), Math. Prog. Comp. 3, 2011 (continuation).

    Examples
    --------
    >>> import torch
    >>> from beyondgd.unfolding import DECONET, Continued, GaussianCS
    >>> net = DECONET(GaussianCS(8, 16, seed=0), redundancy=2, layers=3)
    >>> cont = Continued(net, stages=3)
    >>> y = net.operator(torch.randn(2, 16))
    >>> cont(y).shape
    torch.Size([2, 16])
    >>> torch.equal(Continued(net, stages=1)(y), net(y))
    True
    """

    def __init__(
        self,
        net: nn.Module,
        stages: int = 3,
        accelerate: bool = False,
        warm_duals: bool = True,
        mu_decay: float = 1.0,
        shared_weights: bool = True,
        training: str = "end-to-end",
    ):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        for arg in ("x0", "duals", "return_duals"):
            if not _accepts(net.forward, arg):
                raise TypeError(
                    f"net.forward must accept the warm-start argument {arg!r} "
                    f"(forward(y, x0=None, duals=None, return_duals=False)); "
                    f"{type(net).__name__}.forward does not"
                )
        self.stages = check_int("stages", stages, low=1)
        self.accelerate = bool(accelerate)
        self.warm_duals = bool(warm_duals)
        self.mu_decay = check_number("mu_decay", mu_decay, low=0.0, low_inclusive=False)
        if self.mu_decay != 1.0:
            if not hasattr(net, "mu") or not _accepts(net.forward, "mu"):
                raise TypeError(
                    "mu_decay != 1 needs a net with an attribute `mu` whose forward accepts mu="
                )
            lipschitz = getattr(net, "lipschitz", None)
            top = net.mu * max(1.0, self.mu_decay ** (self.stages - 1))
            if lipschitz is not None and top >= lipschitz:
                raise ValueError(
                    f"mu_decay = {self.mu_decay} makes the last stage's mu = {top:.4g} reach the "
                    f"net's lipschitz = {lipschitz}; lower mu_decay or raise lipschitz"
                )
        self.shared_weights = bool(shared_weights)
        self.training_mode = check_choice("training", training, ("end-to-end", "stagewise"))
        if self.shared_weights:
            self.nets = nn.ModuleList([net])
        else:
            self.nets = nn.ModuleList([net] + [copy.deepcopy(net) for _ in range(self.stages - 1)])

    @property
    def net(self) -> nn.Module:
        """The (first stage's) wrapped network."""
        return self.nets[0]

    @property
    def operator(self) -> LinearOperator | None:
        return getattr(self.nets[0], "operator", None)

    def _stage_net(self, k: int) -> nn.Module:
        return self.nets[0] if self.shared_weights else self.nets[k]

    def forward(
        self,
        y: torch.Tensor,
        *,
        x0: torch.Tensor | None = None,
        duals: DualState | tuple[torch.Tensor, torch.Tensor] | None = None,
        return_duals: bool = False,
        return_stages: bool = False,
        **kwargs,
    ):
        """Run the ``K`` stages; extra keyword arguments (e.g. ``eps``) go to every stage.

        Returns the last stage's output; with ``return_duals`` also its dual state, and with
        ``return_stages`` the list of all stage outputs instead of the last one.
        """
        detach = self.training_mode == "stagewise" and self.training
        centre, prev, outputs = x0, None, []
        for k in range(self.stages):
            call = dict(kwargs)
            if self.mu_decay != 1.0:
                call["mu"] = self._stage_net(k).mu * self.mu_decay**k
            x, new_duals = self._stage_net(k)(y, x0=centre, duals=duals, return_duals=True, **call)
            outputs.append(x)
            if k + 1 == self.stages:
                duals = new_duals
                break
            nxt, duals = x, (new_duals if self.warm_duals else None)
            stage = k + 1  # x is x_stage (1-based)
            if self.accelerate and prev is not None:
                nxt = x + (stage - 1) / (stage + 2) * (x - prev)
            prev = x
            if detach:
                nxt = nxt.detach()
                prev = prev.detach()
                if duals is not None:
                    duals = DualState(duals[0].detach(), duals[1].detach())
            centre = nxt
        result = outputs if return_stages else outputs[-1]
        if return_duals:
            return result, DualState(*duals)
        return result

    def training_loss(
        self,
        y: torch.Tensor,
        target: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """End-to-end: ``loss_fn(x_K, target)``; stage-wise: the mean over stages of
        ``loss_fn(x_k, target)`` with every stage's input detached (training mode)."""
        if self.training_mode == "end-to-end":
            return loss_fn(self(y), target)
        outputs = self(y, return_stages=True)
        return sum(loss_fn(x, target) for x in outputs) / len(outputs)


class CDEC(Continued):
    r"""C-DEC: :class:`Continued` around a :class:`DECONET` (train it with the log-cosh loss).

    ``CDEC(operator, stages=3, **kwargs)`` is ``Continued(DECONET(operator, **deconet_kwargs),
    stages=3, **continuation_kwargs)``; keyword arguments are routed to whichever accepts them.
    The continuation is a reconstruction (see :class:`Continued`).

    References
    ----------
    .. [1] V. Kouni, "How to warm-start your unfolding network", SampTA 2025, arXiv:2502.01854.
    .. [2] V. Kouni, Y. Panagakis, "DECONET", IEEE Trans. Signal Process., 2023,
       arXiv:2205.07050.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.unfolding import CDEC, GaussianCS
    >>> model = CDEC(GaussianCS(8, 16, seed=0), redundancy=2, layers=3, stages=3)
    >>> model(torch.randn(5, 8)).shape
    torch.Size([5, 16])
    """

    _CONTINUATION = ("accelerate", "warm_duals", "mu_decay", "shared_weights", "training")

    def __init__(
        self,
        operator: LinearOperator,
        redundancy: float = 10,
        layers: int = 10,
        mu: float = 100.0,
        a: float = 0.5,
        b: float = 0.3,
        *,
        stages: int = 3,
        **kwargs,
    ):
        cont = {k: kwargs.pop(k) for k in self._CONTINUATION if k in kwargs}
        net = DECONET(operator, redundancy, layers, mu, a, b, **kwargs)
        super().__init__(net, stages=stages, **cont)
