"""Grey natural-image patches (CIFAR-like) and 2 x 2 pooling."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import beyondgd.data.patches as patches
from beyondgd.data import SKIMAGE_IMAGES, bundled_grey_images, load_image_patches, pool2x2


@pytest.fixture
def tagged_images(monkeypatch):
    """Synthetic images whose pixel values say which image and which row they come from."""
    rows = 40
    images = []
    for k, name in enumerate(["a", "b", "camera", "coffee"]):
        img = np.tile(np.arange(rows)[:, None] / 100, (1, 30)) + k  # k + row / 100
        images.append((name, img))
    monkeypatch.setattr(patches, "_load_source", lambda source: tuple(images))
    monkeypatch.setattr(patches, "_resolve_source", lambda source: "skimage")
    return rows


def test_image_split_uses_disjoint_images(tagged_images):
    kw = {"size": 8, "downscale": 1, "min_std": 0.0, "split_by": "image"}
    train = load_image_patches("train", 50, **kw)
    test = load_image_patches("test", 50, **kw)
    image_of = lambda x: set(np.floor(x[:, 0, 0].numpy()).astype(int).tolist())  # noqa: E731
    assert image_of(train) == {0, 1}  # a, b
    assert image_of(test) == {2, 3}  # camera, coffee are held out


def test_location_split_uses_disjoint_rows(tagged_images):
    assert tagged_images == 40
    kw = {"size": 8, "downscale": 1, "min_std": 0.0, "split_by": "location"}
    row_of = lambda x: np.round((x.numpy() - np.floor(x.numpy())) * 100).astype(int)  # noqa: E731
    train_rows = row_of(load_image_patches("train", 40, **kw))
    test_rows = row_of(load_image_patches("test", 40, **kw))
    assert train_rows.max() < 30 <= test_rows.min()  # top 75 % vs bottom 25 % of 40 rows


def test_real_patches_shape_range_and_seed():
    x = load_image_patches("train", 12, seed=0, source="sklearn")
    assert x.shape == (12, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert (x.reshape(12, -1).std(1) >= 0.02).all()
    assert torch.equal(x, load_image_patches("train", 12, seed=0, source="sklearn"))
    assert not torch.equal(x, load_image_patches("train", 12, seed=1, source="sklearn"))
    assert not torch.equal(x, load_image_patches("test", 12, seed=0, source="sklearn"))


def test_skimage_source():
    pytest.importorskip("skimage")
    images = bundled_grey_images("skimage")
    assert set(images) == set(SKIMAGE_IMAGES)
    assert all(img.ndim == 2 and 0 <= img.min() and img.max() <= 1 for img in images.values())
    x = load_image_patches("test", 4, source="skimage", dtype=torch.float64)
    assert x.shape == (4, 32, 32) and x.dtype == torch.float64


def test_pool2x2_matches_avg_pool():
    x = torch.rand(5, 28, 28)
    torch.testing.assert_close(pool2x2(x), F.avg_pool2d(x[:, None], 2)[:, 0])
    assert pool2x2(torch.rand(3, 7, 9)).shape == (3, 3, 4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be one of"):
        load_image_patches("val", 3)
    with pytest.raises(ValueError, match="source must be one of"):
        load_image_patches("train", 3, source="cifar")
    with pytest.raises(ValueError, match="no train image region is at least 4000"):
        load_image_patches("train", 3, size=4000, source="sklearn")
    with pytest.raises(ValueError, match="images must have shape"):
        pool2x2(torch.zeros(5))
