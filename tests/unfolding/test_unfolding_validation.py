"""Bad input fails early with an error that names the argument."""

import pytest
import torch

from beyondgd.unfolding import DECONET, GaussianCS, MatrixOperator


@pytest.fixture
def op():
    return GaussianCS(8, 20, seed=0)


def test_measurement_shape_must_match_the_operator(op):
    net = DECONET(op, redundancy=1, layers=2)
    with pytest.raises(ValueError, match=r"y must have shape \(batch, 8\).*m = 8.*got \(4, 9\)"):
        net(torch.zeros(4, 9))
    with pytest.raises(ValueError, match=r"x0 must have shape \(4, 20\)"):
        net(torch.zeros(4, 8), x0=torch.zeros(4, 21))
    with pytest.raises(ValueError, match=r"duals.z1 must have shape \(4, 20\)"):
        net(torch.zeros(4, 8), duals=(torch.zeros(4, 3), torch.zeros(4, 8)))
    with pytest.raises(TypeError, match="y must be a torch.Tensor"):
        net([0.0] * 8)
    with pytest.raises(ValueError, match=r"analysis must have shape \(N, 20\)"):
        DECONET(op, analysis=torch.zeros(30, 19))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"redundancy": 0.5}, "redundancy must be >= 1"),
        ({"layers": 0}, "layers must be >= 1"),
        ({"mu": -1.0}, "mu must be > 0"),
        ({"mu": 0.0}, "mu must be > 0"),
        ({"a": 0.0}, "a must be > 0"),
        ({"eps": -1e-3}, "eps must be >= 0"),
        ({"mu": 2000.0}, "lipschitz must be > 2000"),
        ({"clamp": (1.0, 0.0)}, r"clamp\[1\] must be > 1.0"),
    ],
)
def test_bad_network_arguments(op, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DECONET(op, **kwargs)


def test_operator_type_and_layer_type_errors(op):
    with pytest.raises(TypeError, match="operator must be a beyondgd.unfolding.LinearOperator"):
        DECONET(torch.zeros(8, 20))
    with pytest.raises(TypeError, match="layers must be an integer"):
        DECONET(op, layers=2.5)
    assert DECONET(MatrixOperator(torch.ones(2, 3)), redundancy=1).W.shape == (3, 3)
