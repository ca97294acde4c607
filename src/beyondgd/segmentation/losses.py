r"""Regularized segmentation losses: relaxed grid Potts and dense CRF (with a bilateral filter).

Both are regularizers :math:`R(S)` of a network's soft segmentation :math:`S` (``(B, K, H, W)``,
a distribution over ``K`` classes per pixel) that the ADM paper adds to the partial cross-entropy
on the scribbles, :math:`L = \sum_{p \in \Omega_L} H(y_p, S_p) + \lambda R(S)`:

- :class:`GridPottsLoss`: relaxations of the contrast-sensitive Potts model on the 4- or
  8-neighbourhood grid (:mod:`beyondgd.segmentation.grid`); each equals the discrete Potts energy
  :func:`~beyondgd.segmentation.grid.potts_energy` on one-hot :math:`S`.
- :class:`DenseCRFLoss`: :math:`R(S) = \sum_k S^{k\top} W (1 - S^k)` with a Gaussian bilateral
  affinity :math:`W` over *all* pixel pairs; :math:`W S` is a bilateral filter
  (:func:`bilateral_filter`), computed exactly in :math:`O(N^2)` for small images or by an
  :math:`O(N)` bilateral grid for large ones.

References
----------
.. [1] D. Marin, M. Tang, I. Ben Ayed, Y. Boykov, "Beyond Gradient Descent for Regularized
   Segmentation Losses", CVPR 2019, arXiv:1809.02322.
.. [2] M. Tang, F. Perazzi, A. Djelouah, I. Ben Ayed, C. Schroers, Y. Boykov, "On Regularized
   Losses for Weakly-supervised CNN Segmentation", ECCV 2018, arXiv:1803.09569.
.. [3] S. Paris, F. Durand, "A Fast Approximation of the Bilateral Filter using a Signal
   Processing Approach", ECCV 2006.
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from beyondgd.core import check_choice, check_finite_tensor, check_int, check_number
from beyondgd.segmentation.grid import (
    GridWeights,
    check_neighbourhood,
    check_relaxation_choice,
    contrast_weights,
    pair_values,
)

__all__ = ["DenseCRFLoss", "GridPottsLoss", "bilateral_filter", "relaxed_potts_energy"]

_REDUCTIONS = ("mean", "sum", "none")
_TARGETS = ("prob", "logits")
_FILTER_METHODS = ("filter", "exact")
_CRF_METHODS = ("auto", "exact", "filter")
# Elements of one block of the exact affinity matrix (32 MiB in float64): bounds its memory.
_EXACT_BLOCK_ELEMENTS = 1 << 22
# Largest bilateral grid (cells per image) before we refuse rather than exhaust memory.
_MAX_GRID_CELLS = 1 << 23
# The blur width is sqrt(1 - cell^2 / 3) (in sigmas): cells must stay well below sqrt(3).
_MAX_CELL = 1.5
# Pixels filtered through one bilateral grid at a time (whole images, at least one).
_GRID_GROUP_PIXELS = 1 << 16
# Default grid: cells of 0.75 sigma, averaged over 3 shifted grids (see bilateral_filter).
_DEFAULT_CELL = 0.75
_DEFAULT_SHIFTS = 3
_MAX_SHIFTS = 64


# --------------------------------------------------------------------------- input checks


def _check_segmentation(name: str, value: object) -> Tensor:
    check_finite_tensor(name, value)
    assert isinstance(value, Tensor)
    if value.dim() != 4:
        raise ValueError(f"{name} must have shape (B, K, H, W), got {tuple(value.shape)}")
    if value.shape[1] < 2:
        raise ValueError(f"{name} must have K >= 2 classes along dim 1, got K = {value.shape[1]}")
    if value.shape[0] < 1 or value.shape[2] < 1 or value.shape[3] < 1:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(value.shape)}")
    return value


def _check_images(name: str, images: object, like_name: str, like: Tensor) -> Tensor:
    check_finite_tensor(name, images)
    assert isinstance(images, Tensor)
    if images.dim() != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(images.shape)}")
    if images.shape[1] < 1:
        raise ValueError(f"{name} must have at least one channel, got shape {tuple(images.shape)}")
    if images.shape[0] != like.shape[0]:
        raise ValueError(
            f"{name} must have the same batch size as {like_name} ({like.shape[0]}), "
            f"got {images.shape[0]}"
        )
    if images.shape[-2:] != like.shape[-2:]:
        raise ValueError(
            f"{name} must have the same spatial size as {like_name} "
            f"({like.shape[-2]}x{like.shape[-1]}), got {images.shape[-2]}x{images.shape[-1]}"
        )
    return images


def _check_unit_range(name: str, images: Tensor) -> None:
    # Colours are scaled by 255 inside: images in 0-255 would silently give an all-zero W.
    low, high = float(images.min()), float(images.max())
    if low < -1e-6 or high > 1.0 + 1e-6:
        raise ValueError(
            f"{name} must have values in [0, 1] (they are scaled to 0-255 inside), "
            f"got values in [{low:.4g}, {high:.4g}]"
        )


def _check_grid_weights(weights: object, like: Tensor) -> GridWeights:
    if not isinstance(weights, GridWeights):
        raise TypeError(f"weights must be a GridWeights, got {type(weights).__name__}")
    b, _, h, w = like.shape
    if (weights.batch_size, weights.height, weights.width) != (b, h, w):
        raise ValueError(
            f"weights must describe {b} image(s) of {h}x{w} pixels to match segmentation, got "
            f"{weights.batch_size} image(s) of {weights.height}x{weights.width}"
        )
    for offset, wmap in zip(weights.offsets, weights.maps):
        check_finite_tensor(f"weights for offset {offset}", wmap)
    return weights


def _reduce(per_image: Tensor, reduction: str, pixels: int) -> Tensor:
    if reduction == "none":
        return per_image
    total = per_image.sum()
    if reduction == "sum":
        return total
    return total / (per_image.shape[0] * pixels)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half precision loses the small affinities; compute in at least float32.
    return torch.promote_types(dtype, torch.float32)


# --------------------------------------------------------------------------- grid Potts


def _relaxed_potts(probs: Tensor, weights: GridWeights, relaxation: str) -> Tensor:
    energy = probs.new_zeros(probs.shape[0])
    for offset, wmap in zip(weights.offsets, weights.maps):
        wmap = wmap.to(dtype=probs.dtype, device=probs.device)
        sp, sq = pair_values(probs, offset)
        if relaxation == "bilinear":
            disagreement = 1.0 - (sp * sq).sum(1)
        elif relaxation == "quadratic":
            disagreement = 0.5 * (sp - sq).square().sum(1)
        else:  # tv
            disagreement = 0.5 * (sp - sq).abs().sum(1)
        energy = energy + (wmap * disagreement).sum(dim=(1, 2))
    return energy


def relaxed_potts_energy(
    probs: Tensor, weights: GridWeights, relaxation: str = "bilinear"
) -> Tensor:
    r"""A relaxation of the Potts energy of soft segmentations, one value per image.

    With :math:`S_p \in \mathbb{R}^K` the class distribution at pixel :math:`p` and the pairs and
    weights :math:`w_{pq}` of ``weights`` (each unordered pair once):

    .. math::
        R_\text{bilinear}(S) &= \sum_{pq} w_{pq} (1 - S_p^\top S_q), \\
        R_\text{quadratic}(S) &= \tfrac12 \sum_{pq} w_{pq} \|S_p - S_q\|_2^2, \\
        R_\text{tv}(S) &= \tfrac12 \sum_{pq} w_{pq} \|S_p - S_q\|_1 .

    On one-hot :math:`S` all three equal :math:`\sum_{pq} w_{pq} [X_p \ne X_q]`
    (:func:`~beyondgd.segmentation.grid.potts_energy`). The bilinear form is the one of the
    paper's code; it is concave along each pair, the quadratic one convex. Values are used as
    given (not projected onto the simplex).

    Parameters
    ----------
    probs
        ``(B, K, H, W)`` soft segmentations, ``K >= 2``.
    weights
        Pair weights of the same ``B, H, W`` (:func:`~beyondgd.segmentation.grid.contrast_weights`).
    relaxation
        ``"bilinear"``, ``"quadratic"`` or ``"tv"``.

    Returns
    -------
    Tensor
        ``(B,)`` sums over pairs (not normalised).

    References
    ----------
    .. [1] D. Marin et al., "Beyond Gradient Descent for Regularized Segmentation Losses",
       CVPR 2019, arXiv:1809.02322.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.segmentation.grid import contrast_weights
    >>> weights = contrast_weights(torch.rand(1, 3, 4, 4), 4, contrast=False)
    >>> probs = torch.zeros(1, 2, 4, 4); probs[:, 0, :, :2] = 1; probs[:, 1, :, 2:] = 1
    >>> relaxed_potts_energy(probs, weights, "quadratic")  # 4 cut horizontal pairs
    tensor([4.])
    """
    _check_segmentation("probs", probs)
    _check_grid_weights(weights, probs)
    check_relaxation_choice(relaxation)
    return _relaxed_potts(probs, weights, relaxation)


class GridPottsLoss(nn.Module):
    r"""Relaxed contrast-sensitive Potts loss on the pixel grid (the ADM paper's grid-CRF loss).

    .. math::
        R(S) = \sum_{\{p, q\} \in \mathcal N} w_{pq}\, \rho(S_p, S_q),
        \qquad w_{pq} = \frac{1}{\|p - q\|}
        \exp\Big(-\frac{\|I_p - I_q\|^2}{2\sigma^2}\Big),

    with :math:`\rho` one of the relaxations of :func:`relaxed_potts_energy` (bilinear
    :math:`1 - S_p^\top S_q`, quadratic :math:`\frac12\|S_p - S_q\|^2`, TV
    :math:`\frac12\|S_p - S_q\|_1`), :math:`\sigma^2` the image's mean squared colour difference
    over neighbour pairs, :math:`\mathcal N` the 4- or 8-neighbourhood with each pair once.
    All relaxations equal the discrete Potts energy on one-hot :math:`S`.

    Parameters
    ----------
    relaxation
        ``"bilinear"`` (the paper code's), ``"quadratic"`` or ``"tv"``.
    neighbourhood
        4 or 8 (used when the weights are computed from ``images``; precomputed ``weights``
        carry their own pairs).
    contrast
        ``False`` gives the plain Potts weights :math:`1 / \|p - q\|`.
    reduction
        ``"none"``: ``(B,)`` per-image sums over pairs; ``"sum"``: their sum; ``"mean"``: the sum
        divided by ``B * H * W`` (a per-pixel average, comparable across image sizes).
    target
        ``"prob"``: ``segmentation`` holds probabilities; ``"logits"``: a softmax over dim 1 is
        applied first.

    References
    ----------
    .. [1] D. Marin, M. Tang, I. Ben Ayed, Y. Boykov, "Beyond Gradient Descent for Regularized
       Segmentation Losses", CVPR 2019, arXiv:1809.02322.
    .. [2] M. Tang et al., "On Regularized Losses for Weakly-supervised CNN Segmentation",
       ECCV 2018.

    Examples
    --------
    >>> import torch
    >>> loss = GridPottsLoss("bilinear", neighbourhood=8, target="logits")
    >>> logits = torch.randn(2, 3, 16, 16, requires_grad=True)
    >>> value = loss(logits, torch.rand(2, 3, 16, 16))
    >>> value.backward()
    >>> value.shape, logits.grad.shape
    (torch.Size([]), torch.Size([2, 3, 16, 16]))
    """

    def __init__(
        self,
        relaxation: str = "bilinear",
        neighbourhood: int = 8,
        contrast: bool = True,
        reduction: str = "mean",
        target: str = "prob",
    ):
        super().__init__()
        self.relaxation = check_relaxation_choice(relaxation)
        self.neighbourhood = check_neighbourhood(neighbourhood)
        if not isinstance(contrast, bool):
            raise TypeError(f"contrast must be a bool, got {type(contrast).__name__}")
        self.contrast = contrast
        self.reduction = check_choice("reduction", reduction, _REDUCTIONS)
        self.target = check_choice("target", target, _TARGETS)

    def forward(
        self,
        segmentation: Tensor,
        images: Tensor | None = None,
        *,
        weights: GridWeights | None = None,
    ) -> Tensor:
        """The loss of ``segmentation`` ``(B, K, H, W)`` given ``images`` ``(B, C, H, W)`` or
        precomputed ``weights`` (exactly one of the two)."""
        _check_segmentation("segmentation", segmentation)
        if (images is None) == (weights is None):
            raise ValueError("exactly one of images and weights must be given")
        if weights is None:
            _check_images("images", images, "segmentation", segmentation)
            weights = contrast_weights(images, self.neighbourhood, contrast=self.contrast)
        else:
            _check_grid_weights(weights, segmentation)
        probs = segmentation.softmax(dim=1) if self.target == "logits" else segmentation
        energy = _relaxed_potts(probs, weights, self.relaxation)
        return _reduce(energy, self.reduction, segmentation.shape[-2] * segmentation.shape[-1])

    def extra_repr(self) -> str:
        return (
            f"relaxation={self.relaxation!r}, neighbourhood={self.neighbourhood}, "
            f"contrast={self.contrast}, reduction={self.reduction!r}, target={self.target!r}"
        )


# --------------------------------------------------------------------------- dense filtering


def _pixel_features(images: Tensor, sigma_rgb: float, sigma_xy: float, dtype: torch.dtype):
    """``(B, 2 + C, N)`` features in units of the sigmas: (row, col) / sigma_xy and the colours
    (0-255 units) / sigma_rgb, so that the affinity is ``exp(-|f_p - f_q|^2 / 2)``."""
    b, c, h, w = images.shape
    rows = torch.arange(h, dtype=dtype, device=images.device) / sigma_xy
    cols = torch.arange(w, dtype=dtype, device=images.device) / sigma_xy
    yx = torch.stack(torch.meshgrid(rows, cols, indexing="ij")).reshape(1, 2, h * w)
    colour = images.detach().to(dtype).reshape(b, c, h * w) * (255.0 / sigma_rgb)
    return torch.cat([yx.expand(b, 2, h * w), colour], dim=1)


class _ExactAffinity:
    """The dense Gaussian affinity ``W_pq = exp(-|f_p - f_q|^2 / 2)``, applied in row blocks so
    that at most ``_EXACT_BLOCK_ELEMENTS`` entries exist at once (O(N^2) time, bounded memory)."""

    def __init__(self, features: Tensor, exclude_self: bool):
        # Centring keeps the |a|^2 + |b|^2 - 2 a.b expansion accurate in float32.
        f = features - features.mean(dim=2, keepdim=True)
        self.points = f.transpose(1, 2).contiguous()  # (B, N, D)
        self.sq_norms = self.points.square().sum(-1)  # (B, N)
        self.diagonal = 0.0 if exclude_self else 1.0

    def __call__(self, values: Tensor) -> Tensor:
        b, _, n = values.shape
        rows_per_block = max(1, _EXACT_BLOCK_ELEMENTS // (b * n))
        out = torch.empty_like(values)
        points_t = self.points.transpose(1, 2)
        for start in range(0, n, rows_per_block):
            stop = min(n, start + rows_per_block)
            block = self.points[:, start:stop]
            sq_dist = torch.baddbmm(
                self.sq_norms[:, start:stop, None] + self.sq_norms[:, None, :],
                block,
                points_t,
                alpha=-2.0,
            )
            affinity = torch.exp(sq_dist.clamp_min_(0.0).mul_(-0.5))
            local = torch.arange(stop - start, device=values.device)
            affinity[:, local, start + local] = self.diagonal  # exact, whatever the rounding
            out[:, :, start:stop] = torch.bmm(values, affinity.transpose(1, 2))
        return out


@functools.lru_cache(maxsize=64)
def _lattice_shifts(shifts: int, dims: int) -> tuple[tuple[float, ...], ...]:
    """Sub-cell offsets ``frac(j a / m)``, ``j < m``, of a rank-1 (Korobov) lattice rule.

    The kernel of one grid deviates from the stationary one by a periodic function of the two
    pixels' positions in their cells; averaging over the lattice cancels every Fourier mode
    ``h`` with ``h . a != 0 (mod m)``. ``a = (1, g, g^2, ...) mod m`` with the ``g`` that leaves the
    fewest low-order modes (|h_k| <= 2, weighted by ``prod 1 / h_k^2``) uncancelled.
    """
    if shifts == 1:
        return ((0.0,) * dims,)
    modes = [h for h in itertools.product(range(-2, 3), repeat=dims) if any(h)]
    best_generator, best_score = (1,) * dims, math.inf
    for g in range(1, shifts):
        generator = tuple(pow(g, k, shifts) for k in range(dims))
        if any(math.gcd(a, shifts) != 1 for a in generator):
            continue  # a coordinate that does not move through all the offsets
        score = sum(
            math.prod(1.0 / (hk * hk) for hk in h if hk)
            for h in modes
            if sum(hk * a for hk, a in zip(h, generator)) % shifts == 0
        )
        if score < best_score:
            best_generator, best_score = generator, score
    return tuple(tuple((j * a % shifts) / shifts for a in best_generator) for j in range(shifts))


class _BilateralGrid:
    r"""The affinity ``P^T G P`` of one bilateral grid over a few images' pixel features.

    ``P`` splats each pixel onto the ``2^D`` corners of its grid cell with multilinear weights,
    ``G`` is a separable Gaussian blur; cell sizes are in units of the sigmas and ``shift`` moves
    the grid by a fraction of a cell. Linear splatting and slicing each add variance
    ``cell^2 / 6`` per dimension on average, so the blur has variance ``1 - cell^2 / 3`` (in
    sigma units), and the kernel's mass is that of the target Gaussian, ``sqrt(2 pi)`` per
    dimension. ``G`` is a dense Toeplitz matrix per dimension (no truncation), so ``P^T G P``
    is exactly symmetric; with ``exclude_self`` its diagonal, computed in closed form (it
    factorizes over dimensions), is removed exactly.

    Only occupied cells are touched: the splat is a sparse (CSR) product that sums
    ``corner weight x value`` over the pixels of each occupied cell, one row per (cell, corner),
    followed by one ``index_add`` of those rows into the grid; the slice gathers the same rows
    and applies the transposed sparse matrix. Both sparse matrices are built directly in CSR
    form (no sorting of the ``2^D N`` entries, only of the ``N`` pixels by cell).
    """

    def __init__(self, features: Tensor, cells: Tensor, shift: Tensor, exclude_self: bool):
        b, d, n = features.shape
        device, dtype = features.device, features.dtype
        coords = features / cells[None, :, None] + shift[None, :, None]
        # Subtract a whole number of cells: the sub-cell position (the shift) must survive.
        coords = coords - coords.amin(dim=2, keepdim=True).floor()
        base = coords.floor()
        frac = coords - base  # (B, D, N) in [0, 1)
        base = base.long()
        sizes = [int(s) + 2 for s in base.amax(dim=(0, 2)).tolist()]
        n_cells = math.prod(sizes)
        if n_cells > _MAX_GRID_CELLS:
            raise ValueError(
                f"the bilateral grid would have {n_cells} cells per image (sizes {sizes}); "
                f"increase cell_xy/cell_rgb or sigma_xy/sigma_rgb, or use method='exact'"
            )
        strides = [math.prod(sizes[k + 1 :]) for k in range(d)]
        self.sizes, self.n_cells, self.batch = sizes, n_cells, b
        stride_t = torch.tensor(strides, device=device)
        image_offset = torch.arange(b, device=device)[:, None] * n_cells
        base_index = (base * stride_t[None, :, None]).sum(1) + image_offset  # (B, N)
        self.cell_index, self.pixel_cell = torch.unique(base_index.reshape(-1), return_inverse=True)
        # Corners in row-major bit order (first dimension most significant).
        corner_offsets = torch.zeros(1, dtype=torch.long, device=device)
        corner_weights = torch.ones(b * n, 1, dtype=dtype, device=device)
        for k in range(d):
            f = frac[:, k].reshape(-1, 1, 1)
            corner_weights = (corner_weights[:, :, None] * torch.cat([1 - f, f], dim=2)).flatten(1)
            step = torch.tensor([0, strides[k]], device=device)
            corner_offsets = (corner_offsets[:, None] + step).flatten()
        # Slicing matrix Q (pixels x (occupied cell, corner)) and the splatting matrix Q^T, both
        # in CSR form, built directly: rows of Q hold 2^D increasing columns; Q^T's row
        # (cell, corner) holds that cell's pixels, in order.
        rows, n_corners = corner_weights.shape
        n_occupied = self.cell_index.shape[0]
        corner_ids = torch.arange(n_corners, device=device)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            self.slicer = torch.sparse_csr_tensor(
                torch.arange(0, rows * n_corners + 1, n_corners, device=device),
                (self.pixel_cell[:, None] * n_corners + corner_ids).reshape(-1),
                corner_weights.reshape(-1),
                (rows, n_occupied * n_corners),
                check_invariants=False,
            )
            order = torch.argsort(self.pixel_cell, stable=True)
            counts = torch.bincount(self.pixel_cell, minlength=n_occupied)
            starts = torch.cumsum(counts, 0) - counts
            row_starts = n_corners * starts[:, None] + corner_ids * counts[:, None]  # (U, 2^D)
            sorted_cell = self.pixel_cell[order]
            within = torch.arange(rows, device=device) - starts[sorted_cell]
            target = (row_starts[sorted_cell] + within[:, None]).reshape(-1)
            columns = torch.empty(rows * n_corners, dtype=torch.long, device=device)
            columns[target] = order[:, None].expand(rows, n_corners).reshape(-1)
            weights = torch.empty(rows * n_corners, dtype=dtype, device=device)
            weights[target] = corner_weights[order].reshape(-1)
            crow = torch.cat([row_starts.reshape(-1), row_starts.new_tensor([rows * n_corners])])
            self.splatter = torch.sparse_csr_tensor(
                crow, columns, weights, (n_occupied * n_corners, rows), check_invariants=False
            )
        self.corner_cells = (self.cell_index[:, None] + corner_offsets[None]).reshape(-1)
        self.blurs = [
            self._blur_matrix(size, float(c), features) for size, c in zip(sizes, cells.tolist())
        ]
        self.self_weight = None
        if exclude_self:
            # Diagonal of P^T G P: sum over corner pairs of w_a w_b G_ab, a product over dims.
            self_weight = torch.ones_like(frac[:, 0])
            for k, blur in enumerate(self.blurs):
                f = frac[:, k]
                same = (1 - f).square() + f.square()
                self_weight = self_weight * (same * blur[0, 0] + 2 * f * (1 - f) * blur[0, 1])
            self.self_weight = self_weight  # (B, N)

    @staticmethod
    def _blur_matrix(size: int, cell: float, like: Tensor) -> Tensor:
        blur_std = math.sqrt(1.0 - cell * cell / 3.0) / cell  # in cells
        reach = size + math.ceil(10 * blur_std)  # enough terms for the normalising sum
        taps = torch.arange(-reach, reach + 1, dtype=torch.float64)
        mass = torch.exp(-0.5 * (taps / blur_std).square()).sum().item() * cell
        scale = math.sqrt(2 * math.pi) / mass
        idx = torch.arange(size, dtype=torch.float64)
        matrix = scale * torch.exp(-0.5 * ((idx[:, None] - idx[None, :]) / blur_std).square())
        return matrix.to(dtype=like.dtype, device=like.device)

    def __call__(self, values: Tensor) -> Tensor:
        b, channels, n = values.shape
        points = values.transpose(1, 2)  # (B, N, Kc)
        per_corner = self.splatter @ points.reshape(b * n, channels)  # (U 2^D, Kc)
        grid = values.new_zeros(b * self.n_cells, channels)
        grid.index_add_(0, self.corner_cells, per_corner)
        grid = grid.view(b, *self.sizes, channels)
        for k, blur in enumerate(self.blurs):
            pre, post = b * math.prod(self.sizes[:k]), math.prod(self.sizes[k + 1 :])
            grid = torch.matmul(blur, grid.reshape(pre, self.sizes[k], post * channels))
        grid = grid.reshape(b * self.n_cells, channels)
        out = (self.slicer @ grid.index_select(0, self.corner_cells)).view(b, n, channels)
        if self.self_weight is not None:
            out -= points * self.self_weight[..., None]
        return out.transpose(1, 2)


class _ShiftedBilateralGrids:
    r"""The average of :class:`_BilateralGrid` affinities over grids shifted by a lattice rule.

    One grid's kernel depends on where the two pixels sit inside their cells (too high for
    pixels on a vertex, too low mid-cell, by ``O(cell^2)``); averaging grids shifted by
    :func:`_lattice_shifts` cancels that dependence to high order and leaves the stationary
    kernel (a Gaussian convolved with a cubic B-spline). Grids are built one at a time, for
    groups of at most ``_GRID_GROUP_PIXELS`` pixels, so memory stays bounded.
    """

    def __init__(self, features: Tensor, cells: list[float], exclude_self: bool, shifts: int):
        b, d, n = features.shape
        self.features, self.exclude_self = features, exclude_self
        self.cells = torch.tensor(cells, dtype=features.dtype, device=features.device)
        self.shifts = torch.tensor(
            _lattice_shifts(shifts, d), dtype=features.dtype, device=features.device
        )
        group = max(1, _GRID_GROUP_PIXELS // n)
        self.groups = [(start, min(b, start + group)) for start in range(0, b, group)]
        # Build the first grid now: an oversized grid fails here, before any filtering.
        self.first = _BilateralGrid(
            features[self.groups[0][0] : self.groups[0][1]],
            self.cells,
            self.shifts[0],
            exclude_self,
        )

    def __call__(self, values: Tensor) -> Tensor:
        out = torch.zeros_like(values)
        for start, stop in self.groups:
            for j, shift in enumerate(self.shifts):
                if start == 0 and j == 0:
                    grid = self.first
                else:
                    grid = _BilateralGrid(
                        self.features[start:stop], self.cells, shift, self.exclude_self
                    )
                out[start:stop] += grid(values[start:stop])
        return out / self.shifts.shape[0]


class _SymmetricFilter(torch.autograd.Function):
    """``W @ values`` for a symmetric ``W``: the backward is the same filter (images constant)."""

    @staticmethod
    def forward(ctx, values: Tensor, affinity) -> Tensor:  # type: ignore[override]
        ctx.affinity = affinity
        return affinity(values)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        return _SymmetricFilter.apply(grad_out, ctx.affinity), None


def _make_affinity(
    images: Tensor,
    sigma_rgb: float,
    sigma_xy: float,
    method: str,
    exclude_self: bool,
    dtype: torch.dtype,
    cell_rgb: float,
    cell_xy: float,
    shifts: int,
):
    features = _pixel_features(images, sigma_rgb, sigma_xy, dtype)
    if method == "exact":
        return _ExactAffinity(features, exclude_self)
    cells = [cell_xy, cell_xy] + [cell_rgb] * images.shape[1]
    return _ShiftedBilateralGrids(features, cells, exclude_self, shifts)


def _check_filter_options(sigma_rgb, sigma_xy, cell_rgb, cell_xy, shifts) -> tuple:
    return (
        check_number("sigma_rgb", sigma_rgb, low=0.0, low_inclusive=False),
        check_number("sigma_xy", sigma_xy, low=0.0, low_inclusive=False),
        check_number("cell_rgb", cell_rgb, low=0.0, low_inclusive=False, high=_MAX_CELL),
        check_number("cell_xy", cell_xy, low=0.0, low_inclusive=False, high=_MAX_CELL),
        check_int("shifts", shifts, low=1, high=_MAX_SHIFTS),
    )


def bilateral_filter(
    values: Tensor,
    images: Tensor,
    sigma_rgb: float,
    sigma_xy: float,
    method: str = "filter",
    exclude_self: bool = True,
    *,
    cell_rgb: float = _DEFAULT_CELL,
    cell_xy: float = _DEFAULT_CELL,
    shifts: int = _DEFAULT_SHIFTS,
) -> Tensor:
    r"""Gaussian bilateral filtering ``W @ values``, per channel, with the dense-CRF affinity.

    .. math::
        (W v)_p = \sum_{q \ne p} \exp\Big(-\frac{\|I_p - I_q\|^2}{2\sigma_\text{rgb}^2}
        - \frac{\|p - q\|^2}{2\sigma_\text{xy}^2}\Big) v_q

    (the sum includes :math:`q = p`, weight 1, when ``exclude_self`` is false). Colours are in
    0-255 units: ``images`` in [0, 1] are multiplied by 255 first, so ``sigma_rgb = 15`` means 15
    grey levels; positions are in pixels. No normalisation (unlike the usual bilateral filter).

    ``method="exact"`` forms :math:`W` in row blocks (:math:`O(N^2)` time, memory bounded by the
    block). ``method="filter"`` is an :math:`O(N)` bilateral grid (Paris & Durand): splat each
    pixel with multilinear weights onto the corners of its cell in a grid over (row, col,
    colour...) with cells of ``cell_xy * sigma_xy`` pixels and ``cell_rgb * sigma_rgb`` grey
    levels, blur the grid with a separable Gaussian of variance ``1 - cell^2 / 3`` (in sigma
    units: splatting and slicing each add ``cell^2 / 6`` per dimension) scaled to the target
    kernel's mass, and slice back with the same weights. One grid's kernel still depends on the
    pixels' positions inside their cells (``O(cell^2)``: 13% error alone at the default cells),
    so the result is averaged over ``shifts`` grids offset by a rank-1 lattice rule, which cancels
    that dependence to high order. Each grid's operator ``P^T G P`` is exactly symmetric, with an
    exactly zero diagonal when ``exclude_self``, so the gradient is exact for the approximation
    computed. A grid has ``prod(extent / cell + 2)`` cells; it suits the dense-CRF regime
    (``sigma_xy`` of tens of pixels or more) and refuses grids above about 8 million cells per
    image (small ``sigma_xy`` on large images): use larger cells or ``method="exact"`` there.

    Measured (``skimage.data.astronaut()`` resized by area averaging, a hard case with saturated
    colours; random softmax probability maps ``S``, ``K = 4``; ``sigma_rgb = 15``,
    ``sigma_xy = 100``; float32; one CPU thread), relative Frobenius error
    ``|W_grid S - W S| / |W S|`` at 64x64: 2.1% with the defaults (cells 0.75, 3 shifts); 13.5%
    with 1 shift, 0.9% with 5 shifts, 0.8% with cells 0.5 and 3 shifts (on
    ``skimage.data.coffee()``: 0.5% with the defaults). At 256x256: 3.0% error; the filter takes
    0.26 s for ``K = 4`` (0.53 s for ``K = 21``; 0.41 s with 5 shifts), the exact product 11-34 s
    (machine load varied).

    Parameters
    ----------
    values
        ``(B, K, H, W)`` maps to filter (any ``K >= 1``).
    images
        ``(B, C, H, W)`` guide images in [0, 1] (``C = 1`` grey or ``C = 3`` colour; the grid
        grows with ``C``). Treated as constants: no gradient flows to them.
    sigma_rgb, sigma_xy
        Colour (0-255 units) and spatial (pixels) bandwidths, positive.
    method
        ``"filter"`` (bilateral grid) or ``"exact"``.
    exclude_self
        Drop the diagonal :math:`w_{pp} = 1` (the dense-CRF affinity has none).
    cell_rgb, cell_xy
        Grid cell sizes in units of ``sigma_rgb`` / ``sigma_xy``, in (0, 1.5]: smaller is more
        accurate and slower (a grid has about ``(255 / (cell_rgb sigma_rgb) + 2)^C`` colour
        cells).
    shifts
        Number of shifted grids averaged, 1 to 64: cost grows linearly, error falls fast.

    Returns
    -------
    Tensor
        ``(B, K, H, W)``, differentiable with respect to ``values`` (the backward is one more
        filtering pass, since :math:`W` is symmetric).

    References
    ----------
    .. [1] S. Paris, F. Durand, "A Fast Approximation of the Bilateral Filter using a Signal
       Processing Approach", ECCV 2006.
    .. [2] M. Tang et al., "On Regularized Losses for Weakly-supervised CNN Segmentation",
       ECCV 2018 (dense-CRF loss, permutohedral-lattice filtering).

    Examples
    --------
    >>> import torch
    >>> images = torch.rand(1, 3, 8, 8)
    >>> ones = torch.ones(1, 1, 8, 8)
    >>> exact = bilateral_filter(ones, images, 15.0, 100.0, method="exact")
    >>> approx = bilateral_filter(ones, images, 15.0, 100.0, method="filter")
    >>> bool(((approx - exact).norm() / exact.norm()) < 0.05)
    True
    """
    check_finite_tensor("values", values)
    if values.dim() != 4 or values.shape[1] < 1:
        raise ValueError(f"values must have shape (B, K, H, W), got {tuple(values.shape)}")
    _check_images("images", images, "values", values)
    _check_unit_range("images", images)
    sigma_rgb, sigma_xy, cell_rgb, cell_xy, shifts = _check_filter_options(
        sigma_rgb, sigma_xy, cell_rgb, cell_xy, shifts
    )
    check_choice("method", method, _FILTER_METHODS)
    if not isinstance(exclude_self, bool):
        raise TypeError(f"exclude_self must be a bool, got {type(exclude_self).__name__}")
    b, k, h, w = values.shape
    dtype = _compute_dtype(values.dtype)
    affinity = _make_affinity(
        images, sigma_rgb, sigma_xy, method, exclude_self, dtype, cell_rgb, cell_xy, shifts
    )
    out = _SymmetricFilter.apply(values.reshape(b, k, h * w).to(dtype), affinity)
    return out.reshape(b, k, h, w).to(values.dtype)


# --------------------------------------------------------------------------- dense CRF loss


class _DenseCRFEnergy(torch.autograd.Function):
    """Per-image ``R(S) = sum_k S^k' (W 1 - W S^k)`` and the degrees ``W 1``, from one filtering
    of ``[S, 1]``; the backward reuses them: ``dR/dS^k = W 1 - 2 W S^k`` (``W`` symmetric), so
    no filtering happens in the backward at all."""

    @staticmethod
    def forward(ctx, probs: Tensor, affinity):  # type: ignore[override]
        b, k, n = probs.shape
        filtered = affinity(torch.cat([probs, probs.new_ones(b, 1, n)], dim=1))
        filtered_probs, degree = filtered[:, :k], filtered[:, k]
        energy = (probs * (degree[:, None] - filtered_probs)).sum(dim=(1, 2))
        ctx.save_for_backward(filtered_probs, degree)
        ctx.mark_non_differentiable(degree)
        return energy, degree

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_energy: Tensor, _grad_degree: Tensor):  # type: ignore[override]
        filtered_probs, degree = ctx.saved_tensors
        grad = degree[:, None] - 2.0 * filtered_probs
        return grad * grad_energy[:, None, None], None


class DenseCRFLoss(nn.Module):
    r"""Dense-CRF regularized loss (Tang et al. 2018): a Gaussian bilateral Potts relaxation.

    .. math::
        R(S) = \sum_k S^{k\top} W (1 - S^k), \qquad
        W_{pq} = \exp\Big(-\frac{\|I_p - I_q\|^2}{2\sigma_\text{rgb}^2}
        - \frac{\|p - q\|^2}{2\sigma_\text{xy}^2}\Big)\ (p \ne q),\ W_{pp} = 0,

    over all ordered pixel pairs (each unordered pair counts twice), colours in 0-255 units
    (``images`` in [0, 1] are multiplied by 255), positions in pixels. On one-hot :math:`S` it is
    :math:`\sum_{p \ne q} W_{pq} [X_p \ne X_q]`. The gradient is
    :math:`\partial R / \partial S^k = W 1 - 2 W S^k` (``W`` symmetric); it reuses the forward's
    filtering of ``[S, 1]`` (a custom autograd function), so a backward costs no filtering.
    Measured at 256x256, ``K = 4``, filter method, one CPU thread: forward + backward 0.28 s,
    against 0.64 s when autograd differentiates :math:`S^\top (W1 - WS)` through a second
    filtering pass. The values are used as given (not projected onto the simplex). With
    ``normalize`` the filter's scale errors largely cancel: on the 64x64 image of
    :func:`bilateral_filter`'s measurement the filter and exact losses agree to 1e-5.

    Parameters
    ----------
    sigma_rgb, sigma_xy
        Bandwidths (0-255 colour units, pixels); rloss uses 15 and 100.
    method
        ``"exact"`` (dense product in row blocks, :math:`O(N^2)` time), ``"filter"``
        (:func:`bilateral_filter`'s :math:`O(N)` bilateral grid, 2-3% error in ``W S``) or
        ``"auto"`` (exact when ``H * W <= max_exact_pixels``).
    reduction
        ``"none"``: ``(B,)`` per image; ``"sum"``; ``"mean"``: the sum divided by ``B * H * W``.
    normalize
        Divide each image's :math:`R` by its mean degree :math:`\bar d = 1^\top W 1 / N`, so the
        scale does not grow with the image size (with ``sigma_xy`` large, :math:`\bar d` grows
        like :math:`N`).
    max_exact_pixels
        The ``"auto"`` threshold.
    cell_rgb, cell_xy, shifts
        Bilateral-grid options (see :func:`bilateral_filter`).

    References
    ----------
    .. [1] M. Tang, F. Perazzi, A. Djelouah, I. Ben Ayed, C. Schroers, Y. Boykov, "On
       Regularized Losses for Weakly-supervised CNN Segmentation", ECCV 2018.
    .. [2] D. Marin et al., "Beyond Gradient Descent for Regularized Segmentation Losses",
       CVPR 2019, arXiv:1809.02322 (the dense-CRF loss as the GD baseline).

    Examples
    --------
    >>> import torch
    >>> loss = DenseCRFLoss(sigma_rgb=15.0, sigma_xy=100.0)
    >>> probs = torch.rand(2, 3, 16, 16).softmax(1).requires_grad_(True)
    >>> value = loss(probs, torch.rand(2, 3, 16, 16))
    >>> value.backward()
    >>> value.shape, probs.grad.shape
    (torch.Size([]), torch.Size([2, 3, 16, 16]))
    """

    def __init__(
        self,
        sigma_rgb: float = 15.0,
        sigma_xy: float = 100.0,
        method: str = "auto",
        reduction: str = "mean",
        normalize: bool = True,
        max_exact_pixels: int = 4096,
        *,
        cell_rgb: float = _DEFAULT_CELL,
        cell_xy: float = _DEFAULT_CELL,
        shifts: int = _DEFAULT_SHIFTS,
    ):
        super().__init__()
        options = _check_filter_options(sigma_rgb, sigma_xy, cell_rgb, cell_xy, shifts)
        self.sigma_rgb, self.sigma_xy, self.cell_rgb, self.cell_xy, self.shifts = options
        self.method = check_choice("method", method, _CRF_METHODS)
        self.reduction = check_choice("reduction", reduction, _REDUCTIONS)
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
        self.normalize = normalize
        self.max_exact_pixels = check_int("max_exact_pixels", max_exact_pixels, low=0)

    def resolved_method(self, pixels: int) -> str:
        """``"exact"`` or ``"filter"``: what ``method`` means for images of ``pixels`` pixels."""
        if self.method != "auto":
            return self.method
        return "exact" if pixels <= self.max_exact_pixels else "filter"

    def forward(self, probs: Tensor, images: Tensor) -> Tensor:
        """The loss of ``probs`` ``(B, K, H, W)`` given ``images`` ``(B, C, H, W)`` in [0, 1]."""
        _check_segmentation("probs", probs)
        _check_images("images", images, "probs", probs)
        _check_unit_range("images", images)
        b, k, h, w = probs.shape
        dtype = _compute_dtype(probs.dtype)
        affinity = _make_affinity(
            images,
            self.sigma_rgb,
            self.sigma_xy,
            self.resolved_method(h * w),
            True,
            dtype,
            self.cell_rgb,
            self.cell_xy,
            self.shifts,
        )
        energy, degree = _DenseCRFEnergy.apply(probs.reshape(b, k, h * w).to(dtype), affinity)
        if self.normalize:
            # A one-pixel image has degree 0 and energy 0: the floor keeps 0 / 0 out.
            mean_degree = degree.mean(dim=1).clamp_min(torch.finfo(dtype).tiny)
            energy = energy / mean_degree
        return _reduce(energy, self.reduction, h * w).to(probs.dtype)

    def extra_repr(self) -> str:
        return (
            f"sigma_rgb={self.sigma_rgb}, sigma_xy={self.sigma_xy}, method={self.method!r}, "
            f"reduction={self.reduction!r}, normalize={self.normalize}, "
            f"max_exact_pixels={self.max_exact_pixels}"
        )
