r"""Segmentation data for scribble supervision: synthetic scenes, scribbles, a user's folder.

- :class:`SegmentationData`: images ``(N, 3, H, W)`` in [0, 1], optional ground-truth masks and
  scribbles ``(N, H, W)`` (``ignore_index`` = unlabelled), class names.
- :func:`make_texture_scenes`: synthetic semantic scenes whose class is given by *texture*
  (stripes, checkerboard, dots, ...) while the two colours of every region are random, so a
  network must learn semantics and region boundaries are colour edges.
- :func:`make_fashion_scenes`: 1-3 real Fashion-MNIST garments, tinted, pasted onto textured
  backgrounds cut from scikit-image's bundled images (grass, gravel, brick).
- :func:`make_scribbles`: scribbles drawn from ground-truth masks as strokes inside eroded regions
  (about 3 % of the pixels), shortened variants (length 0.8, 0.5, 0.3) nested in the full one, and
  single clicks.
- :func:`load_scribble_folder`, :func:`save_label_png`, :func:`colorize`: a user's own images and
  scribble PNGs (255 = unlabelled), and label images for figures.

Everything random takes a seed and uses its own ``numpy.random.Generator``; the global random
state is never touched.

References
----------
D. Marin, M. Tang, I. Ben Ayed, Y. Boykov, "Beyond Gradient Descent for Regularized Segmentation
Losses", CVPR 2019 (arXiv 1809.02322); scribbles as in D. Lin et al., "ScribbleSup", CVPR 2016.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from beyondgd.core import atomic_write_bytes, check_choice, check_int, check_number, derive_seed
from beyondgd.data.fashion_mnist import (
    _INSTALL_HINT,
    DEFAULT_PATH,
    ENV_VAR,
    DataNotFoundError,
    _find,
    read_idx,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "TEXTURE_CLASSES",
    "SegmentationData",
    "colorize",
    "load_scribble_folder",
    "make_fashion_scenes",
    "make_scribbles",
    "make_texture_scenes",
    "save_label_png",
]

#: texture families of :func:`make_texture_scenes`, in class order
TEXTURE_CLASSES = ("stripes", "checker", "dots", "smooth", "grain", "diagonal", "rings", "waves")
#: Fashion-MNIST's label names, by label
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
#: scikit-image images used as Fashion-scene backgrounds (those missing are skipped)
BACKGROUND_IMAGES = ("grass", "gravel", "brick")

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity for regions and strokes
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_LABEL_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")  # lossless only: jpeg would corrupt labels


# --------------------------------------------------------------------------------------------
# the container
# --------------------------------------------------------------------------------------------


def _as_label_tensor(name: str, value: object) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype, got {value.dtype}")
    return value.to(torch.int64)


@dataclass(eq=False)  # tensors have no single truth value: compare fields yourself
class SegmentationData:
    """Images with optional ground truth and scribbles, for (weakly) supervised segmentation.

    Parameters
    ----------
    images
        ``(N, 3, H, W)`` floating tensor in [0, 1] (stored as float32).
    masks
        ``(N, H, W)`` integer ground truth in ``[0, n_classes)``, or ``None`` (a user's data may
        have none). Pixels equal to ``ignore_index`` are void (not scored).
    scribbles
        ``(N, H, W)`` integer seeds in ``[0, n_classes)``, ``ignore_index`` where unlabelled; or
        ``None`` until generated (see :func:`make_scribbles` and :meth:`with_scribbles`).
    class_names
        One name per class; ``n_classes = len(class_names)``.
    ignore_index
        The "unlabelled" value; must not be a class id.
    image_names
        Optional provenance, one string per image (file stem for a folder, the Fashion-MNIST items
        of a Fashion scene as ``"split:index+split:index"``).

    Integer label tensors of any integer dtype are stored as int64.

    Examples
    --------
    >>> data = make_texture_scenes(4, size=32, n_classes=3, seed=0)
    >>> data = data.with_scribbles(make_scribbles(data.masks, seed=0))
    >>> len(data), data.n_classes, tuple(data.scribbles.shape)
    (4, 3, (4, 32, 32))
    """

    images: torch.Tensor
    masks: torch.Tensor | None
    scribbles: torch.Tensor | None
    class_names: list[str]
    ignore_index: int = 255
    image_names: list[str] | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(self.images).__name__}")
        if not self.images.is_floating_point():
            raise TypeError(f"images must have a floating-point dtype, got {self.images.dtype}")
        if self.images.ndim != 4 or self.images.shape[1] != 3 or self.images.shape[0] < 1:
            raise ValueError(
                f"images must have shape (N, 3, H, W) with N >= 1, got {tuple(self.images.shape)}"
            )
        self.images = self.images.to(torch.float32)
        if not bool(torch.isfinite(self.images).all()):
            raise ValueError("images must contain only finite values (found NaN or inf)")
        if bool((self.images < 0).any()) or bool((self.images > 1).any()):
            raise ValueError(
                f"images must lie in [0, 1], got range [{float(self.images.min()):.4g}, "
                f"{float(self.images.max()):.4g}]"
            )
        if isinstance(self.class_names, str) or not isinstance(self.class_names, Sequence):
            raise TypeError(
                f"class_names must be a list of str, got {type(self.class_names).__name__}"
            )
        self.class_names = list(self.class_names)
        if not self.class_names or not all(isinstance(c, str) for c in self.class_names):
            raise ValueError("class_names must be a non-empty list of str")
        self.ignore_index = check_int("ignore_index", self.ignore_index)
        if 0 <= self.ignore_index < self.n_classes:
            raise ValueError(
                f"ignore_index must not be a class id in [0, {self.n_classes}), got "
                f"{self.ignore_index}"
            )
        n, _, h, w = self.images.shape
        for name in ("masks", "scribbles"):
            value = getattr(self, name)
            if value is None:
                continue
            value = _as_label_tensor(name, value)
            if tuple(value.shape) != (n, h, w):
                raise ValueError(
                    f"{name} must have shape (N, H, W) = {(n, h, w)} to match images, got "
                    f"{tuple(value.shape)}"
                )
            labelled = value[value != self.ignore_index]
            if labelled.numel() and (
                int(labelled.min()) < 0 or int(labelled.max()) >= self.n_classes
            ):
                raise ValueError(
                    f"{name} labels must lie in [0, {self.n_classes}) or equal ignore_index="
                    f"{self.ignore_index}, got range [{int(labelled.min())}, "
                    f"{int(labelled.max())}]"
                )
            setattr(self, name, value)
        if self.image_names is not None:
            self.image_names = [str(s) for s in self.image_names]
            if len(self.image_names) != n:
                raise ValueError(
                    f"image_names must have one entry per image ({n}), got {len(self.image_names)}"
                )

    @property
    def n_classes(self) -> int:
        """Number of classes, ``len(class_names)``."""
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> SegmentationData:
        """The images at ``indices`` (a non-empty sequence or 1-D array of ints in [0, N))."""
        if isinstance(indices, torch.Tensor):
            indices = indices.cpu().numpy()
        index = np.asarray(indices)
        if index.ndim != 1 or index.size == 0 or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(
                f"indices must be a non-empty 1-D sequence of integers, got {indices!r}"
            )
        if int(index.min()) < 0 or int(index.max()) >= len(self):
            raise ValueError(
                f"indices must lie in [0, {len(self)}), got range [{int(index.min())}, "
                f"{int(index.max())}]"
            )
        idx = torch.from_numpy(index.astype(np.int64))
        return SegmentationData(
            images=self.images[idx],
            masks=None if self.masks is None else self.masks[idx],
            scribbles=None if self.scribbles is None else self.scribbles[idx],
            class_names=list(self.class_names),
            ignore_index=self.ignore_index,
            image_names=None
            if self.image_names is None
            else [self.image_names[i] for i in index.tolist()],
        )

    def with_scribbles(self, scribbles: torch.Tensor | np.ndarray) -> SegmentationData:
        """A copy holding ``scribbles`` ``(N, H, W)`` (validated like the constructor's)."""
        return SegmentationData(
            images=self.images,
            masks=self.masks,
            scribbles=scribbles,  # type: ignore[arg-type]
            class_names=list(self.class_names),
            ignore_index=self.ignore_index,
            image_names=None if self.image_names is None else list(self.image_names),
        )

    def require_scribbles(self) -> None:
        """Raise ``ValueError`` unless scribbles are present and every image has a seed pixel.

        A trainer calls this at its boundary: an image without any seed gives no partial
        cross-entropy term and fixes no label in the ADM proposal.
        """
        if self.scribbles is None:
            raise ValueError("scribbles are None; generate them with make_scribbles(masks)")
        counts = (self.scribbles != self.ignore_index).flatten(1).sum(1)
        empty = torch.nonzero(counts == 0).flatten().tolist()
        if empty:
            names = empty if self.image_names is None else [self.image_names[i] for i in empty]
            raise ValueError(f"scribbles: image(s) {names[:10]} have no labelled pixel")


# --------------------------------------------------------------------------------------------
# texture scenes
# --------------------------------------------------------------------------------------------


def _colour_pairs(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Two random colours ``(*shape, 3)`` per entry, 0.3-0.7 apart in RGB (a visible texture)."""
    first = rng.random((*shape, 3))
    direction = rng.standard_normal((*shape, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True) + 1e-12
    step = rng.uniform(0.3, 0.7, (*shape, 1)) * direction
    second = first + step
    # reflect a component that would leave [0, 1] instead of clipping the contrast away
    second = np.where((second < 0) | (second > 1), first - step, second)
    return first, np.clip(second, 0.0, 1.0)


def _square_wave(phase: np.ndarray, sharpness: float = 2.5) -> np.ndarray:
    """A soft square wave in [0, 1] (crisp texture without aliasing)."""
    return 0.5 + 0.5 * np.tanh(sharpness * np.sin(phase))


def _texture_fields(
    family: str,
    params: dict[str, np.ndarray],
    gy: np.ndarray,
    gx: np.ndarray,
    size: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Texture values in [0, 1] of shape ``(M, H, W)`` for M regions of one family."""
    two_pi = 2.0 * np.pi
    j1, j2, j3 = params["jitter1"], params["jitter2"], params["jitter3"]  # (M, 1, 1) in [0, 1]
    ph1, ph2 = params["phase1"], params["phase2"]  # (M, 1, 1) in [0, 2 pi)

    def rotated(angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(angle), np.sin(angle)
        return gx * c + gy * s, -gx * s + gy * c

    if family in ("stripes", "diagonal"):
        centre = 0.0 if family == "stripes" else np.pi / 4
        _, v = rotated(centre + 0.5 * (j1 - 0.5))
        return _square_wave(two_pi * v / (5.0 + 3.0 * j2) + ph1)
    if family == "checker":
        u, v = rotated(0.6 * (j1 - 0.5))
        period = 8.0 + 4.0 * j2
        return 0.5 + 0.5 * np.tanh(
            4.0 * np.sin(two_pi * u / period + ph1) * np.sin(two_pi * v / period + ph2)
        )
    if family == "dots":
        u, v = rotated(0.5 * np.pi * j1)
        period = 6.0 + 3.0 * j2
        du = np.mod(u / period + ph1 / two_pi, 1.0) - 0.5
        dv = np.mod(v / period + ph2 / two_pi, 1.0) - 0.5
        dist = np.sqrt(du**2 + dv**2) * period
        return 0.5 + 0.5 * np.tanh(1.2 * (0.27 * period - dist))
    if family == "smooth":
        u, _ = rotated(two_pi * j1)
        return 0.5 + 0.5 * np.sin(two_pi * u / ((1.0 + j2) * size) + ph1)
    if family == "grain":
        return rng.random((j1.shape[0], *gy.shape))
    if family == "rings":
        r = np.sqrt((gy - size * j1) ** 2 + (gx - size * j3) ** 2)
        return _square_wave(two_pi * r / (6.0 + 3.0 * j2) + ph1)
    if family == "waves":
        u, v = rotated(np.pi / 2 + 0.4 * (j1 - 0.5))
        wobble = (1.5 + 1.5 * j3) * np.sin(two_pi * u / (12.0 + 8.0 * j3) + ph2)
        return _square_wave(two_pi * (v + wobble) / (5.0 + 3.0 * j2) + ph1)
    raise AssertionError(family)  # pragma: no cover - families are fixed above


def make_texture_scenes(
    n: int, *, size: int = 64, n_classes: int = 4, seed: int = 0
) -> SegmentationData:
    r"""Synthetic scenes whose semantic class is the texture, with random colours.

    Each scene is a background region plus 1-3 random shapes (rotated ellipses, polygons with 3-6
    corners, or star-shaped blobs :math:`r(\theta) = r_0 (1 + \sum_{k=2}^4 a_k \sin(k\theta +
    \phi_k))`, all with a random aspect ratio), later shapes occluding earlier ones; pieces
    smaller than 0.4 % of the image left by occlusion join the nearest larger region. Every region
    has one class; a shape's class differs from the background's. Class ``c`` is the texture
    family ``TEXTURE_CLASSES[c]`` (stripes, checker, dots, smooth, grain, diagonal, rings, waves),
    with a random period, orientation jitter and phase, rendered between two random colours per
    region (0.3-0.7 apart), plus pixel noise (sd 0.03). Colour therefore says nothing about the
    class, while region boundaries are colour edges. Textures are in pixel units (periods of 5-12
    pixels) whatever ``size``.

    Parameters
    ----------
    n
        Number of scenes (>= 1).
    size
        Side of the square images (>= 16).
    n_classes
        Number of texture classes, 2-8 (the first ``n_classes`` of :data:`TEXTURE_CLASSES`).
    seed
        Seed (>= 0); the same seed gives the same scenes. Scenes for different ``n`` are drawn
        as one batch, so scene ``i`` depends on ``n`` too.

    Returns
    -------
    SegmentationData
        Images, masks, ``scribbles=None`` and the family names as class names.

    Examples
    --------
    >>> data = make_texture_scenes(8, size=32, n_classes=4, seed=1)
    >>> tuple(data.images.shape), data.class_names
    ((8, 3, 32, 32), ['stripes', 'checker', 'dots', 'smooth'])
    """
    n = check_int("n", n, low=1)
    size = check_int("size", size, low=16)
    n_classes = check_int("n_classes", n_classes, low=2, high=len(TEXTURE_CLASSES))
    seed = check_int("seed", seed, low=0)
    rng = np.random.default_rng(derive_seed("texture-scenes", seed))
    max_shapes, regions = 3, 4  # region 0 is the background

    # ---- layout: which region owns each pixel -------------------------------------------
    gy, gx = np.meshgrid(
        np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32), indexing="ij"
    )
    n_shapes = rng.integers(1, max_shapes + 1, n)
    shape_shape = (n, max_shapes, 1, 1)
    cy, cx = (rng.uniform(0.15, 0.85, (2, *shape_shape)) * size).astype(np.float32)
    radius = (rng.uniform(0.14, 0.3, shape_shape) * size).astype(np.float32)
    aspect = rng.uniform(0.55, 1.0, shape_shape).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, shape_shape).astype(np.float32)
    kind = rng.integers(0, 3, shape_shape)  # 0 ellipse, 1 polygon, 2 blob
    corners = rng.integers(3, 7, shape_shape).astype(np.float32)
    harmonics = rng.uniform(0, 0.18, (3, *shape_shape)).astype(np.float32)
    harmonic_phase = rng.uniform(0, 2 * np.pi, (3, *shape_shape)).astype(np.float32)
    dy, dx = gy - cy, gx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / aspect
    rho, theta = np.sqrt(u**2 + v**2), np.arctan2(v, u)
    sector = 2 * np.pi / corners
    polygon_r = radius * np.cos(np.pi / corners) / np.cos(np.mod(theta, sector) - np.pi / corners)
    blob_r = radius * (
        1 + sum(harmonics[k] * np.sin((k + 2) * theta + harmonic_phase[k]) for k in range(3))
    )
    boundary_r = np.where(kind == 0, radius, np.where(kind == 1, polygon_r, blob_r))
    inside = rho <= boundary_r  # (n, max_shapes, H, W)
    owner = np.zeros((n, size, size), dtype=np.int64)
    for s in range(max_shapes):
        active = (s < n_shapes)[:, None, None]
        owner = np.where(inside[:, s] & active, s + 1, owner)
    # occlusion leaves slivers of a few pixels: give them to the nearest larger region
    min_area = max(4, round(0.004 * size * size))
    for i in range(n):
        small = np.zeros((size, size), dtype=bool)
        for r in np.unique(owner[i]):
            parts, _ = ndimage.label(owner[i] == r, structure=_EIGHT)
            area = np.bincount(parts.ravel())
            area[0] = min_area  # label 0 is "not this region"
            small |= (area < min_area)[parts]
        if small.any() and not small.all():
            _, (iy, ix) = ndimage.distance_transform_edt(small, return_indices=True)
            owner[i] = owner[i][iy, ix]

    # ---- classes and appearance per region ----------------------------------------------
    region_class = np.empty((n, regions), dtype=np.int64)
    region_class[:, 0] = rng.integers(0, n_classes, n)
    # shapes never share the background's class, so every shape is a semantic region
    offsets = rng.integers(1, n_classes, (n, regions - 1))
    region_class[:, 1:] = (region_class[:, :1] + offsets) % n_classes
    colour_a, colour_b = _colour_pairs(rng, (n, regions))
    names = ("jitter1", "jitter2", "jitter3", "phase1", "phase2")
    draws = rng.random((len(names), n, regions)).astype(np.float32)
    draws[3:] *= 2 * np.pi
    texture = np.empty((n, regions, size, size), dtype=np.float32)
    for c in range(n_classes):
        which = np.nonzero(region_class == c)
        if which[0].size == 0:
            continue
        params = {k: draws[i][which][:, None, None] for i, k in enumerate(names)}
        texture[which] = _texture_fields(TEXTURE_CLASSES[c], params, gy, gx, size, rng)

    batch = np.arange(n)[:, None, None]
    t = np.take_along_axis(texture, owner[:, None], axis=1)[:, 0, :, :, None]
    image = colour_a[batch, owner] + (colour_b[batch, owner] - colour_a[batch, owner]) * t
    image = image + 0.03 * rng.standard_normal(image.shape)
    image = np.clip(image, 0.0, 1.0).astype(np.float32).transpose(0, 3, 1, 2)
    masks = region_class[batch, owner]
    return SegmentationData(
        images=torch.from_numpy(np.ascontiguousarray(image)),
        masks=torch.from_numpy(masks),
        scribbles=None,
        class_names=list(TEXTURE_CLASSES[:n_classes]),
    )


# --------------------------------------------------------------------------------------------
# Fashion-MNIST scenes
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _fashion_split(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images and labels of one split (cached: the training file is 47 MB)."""
    root = Path(folder)
    if not root.is_dir():
        raise DataNotFoundError(f"Fashion-MNIST folder {root} does not exist; {_INSTALL_HINT}")
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{root}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


@functools.lru_cache(maxsize=2)
def _background_textures(names: tuple[str, ...]) -> tuple[tuple[str, np.ndarray], ...]:
    """Grey [0, 1] texture images: scikit-image's where present, else scikit-learn's samples."""
    from beyondgd.data.patches import bundled_grey_images

    found = []
    try:
        import skimage.data
    except ImportError:  # pragma: no cover - scikit-image is a dependency
        skimage = None
    for name in names:
        loader = getattr(skimage.data, name, None) if skimage is not None else None
        if loader is None:
            continue
        try:
            image = np.asarray(loader(), dtype=np.float64)
        except Exception:  # noqa: BLE001 - a missing/broken bundled file: skip that image
            continue
        if image.ndim == 3:
            image = image[..., :3].mean(axis=-1)
        found.append((name, image / (255.0 if image.max() > 1 else 1.0)))
    if not found:
        found = list(bundled_grey_images("sklearn").items())
    return tuple(found)


def _resize(image: np.ndarray, height: int, width: int, *, nearest: bool = False) -> np.ndarray:
    from PIL import Image

    resample = Image.NEAREST if nearest else Image.BILINEAR
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32))
    return np.asarray(pil.resize((width, height), resample=resample), dtype=np.float32)


def _item_mask(item: np.ndarray) -> np.ndarray:
    """Foreground of a resized garment: threshold, close small holes, drop specks."""
    fg = item > 0.12 * max(float(item.max()), 1e-6)
    holes, n_holes = ndimage.label(ndimage.binary_fill_holes(fg) & ~fg)
    if n_holes:
        area = np.bincount(holes.ravel())
        small = area < 0.02 * item.size  # dark patches inside a garment, not a bag's handle
        small[0] = False
        fg |= small[holes]
    parts, n_parts = ndimage.label(fg, structure=_EIGHT)
    if n_parts > 1:
        area = np.bincount(parts.ravel())
        keep = area >= max(3.0, 0.002 * item.size)
        keep[0] = False
        fg = keep[parts]
    return fg


def _resolve_fashion_classes(classes: Sequence[str | int]) -> list[int]:
    if isinstance(classes, (str, int)) or not isinstance(classes, Sequence) or not classes:
        raise TypeError(
            "classes must be a non-empty sequence of Fashion-MNIST class names or indices 0-9"
        )
    labels = []
    for c in classes:
        if isinstance(c, str):
            if c not in FASHION_MNIST_CLASSES:
                raise ValueError(
                    f"classes: unknown Fashion-MNIST class {c!r}; expected one of "
                    f"{', '.join(map(repr, FASHION_MNIST_CLASSES))} or an index 0-9"
                )
            labels.append(FASHION_MNIST_CLASSES.index(c))
        else:
            labels.append(check_int("classes entry", c, low=0, high=9))
    if len(set(labels)) != len(labels):
        raise ValueError(f"classes must not repeat a class, got {list(classes)}")
    return labels


def make_fashion_scenes(
    n: int,
    *,
    size: int = 64,
    classes: Sequence[str | int] = ("T-shirt/top", "Trouser", "Bag", "Sneaker"),
    n_items: int | tuple[int, int] = (1, 3),
    seed: int = 0,
    path: str | os.PathLike | None = None,
    split: str = "train",
) -> SegmentationData:
    """Scenes of real Fashion-MNIST garments pasted onto textured natural backgrounds.

    Each scene: a crop (side 1-2.5x ``size``, resized) of one of scikit-image's texture images
    (grass, gravel, brick; scikit-learn's sample photos if scikit-image lacks them all), mapped
    between two random colours; then ``n_items`` garments of the chosen classes, each scaled to a
    side of 0.4-0.7 ``size``, randomly mirrored, tinted with a random colour (shaded by the
    garment's own intensity) and pasted at a random position inside the image, later items
    occluding earlier ones. An item's mask is its thresholded intensity (12 % of its maximum, small
    holes filled, specks dropped). Label 0 is "background", label ``k`` is ``classes[k - 1]``.

    ``split="train"`` draws garments from Fashion-MNIST's training split and background crops from
    the top three quarters of each texture image; ``split="test"`` from the test split and the
    bottom quarter, so test scenes hold unseen items on unseen background pixels.

    Parameters
    ----------
    n
        Number of scenes (>= 1).
    size
        Side of the square images (>= 16).
    classes
        Fashion-MNIST class names (see :data:`FASHION_MNIST_CLASSES`) or label indices 0-9.
    n_items
        Items per scene: an int, or an inclusive range ``(low, high)``, ``1 <= low <= high``.
    seed
        Seed (>= 0).
    path
        Folder with the IDX files; default ``$BEYONDGD_FASHION_MNIST`` or
        ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``).
    split
        ``"train"`` or ``"test"``.

    Returns
    -------
    SegmentationData
        With ``image_names[i] = "split:index+split:index..."``, the Fashion-MNIST items of scene
        ``i`` in pasting order.

    Raises
    ------
    DataNotFoundError
        If the IDX files are missing (the message says how to install them).

    Examples
    --------
    >>> data = make_fashion_scenes(4, size=48, seed=0)  # doctest: +SKIP
    >>> data.class_names  # doctest: +SKIP
    ['background', 'T-shirt/top', 'Trouser', 'Bag', 'Sneaker']
    """
    n = check_int("n", n, low=1)
    size = check_int("size", size, low=16)
    labels_wanted = _resolve_fashion_classes(classes)
    if isinstance(n_items, tuple) or isinstance(n_items, list):
        if len(n_items) != 2:
            raise ValueError(f"n_items must be an int or a pair (low, high), got {n_items!r}")
        low = check_int("n_items[0]", n_items[0], low=1)
        high = check_int("n_items[1]", n_items[1], low=low)
    else:
        low = high = check_int("n_items", n_items, low=1)
    seed = check_int("seed", seed, low=0)
    check_choice("split", split, ("train", "test"))
    folder = str(Path(path or os.environ.get(ENV_VAR) or DEFAULT_PATH))
    items, item_labels = _fashion_split(folder, split)
    pools = []
    for label in labels_wanted:
        pool = np.flatnonzero(item_labels == label)
        if pool.size == 0:
            raise ValueError(
                f"classes: Fashion-MNIST {split} split in {folder} has no item of class {label} "
                f"({FASHION_MNIST_CLASSES[label]})"
            )
        pools.append(pool)

    backgrounds = []
    for _, texture in _background_textures(BACKGROUND_IMAGES):
        cut = int(round(0.75 * texture.shape[0]))
        backgrounds.append(texture[:cut] if split == "train" else texture[cut:])

    rng = np.random.default_rng(derive_seed("fashion-scenes", split, seed))
    images = np.empty((n, size, size, 3), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=np.int64)
    provenance = []
    for i in range(n):
        # background: a random crop, contrast-stretched, mapped between two random colours
        texture = backgrounds[rng.integers(len(backgrounds))]
        side = int(round(size * rng.uniform(1.0, 2.5)))
        side = max(1, min(side, texture.shape[0], texture.shape[1]))
        top = rng.integers(0, texture.shape[0] - side + 1)
        left = rng.integers(0, texture.shape[1] - side + 1)
        grey = _resize(texture[top : top + side, left : left + side], size, size)
        lo, hi = np.percentile(grey, (2, 98))
        grey = np.clip((grey - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        dark, light = _colour_pairs(rng, ())
        canvas = dark + (light - dark) * grey[..., None]
        label_map = np.zeros((size, size), dtype=np.int64)
        names = []
        for _ in range(rng.integers(low, high + 1)):
            k = rng.integers(len(labels_wanted))
            index = int(pools[k][rng.integers(pools[k].size)])
            names.append(f"{split}:{index}")
            item_side = max(8, int(round(size * rng.uniform(0.4, 0.7))))
            item = _resize(items[index].astype(np.float32) / 255.0, item_side, item_side)
            item = np.clip(item, 0.0, 1.0)
            if rng.random() < 0.5:
                item = item[:, ::-1]
            fg = _item_mask(item)
            tint = rng.uniform(0.15, 1.0, 3)
            shade = tint * (0.4 + 0.6 * item[..., None] / max(float(item.max()), 1e-6))
            y = rng.integers(0, size - item_side + 1)
            x = rng.integers(0, size - item_side + 1)
            window = (slice(y, y + item_side), slice(x, x + item_side))
            canvas[window] = np.where(fg[..., None], shade, canvas[window])
            label_map[window] = np.where(fg, k + 1, label_map[window])
        canvas = canvas + 0.02 * rng.standard_normal(canvas.shape)
        images[i] = np.clip(canvas, 0.0, 1.0)
        masks[i] = label_map
        provenance.append("+".join(names))
    return SegmentationData(
        images=torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
        masks=torch.from_numpy(masks),
        scribbles=None,
        class_names=["background", *(FASHION_MNIST_CLASSES[k] for k in labels_wanted)],
        image_names=provenance,
    )


# --------------------------------------------------------------------------------------------
# scribbles
# --------------------------------------------------------------------------------------------


def _segment(length: int, fraction: float, anchor: float) -> tuple[int, int]:
    """Index range ``[start, end)`` of a ``fraction`` of a path of ``length`` pixels.

    ``start = floor(anchor (1 - f) L)`` and ``end = ceil(anchor L + (1 - anchor) f L)`` are
    monotone in ``f``, so shorter segments are nested in longer ones, all holding index
    ``floor(anchor L)``.
    """
    start = int(np.floor(anchor * (1.0 - fraction) * length))
    end = int(np.ceil(anchor * length + (1.0 - anchor) * fraction * length))
    return start, min(max(end, start + 1), length)


def _region_paths(
    mask: np.ndarray, rng: np.random.Generator, margin: float, ignore_index: int
) -> tuple[np.ndarray, list[tuple[np.ndarray, float]], list[tuple[int, int]]]:
    """Per-pixel interior distance, stroke centre-lines (with anchors), clicks of tiny regions.

    A stroke joins the ends of an approximate geodesic diameter of the region eroded by
    ``margin``: from a random interior pixel go to the farthest one ``a`` (path length inside the
    eroded region), then to a random pixel ``b`` among those at least 80 % as far from ``a`` as
    the farthest. The route from ``a`` to ``b`` minimises ``exp(0.6 noise) / distance-to-
    boundary``, which keeps the stroke near the medial axis and lets it wander with a smooth
    random field.
    """
    from skimage.graph import MCP_Geometric

    height, width = mask.shape
    interior = np.zeros((height, width))
    noise = ndimage.gaussian_filter(rng.standard_normal((height, width)), max(2.0, height / 16))
    noise /= noise.std() + 1e-12
    strokes: list[tuple[np.ndarray, float]] = []
    clicks: list[tuple[int, int]] = []
    for c in np.unique(mask[mask != ignore_index]):
        is_class = mask == c
        # distance to the nearest pixel of another class or outside the image
        dist = ndimage.distance_transform_edt(np.pad(is_class, 1))[1:-1, 1:-1]
        interior[is_class] = dist[is_class]
        components, _ = ndimage.label(is_class, structure=_EIGHT)
        for j, box in enumerate(ndimage.find_objects(components), start=1):
            depth = np.where(components[box] == j, dist[box], 0.0)
            corner = np.array([box[0].start, box[1].start])
            if depth.max() < margin:  # vanishes under erosion: click its most interior pixel
                clicks.append(
                    tuple(int(v) for v in corner + np.unravel_index(depth.argmax(), depth.shape))
                )
                continue
            eroded = depth >= margin
            pieces, n_pieces = ndimage.label(eroded, structure=_EIGHT)
            if n_pieces > 1:  # erosion split the region: draw on its largest piece
                eroded = pieces == np.bincount(pieces.ravel())[1:].argmax() + 1
            # end points by path length inside the eroded region, the route by the weighted cost
            ruler = MCP_Geometric(np.where(eroded, 1.0, np.inf))
            candidates = np.argwhere(eroded)
            start = tuple(candidates[rng.integers(len(candidates))])
            reach, _ = ruler.find_costs([start])
            reach = np.where(np.isfinite(reach), reach, -1.0)
            end_a = np.unravel_index(reach.argmax(), reach.shape)
            reach, _ = ruler.find_costs([end_a])
            reach = np.where(np.isfinite(reach), reach, -1.0)
            far = np.argwhere(reach >= 0.8 * reach.max())
            end_b = tuple(far[rng.integers(len(far))])
            cost = np.where(eroded, np.exp(0.6 * noise[box]) / np.maximum(depth, 1.0), np.inf)
            router = MCP_Geometric(cost)
            router.find_costs([end_a], [end_b])
            path = np.asarray(router.traceback(end_b), dtype=np.int64).reshape(-1, 2) + corner
            strokes.append((path, float(rng.random())))
    return interior, strokes, clicks


def _image_scribbles(
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    length: float,
    clicks: bool,
    coverage: float,
    margin: float,
    ignore_index: int,
) -> np.ndarray:
    interior, strokes, tiny = _region_paths(mask, rng, margin, ignore_index)
    selected = np.zeros(mask.shape, dtype=bool)
    for y, x in tiny:
        selected[y, x] = True
    target = coverage * mask.size
    total = sum(len(path) for path, _ in strokes)
    # full strokes longer than the target: every stroke keeps the same share of its path
    base = min(1.0, target / total) if total else 1.0
    if clicks:
        for path, anchor in strokes:
            y, x = path[int(np.floor(anchor * len(path)))]
            selected[y, x] = True
        return np.where(selected, mask, ignore_index)

    def centre_lines(fraction: float) -> np.ndarray:
        lines = np.zeros(mask.shape, dtype=bool)
        for path, anchor in strokes:
            start, end = _segment(len(path), fraction, anchor)
            lines[path[start:end, 0], path[start:end, 1]] = True
        return lines

    # stroke width: thicken the full centre-lines to the radius whose pixel count is nearest
    # the target; radius < margin keeps every stroke pixel in its region (it is closer to a
    # centre-line pixel than that pixel is to the boundary), and distance >= 2 to the boundary
    # keeps a one-pixel gap, as an annotator would
    keep = interior >= 2.0
    radius = 0.0
    full = centre_lines(base)
    if strokes and base >= 1.0:
        dist_full = ndimage.distance_transform_edt(~full)
        extra = np.sort(dist_full[keep & ~full & (dist_full < margin)])
        radii = np.unique(np.concatenate([[0.0], extra]))
        counts = full.sum() + np.searchsorted(extra, radii, side="right")
        radius = float(radii[np.abs(np.log(counts / target)).argmin()])
    lines = full if length >= 1.0 else centre_lines(base * length)
    if radius > 0:
        lines |= keep & (ndimage.distance_transform_edt(~lines) <= radius)
    selected |= lines
    return np.where(selected, mask, ignore_index)


def make_scribbles(
    masks: torch.Tensor | np.ndarray,
    *,
    length: float = 1.0,
    clicks: bool = False,
    coverage: float = 0.03,
    seed: int = 0,
    ignore_index: int = 255,
    margin: float | None = None,
) -> torch.Tensor:
    r"""Scribbles drawn from ground-truth masks: one stroke per connected region.

    For every 8-connected region of every class, the region is eroded by ``margin`` pixels
    (Euclidean distance to another class or the image border); a stroke follows an approximate
    geodesic diameter of the eroded region, pulled towards its medial axis and wiggled by a smooth
    random field. Regions that vanish under the erosion get one click at their most interior
    pixel. Per image, every stroke is thickened by one common radius (below ``margin``) chosen so
    that the labelled pixels are nearest ``coverage`` of the image; if even one-pixel lines exceed
    it, every stroke is cut to the same share of its length instead. Stroke pixels keep at least
    a one-pixel gap from other classes. A stroke's label is the mask's, so scribbles never cross a
    boundary.

    ``length < 1`` keeps a contiguous ``length`` share of every stroke's centre-line (the 0.8,
    0.5, 0.3 variants); ``clicks=True`` keeps one pixel per region. For the same masks and
    ``seed``, shorter variants and clicks are subsets of longer ones (nested), because the random
    draws do not depend on ``length`` or ``clicks``. Each image draws from its own seed
    ``(seed, i)``, so an image's scribbles do not depend on the others.

    Parameters
    ----------
    masks
        ``(N, H, W)`` integer labels ``>= 0``; pixels equal to ``ignore_index`` are void and never
        scribbled. Every image needs at least one labelled pixel.
    length
        Share of each stroke kept, in (0, 1].
    clicks
        One labelled pixel per region (single pixels, not discs).
    coverage
        Target share of labelled pixels per image at ``length=1``, in (0, 1].
    seed
        Seed (>= 0).
    ignore_index
        Value of unlabelled pixels in the output.
    margin
        Erosion depth in pixels (>= 1); default ``max(2, round(min(H, W) / 20))`` (3 at 64 x 64).

    Returns
    -------
    torch.Tensor
        ``(N, H, W)`` int64: mask labels on the scribbles, ``ignore_index`` elsewhere.

    Examples
    --------
    >>> data = make_texture_scenes(2, size=64, seed=0)
    >>> seeds = make_scribbles(data.masks, seed=0)
    >>> bool(((seeds == 255) | (seeds == data.masks)).all())
    True
    """
    labels = _as_label_tensor("masks", masks)
    if labels.ndim != 3 or labels.shape[0] < 1 or min(labels.shape[1:]) < 1:
        raise ValueError(f"masks must have shape (N, H, W) with N >= 1, got {tuple(labels.shape)}")
    length = check_number("length", length, low=0.0, high=1.0, low_inclusive=False)
    if not isinstance(clicks, (bool, np.bool_)):
        raise TypeError(f"clicks must be a bool, got {type(clicks).__name__}")
    coverage = check_number("coverage", coverage, low=0.0, high=1.0, low_inclusive=False)
    seed = check_int("seed", seed, low=0)
    ignore_index = check_int("ignore_index", ignore_index)
    if margin is None:
        margin = max(2, round(min(labels.shape[1:]) / 20))
    margin = check_number("margin", margin, low=1.0)
    array = labels.cpu().numpy()
    labelled = array != ignore_index
    if (array[labelled] < 0).any():
        raise ValueError(f"masks must hold labels >= 0 (or ignore_index={ignore_index})")
    empty = np.flatnonzero(~labelled.reshape(len(array), -1).any(axis=1))
    if empty.size:
        raise ValueError(
            f"masks: image(s) {empty[:10].tolist()} have no labelled pixel to scribble on"
        )
    out = np.empty_like(array)
    for i, mask in enumerate(array):
        rng = np.random.default_rng(derive_seed("scribbles", seed, i))
        out[i] = _image_scribbles(
            mask,
            rng,
            length=length,
            clicks=bool(clicks),
            coverage=coverage,
            margin=margin,
            ignore_index=ignore_index,
        )
    return torch.from_numpy(out)


# --------------------------------------------------------------------------------------------
# a user's folder, PNG labels, colours for figures
# --------------------------------------------------------------------------------------------


def _palette() -> np.ndarray:
    """256 x 3 uint8: tab20 colours for labels 0-19, PASCAL-VOC bit colours beyond, 255 black."""
    tab20 = (
        "1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf "
        "aec7e8 ffbb78 98df8a ff9896 c5b0d5 c49c94 f7b6d2 c7c7c7 dbdb8d 9edae5"
    ).split()
    palette = np.zeros((256, 3), dtype=np.uint8)
    for k in range(256):
        r = g = b = 0
        code = k
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette[k] = (r, g, b)
    for k, hex_colour in enumerate(tab20):
        palette[k] = [int(hex_colour[i : i + 2], 16) for i in (0, 2, 4)]
    palette[255] = 0
    return palette


_PALETTE = _palette()


def _label_array(name: str, labels: object) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if not isinstance(labels, np.ndarray):
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy array, got {type(labels).__name__}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{name} must have an integer dtype, got {labels.dtype}")
    return labels


def colorize(labels: torch.Tensor | np.ndarray, *, ignore_index: int = 255) -> np.ndarray:
    """RGB colours ``(..., 3)`` uint8 for integer labels ``(...)`` (figures).

    Labels 0-19 get the tab20 colours, higher ones PASCAL-VOC-style colours, ``ignore_index``
    black. Labels must lie in [0, 255] or equal ``ignore_index``.

    Examples
    --------
    >>> colorize(np.array([[0, 255]]))
    array([[[ 31, 119, 180],
            [  0,   0,   0]]], dtype=uint8)
    """
    array = _label_array("labels", labels)
    ignore_index = check_int("ignore_index", ignore_index)
    ignored = array == ignore_index
    shown = array[~ignored]
    if shown.size and (shown.min() < 0 or shown.max() > 255):
        raise ValueError(
            f"labels must lie in [0, 255] or equal ignore_index={ignore_index}, got range "
            f"[{shown.min()}, {shown.max()}]"
        )
    rgb = _PALETTE[np.where(ignored, 0, array).astype(np.int64)]
    rgb[ignored] = 0
    return rgb


def save_label_png(path: str | os.PathLike, labels: torch.Tensor | np.ndarray) -> None:
    """Write ``(H, W)`` integer labels in [0, 255] as a palette PNG (written atomically).

    Reading it back with PIL and ``numpy.asarray`` gives the labels; image viewers show the
    :func:`colorize` colours (255, "unlabelled", black).
    """
    from PIL import Image

    array = _label_array("labels", labels)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"labels must have shape (H, W), got {array.shape}")
    if array.min() < 0 or array.max() > 255:
        raise ValueError(f"labels must lie in [0, 255], got range [{array.min()}, {array.max()}]")
    image = Image.fromarray(array.astype(np.uint8), mode="P")
    image.putpalette(_PALETTE.ravel().tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())


def _files_by_stem(folder: Path, suffixes: tuple[str, ...], argument: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise ValueError(f"{argument} must be an existing folder, got {folder}")
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_file() and entry.suffix.lower() in suffixes:
            if entry.stem in found:
                raise ValueError(f"{argument}: two files with stem {entry.stem!r} in {folder}")
            found[entry.stem] = entry
    return found


#: what a label file must hold, repeated in every format error
LABEL_FORMAT = (
    "the format is one channel of 8-bit values: 255 = unlabelled, classes 0..K-1 "
    "(save_label_png writes it)"
)


def _read_labels(file: Path, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    with Image.open(file) as image:
        if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
            raise ValueError(
                f"{file}: a label image must have one channel (PIL mode L, P or I), got mode "
                f"{image.mode}; {LABEL_FORMAT}"
            )
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), resample=Image.NEAREST)
        labels = np.asarray(image).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(
            f"{file}: label values range over [{labels.min()}, {labels.max()}] (a "
            f"{'16' if labels.max() <= 65535 else '32'}-bit image); {LABEL_FORMAT}"
        )
    return labels


def _few(values, limit: int = 8) -> str:
    """``{0, 2, 7}``-style text of some integers (the first ``limit`` of them)."""
    values = [int(v) for v in values]
    shown = ", ".join(map(str, values[:limit]))
    return "{" + shown + (", ..." if len(values) > limit else "") + "}"


def _no_file_for(stem: str, folder: Path, suffixes: tuple[str, ...], argument: str, image: Path):
    """The error for an image without a label file: say why a file of the same stem is not one."""
    same_stem = sorted(p.name for p in folder.iterdir() if p.is_file() and p.stem == stem)
    if same_stem:
        why = (
            f"{', '.join(same_stem)} has the same stem but is not a lossless label format "
            f"({', '.join(suffixes)}): JPEG compression changes label values"
        )
    else:
        why = f"no file named {stem} with a suffix in ({', '.join(suffixes)})"
    return ValueError(
        f"{argument}: no {argument[:-1]} file for image {image.name} in {folder}: {why}"
    )


def load_scribble_folder(
    images: str | os.PathLike,
    scribbles: str | os.PathLike,
    *,
    masks: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    size: int | tuple[int, int] | None = None,
    ignore_index: int = 255,
    require_scribbles: bool = True,
) -> SegmentationData:
    """A user's images with scribble PNGs (and optionally ground-truth masks) of the same stem.

    Parameters
    ----------
    images
        Folder of images (png, jpg, bmp, tif); any mode is converted to RGB.
    scribbles
        Folder of single-channel label images (png, bmp, tif; :func:`save_label_png` writes
        them) named like the images: ``ignore_index`` (255) = unlabelled, other values = class
        ids. Scribble files without an image are ignored.
    masks
        Optional folder of ground-truth label images with the same stems (``ignore_index`` =
        void).
    class_names
        One name per class; default ``["class_0", ...]`` for ``1 + the largest label`` found.
    size
        ``(H, W)`` or a side: resize everything to it (bilinear for images, nearest for labels).
        Without it all images must share one size.
    ignore_index
        The unlabelled value in the files and in the result.
    require_scribbles
        Raise if an image has no labelled scribble pixel.

    Raises
    ------
    ValueError
        Naming the file: a missing scribble/mask, sizes that differ, a non single-channel label
        image, a label ``>= len(class_names)``, an image without scribbles.
    """
    from PIL import Image

    ignore_index = check_int("ignore_index", ignore_index, low=0, high=255)
    if size is not None:
        if isinstance(size, (tuple, list)):
            if len(size) != 2:
                raise ValueError(f"size must be an int or a pair (H, W), got {size!r}")
            size = (check_int("size[0]", size[0], low=1), check_int("size[1]", size[1], low=1))
        else:
            side = check_int("size", size, low=1)
            size = (side, side)
    image_files = _files_by_stem(Path(images), _IMAGE_SUFFIXES, "images")
    if not image_files:
        raise ValueError(f"images: no image files ({', '.join(_IMAGE_SUFFIXES)}) in {images}")
    scribble_files = _files_by_stem(Path(scribbles), _LABEL_SUFFIXES, "scribbles")
    mask_files = None if masks is None else _files_by_stem(Path(masks), _LABEL_SUFFIXES, "masks")

    pixels, seeds, truths = [], [], []
    first_shape = None
    for stem, image_file in image_files.items():
        if stem not in scribble_files:
            raise _no_file_for(stem, Path(scribbles), _LABEL_SUFFIXES, "scribbles", image_file)
        with Image.open(image_file) as pil:
            pil = pil.convert("RGB")
            native = (pil.height, pil.width)
            if size is not None and native != size:
                pil = pil.resize((size[1], size[0]), resample=Image.BILINEAR)
            rgb = np.asarray(pil, dtype=np.float32) / 255.0
        label_files = [("scribbles", scribble_files[stem])]
        if mask_files is not None:
            if stem not in mask_files:
                raise _no_file_for(stem, Path(masks), _LABEL_SUFFIXES, "masks", image_file)
            label_files.append(("masks", mask_files[stem]))
        read = []
        for _, label_file in label_files:
            with Image.open(label_file) as pil_label:
                label_shape = (pil_label.height, pil_label.width)
            if label_shape != native:
                raise ValueError(
                    f"{label_file}: size {label_shape[0]} x {label_shape[1]} differs from its "
                    f"image {image_file} ({native[0]} x {native[1]})"
                )
            read.append(_read_labels(label_file, size))
        if first_shape is None:
            first_shape = rgb.shape
        elif rgb.shape != first_shape:
            raise ValueError(
                f"{image_file}: size {rgb.shape[0]} x {rgb.shape[1]} differs from the first "
                f"image's {first_shape[0]} x {first_shape[1]}; pass size= to resize them all"
            )
        if require_scribbles and not (read[0] != ignore_index).any():
            raise ValueError(
                f"{scribble_files[stem]}: no labelled scribble pixel (all {ignore_index}); "
                "scribble every image or pass require_scribbles=False"
            )
        if not (read[0] == ignore_index).any():
            raise ValueError(
                f"{scribble_files[stem]}: every pixel is labelled (values "
                f"{_few(np.unique(read[0]))}; none is {ignore_index} = unlabelled), so this is "
                f"not a scribble file; {LABEL_FORMAT}. If your files mark unlabelled pixels "
                f"with another value (0, say), map it to {ignore_index} first"
            )
        pixels.append(rgb)
        seeds.append(read[0])
        if mask_files is not None:
            truths.append(read[1])

    stems = list(image_files)
    largest = -1
    for stack in (seeds, truths):
        for labels in stack:
            labelled = labels[labels != ignore_index]
            if labelled.size:
                largest = max(largest, int(labelled.max()))
    if class_names is None:
        seen = np.unique(
            np.concatenate([labels[labels != ignore_index] for labels in [*seeds, *truths]])
        )
        never = sorted(set(range(largest + 1)) - {int(v) for v in seen})
        if never:
            raise ValueError(
                "scribbles: class ids must be 0..K-1 with every class scribbled (or in a mask) "
                f"somewhere; the files use ids {_few(seen)}, so class ids {_few(never)} are "
                f"never seen ({largest + 1} classes inferred). Relabel the classes to "
                f"0..{len(seen) - 1}, or give one name per class id (class_names=, or "
                f"--class-names on the command line); {LABEL_FORMAT}"
            )
        class_names = [f"class_{k}" for k in range(max(largest + 1, 1))]
    else:
        if isinstance(class_names, str) or not isinstance(class_names, Sequence):
            raise TypeError(f"class_names must be a list of str, got {type(class_names).__name__}")
        class_names = list(class_names)
        for kind, stack, files in (
            ("scribbles", seeds, scribble_files),
            ("masks", truths, mask_files),
        ):
            for stem, labels in zip(stems, stack):
                labelled = labels[labels != ignore_index]
                if labelled.size and int(labelled.max()) >= len(class_names):
                    raise ValueError(
                        f"{files[stem]}: {kind} label {int(labelled.max())} >= "
                        f"len(class_names) = {len(class_names)} (unlabelled must be "
                        f"{ignore_index})"
                    )
    return SegmentationData(
        images=torch.from_numpy(np.stack(pixels).transpose(0, 3, 1, 2).copy()),
        masks=torch.from_numpy(np.stack(truths)) if truths else None,
        scribbles=torch.from_numpy(np.stack(seeds)),
        class_names=class_names,
        ignore_index=ignore_index,
        image_names=stems,
    )


def load_images(
    images: str | os.PathLike, *, size: int | tuple[int, int] | None = None
) -> tuple[list[str], torch.Tensor]:
    """All images of a folder as ``(stems, (N, 3, H, W) float32 in [0, 1])`` (for prediction).

    ``size`` resizes every image (bilinear); without it all images must share one size.
    """
    from PIL import Image

    if size is not None and not isinstance(size, (tuple, list)):
        size = (check_int("size", size, low=1),) * 2
    files = _files_by_stem(Path(images), _IMAGE_SUFFIXES, "images")
    if not files:
        raise ValueError(f"images: no image files ({', '.join(_IMAGE_SUFFIXES)}) in {images}")
    arrays = []
    for file in files.values():
        with Image.open(file) as pil:
            pil = pil.convert("RGB")
            if size is not None and (pil.height, pil.width) != tuple(size):
                pil = pil.resize((size[1], size[0]), resample=Image.BILINEAR)
            arrays.append(np.asarray(pil, dtype=np.float32) / 255.0)
        if arrays[-1].shape != arrays[0].shape:
            raise ValueError(
                f"{file}: size {arrays[-1].shape[0]} x {arrays[-1].shape[1]} differs from the "
                f"first image's {arrays[0].shape[0]} x {arrays[0].shape[1]}; pass size="
            )
    return list(files), torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
