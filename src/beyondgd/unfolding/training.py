"""Training unrolled networks: mini-batch Adam with train / test / generalization-gap tracking,
early stopping on a validation set, and atomic checkpoints that resume to the same numbers.

Under ``torchrun`` (a default process group, see :mod:`beyondgd.core.distributed`) the trainer
is data-parallel: every rank draws the same permutation and takes a contiguous share of each
mini-batch, the loss runs through ``DistributedDataParallel`` and is weighted by the share, so
the averaged gradient is the gradient on the whole batch; evaluations run on every rank through
the unwrapped model, decisions (divergence, early stopping, the callback's stop) are taken by all
ranks together, and rank 0 alone writes the checkpoint."""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from beyondgd.core import (
    CostMeter,
    atomic_torch_save,
    check_finite_tensor,
    check_int,
    check_number,
    finite_or_none,
    make_generator,
)
from beyondgd.core.distributed import (
    all_ranks_agree,
    any_rank,
    broadcast_buffers,
    data_parallel,
    is_distributed,
    rank,
    shard_range,
    world_size,
)
from beyondgd.unfolding.losses import get_loss, log_cosh_loss

__all__ = ["Trainer", "TrainingResult", "evaluate"]

Pair = tuple[torch.Tensor, torch.Tensor]


def _check_pair(name: str, data: object) -> Pair:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (inputs, targets) of tensors")
    inputs = check_finite_tensor(f"{name}[0] (inputs)", data[0])
    targets = check_finite_tensor(f"{name}[1] (targets)", data[1])
    if inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
        raise ValueError(
            f"{name}: inputs and targets must hold the same positive number of samples, got "
            f"{inputs.shape[0]} and {targets.shape[0]}"
        )
    return inputs, targets


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Pair,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 512,
) -> dict[str, float | None]:
    """Mean squared error and mean log-cosh of ``model(inputs)`` against ``targets`` (eval mode,
    no gradients), plus ``loss`` (``loss_fn``, a mean over batches weighted by their size)
    when given. Non-finite values are reported as ``None``."""
    was_training = model.training
    model.eval()
    inputs, targets = data
    sums = {"mse": 0.0, "log_cosh": 0.0, "loss": 0.0}
    count = 0
    try:
        for start in range(0, inputs.shape[0], batch_size):
            x, t = inputs[start : start + batch_size], targets[start : start + batch_size]
            out = model(x)
            sums["mse"] += float(F.mse_loss(out, t, reduction="sum"))
            sums["log_cosh"] += float(log_cosh_loss(out, t, reduction="sum"))
            if loss_fn is not None:
                sums["loss"] += float(loss_fn(out, t)) * x.shape[0]
            count += t.numel()
    finally:
        model.train(was_training)
    result = {
        "mse": finite_or_none(sums["mse"] / count),
        "log_cosh": finite_or_none(sums["log_cosh"] / count),
    }
    if loss_fn is not None:
        result["loss"] = finite_or_none(sums["loss"] / inputs.shape[0])
    return result


class _TrainingLoss(nn.Module):
    """``forward(inputs, targets)`` is the trainer's training loss, so the whole loss (a
    ``training_loss`` hook included) runs inside ``DistributedDataParallel``'s forward."""

    def __init__(
        self, model: nn.Module, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hook = getattr(self.model, "training_loss", None)
        if callable(hook):
            return hook(inputs, targets, self.loss)
        return self.loss(self.model(inputs), targets)


@dataclass
class TrainingResult:
    """What :meth:`Trainer.fit` returns.

    ``history`` holds one dict per epoch (``train_mse``, ``train_log_cosh``, ``test_*``, ``val_*``,
    ``gap_mse`` / ``gap_log_cosh`` = test - train, ``monitor``, ``samples``, ``train_seconds``);
    ``final`` the same numbers for the returned weights (the best epoch's with ``restore_best``).

    Examples
    --------
    >>> import torch
    >>> from beyondgd.unfolding import DECONET, GaussianCS, Trainer
    >>> op = GaussianCS(8, 16, seed=0)
    >>> x = torch.randn(32, 16)
    >>> res = Trainer(DECONET(op, redundancy=1, layers=2), max_epochs=1).fit((op(x), x), (op(x), x))
    >>> sorted(k for k in res.final if k.startswith("gap"))
    ['gap_log_cosh', 'gap_mse']
    """

    history: list[dict[str, Any]]
    final: dict[str, Any]
    best_epoch: int
    stopped_early: bool
    diverged: bool
    samples: int
    train_seconds: float
    images_per_second: float = field(default=math.nan)


class Trainer:
    r"""Mini-batch Adam for reconstruction networks ``model(inputs) -> outputs``.

    After every epoch the model is re-evaluated in eval mode on the whole training set (not the
    running mean over the epoch), on the test set and on the validation set; the generalization
    gap is ``test - train``, in MSE and in log-cosh. Early stopping watches the validation loss
    (or the training loss when there is no validation set; never the test set) and stops after
    ``patience`` epochs without an improvement of more than ``min_delta``; the best weights are
    restored at the end. With ``checkpoint`` set, the state after each epoch (weights, optimizer,
    shuffling generator, history) is written atomically and ``fit(resume=True)`` continues a
    killed run to the same numbers as an uninterrupted one.

    If the model has ``training_loss(inputs, targets, loss_fn)`` (as :class:`DECONET` and
    :class:`Continued` do) it defines the loss to back-propagate.

    Under ``torchrun`` each rank trains on a contiguous share of every mini-batch (see the module
    docstring); the loss must be a mean over the samples of the batch (as ``"mse"`` and
    ``"log-cosh"`` are) for the result to equal one process on the whole batch.

    Parameters
    ----------
    model
        The network (its parameters with ``requires_grad`` are trained).
    loss
        ``"mse"``, ``"log-cosh"`` or a callable ``loss(output, target) -> scalar``.
    lr, weight_decay
        Adam's settings.
    batch_size, eval_batch_size
        Mini-batch sizes for training and for evaluation.
    max_epochs, patience, min_delta
        Epoch budget and early stopping (``patience=None`` disables it).
    seed
        Seed of the shuffling generator.
    checkpoint
        Path of the checkpoint file (``None``: no checkpoints).
    restore_best
        Return the best epoch's weights (by the monitored loss) instead of the last ones.

    References
    ----------
    .. [1] V. Kouni, Y. Panagakis, "DECONET", IEEE Trans. Signal Process., 2023,
       arXiv:2205.07050 (Adam, batch 128, early stopping).

    Examples
    --------
    >>> import torch
    >>> from beyondgd.unfolding import DECONET, GaussianCS, Trainer
    >>> op = GaussianCS(8, 16, seed=0)
    >>> x = torch.randn(64, 16)
    >>> result = Trainer(DECONET(op, redundancy=2, layers=3), max_epochs=2,
    ...                  batch_size=32).fit((op(x), x))
    >>> len(result.history), result.final["train_mse"] > 0
    (2, True)
    """

    def __init__(
        self,
        model: nn.Module,
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "mse",
        *,
        lr: float = 1e-2,
        batch_size: int = 128,
        max_epochs: int = 10,
        patience: int | None = 3,
        min_delta: float = 0.0,
        seed: int = 0,
        checkpoint: str | os.PathLike | None = None,
        eval_batch_size: int = 512,
        restore_best: bool = True,
        weight_decay: float = 0.0,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.loss_fn = get_loss(loss)
        self.lr = check_number("lr", lr, low=0.0, low_inclusive=False)
        self.weight_decay = check_number("weight_decay", weight_decay, low=0.0)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.eval_batch_size = check_int("eval_batch_size", eval_batch_size, low=1)
        self.max_epochs = check_int("max_epochs", max_epochs, low=1)
        self.patience = None if patience is None else check_int("patience", patience, low=1)
        self.min_delta = check_number("min_delta", min_delta, low=0.0)
        self.seed = check_int("seed", seed, low=0)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.restore_best = bool(restore_best)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters (requires_grad=True)")
        self.optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def _fingerprint(self, n_train: int) -> dict[str, Any]:
        return {
            "loss": self.loss_name,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "seed": self.seed,
            "n_train": n_train,
        }

    def _loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return _TrainingLoss(self.model, self.loss_fn)(inputs, targets)

    def _evaluate_all(self, train: Pair, test: Pair | None, val: Pair | None) -> dict[str, Any]:
        rec: dict[str, Any] = {}
        for name, data in (("train", train), ("test", test), ("val", val)):
            if data is None:
                continue
            for key, value in evaluate(
                self.model, data, self.loss_fn, self.eval_batch_size
            ).items():
                rec[f"{name}_{key}"] = value
        if test is not None:
            for key in ("mse", "log_cosh"):
                tr, te = rec[f"train_{key}"], rec[f"test_{key}"]
                rec[f"gap_{key}"] = None if tr is None or te is None else te - tr
        return rec

    def _save(self, state: dict[str, Any]) -> None:
        if self.checkpoint is None:
            return
        if rank() == 0:  # rank 0 writes, atomically
            atomic_torch_save(self.checkpoint, state)
        if is_distributed():  # no rank goes on before the file is there
            torch.distributed.barrier()

    def fit(
        self,
        train: Pair,
        test: Pair | None = None,
        val: Pair | None = None,
        *,
        resume: bool = False,
        callback: Callable[[dict[str, Any]], bool | None] | None = None,
    ) -> TrainingResult:
        """Train on ``train = (inputs, targets)``; track ``test`` and ``val`` (optional).

        ``callback(epoch_record)`` is called after each epoch's checkpoint; returning ``True``
        stops training (under ``torchrun`` it runs on every rank, and ``True`` on any rank stops
        all). ``resume=True`` continues from ``checkpoint`` when the file exists (it
        must come from the same trainer settings).
        """
        train = _check_pair("train", train)
        test = None if test is None else _check_pair("test", test)
        val = None if val is None else _check_pair("val", val)
        n_train = train[0].shape[0]
        fingerprint = self._fingerprint(n_train)
        gen = make_generator(self.seed)
        meter = CostMeter(dataset_size=n_train)
        history: list[dict[str, Any]] = []
        best = {"epoch": 0, "value": math.inf, "state": None}
        bad_epochs, done, diverged, train_seconds = 0, False, False, 0.0

        found = resume and self.checkpoint is not None and self.checkpoint.exists()
        if resume and self.checkpoint is not None and not all_ranks_agree(float(found)):
            raise FileNotFoundError(
                f"checkpoint {self.checkpoint} exists on some ranks only; resuming needs a file "
                "system that every rank sees"
            )
        if found:
            saved = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
            if saved["fingerprint"] != fingerprint:
                raise ValueError(
                    f"checkpoint {self.checkpoint} was written by a trainer with settings "
                    f"{saved['fingerprint']}, not {fingerprint}; delete it or use resume=False"
                )
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            gen.set_state(saved["generator"])
            history = saved["history"]
            best = saved["best"]
            bad_epochs, done, diverged = saved["bad_epochs"], saved["done"], saved["diverged"]
            train_seconds = saved["train_seconds"]
            meter.samples, meter.evaluations = saved["samples"], saved["evaluations"]

        inputs, targets = train
        device = inputs.device
        # DDP after a resume (it broadcasts rank 0's weights); alone, the loss module itself
        net = data_parallel(_TrainingLoss(self.model, self.loss_fn))
        scale = float(world_size())  # DDP averages the gradients over the ranks
        while not done and len(history) < self.max_epochs:
            epoch = len(history) + 1
            self.model.train()
            t0 = time.perf_counter()
            perm = torch.randperm(n_train, generator=gen).to(device)
            last = torch.zeros(())
            for start in range(0, n_train, self.batch_size):
                idx = perm[start : start + self.batch_size]
                local = idx[shard_range(len(idx))]  # this rank's contiguous share
                weight = scale * len(local) / len(idx)
                if (
                    len(local) == 0
                ):  # fewer samples than ranks: a zero-weight pass keeps DDP in step
                    local = idx[:1]
                self.optimizer.zero_grad(set_to_none=True)
                loss = net(inputs[local], targets[local]) * weight
                loss.backward()
                self.optimizer.step()
                meter.add(idx.numel())
                last = loss.detach()
            train_seconds += time.perf_counter() - t0
            broadcast_buffers(self.model)  # every rank evaluates (and saves) rank 0's model
            record = {"epoch": epoch, **self._evaluate_all(train, test, val)}
            monitor = record["val_loss"] if val is not None else record["train_loss"]
            record["monitor"] = monitor
            record["samples"] = meter.samples
            record["train_seconds"] = train_seconds
            history.append(record)
            if any_rank(monitor is None or not math.isfinite(float(last))):
                diverged, done = True, True
            elif monitor < best["value"] - self.min_delta:
                best = {
                    "epoch": epoch,
                    "value": monitor,
                    "state": copy.deepcopy(self.model.state_dict()),
                }
                bad_epochs = 0
            else:
                bad_epochs += 1
                if self.patience is not None and bad_epochs >= self.patience:
                    done = True
            done = any_rank(done)  # the records are the same on every rank; make sure of it
            self._save(
                {
                    "fingerprint": fingerprint,
                    "model": self.model.state_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "generator": gen.get_state(),
                    "history": history,
                    "best": best,
                    "bad_epochs": bad_epochs,
                    "done": done or len(history) >= self.max_epochs,
                    "diverged": diverged,
                    "train_seconds": train_seconds,
                    "samples": meter.samples,
                    "evaluations": meter.evaluations,
                }
            )
            if any_rank(bool(callback is not None and callback(record))):
                break

        if self.restore_best and best["state"] is not None:
            self.model.load_state_dict(best["state"])
            final = dict(history[best["epoch"] - 1])
        else:
            final = dict(history[-1])
        stopped_early = len(history) < self.max_epochs and not diverged
        return TrainingResult(
            history=history,
            final=final,
            best_epoch=best["epoch"] if best["state"] is not None else len(history),
            stopped_early=stopped_early,
            diverged=diverged,
            samples=meter.samples,
            train_seconds=train_seconds,
            images_per_second=meter.samples / train_seconds if train_seconds > 0 else math.nan,
        )
