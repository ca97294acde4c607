"""FUSE's L-BFGS phase on 1 and N ranks: time per L-BFGS iteration, and its ratio to one rank.

    python benchmarks/distributed.py [--backend gloo|nccl] [--world-sizes 1,2] [--quick]

Strong scaling: the same data set (``--samples``) is split into ``N`` shards; each rank evaluates
:func:`beyondgd.optim.distributed_full_batch_closure` on its shard (one all-reduce per closure
call), so the ratio ``t(N) / t(1)`` is below 1 when the computation saved outweighs the
communication. World size 1 is a plain process (no process group), what a user runs without
``torchrun``. With ``--backend nccl`` every rank takes its own GPU; world sizes beyond the GPUs
present are skipped. On CPU every rank gets ``--threads`` intra-op threads, so compare world sizes
whose ``N * threads`` fits in the free cores.

When ``benchmarks/_distributed_adm.py`` exists (the segmentation trainers' helper), its
``adm_step_seconds(world_size, backend)`` rows (one ADM step) are added to the table.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from beyondgd.optim import FUSE, AfterEpochs, distributed_full_batch_closure


def _problem(samples: int, features: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, features, generator=gen)
    y = torch.randint(0, 10, (samples,), generator=gen)
    return x, y


def _model(features: int, hidden: int) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
        nn.Linear(hidden, 10),
    )  # fmt: skip


def _time_lbfgs(rank: int, world_size: int, args: argparse.Namespace, device: torch.device):
    """Seconds per L-BFGS iteration and closure calls per iteration on this rank."""
    x, y = _problem(args.samples, args.features)
    shard = slice(rank, None, world_size)  # uneven when samples % world_size != 0
    xs, ys = x[shard].to(device), y[shard].to(device)
    batches = [
        (xs[i : i + args.batch], ys[i : i + args.batch]) for i in range(0, len(xs), args.batch)
    ]
    net = _model(args.features, args.hidden).to(device)
    model = DistributedDataParallel(net) if world_size > 1 else net
    closure = distributed_full_batch_closure(model, nn.functional.cross_entropy, batches)
    opt = FUSE(
        model.parameters(), switch=AfterEpochs(0), max_iter=args.iters,
        tolerance_grad=0.0, tolerance_change=0.0,
    )  # fmt: skip
    opt.step(closure)  # warm-up (allocations, the first collective)
    times, iters, evals = [], 0, 0
    for _ in range(args.repeats):
        it0, ev0 = opt.n_lbfgs_iters, opt.n_evals
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if world_size > 1:
            dist.barrier()
        t0 = time.perf_counter()
        opt.step(closure)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) / max(1, opt.n_lbfgs_iters - it0))
        iters += opt.n_lbfgs_iters - it0
        evals += opt.n_evals - ev0
    times.sort()
    return {"seconds": times[len(times) // 2], "evals_per_iter": evals / max(1, iters)}


def _rank_main(rank: int, world_size: int, args: argparse.Namespace, init: str, queue) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    if args.backend == "nccl":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    dist.init_process_group(args.backend, init_method=init, rank=rank, world_size=world_size)
    try:
        result = _time_lbfgs(rank, world_size, args, device)
        # the slowest rank sets the pace: report the maximum over ranks
        t = torch.tensor([result["seconds"]], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if rank == 0:
            queue.put({**result, "seconds": float(t.item())})
    finally:
        dist.destroy_process_group()


def lbfgs_iteration_seconds(world_size: int, args: argparse.Namespace) -> dict:
    """Time per FUSE L-BFGS iteration with ``world_size`` ranks (spawned processes)."""
    if world_size == 1:
        torch.set_num_threads(args.threads)
        device = torch.device("cuda", 0) if args.backend == "nccl" else torch.device("cpu")
        return _time_lbfgs(0, 1, args, device)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init = "file://" + os.path.join(tmp, "rendezvous")
        mp.start_processes(
            _rank_main, args=(world_size, args, init, queue), nprocs=world_size,
            start_method="spawn",
        )  # fmt: skip
    return queue.get(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    parser.add_argument("--world-sizes", default="1,2", help="comma-separated, e.g. 1,2,4")
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2048, help="closure batch size")
    parser.add_argument("--iters", type=int, default=5, help="L-BFGS iterations per step")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per rank")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.hidden, args.repeats, args.iters = 2000, 64, 3, 3
    sizes = [int(s) for s in args.world_sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1:
        parser.error("--world-sizes must be positive integers, e.g. 1,2")
    if args.backend == "nccl":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            parser.error("--backend nccl needs CUDA GPUs; none found")
        skipped = [n for n in sizes if n > gpus]
        if skipped:
            print(f"skipping world sizes {skipped}: nccl needs one GPU per rank, {gpus} here")
        sizes = [n for n in sizes if n <= gpus]

    print(
        f"FUSE L-BFGS on {args.samples} samples, MLP {args.features}-{args.hidden}-"
        f"{args.hidden}-10, backend {args.backend}, {args.threads} thread(s) per rank"
    )
    rows = []
    for n in sizes:
        rows.append(("fuse-lbfgs-iteration", n, lbfgs_iteration_seconds(n, args)))
    try:  # the trainers' helper, when it exists
        from _distributed_adm import adm_step_seconds
    except ImportError:
        adm_step_seconds = None
    if adm_step_seconds is not None:
        for n in sizes:
            rows.append(("adm-step", n, adm_step_seconds(n, args.backend)))

    print(f"{'what':22s} {'ranks':>5s} {'seconds':>10s} {'ratio to 1 rank':>16s}  notes")
    nan = float("nan")
    base = {what: r.get("seconds", nan) for what, n, r in rows if n == min(sizes)}
    for what, n, r in rows:
        seconds = float(r.get("seconds", nan))
        ratio = seconds / base[what] if base.get(what) else nan
        notes = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in r.items()
            if k != "seconds"
        )
        print(f"{what:22s} {n:5d} {seconds:10.4g} {ratio:16.3f}  {notes}")


if __name__ == "__main__":
    main()
