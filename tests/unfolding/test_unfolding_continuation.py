"""Continued / CDEC: stage 1 is the net, stages chain their warm starts, options behave."""

import pytest
import torch
from torch import nn

from beyondgd.unfolding import CDEC, DECONET, Continued, DualState, GaussianCS


class Spy(nn.Module):
    """Wraps a DECONET and records what each call receives and returns."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.mu = net.mu
        self.calls = []

    def forward(self, y, x0=None, duals=None, return_duals=False, **kwargs):
        x, d = self.net(y, x0=x0, duals=duals, return_duals=True, **kwargs)
        self.calls.append({"x0": x0, "duals": duals, "out": x, "out_duals": d, **kwargs})
        return (x, d) if return_duals else x


def _setup(layers=3):
    op = GaussianCS(8, 20, seed=0)
    y = op(torch.randn(5, 20, generator=torch.Generator().manual_seed(0)))
    return DECONET(op, redundancy=2, layers=layers, seed=3), y


def test_one_stage_equals_the_network_exactly():
    net, y = _setup()
    x_net, d_net = net(y, return_duals=True)
    x_c, d_c = Continued(net, stages=1)(y, return_duals=True)
    assert torch.equal(x_c, x_net)
    assert torch.equal(d_c.z1, d_net.z1) and torch.equal(d_c.z2, d_net.z2)


def test_each_stage_starts_from_the_previous_output():
    net, y = _setup()
    spy = Spy(net)
    out = Continued(spy, stages=4)(y)
    calls = spy.calls
    assert len(calls) == 4
    assert calls[0]["x0"] is None and calls[0]["duals"] is None
    for k in range(1, 4):
        assert torch.equal(calls[k]["x0"], calls[k - 1]["out"])
        assert torch.equal(calls[k]["duals"].z1, calls[k - 1]["out_duals"].z1)
        assert torch.equal(calls[k]["duals"].z2, calls[k - 1]["out_duals"].z2)
    assert torch.equal(out, calls[-1]["out"])
    # and continuation changes the answer
    assert not torch.allclose(out, net(y))


def test_cold_duals_acceleration_and_mu_schedule():
    net, y = _setup()
    spy = Spy(net)
    Continued(spy, stages=3, warm_duals=False, accelerate=True, mu_decay=0.5)(y)
    c = spy.calls
    assert all(call["duals"] is None for call in c)
    assert torch.equal(c[1]["x0"], c[0]["out"])  # (k - 1) / (k + 2) = 0 at k = 1
    x1, x2 = c[0]["out"], c[1]["out"]
    torch.testing.assert_close(c[2]["x0"], x2 + 0.25 * (x2 - x1))
    assert [call["mu"] for call in c] == [100.0, 50.0, 25.0]


def test_per_stage_weights_are_independent_copies():
    net, y = _setup()
    cont = Continued(net, stages=3, shared_weights=False)
    params = list(cont.parameters())
    assert len(params) == 3
    assert all(torch.equal(p, params[0]) for p in params)
    with torch.no_grad():
        params[1].add_(1.0)
    assert not torch.equal(params[0], params[1])
    assert len(list(Continued(net, stages=3).parameters())) == 1


def test_stagewise_training_cuts_the_graph_between_stages():
    grads = {}
    for mode in ("end-to-end", "stagewise"):
        net, y = _setup()
        cont = Continued(net, stages=3, shared_weights=False, training=mode)
        cont.train()
        cont(y).pow(2).sum().backward()
        grads[mode] = cont.nets[0].W.grad
    assert grads["end-to-end"] is not None and float(grads["end-to-end"].abs().sum()) > 0
    assert grads["stagewise"] is None  # stage 1 gets no gradient from the last stage's output
    net, y = _setup()
    cont = Continued(net, stages=3, training="stagewise")
    loss = cont.training_loss(y, torch.zeros(5, 20), torch.nn.functional.mse_loss)
    outs = cont(y, return_stages=True)
    expected = sum(torch.nn.functional.mse_loss(o, torch.zeros(5, 20)) for o in outs) / 3
    torch.testing.assert_close(loss, expected)


def test_cdec_is_continued_deconet():
    net, y = _setup()
    cdec = CDEC(net.operator, redundancy=2, layers=3, seed=3, stages=3, accelerate=True)
    ref = Continued(
        DECONET(net.operator, redundancy=2, layers=3, seed=3), stages=3, accelerate=True
    )
    assert isinstance(cdec.net, DECONET) and cdec.accelerate
    assert torch.equal(cdec(y), ref(y))
    _, duals = cdec(y, return_duals=True)
    assert isinstance(duals, DualState)


def test_continued_rejects_bad_arguments():
    net, _ = _setup()
    with pytest.raises(ValueError, match="stages must be >= 1"):
        Continued(net, stages=0)
    with pytest.raises(ValueError, match="training must be one of"):
        Continued(net, training="greedy")
    with pytest.raises(TypeError, match="warm-start argument 'x0'"):
        Continued(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="lipschitz"):
        Continued(net, stages=3, mu_decay=4.0)  # mu 1600 > Lc = 1000
