"""FUSE argument validation: one test per rule, each error names the argument."""

from __future__ import annotations

import math

import pytest
import torch

from beyondgd.optim import FUSE, AfterEpochs


def param():
    return torch.zeros(2, requires_grad=True)


def quadratic_closure(x):
    def closure():
        x.grad = None
        loss = (x**2).sum()
        loss.backward()
        return loss.detach()

    return closure


@pytest.mark.parametrize("lr", [-1e-3, math.nan, math.inf])
def test_lr_negative_or_non_finite(lr):
    with pytest.raises(ValueError, match="lr"):
        FUSE([param()], lr=lr)


@pytest.mark.parametrize("betas", [(1.0, 0.999), (0.9, 1.0), (-0.1, 0.9), (0.9, 1.5)])
def test_betas_outside_unit_interval(betas):
    with pytest.raises(ValueError, match="betas"):
        FUSE([param()], betas=betas)


def test_betas_not_a_pair():
    with pytest.raises(TypeError, match="betas"):
        FUSE([param()], betas=0.9)


@pytest.mark.parametrize("eps", [0.0, -1e-8])
def test_eps_not_positive(eps):
    with pytest.raises(ValueError, match="eps"):
        FUSE([param()], eps=eps)


def test_weight_decay_negative():
    with pytest.raises(ValueError, match="weight_decay"):
        FUSE([param()], weight_decay=-0.1)


@pytest.mark.parametrize("history_size", [0, -3])
def test_history_size_below_one(history_size):
    with pytest.raises(ValueError, match="history_size"):
        FUSE([param()], history_size=history_size)


def test_history_size_not_int():
    with pytest.raises(TypeError, match="history_size"):
        FUSE([param()], history_size=2.5)


def test_max_iter_below_one():
    with pytest.raises(ValueError, match="max_iter"):
        FUSE([param()], max_iter=0)


def test_max_eval_below_one():
    with pytest.raises(ValueError, match="max_eval"):
        FUSE([param()], max_eval=0)


def test_unknown_lbfgs_mode():
    with pytest.raises(ValueError, match="lbfgs_mode"):
        FUSE([param()], lbfgs_mode="stochastic")


def test_unknown_line_search():
    with pytest.raises(ValueError, match="line_search"):
        FUSE([param()], line_search="backtracking")


def test_lbfgs_lr_not_positive():
    with pytest.raises(ValueError, match="lbfgs_lr"):
        FUSE([param()], lbfgs_lr=0.0)


def test_unknown_switch_string():
    with pytest.raises(ValueError, match="switch"):
        FUSE([param()], switch="plateau")


def test_switch_of_wrong_type():
    with pytest.raises(TypeError, match="switch"):
        FUSE([param()], switch=5)


@pytest.mark.parametrize("theta", [1.5, -0.1, math.nan])
def test_theta_outside_unit_interval(theta):
    with pytest.raises(ValueError, match="theta"):
        FUSE([param()], theta=theta)


def test_theta_schedule_value_checked_at_step():
    x = param()
    opt = FUSE([x], theta=lambda k: 2.0)
    with pytest.raises(ValueError, match="theta"):
        opt.step(quadratic_closure(x))


def test_theta_together_with_switch():
    with pytest.raises(ValueError, match="theta"):
        FUSE([param()], theta=0.5, switch=AfterEpochs(1))


def test_params_without_requires_grad():
    with pytest.raises(ValueError, match="params"):
        FUSE([torch.zeros(2), torch.ones(3)])


def test_params_empty_or_single_tensor():
    with pytest.raises(ValueError, match="params"):
        FUSE([])
    with pytest.raises(TypeError, match="params"):
        FUSE(param())


def test_params_complex_dtype():
    with pytest.raises(TypeError, match="params"):
        FUSE([param(), torch.zeros(2, dtype=torch.complex64, requires_grad=True)])


def test_lbfgs_step_without_closure():
    x = param()
    opt = FUSE([x], switch=AfterEpochs(0))
    x.grad = torch.ones(2)
    with pytest.raises(ValueError, match="closure"):
        opt.step()


def test_blend_step_without_closure():
    x = param()
    opt = FUSE([x], theta=0.5)
    x.grad = torch.ones(2)
    with pytest.raises(ValueError, match="closure"):
        opt.step()


def test_closure_not_callable():
    with pytest.raises(TypeError, match="closure"):
        FUSE([param()]).step(closure=1.0)


@pytest.mark.parametrize("steps_per_epoch", [0, -1])
def test_steps_per_epoch_below_one(steps_per_epoch):
    with pytest.raises(ValueError, match="steps_per_epoch"):
        FUSE([param()], steps_per_epoch=steps_per_epoch)


def test_end_epoch_only_with_manual_epochs():
    with pytest.raises(RuntimeError, match="steps_per_epoch"):
        FUSE([param()], steps_per_epoch=2).end_epoch()


def test_max_failures_below_one():
    with pytest.raises(ValueError, match="max_failures"):
        FUSE([param()], max_failures=0)


def test_tolerances_negative():
    with pytest.raises(ValueError, match="tolerance_grad"):
        FUSE([param()], tolerance_grad=-1.0)
    with pytest.raises(ValueError, match="tolerance_change"):
        FUSE([param()], tolerance_change=-1.0)


def test_callbacks_must_be_callable():
    with pytest.raises(TypeError, match="on_switch"):
        FUSE([param()], on_switch=[print, 3])
    with pytest.raises(TypeError, match="fn"):
        FUSE([param()]).add_switch_callback("print")


def test_reuse_last_eval_not_bool():
    with pytest.raises(TypeError, match="reuse_last_eval"):
        FUSE([param()], reuse_last_eval=1)


def test_max_ls_below_one():
    with pytest.raises(ValueError, match="max_ls"):
        FUSE([param()], max_ls=0)
