"""Switch criteria: each rule fires exactly where it says, on observation sequences and in FUSE."""

from __future__ import annotations

import math

import pytest
import torch

from beyondgd.optim import (
    FUSE,
    AfterEpochs,
    CallableCriterion,
    GradNormBelow,
    LossBelow,
    LossPlateau,
    SwitchCriterion,
    SwitchObservation,
    paper_code_criterion,
)

# ----------------------------------------------------------------------------- helpers


def observations(losses=None, grads=None, steps_per_epoch=1):
    """Observations as FUSE builds them with automatic epochs."""
    n = len(losses if losses is not None else grads)
    out = []
    for k in range(n):
        epoch_end = (k + 1) % steps_per_epoch == 0
        out.append(
            SwitchObservation(
                step=k,
                epoch=(k + 1) // steps_per_epoch,
                loss=math.nan if losses is None else float(losses[k]),
                grad_norm=math.nan if grads is None else float(grads[k]),
                epoch_end=epoch_end,
            )
        )
    return out


def decisions(criterion, obs_list):
    return [bool(criterion(o)) for o in obs_list]


def first_switch(criterion, obs_list):
    """switch_step FUSE would report: the observation after step k decides step k + 1."""
    for obs in obs_list:
        if criterion(obs):
            return obs.step + 1
    return None


def scripted_fuse(losses, grads, **kwargs):
    """FUSE on one parameter whose closure returns scripted values keyed by the step index.

    The values do not depend on x, so L-BFGS steps make no progress (failed line searches), but
    the observation stream is exactly the script: that isolates the switching logic. The loss
    changes between steps, so the L-BFGS mode is "minibatch" (as in the authors' code).
    """
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = FUSE([x], lr=1e-3, max_iter=1, max_eval=3, lbfgs_mode="minibatch", **kwargs)

    def closure():
        k = opt.n_steps
        x.grad = torch.tensor([grads[k]], dtype=torch.float64)
        return torch.tensor(losses[k], dtype=torch.float64)

    return opt, closure


def run_phases(opt, closure, n):
    phases = []
    for _ in range(n):
        phases.append(opt.phase)
        opt.step(closure)
    return phases


# ----------------------------------------------------------------------------- observation level


def test_after_epochs_fires_when_epoch_counter_reaches_n():
    crit = AfterEpochs(3)
    obs = observations(losses=[1.0] * 12, steps_per_epoch=2)
    # epoch counter reaches 3 after step 5 (end of the third epoch) -> L-BFGS from step 6
    assert first_switch(crit, obs) == 6
    assert AfterEpochs(0).at_start() and not AfterEpochs(1).at_start()
    # shared options are accepted; patience delays the rule by whole checks
    assert first_switch(AfterEpochs(3, patience=2), obs) == 7
    assert not AfterEpochs(0, patience=2).at_start()


def test_grad_norm_below_relative_uses_first_value():
    crit = GradNormBelow(0.1, relative=True, smoothing="none")
    # reference 10 -> threshold 1.0; 1.0 <= 1.0 holds at step 3
    assert first_switch(crit, observations(grads=[10.0, 5.0, 1.5, 1.0, 0.5])) == 4


def test_grad_norm_below_absolute():
    crit = GradNormBelow(0.5, relative=False, smoothing="none")
    assert first_switch(crit, observations(grads=[10.0, 0.6, 0.5, 0.1])) == 3


def test_loss_below_is_strict():
    crit = LossBelow(0.5, smoothing="none")
    assert decisions(crit, observations(losses=[1.0, 0.5, 0.49])) == [False, False, True]


def test_loss_plateau_needs_patience_consecutive_small_decreases():
    crit = LossPlateau(rel_change=0.01, patience=2, smoothing="none")
    losses = [1.0, 0.5, 0.25, 0.249, 0.1, 0.0999, 0.0998, 0.0997]
    # rel. decreases: -, .5, .5, .004, .6, .001, .001 -> two in a row first at step 6
    assert first_switch(crit, observations(losses=losses)) == 7


def test_loss_plateau_counts_increase_as_plateau():
    crit = LossPlateau(rel_change=1e-3, patience=1, smoothing="none")
    assert first_switch(crit, observations(losses=[1.0, 0.5, 0.6])) == 3


def test_epoch_smoothing_decides_only_at_epoch_ends_on_the_mean():
    crit = LossBelow(1.0, smoothing="epoch")
    # epochs of 3 steps: means 2.0, (0.5+0.5+2.5)/3 = 1.17, (0.9+0.9+0.9) = 0.9
    losses = [2.0, 2.0, 2.0, 0.5, 0.5, 2.5, 0.9, 0.9, 0.9]
    obs = observations(losses=losses, steps_per_epoch=3)
    assert decisions(crit, obs) == [False] * 8 + [True]
    # the "none" smoothing would have fired on the first 0.5
    assert first_switch(LossBelow(1.0, smoothing="none"), obs) == 4


def test_ema_smoothing():
    crit = LossBelow(0.3, smoothing="ema", ema_decay=0.5)
    # EMA: 1, 0.5, 0.25 -> below 0.3 at step 2
    assert first_switch(crit, observations(losses=[1.0, 0.0, 0.0, 0.0])) == 3


def test_smoothing_ignores_non_finite_values():
    crit = LossBelow(1.0, smoothing="epoch")
    obs = observations(losses=[0.5, math.nan, 0.5], steps_per_epoch=3)
    assert decisions(crit, obs) == [False, False, True]


def test_warmup_blocks_firing_until_enough_epochs():
    crit = LossBelow(0.5, smoothing="none", warmup=2)
    obs = observations(losses=[0.1] * 8, steps_per_epoch=2)
    # epoch counter is 2 after step 3
    assert first_switch(crit, obs) == 4


def test_patience():
    crit = GradNormBelow(1.0, relative=False, smoothing="none", patience=3)
    grads = [0.5, 0.5, 2.0, 0.5, 0.5, 0.5, 0.5]
    assert first_switch(crit, observations(grads=grads)) == 6


def test_latch_vs_no_latch_on_observations():
    grads = [2.0, 0.1, 2.0, 0.1]
    latched = GradNormBelow(1.0, relative=False, smoothing="none")
    free = GradNormBelow(1.0, relative=False, smoothing="none", latch=False)
    assert decisions(latched, observations(grads=grads)) == [False, True, True, True]
    assert decisions(free, observations(grads=grads)) == [False, True, False, True]


def test_callable_criterion_and_custom_subclass():
    crit = CallableCriterion(lambda o: o.loss < 1.0, warmup=2)
    obs = observations(losses=[0.5, 0.5, 0.5])
    assert decisions(crit, obs) == [False, True, True]  # obs.epoch is k + 1 after step k

    class EveryOther(SwitchCriterion):
        def condition(self, loss, grad_norm, obs):
            return obs.step % 2 == 1

    assert decisions(EveryOther(smoothing="none", latch=False), obs) == [False, True, False]


def test_paper_code_gradient_rechecks_absolute_threshold_every_batch():
    crit = paper_code_criterion("gradient")
    spe = 2
    grads = [0.1] * 5 + [0.1, 0.6, 0.5, 0.7, 0.2]  # steps 0-5: epochs 0-2 (warm-up)
    out = decisions(crit, observations(grads=grads, steps_per_epoch=spe))
    # steps 0-4: warm-up (epoch counter < 3) even though 0.1 <= 0.5;
    # after step 5 the counter is 3: 0.1 -> L-BFGS; then re-checked each batch, "<=" inclusive
    assert out == [False] * 5 + [True, False, True, False, True]


def test_paper_code_loss_threshold_is_strict_two():
    crit = paper_code_criterion("loss")
    losses = [0.1] * 6 + [1.9, 2.0, 1.99, 2.5]
    out = decisions(crit, observations(losses=losses, steps_per_epoch=2))
    assert out == [False] * 5 + [True, True, False, True, False]


def test_paper_code_epoch_is_after_five_epochs():
    crit = paper_code_criterion("epoch")
    assert isinstance(crit, AfterEpochs) and crit.n == 5
    with pytest.raises(ValueError, match="kind"):
        paper_code_criterion("plateau")


def test_criterion_state_dict_round_trip_and_reset():
    crit = LossPlateau(rel_change=0.01, patience=3, smoothing="ema")
    obs = observations(losses=[1.0, 0.9, 0.89, 0.889, 0.8889])
    for o in obs[:3]:
        crit(o)
    clone = LossPlateau(rel_change=0.01, patience=3, smoothing="ema")
    clone.load_state_dict(crit.state_dict())
    assert decisions(clone, obs[3:]) == decisions(crit, obs[3:])
    crit.reset()
    assert crit.state_dict() == LossPlateau(0.01, 3, smoothing="ema").state_dict()
    with pytest.raises(ValueError, match="LossBelow"):
        LossBelow(1.0).load_state_dict(clone.state_dict())


def test_criterion_option_validation():
    with pytest.raises(ValueError, match="warmup"):
        LossBelow(1.0, warmup=-1)
    with pytest.raises(ValueError, match="patience"):
        LossBelow(1.0, patience=0)
    with pytest.raises(ValueError, match="smoothing"):
        LossBelow(1.0, smoothing="mean")
    with pytest.raises(ValueError, match="ema_decay"):
        LossBelow(1.0, smoothing="ema", ema_decay=1.0)
    with pytest.raises(ValueError, match="tau"):
        GradNormBelow(0.0)
    with pytest.raises(ValueError, match="n"):
        AfterEpochs(-1)
    with pytest.raises(TypeError, match="fn"):
        CallableCriterion(3)
    with pytest.raises(TypeError, match="latch"):
        LossBelow(1.0, latch="yes")


# ----------------------------------------------------------------------------- inside FUSE


def quadratic_param():
    x = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)

    def closure():
        x.grad = None
        loss = 0.5 * (x**2).sum()
        loss.backward()
        return loss

    return x, closure


def test_fuse_after_epochs_switch_step_and_phase_sequence():
    x, closure = quadratic_param()
    seen = []
    opt = FUSE([x], lr=0.1, switch=AfterEpochs(5), on_switch=lambda o, a, b: seen.append((a, b)))
    phases = run_phases(opt, closure, 8)
    assert phases == ["adam"] * 5 + ["lbfgs"] * 3
    assert opt.switch_step == 5 and opt.switch_history == [(5, "adam", "lbfgs")]
    assert seen == [("adam", "lbfgs")]
    assert opt.epoch == 8


def test_fuse_after_epochs_with_steps_per_epoch():
    x, closure = quadratic_param()
    opt = FUSE([x], lr=0.1, switch=AfterEpochs(2), steps_per_epoch=3)
    phases = run_phases(opt, closure, 8)
    assert opt.switch_step == 6 and phases.index("lbfgs") == 6


def test_fuse_manual_epochs_switch_after_end_epoch():
    x, closure = quadratic_param()
    opt = FUSE([x], lr=0.1, switch=AfterEpochs(2), steps_per_epoch=None)
    for _ in range(3):
        opt.step(closure)
    opt.end_epoch()
    assert opt.phase == "adam" and opt.epoch == 1
    for _ in range(2):
        opt.step(closure)
    opt.end_epoch()
    # the switch is decided at end_epoch(), effective for the next step (index 5)
    assert opt.phase == "lbfgs" and opt.switch_step == 5
    opt.step(closure)
    assert opt.n_lbfgs_iters >= 1


def test_fuse_after_zero_epochs_starts_in_lbfgs():
    x, closure = quadratic_param()
    opt = FUSE([x], switch=AfterEpochs(0))
    assert opt.phase == "adam"  # decided when step 0 starts
    opt.step(closure)
    assert opt.switch_step == 0 and opt.n_lbfgs_iters == 1


def test_fuse_grad_norm_switch_matches_adam_reference_trajectory():
    # Reference: the gradient norms torch.optim.Adam sees on 0.5 ||x||^2 (gradient = x).
    x_ref = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([x_ref], lr=0.1)
    norms = []
    for _ in range(40):
        adam.zero_grad()
        (0.5 * (x_ref**2).sum()).backward()
        norms.append(float(x_ref.grad.norm()))
        adam.step()
    expected = next(k for k, g in enumerate(norms) if g <= 0.3 * norms[0]) + 1

    x, closure = quadratic_param()
    opt = FUSE([x], lr=0.1, switch=GradNormBelow(0.3, smoothing="none"))
    for _ in range(expected + 1):
        opt.step(closure)
    assert opt.switch_step == expected
    assert 3 < expected < 40


@pytest.mark.parametrize("latch", [True, False])
def test_fuse_latch_versus_switch_back(latch):
    x, closure = quadratic_param()
    crit = CallableCriterion(lambda o: o.step in (2, 3), latch=latch)
    opt = FUSE([x], lr=0.1, switch=crit)
    phases = run_phases(opt, closure, 8)
    if latch:
        assert phases == ["adam"] * 3 + ["lbfgs"] * 5
        assert opt.switch_history == [(3, "adam", "lbfgs")]
    else:
        assert phases == ["adam"] * 3 + ["lbfgs"] * 2 + ["adam"] * 3
        assert opt.switch_history == [(3, "adam", "lbfgs"), (5, "lbfgs", "adam")]
    assert opt.switch_step == 3


def test_fuse_paper_code_gradient_mode_switches_back_and_forth():
    grads = [0.1] * 6 + [0.1, 0.7, 0.3, 0.3, 0.9, 0.9]
    losses = [1.0] * len(grads)
    opt, closure = scripted_fuse(losses, grads, switch="gradient", steps_per_epoch=2)
    phases = run_phases(opt, closure, len(grads))
    # epochs 0-2 (steps 0-5) Adam; from step 6 the last batch's norm decides the next step
    assert phases == ["adam"] * 6 + ["lbfgs", "lbfgs", "adam", "lbfgs", "lbfgs", "adam"]
    assert [h[0] for h in opt.switch_history] == [6, 8, 9, 11]
    assert opt.switch_step == 9


def test_fuse_paper_code_loss_mode():
    losses = [1.0] * 6 + [1.5, 2.0, 2.5, 1.0]
    grads = [1.0] * len(losses)
    opt, closure = scripted_fuse(losses, grads, switch="loss", steps_per_epoch=2)
    phases = run_phases(opt, closure, len(losses))
    assert phases == ["adam"] * 6 + ["lbfgs", "lbfgs", "adam", "adam"]


def test_fuse_loss_plateau_and_loss_below_in_fuse():
    losses = [4.0, 2.0, 1.0, 0.999, 0.998, 0.997, 0.5, 0.5]
    grads = [1.0] * len(losses)
    opt, closure = scripted_fuse(losses, grads, switch=LossPlateau(0.01, 2, smoothing="none"))
    run_phases(opt, closure, 6)
    assert opt.switch_step == 5
    opt, closure = scripted_fuse(losses, grads, switch=LossBelow(0.9985, smoothing="none"))
    run_phases(opt, closure, 6)
    assert opt.switch_step == 5


def test_fuse_plain_callable_and_string_switch():
    x, closure = quadratic_param()
    opt = FUSE([x], switch=lambda o: o.step >= 1)
    assert isinstance(opt.criterion, CallableCriterion)
    run_phases(opt, closure, 3)
    assert opt.switch_step == 2
    assert isinstance(FUSE([x], switch="epoch").criterion, AfterEpochs)
    assert isinstance(FUSE([x]).criterion, AfterEpochs) and FUSE([x]).criterion.n == 5


def test_add_switch_callback_called_with_optimizer_and_phases():
    x, closure = quadratic_param()
    calls = []
    opt = FUSE([x], switch=AfterEpochs(1), on_switch=[lambda o, a, b: calls.append("first")])
    opt.add_switch_callback(lambda o, a, b: calls.append((o is opt, a, b, o.n_steps)))
    run_phases(opt, closure, 3)
    assert calls == ["first", (True, "adam", "lbfgs", 1)]
