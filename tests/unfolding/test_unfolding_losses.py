"""log-cosh: finite for huge residuals, gradient tanh, gradcheck, small-residual limit."""

import math

import pytest
import torch

from beyondgd.unfolding import LogCoshLoss, get_loss, log_cosh_loss


def test_finite_for_huge_residuals_in_float32():
    x = torch.tensor([1e4, -1e4, 3e38], requires_grad=True)
    loss = log_cosh_loss(x, torch.zeros(3), reduction="none")
    assert torch.isfinite(loss).all()
    assert float(loss[0].detach()) == pytest.approx(1e4 - math.log(2), rel=1e-6)
    loss.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1.0, -1.0, 1.0]))
    naive = torch.log(torch.cosh(torch.tensor(1e4)))
    assert not torch.isfinite(naive)  # what the stable form avoids


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradient_is_tanh(dtype):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(200, generator=gen, dtype=dtype) * 5).requires_grad_(True)
    t = torch.randn(200, generator=gen, dtype=dtype)
    log_cosh_loss(x, t, reduction="sum").backward()
    torch.testing.assert_close(x.grad, torch.tanh(x.detach() - t))
    exact = torch.log(torch.cosh((x.detach() - t).double())).to(dtype)
    torch.testing.assert_close(log_cosh_loss(x.detach(), t, reduction="none"), exact)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.randn(7, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(log_cosh_loss, (x, t))
    assert torch.autograd.gradgradcheck(log_cosh_loss, (x, t))


def test_small_residuals_are_half_the_squared_error_and_reductions():
    d = torch.full((10,), 1e-3, dtype=torch.float64)
    assert float(log_cosh_loss(d, torch.zeros(10, dtype=torch.float64))) == pytest.approx(
        0.5e-6, rel=1e-5
    )
    x, t = torch.randn(4, 5), torch.randn(4, 5)
    torch.testing.assert_close(LogCoshLoss("sum")(x, t), log_cosh_loss(x, t).mul(20))
    assert get_loss("log-cosh") is log_cosh_loss
    with pytest.raises(ValueError, match="same shape"):
        log_cosh_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss("l1")
