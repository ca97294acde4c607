"""The shared pCE / GD / ADM training loop: determinism, resume, ADM's energy advantage, and the
bad-input rules."""

import copy

import pytest
import torch
from torch import nn

from beyondgd.data.scenes import SegmentationData, make_scribbles, make_texture_scenes
from beyondgd.segmentation import SegmentationTrainer, SegNet, predict

pytest.importorskip("gco")

SCHEDULES = [("batch", False), ("cached", False), ("batch", True)]  # ADM (schedule, overlap)
# and with warm starts: 16 images in batches of 4, so steps 5-6 start from step 1-2's proposals
SCHEDULES_RESUME = [(*s, False) for s in SCHEDULES] + [("batch", False, True)]


@pytest.fixture(scope="module")
def tiny():
    train = make_texture_scenes(16, size=24, n_classes=3, seed=0)
    train = train.with_scribbles(make_scribbles(train.masks, seed=0))
    test = make_texture_scenes(8, size=24, n_classes=3, seed=1)
    return train, test


def _model(seed=0, k=3):
    torch.manual_seed(seed)
    return SegNet(3, k, width=4)


def _numbers(result):
    return [{k: v for k, v in rec.items() if not k.endswith("seconds")} for rec in result.history]


@pytest.mark.parametrize("method", ["pce", "gd", "adm"])
def test_training_is_deterministic_under_a_seed(tiny, method):
    train, test = tiny
    runs = [
        SegmentationTrainer(
            _model(), method=method, lam=3.0, steps=4, batch_size=4, eval_every=2, seed=1
        ).fit(train, test)
        for _ in range(2)
    ]
    assert _numbers(runs[0]) == _numbers(runs[1])
    assert [r["step"] for r in runs[0].history] == [2, 4]
    assert runs[0].samples == 16 and not runs[0].diverged
    rec = runs[0].final
    assert 0.0 <= rec["test_miou"] <= 1.0 and 0.0 <= rec["train_seed_accuracy"] <= 1.0
    assert rec["train_energy_discrete"] == pytest.approx(
        rec["train_pce"] + 3.0 * rec["train_potts_hard"]
    )
    if method == "adm":
        assert runs[0].xstep_seconds > 0


@pytest.mark.parametrize("schedule, overlap, warm_start", [*SCHEDULES_RESUME])
def test_a_killed_run_resumes_to_the_same_numbers(tiny, tmp_path, schedule, overlap, warm_start):
    train, _ = tiny
    kwargs = dict(
        warm_start=warm_start,
        method="adm",
        lam=3.0,
        steps=6,
        batch_size=4,
        eval_every=3,
        checkpoint_every=2,
        schedule=schedule,
        overlap=overlap,
        refresh_every=3,
        seed=0,
    )
    full = SegmentationTrainer(_model(), **kwargs).fit(train)

    def kill(record):
        raise KeyboardInterrupt  # dies at the first evaluation (step 3), after the step-2 save

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        SegmentationTrainer(_model(), checkpoint=ckpt, **kwargs).fit(train, callback=kill)
    assert torch.load(ckpt, weights_only=True)["step"] == 2
    resumed = SegmentationTrainer(_model(seed=5), checkpoint=ckpt, **kwargs).fit(train, resume=True)
    assert _numbers(resumed) == _numbers(full)
    changed = dict(kwargs, lam=1.0)
    with pytest.raises(ValueError, match="settings"):
        SegmentationTrainer(_model(), checkpoint=ckpt, **changed).fit(train, resume=True)


def test_adm_lowers_the_discrete_energy_below_gd_at_the_same_budget():
    # Measured on seeds 0-2 of this setting: GD 1.31-1.40, ADM 0.71-0.92.
    train = make_texture_scenes(24, size=32, n_classes=3, seed=0)
    train = train.with_scribbles(make_scribbles(train.masks, seed=0))
    torch.manual_seed(0)
    pre = SegNet(3, 3, width=8)
    SegmentationTrainer(pre, method="pce", steps=60, batch_size=8, lr=3e-3).fit(train)
    energies = {}
    for method in ("gd", "adm"):
        model = copy.deepcopy(pre)
        result = SegmentationTrainer(
            model, method=method, lam=10.0, steps=40, batch_size=8, lr=3e-3, seed=0
        ).fit(train)
        energies[method] = result.final["train_energy_discrete"]
    assert energies["adm"] < 0.8 * energies["gd"], energies


def test_label_restriction_and_dense_regularizer_run(tiny):
    train, _ = tiny
    r = SegmentationTrainer(
        _model(), method="adm", lam=3.0, steps=2, batch_size=4, restrict_labels=True
    ).fit(train)
    assert r.steps == 2
    r = SegmentationTrainer(
        _model(), method="gd", regularizer="dense", lam=1.0, steps=2, batch_size=4
    ).fit(train)
    assert r.steps == 2 and not r.diverged


class _NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.w * torch.full((x.shape[0], 3, *x.shape[-2:]), float("nan"))


@pytest.mark.parametrize("schedule, overlap", SCHEDULES)
def test_non_finite_network_output_stops_training_without_reaching_gco(tiny, schedule, overlap):
    train, _ = tiny
    trainer = SegmentationTrainer(
        _NaNNet(), method="adm", lam=3.0, steps=5, batch_size=4, schedule=schedule, overlap=overlap
    )
    result = trainer.fit(train)
    assert result.diverged and result.steps == 0 and result.final["diverged"]


def test_bad_input_is_named(tiny):
    train, _ = tiny
    with pytest.raises(ValueError, match="method"):
        SegmentationTrainer(_model(), method="sgd")
    with pytest.raises(ValueError, match="lam"):
        SegmentationTrainer(_model(), lam=-1.0)
    with pytest.raises(ValueError, match="regularizer"):
        SegmentationTrainer(_model(), method="adm", regularizer="dense")
    with pytest.raises(ValueError, match="schedule"):
        SegmentationTrainer(_model(), schedule="sometimes")
    with pytest.raises(ValueError, match="overlap"):
        SegmentationTrainer(_model(), method="adm", schedule="cached", overlap=True)
    with pytest.raises(ValueError, match="^expansion_solver must be one of"):
        SegmentationTrainer(_model(), expansion_solver="maxflow")
    with pytest.raises(TypeError, match="model"):
        SegmentationTrainer("net")
    with pytest.raises(ValueError, match="K = 2"):  # scribble labels >= K
        SegmentationTrainer(_model(k=2), steps=1).fit(train)
    no_seeds = train.subset([0, 1]).with_scribbles(torch.full((2, 24, 24), 255))
    with pytest.raises(ValueError, match="no labelled pixel"):
        SegmentationTrainer(_model(), steps=1).fit(no_seeds)
    with pytest.raises(ValueError, match="scribbles"):
        SegmentationTrainer(_model(), steps=1).fit(train.subset([0]).with_scribbles(None))
    with pytest.raises(ValueError):  # image and scribble sizes differ
        SegmentationData(
            train.images[:2], train.masks[:2], torch.zeros(2, 12, 12).long(), train.class_names
        )


def test_both_solvers_train_alike_and_only_gco_opens_worker_processes(tiny, monkeypatch):
    # The numba solver runs n_jobs images in threads; GCO in a pool of processes. Same moves,
    # so the same numbers (no ties on these problems).
    pytest.importorskip("numba")
    from beyondgd.segmentation import training

    train, _ = tiny
    from beyondgd.segmentation import proposals

    opened = []

    class SpyPool(proposals.ExpansionPool):
        def __init__(self, n_jobs, **kwargs):
            opened.append(n_jobs)
            super().__init__(n_jobs, **kwargs)

    monkeypatch.setattr(training, "ExpansionPool", SpyPool)  # the trainer's pool
    monkeypatch.setattr(proposals, "ExpansionPool", SpyPool)  # or one opened per call
    runs = {}
    for solver in ("numba", "gco"):
        trainer = SegmentationTrainer(
            _model(), method="adm", lam=3.0, steps=3, batch_size=4, n_jobs=2, seed=0,
            expansion_solver=solver,
        )  # fmt: skip
        runs[solver] = trainer.fit(train)
        assert trainer.settings()["expansion_solver"] == solver
    assert opened == [2]  # GCO's pool only
    assert _numbers(runs["numba"]) == _numbers(runs["gco"])
    assert "expansion_solver" not in SegmentationTrainer(_model()).settings()  # "auto"


def test_predict_is_the_eval_mode_argmax(tiny):
    train, _ = tiny
    model = _model()
    labels = predict(model, train.images[:3])
    model.eval()
    assert torch.equal(labels, model(train.images[:3]).argmax(1))
    assert model.training is False  # predict restores the mode it found


def test_warm_start_starts_each_seen_image_from_its_last_proposals(tiny, monkeypatch):
    from beyondgd.segmentation import training

    train, _ = tiny
    calls = []
    real = training.alpha_expansion_batch

    def spy(unary, weights, **kw):
        result = real(unary, weights, **kw)
        calls.append((kw["init"], kw["n_iter"], result.labels))
        return result

    monkeypatch.setattr(training, "alpha_expansion_batch", spy)
    trainer = SegmentationTrainer(
        _model(), method="adm", lam=3.0, steps=8, batch_size=4, warm_start=True, seed=0
    )
    trainer.fit(train)
    # first epoch (4 batches): cold, the full cycles from the unary minimum
    assert [(init is None, n_iter) for init, n_iter, _ in calls[:4]] == [(True, 5)] * 4
    # second epoch: every image was seen, so it starts from its proposals, for one cycle
    assert [(init is None, n_iter) for init, n_iter, _ in calls[4:]] == [(False, 1)] * 4
    first = {}
    for labels in (c[2] for c in calls[:4]):
        for image in labels:
            first[image.numpy().tobytes()] = True
    for init, _, _ in calls[4:]:  # the inits are the first epoch's proposals
        assert all(image.numpy().tobytes() in first for image in init)
    assert bool((trainer._previous >= 0).all())  # every image has its last proposals


def test_warm_start_rules():
    with pytest.raises(ValueError, match="warm_start"):
        SegmentationTrainer(_model(), method="gd", warm_start=True)
    with pytest.raises(ValueError, match="warm_start"):
        SegmentationTrainer(_model(), method="adm", schedule="cached", warm_start=True)
    with pytest.raises(ValueError, match="warm_start"):
        SegmentationTrainer(_model(), method="adm", overlap=True, warm_start=True)
    with pytest.raises(TypeError, match="warm_start"):
        SegmentationTrainer(_model(), method="adm", warm_start=1)


def test_warm_start_proposals_survive_a_resume(tiny, tmp_path, monkeypatch):
    from beyondgd.segmentation import training

    train, _ = tiny
    kwargs = dict(method="adm", lam=3.0, steps=6, batch_size=4, eval_every=3, checkpoint_every=2)
    kwargs.update(warm_start=True, seed=0, checkpoint=tmp_path / "run.ckpt")

    def kill(record):
        raise KeyboardInterrupt  # at step 3, after the step-2 save

    with pytest.raises(KeyboardInterrupt):
        SegmentationTrainer(_model(), **kwargs).fit(train, callback=kill)
    inits = []
    real = training.alpha_expansion_batch

    def spy(unary, weights, **kw):
        inits.append(kw["init"] is not None)
        return real(unary, weights, **kw)

    monkeypatch.setattr(training, "alpha_expansion_batch", spy)
    SegmentationTrainer(_model(), **kwargs).fit(train, resume=True)
    # steps 3-4 finish the first epoch (cold); steps 5-6 revisit the images of steps 1-2,
    # whose proposals come from the checkpoint
    assert inits == [False, False, True, True]
