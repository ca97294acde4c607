"""Regularized segmentation losses: Potts relaxations, dense CRF, the bilateral filter.

Checked against brute force (explicit loops over pairs, dense affinity matrices built entry by
entry), by gradcheck in float64, and the O(N) filter against the exact dense product.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from beyondgd.segmentation.grid import contrast_weights, edge_list, potts_energy
from beyondgd.segmentation.losses import (
    DenseCRFLoss,
    GridPottsLoss,
    bilateral_filter,
    relaxed_potts_energy,
)

RELAXATIONS = ("bilinear", "quadratic", "tv")


def random_probs(shape, seed, dtype=torch.float64, sharpness=2.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=dtype) * sharpness).softmax(1)


def random_images(shape, seed, dtype=torch.float64):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def one_hot(labels, k, dtype=torch.float64):
    return F.one_hot(labels, k).permute(0, 3, 1, 2).to(dtype)


def brute_affinity(image, sigma_rgb, sigma_xy):
    """Dense-CRF W of one (C, H, W) image in [0, 1], entry by entry, zero diagonal."""
    c, h, w = image.shape
    colours = (image * 255).reshape(c, -1).T.tolist()
    n = h * w
    out = torch.zeros(n, n, dtype=torch.float64)
    for p in range(n):
        for q in range(n):
            if p == q:
                continue
            colour = sum((a - b) ** 2 for a, b in zip(colours[p], colours[q]))
            space = (p // w - q // w) ** 2 + (p % w - q % w) ** 2
            out[p, q] = math.exp(-colour / (2 * sigma_rgb**2) - space / (2 * sigma_xy**2))
    return out


def astronaut(size, grey=False):
    from skimage import data

    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].double() / 255
    image = F.interpolate(image, size=(size, size), mode="area").clamp(0, 1)
    return image.mean(1, keepdim=True) if grey else image


# --------------------------------------------------------------------------- grid Potts


@pytest.mark.parametrize("neighbourhood", [4, 8])
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_relaxations_equal_potts_energy_on_one_hot(relaxation, neighbourhood):
    images = random_images((3, 3, 6, 7), 0)
    labels = torch.randint(0, 4, (3, 6, 7), generator=torch.Generator().manual_seed(1))
    weights = contrast_weights(images, neighbourhood)
    expected = potts_energy(labels, weights)
    loss = GridPottsLoss(relaxation, neighbourhood, reduction="none")
    torch.testing.assert_close(loss(one_hot(labels, 4), images), expected)
    torch.testing.assert_close(loss(one_hot(labels, 4), weights=weights), expected)
    # Reductions: the sum over images, and that sum per pixel.
    total = GridPottsLoss(relaxation, neighbourhood, reduction="sum")(one_hot(labels, 4), images)
    mean = GridPottsLoss(relaxation, neighbourhood, reduction="mean")(one_hot(labels, 4), images)
    torch.testing.assert_close(total, expected.sum())
    torch.testing.assert_close(mean, expected.sum() / (3 * 6 * 7))


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_relaxations_match_pairwise_formulas(relaxation):
    images = random_images((2, 3, 4, 5), 2)
    probs = random_probs((2, 3, 4, 5), 3)
    weights = contrast_weights(images, 8)
    values = relaxed_potts_energy(probs, weights, relaxation)
    for index in range(2):
        edges, w = edge_list(weights, index)
        flat = probs[index].reshape(3, -1)
        expected = 0.0
        for (p, q), wpq in zip(edges.tolist(), w.tolist()):
            sp, sq = flat[:, p], flat[:, q]
            if relaxation == "bilinear":
                expected += wpq * (1 - float(sp @ sq))
            elif relaxation == "quadratic":
                expected += wpq * 0.5 * float((sp - sq).square().sum())
            else:
                expected += wpq * 0.5 * float((sp - sq).abs().sum())
        assert float(values[index]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_grid_potts_gradcheck(relaxation):
    images = random_images((2, 3, 4, 4), 4)
    probs = random_probs((2, 3, 4, 4), 5).requires_grad_(True)
    loss = GridPottsLoss(relaxation, 8, reduction="sum")
    assert torch.autograd.gradcheck(lambda s: loss(s, images), (probs,))
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    logit_loss = GridPottsLoss(relaxation, 4, reduction="mean", target="logits")
    assert torch.autograd.gradcheck(lambda z: logit_loss(z, images), (logits,))


def test_logits_target_is_softmax_then_prob():
    images = random_images((2, 3, 5, 5), 6)
    logits = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    from_logits = GridPottsLoss(target="logits")(logits, images)
    from_probs = GridPottsLoss(target="prob")(logits.softmax(1), images)
    torch.testing.assert_close(from_logits, from_probs)


def test_relaxations_order_and_no_grad():
    # On soft maps: TV >= quadratic (|d| >= d^2 for |d| <= 1); all zero on a constant labelling.
    images = random_images((1, 3, 6, 6), 7)
    probs = random_probs((1, 3, 6, 6), 8)
    values = {r: float(GridPottsLoss(r)(probs, images)) for r in RELAXATIONS}
    assert values["tv"] >= values["quadratic"] > 0
    constant = one_hot(torch.zeros(1, 6, 6, dtype=torch.long), 3)
    with torch.no_grad():
        for r in RELAXATIONS:
            value = GridPottsLoss(r)(constant, images)
            assert float(value) == 0.0 and value.grad_fn is None


# --------------------------------------------------------------------------- bilateral filter


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("exclude_self", [True, False])
def test_exact_filter_is_the_dense_product(channels, exclude_self):
    image = random_images((1, channels, 4, 5), 9)
    values = random_probs((1, 2, 4, 5), 10)
    w = brute_affinity(image[0], 40.0, 3.0)
    if not exclude_self:
        w += torch.eye(20, dtype=torch.float64)
    expected = (values.reshape(2, 20) @ w.T).reshape(1, 2, 4, 5)
    out = bilateral_filter(values, image, 40.0, 3.0, method="exact", exclude_self=exclude_self)
    torch.testing.assert_close(out, expected)


def test_exact_filter_row_blocks_do_not_change_the_result(monkeypatch):
    import beyondgd.segmentation.losses as losses

    image, values = random_images((2, 3, 6, 6), 11), random_probs((2, 3, 6, 6), 12)
    whole = bilateral_filter(values, image, 20.0, 4.0, method="exact")
    monkeypatch.setattr(losses, "_EXACT_BLOCK_ELEMENTS", 50)  # one row per block
    torch.testing.assert_close(bilateral_filter(values, image, 20.0, 4.0, method="exact"), whole)


@pytest.mark.parametrize("channels", [1, 3])
def test_filter_operator_is_symmetric_with_zero_diagonal(channels):
    image = random_images((1, channels, 5, 6), 13)
    basis = torch.eye(30, dtype=torch.float64).reshape(1, 30, 5, 6)  # channel j = e_j
    w = bilateral_filter(basis, image, 30.0, 4.0).reshape(30, 30)
    torch.testing.assert_close(w, w.T, rtol=0, atol=1e-14)
    assert w.diagonal().abs().max() < 1e-14
    with_self = bilateral_filter(basis, image, 30.0, 4.0, exclude_self=False).reshape(30, 30)
    torch.testing.assert_close(with_self - w, torch.diag(with_self.diagonal()))
    # The self weight approximates exp(0) = 1 (pointwise, so less closely than W S: measured
    # up to 6% here).
    assert with_self.diagonal().sub(1).abs().max() < 0.1


@pytest.mark.parametrize("grey", [False, True])
def test_filter_agrees_with_exact_product_on_a_real_image(grey):
    # Tolerance 5%: measured 2.2% (colour) and 0.6% (grey) for the default cells and shifts on
    # this image; a single unshifted grid (no lattice averaging) gives 12% and 5%, and wrong
    # blur variance or mass compensation gives far more. Structured (one-hot) and random maps.
    image = astronaut(32, grey)
    probs = random_probs((1, 4, 32, 32), 14)
    labels = (image.mean(1) * 3.999).long()  # brightness bands: a segmentation with real edges
    for values in (probs, one_hot(labels, 4)):
        exact = bilateral_filter(values, image, 15.0, 100.0, method="exact")
        approx = bilateral_filter(values, image, 15.0, 100.0, method="filter")
        assert float((approx - exact).norm() / exact.norm()) < 0.05
    exact = bilateral_filter(probs, image, 15.0, 100.0, method="exact")
    errors = [
        float((bilateral_filter(probs, image, 15.0, 100.0, shifts=m) - exact).norm() / exact.norm())
        for m in (1, 3, 5)
    ]
    assert errors[0] > errors[1] > errors[2]  # averaging over shifted grids is what helps
    # The normalised loss divides out most of the filter's scale error (measured < 1e-4).
    for values in (probs, one_hot(labels, 4)):
        exact_loss = DenseCRFLoss(method="exact", reduction="none")(values, image)
        filter_loss = DenseCRFLoss(method="filter", reduction="none")(values, image)
        torch.testing.assert_close(filter_loss, exact_loss, rtol=0.01, atol=0)


@pytest.mark.parametrize("method", ["exact", "filter"])
def test_filter_gradcheck(method):
    image = random_images((2, 3, 3, 4), 15)
    values = random_probs((2, 2, 3, 4), 16).requires_grad_(True)

    def filtered(v):
        return bilateral_filter(v, image[: v.shape[0]], 30.0, 3.0, method=method)

    assert torch.autograd.gradcheck(filtered, (values,))
    # The backward is the filter again (W symmetric), so it is differentiable too.
    assert torch.autograd.gradgradcheck(filtered, (values[:1, :1].detach().requires_grad_(),))


def test_filter_dtype_determinism_and_no_grad():
    image = astronaut(16).float()
    probs = random_probs((2, 3, 16, 16), 17, dtype=torch.float32)
    images = torch.cat([image, image.flip(-1)])
    first = bilateral_filter(probs, images, 15.0, 100.0)
    assert first.dtype == torch.float32 and first.shape == probs.shape
    assert torch.equal(first, bilateral_filter(probs, images, 15.0, 100.0))
    # Batched = one image at a time.
    torch.testing.assert_close(first[1:], bilateral_filter(probs[1:], images[1:], 15.0, 100.0))
    with torch.no_grad():
        out = bilateral_filter(probs.requires_grad_(True), images, 15.0, 100.0)
    assert out.grad_fn is None
    half = bilateral_filter(probs.bfloat16(), images, 15.0, 100.0)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), first, rtol=0.02, atol=0.0)


# --------------------------------------------------------------------------- dense CRF loss


@pytest.mark.parametrize("channels", [1, 3])
def test_dense_crf_on_one_hot_is_the_cut_weight(channels):
    images = random_images((2, channels, 4, 4), 18)
    labels = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(19))
    probs = one_hot(labels, 3)
    raw = DenseCRFLoss(40.0, 3.0, method="exact", reduction="none", normalize=False)
    normalized = DenseCRFLoss(40.0, 3.0, method="exact", reduction="none")
    mean = DenseCRFLoss(40.0, 3.0, method="exact", reduction="mean")
    expected_raw, expected_normalized = [], []
    for index in range(2):
        w = brute_affinity(images[index], 40.0, 3.0)
        flat = labels[index].reshape(-1)
        cut = sum(
            float(w[p, q]) for p in range(16) for q in range(16) if p != q and flat[p] != flat[q]
        )
        expected_raw.append(cut)
        expected_normalized.append(cut / (float(w.sum()) / 16))  # mean degree 1'W1 / N
    torch.testing.assert_close(raw(probs, images), torch.tensor(expected_raw, dtype=torch.float64))
    torch.testing.assert_close(
        normalized(probs, images), torch.tensor(expected_normalized, dtype=torch.float64)
    )
    torch.testing.assert_close(
        mean(probs, images), torch.tensor(sum(expected_normalized) / (2 * 16), dtype=torch.float64)
    )


def test_dense_crf_on_soft_maps_matches_the_quadratic_form():
    images = random_images((1, 3, 4, 5), 20)
    probs = random_probs((1, 3, 4, 5), 21)
    w = brute_affinity(images[0], 25.0, 2.0)
    s = probs[0].reshape(3, -1)
    expected = sum(float(s[k] @ w @ (1 - s[k])) for k in range(3))
    value = DenseCRFLoss(25.0, 2.0, method="exact", reduction="sum", normalize=False)(probs, images)
    assert float(value) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("method", ["exact", "filter"])
@pytest.mark.parametrize("normalize", [True, False])
def test_dense_crf_gradcheck(method, normalize):
    images = random_images((2, 3, 3, 4), 22)
    probs = random_probs((2, 3, 3, 4), 23).requires_grad_(True)
    loss = DenseCRFLoss(30.0, 3.0, method=method, reduction="mean", normalize=normalize)
    # For the filter this checks that the W 1 - 2 W S backward is the derivative of its own
    # forward, i.e. that the approximate W is symmetric.
    assert torch.autograd.gradcheck(lambda s: loss(s, images), (probs,))


def test_dense_crf_gradient_formula_and_auto_method():
    images = random_images((1, 3, 4, 4), 24)
    probs = random_probs((1, 2, 4, 4), 25).requires_grad_(True)
    DenseCRFLoss(30.0, 3.0, method="exact", reduction="sum", normalize=False)(
        probs, images
    ).backward()
    w = brute_affinity(images[0], 30.0, 3.0)
    s = probs.detach()[0].reshape(2, -1)
    expected = (w.sum(1) - 2 * s @ w).reshape(1, 2, 4, 4)  # W1 - 2 W S^k, W symmetric
    torch.testing.assert_close(probs.grad, expected)
    loss = DenseCRFLoss(max_exact_pixels=16)
    assert loss.resolved_method(16) == "exact" and loss.resolved_method(17) == "filter"
    exact = DenseCRFLoss(method="exact")(probs, images)
    torch.testing.assert_close(loss(probs, images), exact)


def test_dense_crf_under_no_grad_and_one_pixel():
    images = random_images((2, 3, 6, 6), 26)
    probs = random_probs((2, 3, 6, 6), 27).requires_grad_(True)
    with torch.no_grad():
        value = DenseCRFLoss()(probs, images)
    assert value.grad_fn is None and torch.isfinite(value)
    # A single pixel has no pairs: degree 0, energy 0, and the normalised loss is 0, not NaN.
    tiny = DenseCRFLoss(reduction="none")(random_probs((1, 2, 1, 1), 28), torch.rand(1, 3, 1, 1))
    assert torch.equal(tiny, torch.zeros(1, dtype=torch.float64))


# --------------------------------------------------------------------------- bad input


def test_bad_input_grid_potts():
    images, probs = random_images((2, 3, 5, 5), 29), random_probs((2, 3, 5, 5), 30)
    loss = GridPottsLoss()
    with pytest.raises(ValueError, match="segmentation must have K >= 2"):
        loss(probs[:, :1], images)
    with pytest.raises(ValueError, match="images must have the same spatial size"):
        loss(probs, images[..., :4])
    with pytest.raises(ValueError, match="images must have the same batch size"):
        loss(probs, images[:1])
    with pytest.raises(ValueError, match="segmentation must contain only finite"):
        loss(torch.where(probs > 0.5, torch.nan, probs), images)
    with pytest.raises(ValueError, match="segmentation must contain only finite"):
        GridPottsLoss(target="logits")(torch.full_like(probs, math.inf), images)
    with pytest.raises(ValueError, match=r"segmentation must have shape \(B, K, H, W\)"):
        loss(probs[0], images)
    with pytest.raises(ValueError, match="exactly one of images and weights"):
        loss(probs)
    with pytest.raises(ValueError, match="exactly one of images and weights"):
        loss(probs, images, weights=contrast_weights(images))
    with pytest.raises(TypeError, match="weights must be a GridWeights"):
        loss(probs, weights=[torch.ones(2, 5, 4)])
    with pytest.raises(ValueError, match="weights must describe 2 image"):
        loss(probs, weights=contrast_weights(images[:1]))
    with pytest.raises(ValueError, match="relaxation must be one of"):
        GridPottsLoss("l2")
    with pytest.raises(ValueError, match="neighbourhood must be 4 or 8"):
        GridPottsLoss(neighbourhood=6)
    with pytest.raises(ValueError, match="reduction must be one of"):
        GridPottsLoss(reduction="avg")
    with pytest.raises(ValueError, match="target must be one of"):
        GridPottsLoss(target="probabilities")
    with pytest.raises(TypeError, match="contrast must be a bool"):
        GridPottsLoss(contrast=1)
    with pytest.raises(ValueError, match="relaxation must be one of"):
        relaxed_potts_energy(probs, contrast_weights(images), "l2")


def test_bad_input_dense_crf_and_filter():
    images, probs = random_images((2, 3, 5, 5), 31), random_probs((2, 3, 5, 5), 32)
    loss = DenseCRFLoss()
    with pytest.raises(ValueError, match="probs must have K >= 2"):
        loss(probs[:, :1], images)
    with pytest.raises(ValueError, match="images must have the same spatial size"):
        loss(probs, images[:, :, :4])
    with pytest.raises(ValueError, match="images must have the same batch size"):
        loss(probs, images[:1])
    with pytest.raises(ValueError, match="probs must contain only finite"):
        loss(probs.clone().index_fill_(0, torch.tensor([1]), math.nan), images)
    with pytest.raises(ValueError, match=r"images must have values in \[0, 1\]"):
        loss(probs, images * 255)
    with pytest.raises(TypeError, match="probs must have a floating-point dtype"):
        loss(probs.argmax(1, keepdim=True).expand(2, 3, 5, 5), images)
    with pytest.raises(ValueError, match="method must be one of"):
        DenseCRFLoss(method="permutohedral")
    with pytest.raises(ValueError, match="reduction must be one of"):
        DenseCRFLoss(reduction="batchmean")
    with pytest.raises(ValueError, match="sigma_rgb must be > 0"):
        DenseCRFLoss(sigma_rgb=0.0)
    with pytest.raises(ValueError, match="sigma_xy must be > 0"):
        DenseCRFLoss(sigma_xy=-5.0)
    with pytest.raises(TypeError, match="sigma_xy must be a real number"):
        DenseCRFLoss(sigma_xy="100")
    with pytest.raises(ValueError, match="max_exact_pixels must be >= 0"):
        DenseCRFLoss(max_exact_pixels=-1)
    with pytest.raises(TypeError, match="normalize must be a bool"):
        DenseCRFLoss(normalize="yes")
    with pytest.raises(ValueError, match="cell_rgb must be <= 1.5"):
        DenseCRFLoss(cell_rgb=2.0)
    with pytest.raises(ValueError, match="shifts must be >= 1"):
        DenseCRFLoss(shifts=0)
    with pytest.raises(ValueError, match="method must be one of"):
        bilateral_filter(probs, images, 15.0, 100.0, method="auto")
    with pytest.raises(ValueError, match="sigma_rgb must be > 0"):
        bilateral_filter(probs, images, -1.0, 100.0)
    with pytest.raises(ValueError, match="values must contain only finite"):
        bilateral_filter(torch.full_like(probs, math.inf), images, 15.0, 100.0)
    with pytest.raises(ValueError, match="images must have the same spatial size as values"):
        bilateral_filter(probs, images[..., :3], 15.0, 100.0)
    with pytest.raises(TypeError, match="exclude_self must be a bool"):
        bilateral_filter(probs, images, 15.0, 100.0, exclude_self=None)
    # A grid too large for memory is refused with the options that fix it.
    with pytest.raises(ValueError, match="increase cell_xy/cell_rgb"):
        bilateral_filter(probs, images, 0.5, 0.2, cell_rgb=0.1, cell_xy=0.1)
