import gzip
import struct

import numpy as np
import pytest
import torch

# The tests' problems are small: one intra-op thread is fastest, and more threads than free
# cores slow small ops down many times over.
torch.set_num_threads(1)


@pytest.fixture
def results_dir(tmp_path):
    return tmp_path / "results"


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def write_fashion_mnist():
    """``write(folder, train=(images, labels), test=(images, labels))`` writes a stand-in with
    Fashion-MNIST's IDX layout, so loaders and experiments run without the Debian package."""

    def write(folder, *, train, test):
        folder.mkdir(parents=True, exist_ok=True)
        for prefix, (images, labels) in (("train", train), ("t10k", test)):
            _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.asarray(images))
            _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.asarray(labels))
        return folder

    return write


# --- torch.distributed: N gloo ranks in child processes, bounded by a timeout -----------------


def _rank_entry(fn, rank, world_size, init_file, out_dir, timeout, args):
    """One rank: join the gloo group, run ``fn(rank, world_size, *args)``, save what it returns
    (or its traceback) to ``out_dir``."""
    import datetime
    import gc
    import os
    import traceback

    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{init_file}",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
        try:
            result = fn(rank, world_size, *args)
            dist.barrier()  # as process_group_from_env: nobody leaves mid-collective
        finally:
            gc.collect()
            dist.destroy_process_group()
        tmp = os.path.join(out_dir, f"result{rank}.pt.tmp")
        torch.save(result, tmp)
        os.replace(tmp, os.path.join(out_dir, f"result{rank}.pt"))
    except BaseException:
        with open(os.path.join(out_dir, f"error{rank}.txt"), "w") as fh:
            fh.write(traceback.format_exc())
        raise SystemExit(1) from None


def _run_ranks(tmp_path, fn, *args, world_size=2, timeout=120.0):
    import time
    import uuid

    import torch.multiprocessing as mp

    out_dir = tmp_path / f"ranks-{uuid.uuid4().hex[:8]}"
    out_dir.mkdir()
    init_file = out_dir / "pg-init"  # must not exist yet; file:// needs no free TCP port
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(
            target=_rank_entry,
            args=(fn, r, world_size, str(init_file), str(out_dir), timeout, args),
            daemon=True,
        )
        for r in range(world_size)
    ]
    for p in procs:
        p.start()

    def stop_all():
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(5)

    def errors():
        texts = []
        for r in range(world_size):
            f = out_dir / f"error{r}.txt"
            if f.exists():
                texts.append(f"--- rank {r} ---\n{f.read_text()}")
        return "\n".join(texts)

    deadline = time.monotonic() + timeout
    while any(p.is_alive() for p in procs):
        failed = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
        if failed:  # one rank died: the others would wait for it in a collective forever
            time.sleep(0.5)  # let a simultaneous failure on another rank write its traceback
            stop_all()
            codes = [procs[r].exitcode for r in failed]
            pytest.fail(f"rank(s) {failed} failed (exit codes {codes}):\n{errors()}", pytrace=False)
        if time.monotonic() > deadline:
            stop_all()
            pytest.fail(
                f"{world_size} ranks of {fn.__name__} did not finish within {timeout:.0f} s "
                f"(a hang?)\n{errors()}",
                pytrace=False,
            )
        time.sleep(0.05)
    failed = [r for r, p in enumerate(procs) if p.exitcode != 0]
    if failed:
        pytest.fail(
            f"rank(s) {failed} failed (exit codes "
            f"{[procs[r].exitcode for r in failed]}):\n{errors()}",
            pytrace=False,
        )
    return [torch.load(out_dir / f"result{r}.pt", weights_only=False) for r in range(world_size)]


@pytest.fixture
def run_ranks(tmp_path):
    """``run_ranks(fn, *args, world_size=2, timeout=120)`` runs the module-level function
    ``fn(rank, world_size, *args)`` on ``world_size`` gloo ranks (spawned processes, one intra-op
    thread each, a ``file://`` rendezvous in ``tmp_path``) and returns the list of what each rank
    returned. A rank that raises, or ranks that run past ``timeout`` seconds (a hang), fail the
    test with every rank's traceback, after the processes are killed."""

    def run(fn, *args, world_size=2, timeout=120.0):
        return _run_ranks(tmp_path, fn, *args, world_size=world_size, timeout=timeout)

    return run
