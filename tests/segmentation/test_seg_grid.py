"""Pixel-grid Potts model: hand-computed contrast weights and energies, edge lists, bad input."""

import math

import pytest
import torch

from beyondgd.segmentation.grid import (
    OFFSETS,
    GridWeights,
    contrast_weights,
    edge_list,
    potts_energy,
)

# A 3x3 grey image: an L-shaped bright region (1) around a dark 2x2 block (0).
#   0 0 1
#   0 0 1
#   1 1 1
L_IMAGE = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)


def brute_potts(labels: torch.Tensor, weights: GridWeights, index: int = 0) -> float:
    """Sum of w_pq over pairs with different labels, by looping over the edge list."""
    edges, values = edge_list(weights, index)
    flat = labels.reshape(-1)
    return sum(float(w) for (p, q), w in zip(edges.tolist(), values) if flat[p] != flat[q])


def test_contrast_weights_by_hand_8_neighbourhood():
    weights = contrast_weights(L_IMAGE[None, None], 8)
    # Squared differences per offset (1 where a pair crosses the dark/bright boundary):
    #   (0, 1): [[0, 1], [0, 1], [0, 0]]    sum 2 over 6 pairs
    #   (1, 0): [[0, 0, 0], [1, 1, 0]]      sum 2 over 6 pairs
    #   (1, 1): [[0, 1], [1, 1]]            sum 3 over 4 pairs
    #   (1,-1): [[0, 1], [1, 0]]            sum 2 over 4 pairs (p in columns 1..2)
    # sigma^2 = 9 / 20 = 0.45; a boundary pair has exp(-1 / 0.9) = 0.329193 / ||p - q||.
    cross = math.exp(-1 / (2 * 0.45))
    assert cross == pytest.approx(0.329193, abs=1e-6)
    s2 = 1 / math.sqrt(2)
    expected = {
        (0, 1): [[1, cross], [1, cross], [1, 1]],
        (1, 0): [[1, 1, 1], [cross, cross, 1]],
        (1, 1): [[s2, cross * s2], [cross * s2, cross * s2]],
        (1, -1): [[s2, cross * s2], [cross * s2, s2]],
    }
    assert weights.offsets == OFFSETS[8]
    assert (weights.height, weights.width, weights.batch_size) == (3, 3, 1)
    for offset, wmap in zip(weights.offsets, weights.maps):
        torch.testing.assert_close(wmap[0], torch.tensor(expected[offset], dtype=torch.float64))


def test_contrast_weights_by_hand_4_neighbourhood_and_colour():
    # 4-neighbourhood: 12 pairs, 4 across the boundary: sigma^2 = 1/3, boundary weight exp(-1.5).
    weights = contrast_weights(L_IMAGE[None, None], 4)
    assert weights.offsets == OFFSETS[4]
    torch.testing.assert_close(
        weights.maps[0][0],
        torch.tensor([[1, math.exp(-1.5)], [1, math.exp(-1.5)], [1, 1]], dtype=torch.float64),
    )
    # A colour version (dark = (0, 0, 0), bright = (1, 0.5, 0)): every squared difference and
    # sigma^2 scale by 1.25, so the weights are the same; channels are summed.
    colour = L_IMAGE[None] * torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)[:, None, None]
    colour_weights = contrast_weights(colour, 4)  # (C, H, W) is accepted as one image
    for a, b in zip(weights.maps, colour_weights.maps):
        torch.testing.assert_close(a, b)


def test_plain_potts_sigma_override_and_constant_image():
    plain = contrast_weights(L_IMAGE[None, None], 8, contrast=False)
    for offset, wmap in zip(plain.offsets, plain.maps):
        assert torch.all(wmap == 1 / math.hypot(*offset))
    # sigma2 given: a boundary pair weighs exp(-1 / (2 * 2)).
    fixed = contrast_weights(L_IMAGE[None, None], 4, sigma2=2.0)
    assert float(fixed.maps[0][0, 0, 1]) == pytest.approx(math.exp(-0.25))
    per_image = contrast_weights(
        torch.stack([L_IMAGE[None], L_IMAGE[None]]), 4, sigma2=torch.tensor([2.0, 0.5])
    )
    assert float(per_image.maps[0][1, 0, 1]) == pytest.approx(math.exp(-1.0))
    # A constant image has sigma^2 = 0: the floor makes every weight 1 / ||p - q||, not NaN.
    flat = contrast_weights(torch.full((1, 3, 4, 4), 0.3), 8)
    for offset, wmap in zip(flat.offsets, flat.maps):
        torch.testing.assert_close(wmap, torch.full_like(wmap, 1 / math.hypot(*offset)))


def test_potts_energy_by_hand():
    weights = contrast_weights(L_IMAGE[None, None], 8)
    labels = (L_IMAGE > 0.5).long()
    # The boundary pairs are the labelling's cut: 2 horizontal, 2 vertical, 3 + 2 diagonal.
    cross = math.exp(-1 / 0.9)
    expected = cross * (4 + 5 / math.sqrt(2))
    assert float(potts_energy(labels, weights)) == pytest.approx(expected, rel=1e-12)
    # Plain Potts, labels 0 1 2 by column: each row has 2 cut horizontal pairs (6 in all), no
    # vertical one; every diagonal pair changes column (4 + 4 of them, weight 1/sqrt 2).
    plain = contrast_weights(L_IMAGE[None, None], 8, contrast=False)
    columns = torch.arange(3).expand(3, 3)
    assert float(potts_energy(columns, plain)) == pytest.approx(6 + 8 / math.sqrt(2))
    assert float(potts_energy(torch.zeros(3, 3, dtype=torch.long), plain)) == 0.0


@pytest.mark.parametrize("neighbourhood", [4, 8])
def test_edge_list_matches_maps_degree_and_energy(neighbourhood):
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    weights = contrast_weights(images, neighbourhood)
    for index in range(2):
        edges, values = edge_list(weights, index)
        assert edges.shape == (sum(m[0].numel() for m in weights.maps), 2)
        assert torch.all(edges[:, 0] < edges[:, 1])
        assert len({tuple(e) for e in edges.tolist()}) == edges.shape[0]  # each pair once
        # Every edge joins p and p + offset, and carries the map entry at p.
        pr, pc = edges[:, 0] // 5, edges[:, 0] % 5
        qr, qc = edges[:, 1] // 5, edges[:, 1] % 5
        table = {}
        for offset, wmap in zip(weights.offsets, weights.maps):
            dy, dx = offset
            for r in range(wmap.shape[1]):
                for c in range(wmap.shape[2]):
                    col = c if dx >= 0 else c - dx
                    table[(r, col, dy, dx)] = float(wmap[index, r, c])
        for e in range(edges.shape[0]):
            key = (int(pr[e]), int(pc[e]), int(qr[e] - pr[e]), int(qc[e] - pc[e]))
            assert key[2:] in weights.offsets
            assert float(values[e]) == table[key]
        # Degree = total weight per pixel, from the edge list.
        degree = torch.zeros(20, dtype=torch.float64)
        degree.index_add_(0, edges[:, 0], values).index_add_(0, edges[:, 1], values)
        torch.testing.assert_close(weights.degree()[index].reshape(-1), degree)
    labels = torch.randint(0, 3, (2, 4, 5), generator=gen)
    energies = potts_energy(labels, weights)
    for index in range(2):
        assert float(energies[index]) == pytest.approx(brute_potts(labels[index], weights, index))


def test_sub_batch_and_scaling():
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(3, 1, 5, 5, generator=gen)
    weights = contrast_weights(images, 8)
    single = contrast_weights(images[1:2], 8)
    for a, b in zip(weights[1].maps, single.maps):
        torch.testing.assert_close(a, b)
    assert weights[torch.tensor([0, 2])].batch_size == 2
    for a, b in zip(weights.scaled(2.5).maps, weights.maps):
        torch.testing.assert_close(a, 2.5 * b)


def test_bad_input():
    good = torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match="neighbourhood must be 4 or 8"):
        contrast_weights(good, 6)
    with pytest.raises(ValueError, match="images must contain only finite"):
        contrast_weights(torch.full((1, 3, 4, 4), float("nan")), 8)
    with pytest.raises(TypeError, match="images must have a floating-point dtype"):
        contrast_weights(torch.zeros(1, 3, 4, 4, dtype=torch.long), 8)
    with pytest.raises(ValueError, match=r"images must have shape \(B, C, H, W\)"):
        contrast_weights(torch.rand(4, 4), 8)
    with pytest.raises(ValueError, match="at least 2x2"):
        contrast_weights(torch.rand(1, 3, 1, 4), 8)
    with pytest.raises(ValueError, match="sigma2 must be > 0"):
        contrast_weights(good, 8, sigma2=0.0)
    with pytest.raises(ValueError, match="sigma2 must be > 0"):
        contrast_weights(good, 8, sigma2=torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="sigma2 must be a scalar or have shape"):
        contrast_weights(good, 8, sigma2=torch.ones(2))
    with pytest.raises(ValueError, match="labels must have shape"):
        potts_energy(torch.zeros(1, 4, 5, dtype=torch.long), contrast_weights(good, 8))
