"""Time per ADM step and per GD step of :class:`SegmentationTrainer` at a given world size.

Imported by ``benchmarks/distributed.py`` (``from _distributed_adm import adm_step_seconds``);
run alone for one line per world size::

    python benchmarks/_distributed_adm.py [--world-sizes 1 2]

``adm_step_seconds(world_size)`` spawns ``world_size`` ranks itself (a ``file://`` rendezvous in
a temporary folder, one intra-op thread per rank), trains ``SegNet(norm="group")`` on texture
scenes for ``steps`` ADM steps (per-batch X-step, each rank labelling its share of the batch in
its own pool of ``n_jobs`` processes) and ``steps`` GD steps (grid Potts), after one untimed step
of each, and reports the mean wall time per step of the slowest rank (ranks wait for each other
in the gradient all-reduce). The global batch is fixed, so more ranks means smaller shares: strong
scaling. ``backend="nccl"`` puts rank ``r`` on ``cuda:r`` (untested on this project's CPU
machines).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import torch

#: default problem sizes (every key can be overridden through ``**sizes``)
SIZES = {
    "n_images": 16,
    "image_size": 32,
    "n_classes": 3,
    "batch_size": 8,
    "width": 8,
    "steps": 3,
    "n_jobs": 1,
    "lam": 3.0,
}


def _rank_main(rank: int, world_size: int, backend: str, init: str, out: str, sizes: dict):
    import torch.distributed as dist

    from beyondgd.data.scenes import make_scribbles, make_texture_scenes
    from beyondgd.segmentation import SegmentationTrainer, SegNet

    torch.set_num_threads(1)
    dist.init_process_group(
        backend,
        init_method=f"file://{init}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=300),
    )
    try:
        data = make_texture_scenes(
            sizes["n_images"], size=sizes["image_size"], n_classes=sizes["n_classes"], seed=0
        )
        data = data.with_scribbles(make_scribbles(data.masks, seed=0))
        device = torch.device("cpu")
        if backend == "nccl":
            device = torch.device("cuda", rank)
            torch.cuda.set_device(device)
            data = dataclasses.replace(
                data,
                images=data.images.to(device),
                masks=data.masks.to(device),
                scribbles=data.scribbles.to(device),
            )
        times = {}
        for method in ("adm", "gd"):
            torch.manual_seed(0)
            model = SegNet(3, sizes["n_classes"], width=sizes["width"], norm="group").to(device)
            common = dict(
                method=method,
                lam=sizes["lam"],
                batch_size=sizes["batch_size"],
                n_jobs=sizes["n_jobs"],
                seed=0,
            )
            SegmentationTrainer(model, steps=1, **common).fit(data)  # warm-up, untimed
            result = SegmentationTrainer(model, steps=sizes["steps"], **common).fit(data)
            times[f"{method}_step_seconds"] = result.train_seconds / sizes["steps"]
            if method == "adm":
                times["xstep_seconds"] = result.xstep_seconds / sizes["steps"]
        Path(out, f"rank{rank}.json").write_text(json.dumps(times))
    finally:
        dist.destroy_process_group()


def adm_step_seconds(world_size: int, backend: str = "gloo", **sizes) -> dict:
    """Seconds per ADM step and per GD step on ``world_size`` ranks (spawned here).

    Parameters
    ----------
    world_size
        Number of ranks (processes) to spawn, >= 1.
    backend
        ``"gloo"`` (CPU) or ``"nccl"`` (one CUDA device per rank).
    **sizes
        Overrides of :data:`SIZES` (``n_images``, ``image_size``, ``n_classes``, ``batch_size``
        (global, >= ``world_size``), ``width``, ``steps``, ``n_jobs`` (X-step processes per
        rank), ``lam``).

    Returns
    -------
    dict
        ``world_size``, ``backend``, the sizes, and the slowest rank's mean ``adm_step_seconds``,
        ``gd_step_seconds`` and ``xstep_seconds`` (the X-step's part of an ADM step), plus
        ``adm_over_gd`` and ``seconds`` (= ``adm_step_seconds``, the column that
        ``benchmarks/distributed.py`` tabulates).

    Examples
    --------
    >>> adm_step_seconds(2, steps=1)["world_size"]  # doctest: +SKIP
    2
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl" and torch.cuda.device_count() < world_size:
        raise ValueError(
            f"backend='nccl' needs one CUDA device per rank: {world_size} ranks, "
            f"{torch.cuda.device_count()} devices"
        )
    unknown = sorted(set(sizes) - set(SIZES))
    if unknown:
        raise ValueError(f"unknown sizes {unknown}; expected some of {sorted(SIZES)}")
    sizes = {**SIZES, **sizes}
    if sizes["batch_size"] < world_size:
        raise ValueError(
            f"batch_size ({sizes['batch_size']}) must be at least world_size ({world_size})"
        )
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="beyondgd-ddp-") as tmp:
        init = os.path.join(tmp, "rendezvous")
        procs = [
            ctx.Process(target=_rank_main, args=(r, world_size, backend, init, tmp, sizes))
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + 600
        for p in procs:
            p.join(max(1.0, deadline - time.monotonic()))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        failed = [r for r, p in enumerate(procs) if p.exitcode != 0]
        if hung or failed:
            raise RuntimeError(f"ranks {hung} hung and ranks {failed} failed (see stderr above)")
        per_rank = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(world_size)]
    out = {"world_size": world_size, "backend": backend, **sizes}
    for key in per_rank[0]:
        out[key] = max(r[key] for r in per_rank)
    out["adm_over_gd"] = out["adm_step_seconds"] / out["gd_step_seconds"]
    out["seconds"] = out["adm_step_seconds"]  # the column benchmarks/distributed.py tabulates
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backend", default="gloo")
    args = parser.parse_args()
    for w in args.world_sizes:
        print(json.dumps(adm_step_seconds(w, args.backend)))
