r"""The pixel grid of a Potts model: neighbour pairs, contrast-sensitive weights, discrete energy.

A pair structure is a tuple of offsets :math:`(d_y, d_x)`; each unordered neighbour pair appears
once: offsets ``(0, 1), (1, 0)`` for the 4-neighbourhood and also ``(1, 1), (1, -1)`` for the
8-neighbourhood. Weights are stored per offset as maps over the pixels ``p`` whose partner
``q = p + (d_y, d_x)`` lies inside the image (shape ``(B, H - d_y, W - |d_x|)``), which keeps every
pairwise term a slice-and-multiply on tensors; :func:`edge_list` flattens them for graph cuts.

Contrast-sensitive Potts weights (Boykov & Jolly 2001, as in the ADM paper):
:math:`w_{pq} = \exp(-\|I_p - I_q\|^2 / (2\sigma^2)) / \|p - q\|` with :math:`\sigma^2` the image's
mean of :math:`\|I_p - I_q\|^2` over its neighbour pairs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from beyondgd.core import check_choice, check_finite_tensor, check_number

OFFSETS: dict[int, tuple[tuple[int, int], ...]] = {
    4: ((0, 1), (1, 0)),
    8: ((0, 1), (1, 0), (1, 1), (1, -1)),
}


def check_neighbourhood(neighbourhood: int) -> int:
    if neighbourhood not in OFFSETS:
        raise ValueError(f"neighbourhood must be 4 or 8, got {neighbourhood!r}")
    return neighbourhood


def pair_slices(offset: tuple[int, int], height: int, width: int):
    """``(rows_p, cols_p, rows_q, cols_q)`` slices selecting every pair ``p, q = p + offset``."""
    dy, dx = offset
    rows_p, rows_q = slice(0, height - dy), slice(dy, height)
    if dx >= 0:
        cols_p, cols_q = slice(0, width - dx), slice(dx, width)
    else:
        cols_p, cols_q = slice(-dx, width), slice(0, width + dx)
    return rows_p, cols_p, rows_q, cols_q


def pair_values(x: torch.Tensor, offset: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The two ends of every pair with ``offset`` of a ``(..., H, W)`` tensor."""
    rp, cp, rq, cq = pair_slices(offset, x.shape[-2], x.shape[-1])
    return x[..., rp, cp], x[..., rq, cq]


@dataclass
class GridWeights:
    """Per-offset weight maps of a batch of images: ``maps[i]`` has shape
    ``(B, H - dy_i, W - |dx_i|)`` for ``offsets[i]``."""

    offsets: tuple[tuple[int, int], ...]
    maps: list[torch.Tensor]
    height: int
    width: int

    @property
    def batch_size(self) -> int:
        return self.maps[0].shape[0]

    def __getitem__(self, index) -> GridWeights:
        """The weights of a sub-batch (``index`` an int, slice or index tensor)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return GridWeights(self.offsets, [m[index] for m in self.maps], self.height, self.width)

    def scaled(self, factor: float) -> GridWeights:
        return GridWeights(self.offsets, [m * factor for m in self.maps], self.height, self.width)

    def degree(self) -> torch.Tensor:
        """Each pixel's total pair weight, ``(B, H, W)``."""
        deg = self.maps[0].new_zeros(self.batch_size, self.height, self.width)
        for off, w in zip(self.offsets, self.maps):
            rp, cp, rq, cq = pair_slices(off, self.height, self.width)
            deg[:, rp, cp] += w
            deg[:, rq, cq] += w
        return deg


def _check_sigma2(sigma2: float | torch.Tensor, batch_size: int) -> torch.Tensor:
    """``sigma2`` as a tensor: a positive number, or a positive scalar / ``(B,)`` tensor."""
    if isinstance(sigma2, torch.Tensor):
        check_finite_tensor("sigma2", sigma2)
        if sigma2.dim() > 1 or (sigma2.dim() == 1 and sigma2.shape[0] not in (1, batch_size)):
            raise ValueError(
                f"sigma2 must be a scalar or have shape ({batch_size},), got {tuple(sigma2.shape)}"
            )
        if not bool((sigma2 > 0).all()):
            raise ValueError("sigma2 must be > 0 (a zero sigma2 gives 0/0 = NaN weights)")
        return sigma2
    return torch.tensor(check_number("sigma2", sigma2, low=0.0, low_inclusive=False))


def contrast_weights(
    images: torch.Tensor,
    neighbourhood: int = 8,
    *,
    contrast: bool = True,
    sigma2: float | torch.Tensor | None = None,
) -> GridWeights:
    """Contrast-sensitive Potts weights of ``images`` ``(B, C, H, W)`` (or ``(C, H, W)``).

    Parameters
    ----------
    contrast
        ``False`` gives the plain Potts model, :math:`w_{pq} = 1 / \\|p - q\\|`.
    sigma2
        Overrides the per-image :math:`\\sigma^2` (mean squared colour difference over the
        image's neighbour pairs; floored at 1e-12 so a constant image gets weights 1/||p-q||).
    """
    check_finite_tensor("images", images)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(
            f"images must have shape (B, C, H, W) or (C, H, W), got {tuple(images.shape)}"
        )
    check_neighbourhood(neighbourhood)
    b, _, h, w = images.shape
    if h < 2 or w < 2:
        raise ValueError(f"images must be at least 2x2 pixels, got {h}x{w}")
    offsets = OFFSETS[neighbourhood]
    sq = []
    for off in offsets:
        ip, iq = pair_values(images, off)
        sq.append((ip - iq).square().sum(1))  # (B, h', w')
    if sigma2 is None:
        total = sum(s.sum(dim=(1, 2)) for s in sq)
        count = sum(s[0].numel() for s in sq)
        s2 = (total / count).clamp_min(1e-12)
    else:
        s2 = _check_sigma2(sigma2, b).to(dtype=images.dtype, device=images.device).expand(b)
    maps = []
    for off, d2 in zip(offsets, sq):
        inv_dist = 1.0 / math.hypot(*off)
        if contrast:
            maps.append(torch.exp(-d2 / (2 * s2[:, None, None])) * inv_dist)
        else:
            maps.append(torch.full_like(d2, inv_dist))
    return GridWeights(offsets, maps, h, w)


def potts_energy(labels: torch.Tensor, weights: GridWeights) -> torch.Tensor:
    """Discrete Potts energy :math:`\\sum_{pq} w_{pq} [X_p \\ne X_q]` of integer ``labels``
    ``(B, H, W)``, one value per image (a sum over pairs, not normalised)."""
    if labels.dim() == 2:
        labels = labels.unsqueeze(0)
    if labels.shape != (weights.batch_size, weights.height, weights.width):
        raise ValueError(
            f"labels must have shape {(weights.batch_size, weights.height, weights.width)} to "
            f"match the weights, got {tuple(labels.shape)}"
        )
    energy = weights.maps[0].new_zeros(weights.batch_size)
    for off, w in zip(weights.offsets, weights.maps):
        lp, lq = pair_values(labels, off)
        energy = energy + (w * (lp != lq).to(w.dtype)).sum(dim=(1, 2))
    return energy


# A few grids: a trainer uses one or two image sizes; a 512 x 512 8-grid holds 16 MB.
@functools.lru_cache(maxsize=4)
def _grid_pairs(offsets: tuple[tuple[int, int], ...], height: int, width: int) -> torch.Tensor:
    ids = torch.arange(height * width).reshape(height, width)
    edges = []
    for off in offsets:
        p, q = pair_values(ids, off)
        edges.append(torch.stack([p.reshape(-1), q.reshape(-1)], 1))
    return torch.cat(edges)


def grid_pairs(offsets, height: int, width: int) -> torch.Tensor:
    """The pairs of an ``H x W`` grid with ``offsets``, ``(E, 2)`` int64 with
    ``pairs[:, 0] < pairs[:, 1]`` in row-major pixel numbering, in :func:`edge_list`'s order.
    Cached (a trainer asks every step): the tensor is shared, so do not modify it."""
    return _grid_pairs(tuple(tuple(int(v) for v in off) for off in offsets), height, width)


def edge_list(weights: GridWeights, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Image ``index``'s pairs as ``(edges (E, 2) int64 with edges[:, 0] < edges[:, 1], w (E,))``
    in row-major pixel numbering."""
    edges = grid_pairs(weights.offsets, weights.height, weights.width).clone()
    return edges, torch.cat([wmap[index].reshape(-1) for wmap in weights.maps])


def check_relaxation_choice(relaxation: str) -> str:
    return check_choice("relaxation", relaxation, ("bilinear", "quadratic", "tv"))
