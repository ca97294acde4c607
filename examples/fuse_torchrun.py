"""FUSE on several processes with DistributedDataParallel: Adam mini-batch epochs, then full-batch
L-BFGS over every rank's shard.

Run with ``torchrun --nproc_per_node 2 examples/fuse_torchrun.py`` (gloo on CPU, nccl when CUDA
is available; ``--backend`` overrides). Each rank holds its own shard of a synthetic regression
problem (shards of different sizes are fine). The Adam phase is an ordinary DDP mini-batch loop
over a ``DistributedSampler`` (equal batch counts per rank, as DDP needs); after the switch every
step calls :func:`beyondgd.optim.distributed_full_batch_closure`, whose loss and gradient are the
mean over all samples of all ranks, the same bits on every rank, so that the ranks take the same
line-search decisions. Without ``torchrun`` it runs as one process.
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

from beyondgd.core import all_ranks_agree, is_distributed, rank, world_size
from beyondgd.core.distributed import process_group_from_env
from beyondgd.optim import FUSE, AfterEpochs, distributed_full_batch_closure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="Adam epochs + L-BFGS steps")
    parser.add_argument("--switch-after", type=int, default=4, help="Adam epochs before L-BFGS")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--backend", choices=["gloo", "nccl"], default=None)
    args = parser.parse_args()

    torch.set_num_threads(1)
    # Under torchrun: join its process group (nccl with CUDA, else gloo) and leave it at the end,
    # also after an error; without torchrun: one process.
    with process_group_from_env(args.backend):
        train(args)


def train(args: argparse.Namespace) -> None:
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if (is_distributed() and dist.get_backend() == "nccl")
        else torch.device("cpu")
    )

    # The same synthetic data on every rank (seeded); rank r keeps every world_size-th sample.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.samples, 8, generator=gen)
    y = torch.sin(x @ torch.randn(8, 1, generator=gen)) + 0.05 * torch.randn(
        args.samples, 1, generator=gen
    )
    data = TensorDataset(x.to(device), y.to(device))
    shard = Subset(data, range(rank(), args.samples, world_size()))  # uneven when not divisible

    torch.manual_seed(1)  # DDP broadcasts rank 0's parameters anyway; FUSE checks they agree
    net = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1)).to(device)
    model = DistributedDataParallel(net) if is_distributed() else net
    loss_fn = nn.functional.mse_loss

    # Adam phase: DDP mini-batches; a DistributedSampler gives every rank the same batch count.
    sampler = DistributedSampler(data, seed=0) if is_distributed() else None
    minibatches = DataLoader(data, batch_size=64, sampler=sampler, shuffle=sampler is None)
    # L-BFGS phase: the full-batch loss over every rank's (unpadded) shard.
    closure = distributed_full_batch_closure(model, loss_fn, DataLoader(shard, batch_size=512))
    opt = FUSE(
        model.parameters(),
        lr=1e-2,
        switch=AfterEpochs(args.switch_after),
        steps_per_epoch=None,  # epochs end at opt.end_epoch()
        max_iter=10,
    )

    for epoch in range(args.epochs):
        phase = opt.phase
        if phase == "adam":
            if sampler is not None:
                sampler.set_epoch(epoch)
            for xb, yb in minibatches:
                opt.zero_grad()
                loss_fn(model(xb), yb).backward()  # DDP all-reduces the gradients
                opt.step()
            opt.end_epoch()
            loss = float(closure())  # for the log only
        else:
            opt.step(closure)
            loss = opt.last_loss
        if rank() == 0:
            print(f"epoch {epoch:2d}  {phase:5s}  full-batch loss {loss:.6f}")

    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    agree = all_ranks_agree(flat)
    if rank() == 0:
        print(
            f"world size {world_size()}, switched at step {opt.switch_step} (epoch "
            f"{args.switch_after}), "
            f"{opt.n_evals} closure calls, ranks agree: {agree}"
        )


if __name__ == "__main__":
    main()
