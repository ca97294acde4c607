import os

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from beyondgd.data.fashion_mnist import DEFAULT_PATH, DataNotFoundError
from beyondgd.data.scenes import (
    FASHION_MNIST_CLASSES,
    TEXTURE_CLASSES,
    SegmentationData,
    colorize,
    load_scribble_folder,
    make_fashion_scenes,
    make_scribbles,
    make_texture_scenes,
    save_label_png,
)

EIGHT = np.ones((3, 3), dtype=bool)


@pytest.fixture(scope="module")
def scenes():
    return make_texture_scenes(24, size=64, n_classes=4, seed=0)


@pytest.fixture(scope="module")
def full_scribbles(scenes):
    return make_scribbles(scenes.masks, seed=0)


# ---- texture scenes -------------------------------------------------------------------------


def test_texture_scenes_are_seeded(scenes):
    again = make_texture_scenes(24, size=64, n_classes=4, seed=0)
    other = make_texture_scenes(24, size=64, n_classes=4, seed=1)
    assert torch.equal(scenes.images, again.images) and torch.equal(scenes.masks, again.masks)
    assert not torch.equal(scenes.masks, other.masks)
    assert not torch.allclose(scenes.images, other.images)


def test_texture_scenes_shapes_dtypes_ranges(scenes):
    assert scenes.images.shape == (24, 3, 64, 64) and scenes.images.dtype == torch.float32
    assert scenes.masks.shape == (24, 64, 64) and scenes.masks.dtype == torch.int64
    assert scenes.scribbles is None and len(scenes) == 24 and scenes.n_classes == 4
    assert float(scenes.images.min()) >= 0 and float(scenes.images.max()) <= 1
    assert scenes.class_names == list(TEXTURE_CLASSES[:4])
    # every scene has a background and at least one shape of another class
    assert all(len(torch.unique(m)) >= 2 for m in scenes.masks)


@pytest.mark.parametrize("n_classes", [4, 6, 8])
def test_every_texture_class_appears(n_classes):
    data = make_texture_scenes(20, size=32, n_classes=n_classes, seed=2)
    assert set(torch.unique(data.masks).tolist()) == set(range(n_classes))


def test_colour_does_not_give_the_class():
    data = make_texture_scenes(150, size=32, n_classes=4, seed=3)
    pixels = data.images.permute(0, 2, 3, 1).reshape(-1, 3)
    labels = data.masks.reshape(-1)
    overall = pixels.mean(0)
    for c in range(4):
        # regions get random colours: every class's mean colour is near the overall mean
        assert torch.allclose(pixels[labels == c].mean(0), overall, atol=0.08), c


def test_textures_differ_by_class():
    # "grain" is per-pixel noise, "smooth" a slow gradient: their local variation must differ
    data = make_texture_scenes(60, size=48, n_classes=5, seed=4)
    grad = (data.images[:, :, :, 1:] - data.images[:, :, :, :-1]).abs().mean(1)
    labels = data.masks[:, :, 1:]
    same = labels == data.masks[:, :, :-1]
    smooth = grad[same & (labels == TEXTURE_CLASSES.index("smooth"))].mean()
    grain = grad[same & (labels == TEXTURE_CLASSES.index("grain"))].mean()
    assert grain > 2 * smooth


# ---- scribbles ------------------------------------------------------------------------------


def test_scribbles_agree_with_mask_and_cover_target(scenes, full_scribbles):
    seeds = full_scribbles
    labelled = seeds != 255
    assert seeds.shape == scenes.masks.shape and seeds.dtype == torch.int64
    assert torch.equal(seeds[labelled], scenes.masks[labelled])
    assert bool(labelled.flatten(1).any(1).all())  # every image has a seed
    share = labelled.float().mean().item()
    assert 0.015 < share < 0.045, share
    assert torch.equal(make_scribbles(scenes.masks, seed=0), seeds)
    assert not torch.equal(make_scribbles(scenes.masks, seed=1), seeds)


@pytest.mark.parametrize("coverage", [0.03, 0.1])  # 0.1 thickens the strokes
def test_scribbles_keep_off_boundaries(scenes, coverage):
    scribbles = make_scribbles(scenes.masks[:12], coverage=coverage, seed=0)
    for mask, seeds in zip(scenes.masks[:12].numpy(), scribbles.numpy()):
        for c in np.unique(mask):
            inner = ndimage.binary_erosion(mask == c, structure=EIGHT, border_value=1)
            regions, _ = ndimage.label(mask == c, structure=EIGHT)
            for y, x in np.argwhere((seeds == c) & ~inner):
                # only a thin region (lost under erosion by 3 pixels) may be clicked near its
                # boundary, and then with a single pixel
                region = regions == regions[y, x]
                assert ndimage.distance_transform_edt(np.pad(region, 1)).max() < 3
                assert int((seeds[region] == c).sum()) == 1


def test_coverage_argument_scales_the_share(scenes):
    small = (make_scribbles(scenes.masks, coverage=0.01, seed=0) != 255).float().mean()
    large = (make_scribbles(scenes.masks, coverage=0.06, seed=0) != 255).float().mean()
    assert 0.005 < small < 0.015 and large > 2 * small


def test_shortened_scribbles_are_nested(scenes, full_scribbles):
    previous, previous_count = full_scribbles, int((full_scribbles != 255).sum())
    for variant in ({"length": 0.8}, {"length": 0.5}, {"length": 0.3}, {"clicks": True}):
        seeds = make_scribbles(scenes.masks, seed=0, **variant)
        count = int((seeds != 255).sum())
        assert count < previous_count, variant
        labelled = seeds != 255
        assert torch.equal(seeds[labelled], previous[labelled]), variant  # a subset
        assert bool(labelled.flatten(1).any(1).all()), variant
        previous, previous_count = seeds, count
    short = make_scribbles(scenes.masks, seed=0, length=0.3)
    ratio = (short != 255).sum() / (full_scribbles != 255).sum()
    assert 0.15 < float(ratio) < 0.5


def test_clicks_give_one_pixel_per_region(scenes):
    clicks = make_scribbles(scenes.masks, seed=0, clicks=True)
    for mask, seeds in zip(scenes.masks.numpy(), clicks.numpy()):
        for c in np.unique(mask):
            regions, n_regions = ndimage.label(mask == c, structure=EIGHT)
            hit = regions[seeds == c]
            assert len(hit) == n_regions and set(hit.tolist()) == set(range(1, n_regions + 1))


def test_tiny_regions_get_a_click_and_void_is_never_scribbled():
    mask = np.zeros((1, 40, 40), dtype=np.int64)
    mask[0, 5:7, 5:7] = 1  # vanishes under erosion
    mask[0, 20:35, 20:35] = 2
    mask[0, :, 38:] = 255  # void
    seeds = make_scribbles(torch.from_numpy(mask), seed=0)[0]
    assert int((seeds == 1).sum()) >= 1 and int((seeds == 2).sum()) > 5
    assert bool((seeds[:, 38:] == 255).all())
    assert set(torch.unique(seeds).tolist()) == {0, 1, 2, 255}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"length": 0.0}, ValueError, "length"),
        ({"length": 1.5}, ValueError, "length"),
        ({"coverage": 0.0}, ValueError, "coverage"),
        ({"clicks": "yes"}, TypeError, "clicks"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_scribble_arguments_are_checked(scenes, kwargs, error, match):
    with pytest.raises(error, match=match):
        make_scribbles(scenes.masks[:2], **kwargs)


def test_scribble_masks_are_checked():
    with pytest.raises(TypeError, match="masks"):
        make_scribbles(torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="masks"):
        make_scribbles(torch.zeros(8, 8, dtype=torch.int64))
    void = torch.zeros(2, 8, 8, dtype=torch.int64)
    void[1] = 255
    with pytest.raises(ValueError, match=r"image\(s\) \[1\] have no labelled pixel"):
        make_scribbles(void)


# ---- the container --------------------------------------------------------------------------


def test_container_subset_and_with_scribbles(scenes, full_scribbles):
    data = scenes.with_scribbles(full_scribbles)
    assert scenes.scribbles is None and torch.equal(data.scribbles, full_scribbles)
    part = data.subset([3, 0])
    assert len(part) == 2 and torch.equal(part.images[1], data.images[0])
    assert torch.equal(part.scribbles[0], data.scribbles[3])
    data.require_scribbles()
    with pytest.raises(ValueError, match="indices"):
        data.subset([24])
    with pytest.raises(ValueError, match="indices"):
        data.subset([])
    with pytest.raises(ValueError, match="scribbles are None"):
        scenes.require_scribbles()
    empty = full_scribbles.clone()
    empty[5] = 255
    with pytest.raises(ValueError, match=r"\[5\] have no labelled pixel"):
        scenes.with_scribbles(empty).require_scribbles()


def test_container_validates_inputs(scenes):
    images, masks = scenes.images[:2], scenes.masks[:2]
    bad = masks.clone()
    bad[0, 0, 0] = 4
    with pytest.raises(ValueError, match="scribbles labels must lie in"):
        SegmentationData(images, masks, bad, scenes.class_names)
    with pytest.raises(ValueError, match="masks must have shape"):
        SegmentationData(images, masks[:, :10], None, scenes.class_names)
    with pytest.raises(TypeError, match="masks must have an integer dtype"):
        SegmentationData(images, masks.float(), None, scenes.class_names)
    with pytest.raises(ValueError, match=r"images must lie in \[0, 1\]"):
        SegmentationData(images * 2, masks, None, scenes.class_names)
    with pytest.raises(ValueError, match="images must have shape"):
        SegmentationData(images[:, :2], masks, None, scenes.class_names)
    with pytest.raises(ValueError, match="ignore_index"):
        SegmentationData(images, masks, None, scenes.class_names, ignore_index=3)
    # uint8 labels are accepted and stored as int64
    data = SegmentationData(images.double(), masks.to(torch.uint8), None, scenes.class_names)
    assert data.masks.dtype == torch.int64 and data.images.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": 0}, ValueError, "n must be >= 1"),
        ({"n": 2, "n_classes": 1}, ValueError, "n_classes"),
        ({"n": 2, "n_classes": 9}, ValueError, "n_classes"),
        ({"n": 2, "size": 8}, ValueError, "size"),
        ({"n": 2.5}, TypeError, "n must be an integer"),
    ],
)
def test_texture_arguments_are_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        make_texture_scenes(**kwargs)


# ---- folders, PNGs, colours -----------------------------------------------------------------


def _write_folder(root, data, *, with_masks=True):
    for sub in ("images", "scribbles", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    pixels = (data.images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i in range(len(data)):
        Image.fromarray(pixels[i]).save(root / "images" / f"scene{i:02d}.png")
        save_label_png(root / "scribbles" / f"scene{i:02d}.png", data.scribbles[i])
        if with_masks:
            save_label_png(root / "masks" / f"scene{i:02d}.png", data.masks[i])
    return pixels


def test_folder_round_trip(tmp_path, scenes, full_scribbles):
    data = scenes.subset([0, 1, 2]).with_scribbles(full_scribbles[:3])
    pixels = _write_folder(tmp_path, data)
    loaded = load_scribble_folder(
        tmp_path / "images",
        tmp_path / "scribbles",
        masks=tmp_path / "masks",
        class_names=scenes.class_names,  # class 2 is in none of these three scenes
    )
    assert loaded.image_names == ["scene00", "scene01", "scene02"]
    assert torch.equal(loaded.scribbles, data.scribbles) and torch.equal(loaded.masks, data.masks)
    expected = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(loaded.images, expected)
    assert loaded.class_names == scenes.class_names
    resized = load_scribble_folder(
        tmp_path / "images", tmp_path / "scribbles", class_names=scenes.class_names, size=(32, 48)
    )
    assert resized.images.shape == (3, 3, 32, 48) and resized.masks is None
    # nearest-neighbour resizing invents no label
    assert set(torch.unique(resized.scribbles).tolist()) <= set(
        torch.unique(data.scribbles).tolist()
    )


def test_folder_errors_name_the_file(tmp_path, scenes, full_scribbles):
    data = scenes.subset([0, 1]).with_scribbles(full_scribbles[:2])
    _write_folder(tmp_path, data, with_masks=False)
    images, scribbles = tmp_path / "images", tmp_path / "scribbles"
    with pytest.raises(
        ValueError, match=r"scene0[01]\.png: scribbles label 3 >= len\(class_names\) = 2"
    ):
        load_scribble_folder(images, scribbles, class_names=["a", "b"])
    save_label_png(scribbles / "scene01.png", np.full((64, 64), 255))
    with pytest.raises(ValueError, match=r"scene01\.png: no labelled scribble pixel"):
        load_scribble_folder(images, scribbles)
    kept = load_scribble_folder(
        images, scribbles, require_scribbles=False, class_names=scenes.class_names
    )
    assert len(kept) == 2
    save_label_png(scribbles / "scene01.png", np.zeros((60, 64), dtype=np.int64))
    with pytest.raises(ValueError, match=r"scene01\.png: size 60 x 64 differs from its image"):
        load_scribble_folder(images, scribbles)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(scribbles / "scene01.png")
    with pytest.raises(ValueError, match=r"scene01\.png: a label image must have one channel"):
        load_scribble_folder(images, scribbles)
    (scribbles / "scene01.png").unlink()
    with pytest.raises(ValueError, match=r"no scribble file for image scene01\.png"):
        load_scribble_folder(images, scribbles)
    with pytest.raises(ValueError, match="images must be an existing folder"):
        load_scribble_folder(tmp_path / "nowhere", scribbles)


def _one_image_folder(root, scribble, *, suffix=".png"):
    for sub in ("images", "scribbles"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*scribble.shape, 3), np.uint8)).save(root / "images" / "chelsea.png")
    if suffix == ".png" and scribble.dtype == np.uint16:
        Image.fromarray(scribble).save(root / "scribbles" / "chelsea.png")  # 16-bit PNG
    elif suffix == ".png":
        save_label_png(root / "scribbles" / "chelsea.png", scribble)
    else:
        Image.fromarray(scribble.astype(np.uint8)).save(root / "scribbles" / f"chelsea{suffix}")
    return root / "images", root / "scribbles"


def test_folder_rejects_dense_labels_where_zero_means_unlabelled(tmp_path):
    dense = np.zeros((16, 16), dtype=np.int64)
    dense[4:8, 4:8] = 1  # 0 = "unlabelled" in the user's convention: every pixel has a class
    with pytest.raises(
        ValueError, match=r"chelsea\.png: every pixel is labelled.*255 = unlabelled"
    ):
        load_scribble_folder(*_one_image_folder(tmp_path, dense))


def test_folder_rejects_sparse_class_ids_unless_classes_are_named(tmp_path):
    scribble = np.full((16, 16), 255, dtype=np.int64)
    scribble[1, :4], scribble[5, :4], scribble[9, :4] = 0, 2, 7
    folder = _one_image_folder(tmp_path, scribble)
    with pytest.raises(ValueError, match=r"ids \{0, 2, 7\}, so class ids \{1, 3, 4, 5, 6\}"):
        load_scribble_folder(*folder)
    named = load_scribble_folder(*folder, class_names=[f"c{k}" for k in range(8)])
    assert named.n_classes == 8


def test_folder_reads_16_bit_labels_or_says_the_format(tmp_path):
    scribble = np.full((16, 16), 255, dtype=np.uint16)
    scribble[2:4, :], scribble[10:12, :] = 0, 1
    data = load_scribble_folder(*_one_image_folder(tmp_path / "ok", scribble))
    assert data.class_names == ["class_0", "class_1"] and int((data.scribbles == 1).sum()) == 32
    scribble[scribble == 255] = 65535  # unlabelled as the 16-bit maximum
    with pytest.raises(ValueError, match=r"\[0, 65535\] \(a 16-bit image\); the format is"):
        load_scribble_folder(*_one_image_folder(tmp_path / "wide", scribble))


def test_folder_says_why_a_jpeg_scribble_does_not_match(tmp_path):
    scribble = np.full((16, 16), 255, dtype=np.int64)
    scribble[2:4, :] = 0
    with pytest.raises(ValueError, match=r"chelsea\.jpg has the same stem but.*JPEG"):
        load_scribble_folder(*_one_image_folder(tmp_path, scribble, suffix=".jpg"))


def test_folder_images_of_different_sizes_need_size(tmp_path):
    for sub in ("images", "scribbles"):
        (tmp_path / sub).mkdir()
    for stem, shape in (("a", (20, 30)), ("b", (24, 30))):
        Image.fromarray(np.zeros((*shape, 3), np.uint8)).save(tmp_path / "images" / f"{stem}.jpg")
        scribble = np.full(shape, 255, dtype=np.int64)
        scribble[2:5, :], scribble[-5:-2, :] = 0, 1
        save_label_png(tmp_path / "scribbles" / f"{stem}.png", scribble)
    with pytest.raises(ValueError, match=r"b\.jpg: size 24 x 30 differs from the first image"):
        load_scribble_folder(tmp_path / "images", tmp_path / "scribbles")
    data = load_scribble_folder(tmp_path / "images", tmp_path / "scribbles", size=16)
    assert data.images.shape == (2, 3, 16, 16) and data.n_classes == 2


def test_colorize_and_label_png(tmp_path):
    labels = np.array([[0, 1, 2], [19, 200, 255]])
    rgb = colorize(torch.from_numpy(labels))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert (rgb[1, 2] == 0).all()  # unlabelled is black
    assert len({tuple(c) for c in colorize(np.arange(20))}) == 20
    with pytest.raises(ValueError, match="labels must lie in"):
        colorize(np.array([300]))
    with pytest.raises(TypeError, match="integer dtype"):
        colorize(np.zeros(3))
    save_label_png(tmp_path / "l.png", labels)
    assert (np.asarray(Image.open(tmp_path / "l.png")) == labels).all()
    with pytest.raises(ValueError, match="labels must lie in"):
        save_label_png(tmp_path / "l.png", np.array([[256]]))


# ---- Fashion-MNIST scenes -------------------------------------------------------------------


@pytest.fixture
def stand_in_fashion(tmp_path, write_fashion_mnist):
    """Fashion-MNIST's layout with blocky garments; width grows with the label."""
    parts = []
    for n in (40, 20):
        labels = np.arange(n) % 10
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 4:24, 10 - label // 2 : 18 + label // 2] = 120 + 10 * label
        parts.append((images, labels))
    return write_fashion_mnist(tmp_path, train=parts[0], test=parts[1])


def _items(name):
    return [(part.split(":")[0], int(part.split(":")[1])) for part in name.split("+")]


def _check_item_classes(data, labels_of, classes):
    for mask, name in zip(data.masks, data.image_names):
        items = _items(name)
        item_classes = {classes.index(int(labels_of[i])) + 1 for _, i in items}
        present = set(torch.unique(mask).tolist()) - {0}
        assert present <= item_classes
        last = classes.index(int(labels_of[items[-1][1]])) + 1  # never occluded
        assert last in present


def test_fashion_scenes_on_stand_in(stand_in_fashion):
    classes = [0, 1, 8, 7]
    data = make_fashion_scenes(10, size=48, classes=classes, path=stand_in_fashion, seed=0)
    assert data.images.shape == (10, 3, 48, 48) and data.masks.shape == (10, 48, 48)
    assert data.class_names == ["background", "T-shirt/top", "Trouser", "Bag", "Sneaker"]
    assert float(data.images.min()) >= 0 and float(data.images.max()) <= 1
    _check_item_classes(data, np.arange(40) % 10, classes)
    counts = [len(_items(name)) for name in data.image_names]
    assert min(counts) >= 1 and max(counts) <= 3
    again = make_fashion_scenes(10, size=48, classes=classes, path=stand_in_fashion, seed=0)
    assert torch.equal(again.images, data.images) and again.image_names == data.image_names
    test = make_fashion_scenes(10, size=48, classes=classes, path=stand_in_fashion, split="test")
    assert all(s == "test" and i < 20 for name in test.image_names for s, i in _items(name))
    assert all(s == "train" for name in data.image_names for s, _ in _items(name))
    seeds = make_scribbles(data.masks, seed=0)
    assert torch.equal(seeds[seeds != 255], data.masks[seeds != 255])


def test_fashion_arguments_are_checked(stand_in_fashion, tmp_path):
    with pytest.raises(ValueError, match="unknown Fashion-MNIST class 'Hat'"):
        make_fashion_scenes(2, classes=["Hat"], path=stand_in_fashion)
    with pytest.raises(ValueError, match="repeat"):
        make_fashion_scenes(2, classes=["Bag", 8], path=stand_in_fashion)
    with pytest.raises(ValueError, match="n_items"):
        make_fashion_scenes(2, n_items=(3, 1), path=stand_in_fashion)
    with pytest.raises(ValueError, match="split"):
        make_fashion_scenes(2, split="val", path=stand_in_fashion)
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        make_fashion_scenes(2, path=tmp_path / "nowhere")


def test_fashion_scenes_real_items():
    if not os.path.exists(f"{DEFAULT_PATH}/t10k-images-idx3-ubyte.gz"):
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    from beyondgd.data.fashion_mnist import load_fashion_mnist

    _, test_labels = load_fashion_mnist("test")
    classes = [FASHION_MNIST_CLASSES.index(c) for c in ("T-shirt/top", "Trouser", "Bag")]
    data = make_fashion_scenes(12, size=64, classes=classes, split="test", seed=5)
    assert all(s == "test" for name in data.image_names for s, _ in _items(name))
    _check_item_classes(data, test_labels.numpy(), classes)
    # a garment covers a sizeable share of its box (the threshold kept the item)
    assert 0.05 < float((data.masks > 0).float().mean()) < 0.6
