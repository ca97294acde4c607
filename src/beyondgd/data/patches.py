"""Grey 32 x 32 natural-image patches from images bundled with scikit-image / scikit-learn (a
CIFAR-like set that needs no download), and a 2 x 2 pooling helper (e.g. Fashion-MNIST 28 -> 14).

Train and test patches come from different images (``split_by="image"``, the default) or from
disjoint parts of the same images (``split_by="location"``: the top 75 % of each image's rows for
training, the rest for testing), so no test pixel is ever seen in training.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from beyondgd.core import check_choice, check_int, check_number, derive_seed

__all__ = [
    "SKIMAGE_IMAGES",
    "bundled_grey_images",
    "load_crop",
    "load_image_patches",
    "pool2x2",
]

#: scikit-image's bundled natural images (all ship with the wheel; none is downloaded).
SKIMAGE_IMAGES = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
)
#: held out for the test split with ``split_by="image"``
_SKIMAGE_TEST = ("camera", "coffee", "gravel", "immunohistochemistry")
_SKLEARN_IMAGES = ("china.jpg", "flower.jpg")
_SKLEARN_TEST = ("flower.jpg",)
_LUMA = np.array([0.2125, 0.7154, 0.0721])  # ITU-R BT.709, as skimage.color.rgb2gray


def _to_grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    image = image.astype(np.float64) / scale
    if image.ndim == 3:
        image = image[..., :3] @ _LUMA
    return np.clip(image, 0.0, 1.0)


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return image[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def _skimage_available() -> bool:
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=4)
def _load_source(source: str) -> tuple[tuple[str, np.ndarray], ...]:
    if source == "skimage":
        try:
            import skimage.data
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "source='skimage' needs scikit-image (`pip install scikit-image`); "
                "or use source='sklearn'"
            ) from exc
        return tuple((name, _to_grey(getattr(skimage.data, name)())) for name in SKIMAGE_IMAGES)
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    names = [p.rsplit("/", 1)[-1] for p in bunch.filenames]
    return tuple((name, _to_grey(img)) for name, img in zip(names, bunch.images))


def _resolve_source(source: str) -> str:
    check_choice("source", source, ("auto", "skimage", "sklearn"))
    if source == "auto":
        return "skimage" if _skimage_available() else "sklearn"
    return source


def bundled_grey_images(source: str = "auto") -> dict[str, np.ndarray]:
    """The bundled images as grey float arrays in [0, 1], by name.

    ``source="skimage"``: :data:`SKIMAGE_IMAGES`; ``"sklearn"``: scikit-learn's two sample images
    (china, flower); ``"auto"``: scikit-image when installed, else scikit-learn.
    """
    return {name: img.copy() for name, img in _load_source(_resolve_source(source))}


def load_crop(name: str, size: int = 128, *, seed: int | None = None) -> np.ndarray:
    """A grey ``size x size`` crop in [0, 1] of the bundled scikit-image image ``name``.

    The image is first block-averaged by ``max(1, min(H, W) // (2 * size))`` (so its short side
    is about ``2 * size``: a crop shows a good part of the scene); then the crop is the centre
    (``seed=None``) or a uniformly random position drawn with ``seed`` (an independent crop per
    seed). Returns a float64 array.

    Examples
    --------
    >>> x = load_crop("camera", 64)
    >>> x.shape, bool(x.min() >= 0), bool(x.max() <= 1)
    ((64, 64), True, True)
    """
    size = check_int("size", size, low=1)
    images = dict(_load_source("skimage"))
    if name not in images:
        raise ValueError(f"unknown image {name!r}; known: {', '.join(sorted(images))}")
    img = images[name]
    img = _block_mean(img, max(1, min(img.shape) // (2 * size)))
    if min(img.shape) < size:
        raise ValueError(f"image {name!r} is smaller than {size} x {size}")
    if seed is None:
        r0, c0 = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    else:
        rng = np.random.default_rng(check_int("seed", seed, low=0))
        r0 = int(rng.integers(0, img.shape[0] - size + 1))
        c0 = int(rng.integers(0, img.shape[1] - size + 1))
    return img[r0 : r0 + size, c0 : c0 + size].copy()


def load_image_patches(
    split: str = "train",
    n_patches: int = 2000,
    *,
    size: int = 32,
    seed: int = 0,
    source: str = "auto",
    split_by: str = "image",
    downscale: int = 2,
    min_std: float = 0.02,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Random grey ``size x size`` patches in [0, 1], shape ``(n_patches, size, size)``.

    Parameters
    ----------
    split
        ``"train"`` or ``"test"``.
    n_patches
        How many patches to draw.
    size
        Side of a patch (32 gives a CIFAR-sized grey image).
    seed
        Seed of the draw (train and test draws are independent for the same seed).
    source
        ``"auto"``, ``"skimage"`` or ``"sklearn"`` (see :func:`bundled_grey_images`).
    split_by
        ``"image"``: test patches come from held-out images (camera, coffee, gravel,
        immunohistochemistry for scikit-image; flower for scikit-learn); ``"location"``: from the
        bottom quarter of every image, training patches from the top three quarters.
    downscale
        Block-average each image by this factor first, so a patch holds more of a scene.
    min_std
        Redraw (up to 50 times) patches whose pixel standard deviation is below this (flat sky,
        black background), which would make the reconstruction task trivial.

    Examples
    --------
    >>> x = load_image_patches("test", 8, source="sklearn", seed=0)
    >>> x.shape, bool(x.min() >= 0), bool(x.max() <= 1)
    (torch.Size([8, 32, 32]), True, True)
    """
    check_choice("split", split, ("train", "test"))
    n_patches = check_int("n_patches", n_patches, low=1)
    size = check_int("size", size, low=1)
    seed = check_int("seed", seed, low=0)
    check_choice("split_by", split_by, ("image", "location"))
    downscale = check_int("downscale", downscale, low=1)
    min_std = check_number("min_std", min_std, low=0.0)
    resolved = _resolve_source(source)
    held_out = _SKIMAGE_TEST if resolved == "skimage" else _SKLEARN_TEST
    regions = []
    for name, image in _load_source(resolved):
        image = _block_mean(image, downscale)
        if split_by == "image":
            if (name in held_out) != (split == "test"):
                continue
        else:
            cut = int(round(0.75 * image.shape[0]))
            image = image[:cut] if split == "train" else image[cut:]
        if image.shape[0] >= size and image.shape[1] >= size:
            regions.append(image)
    if not regions:
        raise ValueError(
            f"no {split} image region is at least {size} x {size} pixels after downscale="
            f"{downscale}; use a smaller size or downscale"
        )
    counts = np.array([(r.shape[0] - size + 1) * (r.shape[1] - size + 1) for r in regions], float)
    rng = np.random.default_rng(derive_seed("image-patches", split, seed))
    out = np.empty((n_patches, size, size))
    for k in range(n_patches):
        for _ in range(50):
            region = regions[rng.choice(len(regions), p=counts / counts.sum())]
            i = rng.integers(0, region.shape[0] - size + 1)
            j = rng.integers(0, region.shape[1] - size + 1)
            patch = region[i : i + size, j : j + size]
            if patch.std() >= min_std:
                break
        out[k] = patch
    return torch.from_numpy(out).to(dtype)


def pool2x2(images: torch.Tensor) -> torch.Tensor:
    """Average 2 x 2 blocks of the last two dimensions: ``(..., H, W) -> (..., H//2, W//2)``
    (an odd last row/column is dropped). Fashion-MNIST's 28 x 28 images become 14 x 14.

    Examples
    --------
    >>> import torch
    >>> pool2x2(torch.arange(16.0).reshape(4, 4))
    tensor([[ 2.5000,  4.5000],
            [10.5000, 12.5000]])
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim < 2 or images.shape[-1] < 2 or images.shape[-2] < 2:
        raise ValueError(
            f"images must have shape (..., H, W) with H, W >= 2, got {tuple(images.shape)}"
        )
    h, w = images.shape[-2] // 2 * 2, images.shape[-1] // 2 * 2
    x = images[..., :h, :w]
    x = x.reshape(*x.shape[:-2], h // 2, 2, w // 2, 2)
    return x.mean(dim=(-3, -1))
