"""SegmentationTrainer on 2 gloo ranks (CPU) against one process on the same data.

Tolerance: with ``SegNet(norm="group")`` every image's output is independent of the rest of
the batch, so 2 ranks compute the same function as 1 process; only the order of the float32
sums differs (each rank sums its share, then the ranks' gradients are averaged), a relative
difference of about 1e-7 per step. After a few Adam steps the recorded numbers agree to
``rtol=1e-4`` (the hard-label metrics exactly, unless a pixel sits on an argmax tie). Everything
checked on 2 ranks runs in one spawn to keep the test fast.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from beyondgd.data.scenes import make_scribbles, make_texture_scenes
from beyondgd.segmentation import SegmentationTrainer, SegNet
from beyondgd.segmentation.grid import contrast_weights

pytest.importorskip("gco")

RTOL = 1e-4
#: (method, schedule, overlap[, warm_start]): every path of the loop that differs under DDP
#: (warm starts: 10 images in batches of 5, so steps 3-4 start from steps 1-2's proposals)
RUNS = [("pce", "batch", False), ("gd", "batch", False), ("adm", "batch", False),
        ("adm", "cached", False), ("adm", "batch", True),
        ("adm", "batch", False, True)]  # fmt: skip
RESUMED = [("adm", "cached", False), ("adm", "batch", True), ("adm", "batch", False, True)]


def _data():
    train = make_texture_scenes(10, size=16, n_classes=3, seed=0)
    return train.with_scribbles(make_scribbles(train.masks, seed=0))


def _model(seed=0):
    torch.manual_seed(seed)
    return SegNet(3, 3, width=4, norm="group")


def _kwargs(method, schedule, overlap, warm_start=False):
    # batch 5 on 2 ranks: shares of 3 and 2 images
    return dict(method=method, lam=3.0, steps=4, batch_size=5, eval_every=2, schedule=schedule,
                overlap=overlap, warm_start=warm_start, refresh_every=2, checkpoint_every=1,
                seed=1)  # fmt: skip


class _NaNOnRankOne(torch.nn.Module):
    """Finite on rank 0, NaN on rank 1: only one rank sees the divergence."""

    def __init__(self):
        super().__init__()
        self.net = _model()

    def forward(self, images):
        out = self.net(images)
        return out * float("nan") if torch.distributed.get_rank() == 1 else out


def _numbers(result):
    return [{k: v for k, v in rec.items() if not k.endswith("seconds")} for rec in result.history]


def _train(run, checkpoint=None, model_seed=0, **extra):
    return SegmentationTrainer(_model(model_seed), checkpoint=checkpoint, **_kwargs(*run)).fit(
        _data(), **extra
    )


def _proposals():
    data = _data()
    trainer = SegmentationTrainer(_model(), method="adm", lam=3.0, schedule="cached")
    weights = contrast_weights(data.images, trainer.neighbourhood, contrast=trainer.contrast)
    return trainer._all_proposals(data, weights, None)


def _on_ranks(rank, world_size, tmp):
    from pathlib import Path

    out = {"proposals": _proposals(), "runs": {}, "resumed": {}}
    for run in RUNS:
        out["runs"][run] = _numbers(_train(run))
    warm = SegmentationTrainer(_model(), **_kwargs("adm", "batch", False, True))
    warm.fit(_data())
    out["warm_labels"] = warm._previous  # every image's last proposals, the same on each rank
    for run in RESUMED:
        ckpt = Path(tmp) / f"{'-'.join(map(str, run))}.ckpt"

        def kill(record):
            raise KeyboardInterrupt  # dies at the first evaluation (step 2), before its save

        try:
            _train(run, ckpt, callback=kill)
        except KeyboardInterrupt:
            pass
        saved = torch.load(ckpt, weights_only=True)
        resumed = _train(run, ckpt, model_seed=5, resume=True)  # other init: must load
        out["resumed"][run] = {"saved_step": saved["step"], "numbers": _numbers(resumed)}
    # a non-finite output on rank 1 only: both ranks stop at the same step (no hang, GCO never
    # sees it), through each path that reaches the X-step
    out["diverged"] = {}
    for schedule, overlap in (("batch", False), ("cached", False), ("batch", True)):
        result = SegmentationTrainer(
            _NaNOnRankOne(), method="adm", steps=3, batch_size=4, schedule=schedule, overlap=overlap
        ).fit(_data())
        out["diverged"][schedule, overlap] = (result.diverged, result.steps)
    # batch norm on the CPU: trains, and rank 0 says why the numbers differ from one process
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SegmentationTrainer(SegNet(3, 3, width=4), method="pce", steps=1, batch_size=2).fit(_data())
    out["warnings"] = [str(w.message) for w in caught]
    try:
        SegmentationTrainer(_model(), method="pce", steps=1, batch_size=1).fit(_data())
    except ValueError as err:
        out["small_batch"] = str(err)
    return out


def _close(a, b):
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, float) and isinstance(y, float):
            assert math.isclose(x, y, rel_tol=RTOL, abs_tol=1e-6), (key, x, y)
        else:
            assert x == y, (key, x, y)


def test_two_ranks_match_one_process_and_resume_to_the_same_numbers(run_ranks, tmp_path):
    ranks = run_ranks(_on_ranks, str(tmp_path), world_size=2, timeout=240)
    # the X-step of the cached schedule: each rank labels its 5 images, gathered = 1 process
    assert torch.equal(ranks[0]["proposals"], _proposals())
    assert torch.equal(ranks[1]["proposals"], ranks[0]["proposals"])
    single_warm = SegmentationTrainer(_model(), **_kwargs("adm", "batch", False, True))
    single_warm.fit(_data())
    assert bool((single_warm._previous >= 0).all())
    for r in ranks:
        assert torch.equal(r["warm_labels"], single_warm._previous)
    for run in RUNS:
        single = _numbers(_train(run))
        assert ranks[1]["runs"][run] == ranks[0]["runs"][run]  # ranks agree exactly
        assert [r["step"] for r in single] == [r["step"] for r in ranks[0]["runs"][run]] == [2, 4]
        assert ranks[0]["runs"][run][-1]["samples"] == 20  # the whole batch counted, once
        for one, two in zip(single, ranks[0]["runs"][run]):
            _close(one, two)
    for run in RESUMED:  # killed at step 2 (the checkpoint of step 1), resumed on 2 ranks
        for r in ranks:
            assert r["resumed"][run]["saved_step"] == 1
            assert r["resumed"][run]["numbers"] == ranks[0]["runs"][run]
    for r in ranks:
        assert r["diverged"] == {
            ("batch", False): (True, 0),
            ("cached", False): (True, 0),
            ("batch", True): (True, 0),
        }
    said = [m for m in ranks[0]["warnings"] if "batch norm" in m]
    assert said and "SyncBatchNorm needs CUDA" in said[0] and "norm='group'" in said[0]
    assert not [m for m in ranks[1]["warnings"] if "batch norm" in m]  # said once, by rank 0
    assert "batch_size (1) must be at least the number of ranks (2)" in ranks[0]["small_batch"]
