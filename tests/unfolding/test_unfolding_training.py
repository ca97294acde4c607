"""Trainer: determinism, resume after a kill, early stopping, eval-mode train loss, gap."""

import pytest
import torch

from beyondgd.unfolding import DECONET, Continued, GaussianCS, Trainer, evaluate


def _data():
    op = GaussianCS(10, 24, seed=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(160, 24, generator=gen)
    y = op(x) + 1e-4 * torch.randn(160, 10, generator=gen)
    return op, (y[:96], x[:96]), (y[96:128], x[96:128]), (y[128:], x[128:])


def _model(op, continued=False):
    net = DECONET(op, redundancy=2, layers=3, seed=1)
    return Continued(net, stages=2) if continued else net


def _numbers(result):
    strip = ("train_seconds",)
    return [{k: v for k, v in h.items() if k not in strip} for h in result.history]


class Killed(Exception):
    pass


@pytest.mark.parametrize("continued", [False, True])
def test_training_is_deterministic_and_tracks_the_gap(continued):
    op, train, val, test = _data()
    runs = []
    for _ in range(2):
        model = _model(op, continued)
        res = Trainer(model, "log-cosh", lr=1e-2, batch_size=32, max_epochs=3, seed=7).fit(
            train, test=test, val=val
        )
        runs.append((res, model))
    (r1, m1), (r2, m2) = runs
    assert _numbers(r1) == _numbers(r2)
    assert all(
        torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values())
    )
    h = r1.history[-1]
    assert h["gap_mse"] == pytest.approx(h["test_mse"] - h["train_mse"])
    assert h["gap_log_cosh"] == pytest.approx(h["test_log_cosh"] - h["train_log_cosh"])
    # the train loss is re-evaluated in eval mode on the whole set with the returned weights
    assert r1.final["train_mse"] == pytest.approx(evaluate(m1, train)["mse"], rel=1e-6)
    assert r1.history[0]["train_mse"] > r1.history[-1]["train_mse"]  # it learns
    assert r1.samples == 3 * 96 and r1.images_per_second > 0


def test_killed_run_resumes_to_the_same_numbers(tmp_path):
    op, train, val, test = _data()
    settings = {"lr": 1e-2, "batch_size": 32, "max_epochs": 4, "seed": 3, "patience": None}
    straight_model = _model(op)
    straight = Trainer(straight_model, "mse", **settings).fit(train, test=test, val=val)

    ckpt = tmp_path / "run.pt"
    model = _model(op)

    def kill(record):
        if record["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        Trainer(model, "mse", checkpoint=ckpt, **settings).fit(train, test, val, callback=kill)
    assert ckpt.exists()
    fresh = _model(op)  # a new process would rebuild the model from scratch
    trained_epochs = []
    resumed = Trainer(fresh, "mse", checkpoint=ckpt, **settings).fit(
        train, test=test, val=val, resume=True, callback=lambda r: trained_epochs.append(r["epoch"])
    )
    assert trained_epochs == [3, 4]  # it continued from the checkpoint instead of restarting
    assert _numbers(resumed) == _numbers(straight)
    assert all(
        torch.equal(a, b)
        for a, b in zip(fresh.state_dict().values(), straight_model.state_dict().values())
    )
    with pytest.raises(ValueError, match="checkpoint .* was written by a trainer"):
        Trainer(_model(op), "mse", checkpoint=ckpt, **{**settings, "lr": 0.1}).fit(
            train, resume=True
        )


def test_early_stopping_restores_the_best_weights():
    op, train, val, test = _data()
    model = _model(op)
    first = {}

    def remember(record):
        if record["epoch"] == 1:
            first.update({k: v.clone() for k, v in model.state_dict().items()})

    res = Trainer(model, "mse", max_epochs=10, patience=2, min_delta=1e9, batch_size=32).fit(
        train, test=test, val=val, callback=remember
    )
    assert len(res.history) == 3 and res.stopped_early and res.best_epoch == 1
    assert res.final == res.history[0]
    assert all(torch.equal(first[k], v) for k, v in model.state_dict().items())


def test_trainer_rejects_bad_data():
    op, train, _, _ = _data()
    with pytest.raises(ValueError, match="same positive number of samples"):
        Trainer(_model(op)).fit((train[0], train[1][:5]))
    with pytest.raises(ValueError, match="train\\[0\\] \\(inputs\\) must contain only finite"):
        Trainer(_model(op)).fit((train[0] * float("nan"), train[1]))
    with pytest.raises(ValueError, match="lr must be > 0"):
        Trainer(_model(op), lr=0.0)
