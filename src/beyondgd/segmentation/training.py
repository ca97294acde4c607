r"""One training loop for scribble-supervised segmentation: pCE, GD on a regularized loss, and ADM.

With seeds :math:`\Omega_L` (scribbles, labels :math:`y_p`), network output
:math:`S = \mathrm{softmax}(f_\theta(I))` and a Potts / CRF regularizer :math:`R`:

- ``method="pce"``: partial cross-entropy :math:`\frac{1}{|\Omega_L|}\sum_{p\in\Omega_L} -\log
  S_p^{y_p}` only;
- ``method="gd"``: gradient descent on the regularized loss
  :math:`\mathrm{pCE}(S) + \lambda R(S) / N` with a relaxed grid Potts (:class:`GridPottsLoss`)
  or dense CRF (:class:`DenseCRFLoss`) regularizer (per-pixel normalised);
- ``method="adm"``: the alternating direction method of Marin et al. (2019) on
  :math:`\mathrm{pCE}(S) + \beta\, \frac{1}{|\Omega_U|}\sum_{p\in\Omega_U} -\log S_p^{X_p} +
  \lambda R(X) / N` over the network and a discrete labelling :math:`X` (:math:`X = y` on the
  seeds). The X-step (network fixed) is the Potts MRF
  :math:`\min_X \sum_p -\beta \log S_p^{X_p} + \lambda \sum_{pq} w_{pq}[X_p \ne X_q]`, solved by
  alpha-expansion with the seeds as hard constraints (same per-pixel normalisation on both
  sides, so :math:`\lambda` means the same thing for GD and ADM); the
  :math:`\theta`-step is one optimizer step on the cross-entropy to :math:`X`.

Proposal schedules: ``"batch"`` recomputes :math:`X` for every mini-batch from the same forward
pass the step uses (the paper's code); ``"cached"`` recomputes it for the whole training set
every ``refresh_every`` steps (the PyTorch follow-up), optionally restricting each image's labels
to the classes present in its seeds (``restrict_labels``).

Under ``torchrun`` (a default process group; see :mod:`beyondgd.core.distributed`) the trainer
is data-parallel: every rank draws the same permutation and takes its contiguous share of each
mini-batch (shares differ by at most one image), the network is wrapped in
``DistributedDataParallel``, and each rank's loss is scaled so the averaged gradient is the
gradient of the loss on the whole batch: the pCE and ADM cross-entropies are divided by the
global number of labelled (resp. proposal) pixels, the regularizer by the global batch size.
ADM's X-step runs on each rank for its own images (``n_jobs`` of them at once); the
cached schedule gathers the labels of all images. Decisions (divergence, the callback's stop) are
taken by all ranks together; evaluations run on every rank through the unwrapped model; rank 0
alone writes the checkpoint. Batch norm is synchronised on CUDA (``SyncBatchNorm``); on CPU use
``SegNet(norm="group")`` for numbers equal to one process on the whole batch.

All methods share the data order, optimizer and step budget; the trainer counts forward/backward
passes in images and wall time (network and X-step separately). Every ``eval_every`` steps it
records, on the training set, the grid-CRF objective in relaxed form
(:math:`\mathrm{pCE}(S) + \lambda_E R_\text{bilinear}(S)/N`) and in discrete form on the network's
hard output (:math:`\mathrm{pCE}(S) + \lambda_E R(\arg\max S)/N`) with
:math:`\lambda_E` = ``energy_lam`` (default ``lam``), seed accuracy and, where ground truth
exists, mIoU and pixel accuracy on the training and test sets.

References
----------
D. Marin, M. Tang, I. Ben Ayed, Y. Boykov, "Beyond Gradient Descent for Regularized Segmentation
Losses", CVPR 2019, arXiv:1809.02322.
M. Tang, F. Perazzi, A. Djelouah, I. Ben Ayed, C. Schroers, Y. Boykov, "On Regularized Losses for
Weakly-supervised CNN Segmentation", ECCV 2018.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from beyondgd.core import (
    atomic_torch_save,
    check_choice,
    check_int,
    check_number,
    make_generator,
)
from beyondgd.core.distributed import (
    all_gather_cat,
    all_ranks_agree,
    all_reduce_sum,
    any_rank,
    broadcast_buffers,
    data_parallel,
    is_distributed,
    rank,
    shard_range,
    world_size,
)
from beyondgd.data.scenes import SegmentationData
from beyondgd.segmentation.grid import GridWeights, contrast_weights, potts_energy
from beyondgd.segmentation.losses import DenseCRFLoss, GridPottsLoss
from beyondgd.segmentation.metrics import confusion_matrix, mean_iou, pixel_accuracy
from beyondgd.segmentation.proposals import (
    EXPANSION_SOLVERS,
    ExpansionPool,
    _resolve_solver,
    alpha_expansion_batch,
)

METHODS = ("pce", "gd", "adm")
REGULARIZERS = ("grid", "dense")
SCHEDULES = ("batch", "cached")


@dataclass
class SegmentationResult:
    """What :meth:`SegmentationTrainer.fit` returns.

    ``history`` holds one record per evaluation (every ``eval_every`` steps and at the end);
    ``final`` is the last one. ``diverged`` is set when a loss became non-finite (training stops
    there and the record says so instead of carrying NaN on).
    """

    history: list[dict[str, Any]]
    final: dict[str, Any]
    steps: int
    samples: int
    train_seconds: float
    xstep_seconds: float
    diverged: bool = False
    proposals: torch.Tensor | None = field(default=None, repr=False)


def _nonfinite_error(what: str) -> FloatingPointError:
    return FloatingPointError(
        f"{what} is not finite; lower the learning rate or lambda (training stopped)"
    )


class SegmentationTrainer:
    """Train a segmentation network from scribbles with pCE, GD on a regularized loss, or ADM.

    Parameters
    ----------
    model
        Any ``nn.Module`` mapping ``(B, C, H, W)`` images to ``(B, K, H, W)`` logits.
    method
        ``"pce"``, ``"gd"`` or ``"adm"`` (see the module docstring).
    lam
        Regularization weight :math:`\\lambda` (per-pixel normalised regularizer); ignored by
        ``"pce"``.
    regularizer
        ``"grid"`` (contrast-sensitive Potts on the pixel grid) or ``"dense"`` (dense CRF; GD
        only: ADM's X-step uses the grid).
    relaxation, neighbourhood, contrast
        Grid Potts relaxation for GD, neighbourhood (4 or 8) and contrast-sensitive weights.
    sigma_rgb, sigma_xy
        Dense CRF bandwidths (0-255 colour units, pixels).
    beta
        ADM weight of the cross-entropy to the proposals on the unlabelled pixels (1.5 in the
        paper's code).
    expansion_iters
        Alpha-expansion cycles per X-step (5 in the paper's code).
    expansion_solver
        ``"auto"`` (numba where installed, else GCO), ``"numba"`` or ``"gco"``: see
        :func:`beyondgd.segmentation.proposals.alpha_expansion`.
    schedule, refresh_every, restrict_labels
        ADM proposal schedule (``"batch"`` or ``"cached"``), the cached schedule's refresh period
        in steps, and whether proposals may only use the classes present in the image's seeds.
    overlap
        With the ``"batch"`` schedule: compute the next mini-batch's proposals in a background
        thread (from an eval-mode forward pass of the current network) while the network steps
        on the current one, so the X-step runs in parallel with the network step; proposals are
        then one step stale. Both solvers release the GIL, so this needs no extra process. It
        pays only with a core to spare: on 2 cores with 2 torch threads it measured slower than
        no overlap (numba, 2 threads, 64 x 64, batch 8, two runs of three rounds: 2.11-2.18x
        against 1.51-1.56x the GD step, medians) and the stale proposals gave a higher training
        energy and a lower test mIoU (``benchmarks/segmentation_speed.py --rounds 3``).
    warm_start
        With the ``"batch"`` schedule (no overlap): start each image's X-step from its proposals
        of the last mini-batch that held it, with one expansion cycle (``expansion_iters`` from
        the unary minimum the first time): 4 max-flows per image instead of 8-11 with 4
        labels, and nearly the same training energy (0.7344 against 0.7333, the same test
        mIoU). Measured (64 x 64, batch 8, 30 steps of which the first 8 are cold, numba on 2
        threads, two runs of three rounds): 1.44-1.47x the GD step against 1.51-1.56x cold
        (medians; single rounds 1.40-1.55x): the first cycle's four max-flows are most of the
        X-step either way (``benchmarks/segmentation_speed.py --rounds 3``).
    lr, weight_decay, batch_size, steps
        Adam step size and weight decay, mini-batch size, number of steps (the budget).
    eval_every
        Steps between evaluations (0: only at the end).
    energy_lam
        :math:`\\lambda` of the grid-CRF energies recorded at evaluation (default: ``lam``), so
        methods trained with different lambdas can be compared on one objective.
    n_jobs
        Images of a batch solved at once in the X-step (threads with the numba solver, worker
        processes with GCO); per rank under ``torchrun``.
    seed
        Seeds the mini-batch order.
    checkpoint, checkpoint_every
        Path of an atomic checkpoint written every ``checkpoint_every`` steps (and at the end);
        ``fit(..., resume=True)`` continues from it to the same numbers.

    Examples
    --------
    >>> from beyondgd.data.scenes import make_texture_scenes, make_scribbles
    >>> from beyondgd.segmentation import SegNet, SegmentationTrainer
    >>> data = make_texture_scenes(8, size=32, seed=0)
    >>> data = data.with_scribbles(make_scribbles(data.masks, seed=0))
    >>> trainer = SegmentationTrainer(SegNet(3, data.n_classes, width=4), method="adm", lam=3.0,
    ...                               steps=2, batch_size=4)
    >>> result = trainer.fit(data)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        method: str = "adm",
        lam: float = 1.0,
        regularizer: str = "grid",
        relaxation: str = "bilinear",
        neighbourhood: int = 8,
        contrast: bool = True,
        sigma_rgb: float = 15.0,
        sigma_xy: float = 100.0,
        beta: float = 1.5,
        expansion_iters: int = 5,
        schedule: str = "batch",
        refresh_every: int = 50,
        restrict_labels: bool = False,
        overlap: bool = False,
        warm_start: bool = False,
        expansion_solver: str = "auto",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 16,
        steps: int = 400,
        eval_every: int = 0,
        energy_lam: float | None = None,
        n_jobs: int = 1,
        seed: int = 0,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 50,
        progress: bool = False,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.method = check_choice("method", method, METHODS)
        self.lam = check_number("lam", lam, low=0.0)
        self.regularizer = check_choice("regularizer", regularizer, REGULARIZERS)
        if method == "adm" and regularizer != "grid":
            raise ValueError(
                "regularizer must be 'grid' for method='adm' (the X-step is a grid MRF)"
            )
        self.neighbourhood = neighbourhood
        self.contrast = bool(contrast)
        self.grid_loss = GridPottsLoss(
            relaxation=relaxation, neighbourhood=neighbourhood, contrast=contrast
        )
        self.energy_relaxed = GridPottsLoss(
            relaxation="bilinear", neighbourhood=neighbourhood, contrast=contrast, reduction="none"
        )
        self.dense_loss = (
            DenseCRFLoss(sigma_rgb=sigma_rgb, sigma_xy=sigma_xy) if regularizer == "dense" else None
        )
        self.beta = check_number("beta", beta, low=0.0)
        self.expansion_iters = check_int("expansion_iters", expansion_iters, low=-1)
        self.schedule = check_choice("schedule", schedule, SCHEDULES)
        self.refresh_every = check_int("refresh_every", refresh_every, low=1)
        self.restrict_labels = bool(restrict_labels)
        self.overlap = bool(overlap)
        if self.overlap and (method != "adm" or schedule != "batch"):
            raise ValueError("overlap=True needs method='adm' and schedule='batch'")
        if not isinstance(warm_start, bool):
            raise TypeError(f"warm_start must be a bool, got {type(warm_start).__name__}")
        self.warm_start = warm_start
        if warm_start and (method != "adm" or schedule != "batch" or overlap):
            raise ValueError(
                "warm_start=True needs method='adm', schedule='batch' and overlap=False (it "
                "starts each image's X-step from the proposals of its last mini-batch)"
            )
        self._previous: torch.Tensor | None = None  # (N, H, W) last proposals, -1: none yet
        self.expansion_solver = check_choice(
            "expansion_solver", expansion_solver, EXPANSION_SOLVERS
        )
        self.lr = check_number("lr", lr, low=0.0, low_inclusive=False)
        self.weight_decay = check_number("weight_decay", weight_decay, low=0.0)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.steps = check_int("steps", steps, low=0)
        self.eval_every = check_int("eval_every", eval_every, low=0)
        self.energy_lam = (
            self.lam if energy_lam is None else check_number("energy_lam", energy_lam, low=0.0)
        )
        self.n_jobs = check_int("n_jobs", n_jobs, low=1)
        self.seed = check_int("seed", seed)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.checkpoint_every = check_int("checkpoint_every", checkpoint_every, low=1)
        self.progress = bool(progress)
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters (requires_grad=True)")
        self.optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        self._net: nn.Module = model  # what training forwards go through (DDP under torchrun)

    # ------------------------------------------------------------------ configuration

    def settings(self) -> dict[str, Any]:
        """The settings that determine the numbers (stored in checkpoints and results)."""
        return {
            "method": self.method,
            "lam": self.lam,
            "regularizer": self.regularizer,
            "relaxation": self.grid_loss.relaxation,
            "neighbourhood": self.neighbourhood,
            "contrast": self.contrast,
            "beta": self.beta,
            "expansion_iters": self.expansion_iters,
            "schedule": self.schedule,
            "refresh_every": self.refresh_every,
            "restrict_labels": self.restrict_labels,
            "overlap": self.overlap,
            # only when on: checkpoints written before the option existed stay resumable
            **({"warm_start": True} if self.warm_start else {}),
            **(
                {"expansion_solver": self.expansion_solver}
                if self.expansion_solver != "auto"
                else {}
            ),
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "steps": self.steps,
            "energy_lam": self.energy_lam,
            "seed": self.seed,
        }

    # ------------------------------------------------------------------ pieces

    def _logits(self, images: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        logits = (self.model if net is None else net)(images)
        if logits.dim() != 4 or logits.shape[0] != images.shape[0]:
            raise ValueError(
                f"model output must have shape (B, K, H, W) for input {tuple(images.shape)}, "
                f"got {tuple(logits.shape)}"
            )
        if logits.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"model output size {tuple(logits.shape[-2:])} differs from the image size "
                f"{tuple(images.shape[-2:])}"
            )
        return logits

    def _log_probs(self, images: torch.Tensor) -> torch.Tensor:
        """Log-softmax of the network output; non-finite output stops training before GCO."""
        log_probs = F.log_softmax(self._logits(images), 1)
        if not bool(torch.isfinite(log_probs).all()):
            raise _nonfinite_error("the network output")
        return log_probs

    def _check_classes(self, data: SegmentationData, name: str) -> None:
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            k = self._logits(data.images[:1]).shape[1]
        self.model.train(was_training)
        if k < 2:
            raise ValueError(f"the model must output K >= 2 class scores, got K = {k}")
        if k < data.n_classes:
            raise ValueError(
                f"{name} has labels of {data.n_classes} classes but the model outputs K = {k} "
                "class scores; build the model with n_classes >= the number of classes"
            )

    def _allowed(self, seeds: torch.Tensor, n_classes: int, ignore: int) -> torch.Tensor | None:
        if not self.restrict_labels:
            return None
        allowed = torch.zeros(seeds.shape[0], n_classes, dtype=torch.bool)
        for i, s in enumerate(seeds):
            present = s[s != ignore].unique()
            allowed[i, present] = True
        return allowed

    def _proposals(
        self,
        log_probs: torch.Tensor,
        weights: GridWeights,
        seeds: torch.Tensor,
        ignore: int,
        pool: ExpansionPool | None,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The X-step: alpha-expansion on -beta log S + lam Potts, seeds hard. With warm starts
        and the dataset indices ``images``, an image with earlier proposals starts from them
        for one cycle."""
        unary = (-self.beta * log_probs.detach()).double()
        allowed = self._allowed(seeds, log_probs.shape[1], ignore)

        def expand(unary, weights, seeds, allowed, init, n_iter):
            return alpha_expansion_batch(
                unary,
                weights,
                seeds=seeds,
                potts_weight=self.lam,
                n_iter=n_iter,
                init=init,
                allowed_labels=allowed,
                ignore_index=ignore,
                solver=self.expansion_solver,
                n_jobs=self.n_jobs,
                pool=pool,
            ).labels

        if images is None or self._previous is None:
            return expand(unary, weights, seeds, allowed, None, self.expansion_iters)
        previous = self._previous[images]
        warm = previous.flatten(1)[:, 0] >= 0
        labels = torch.empty_like(seeds)
        for part, init, n_iter in ((warm, previous, 1), (~warm, None, self.expansion_iters)):
            if bool(part.any()):
                sel = part.nonzero()[:, 0]
                labels[sel] = expand(
                    unary[sel], weights[sel], seeds[sel],
                    None if allowed is None else allowed[sel],
                    None if init is None else init[sel], n_iter,
                )  # fmt: skip
        return labels

    def _all_proposals(self, data, weights, pool) -> torch.Tensor:
        """X-step labels of every image of ``data``; under ``torchrun`` each rank solves its
        contiguous share of the images and the labels are gathered (the same on every rank)."""
        was_training = self.model.training
        self.model.eval()
        share = shard_range(len(data))
        out = [data.scribbles[:0]]  # an empty share gathers as no rows
        bad = False
        with torch.no_grad():
            for start in range(share.start, share.stop, 64):
                sl = slice(start, min(start + 64, share.stop))
                log_probs = F.log_softmax(self._logits(data.images[sl]), 1)
                if not bool(torch.isfinite(log_probs).all()):
                    bad = True  # never hand GCO a non-finite unary; all ranks stop below
                    break
                out.append(
                    self._proposals(
                        log_probs, weights[sl], data.scribbles[sl], data.ignore_index, pool
                    )
                )
        self.model.train(was_training)
        if any_rank(bad):
            raise _nonfinite_error("the network output")
        return all_gather_cat(torch.cat(out))

    def _submit_next(self, thread, data, nxt, share, weights, pool):
        """Start the X-step of this rank's share of the next batch ``nxt`` in ``thread``
        (eval-mode forward now); ``None`` when the network output is not finite."""
        local = nxt[share]
        self.model.eval()
        try:
            with torch.no_grad():
                log_probs = F.log_softmax(self._logits(data.images[local]), 1)
        finally:
            self.model.train()
        if not bool(torch.isfinite(log_probs).all()):
            return None
        seeds = data.scribbles[local]
        job = thread.submit(
            self._proposals, log_probs, weights[local], seeds, data.ignore_index, pool
        )
        return nxt, job

    def _regularizer(self, probs, images, weights) -> torch.Tensor:
        if self.regularizer == "dense":
            return self.dense_loss(probs, images)
        return self.grid_loss(probs, weights=weights)

    def _step_loss(
        self,
        data,
        idx,
        batch: int,
        weights,
        cached,
        pool,
        given: torch.Tensor | None = None,
        bad: bool = False,
    ) -> tuple[torch.Tensor, float]:
        """This rank's part of the loss of a mini-batch of ``batch`` images, ``idx`` its share.

        The sum over ranks of the returned losses is ``world_size`` times the loss on the whole
        batch (``DistributedDataParallel`` averages the gradients): cross-entropies are divided
        by the global pixel counts (one all-reduce, which also carries each rank's ``bad`` flag,
        so all ranks stop together on a non-finite value)."""
        images, seeds = data.images[idx], data.scribbles[idx]
        ignore = data.ignore_index
        log_probs = F.log_softmax(self._logits(images, self._net), 1)
        finite = bool(torch.isfinite(log_probs).all())
        zero = log_probs.new_zeros(())
        nll = F.nll_loss(log_probs, seeds, ignore_index=ignore, reduction="sum")
        regularizer, adm_nll = zero, zero
        n_unlabelled = torch.zeros((), dtype=torch.long)
        xstep = 0.0
        if self.method == "gd" and self.lam > 0:
            reg = self._regularizer(log_probs.exp(), images, weights[idx])  # mean over idx
            regularizer = self.lam * reg * (len(idx) / batch)
        elif self.method == "adm":
            if given is not None:
                proposals = given
            elif cached is None:
                t0 = time.perf_counter()
                proposals = (
                    self._proposals(log_probs, weights[idx], seeds, ignore, pool, idx)
                    if finite
                    else seeds  # never hand GCO a non-finite unary; all ranks stop below
                )
                xstep = time.perf_counter() - t0
            else:
                proposals = cached[idx]
            unlabelled = torch.where(seeds == ignore, proposals, torch.full_like(seeds, ignore))
            n_unlabelled = (unlabelled != ignore).sum()
            adm_nll = F.nll_loss(log_probs, unlabelled, ignore_index=ignore, reduction="sum")
        parts = torch.stack([nll.detach(), regularizer.detach(), adm_nll.detach()])
        bad = bad or not finite or not bool(torch.isfinite(parts).all())
        counts = torch.tensor(
            [float((seeds != ignore).sum()), float(n_unlabelled), float(bad)], dtype=torch.float64
        )
        all_reduce_sum(counts)
        if counts[2] > 0:
            raise _nonfinite_error("the training loss")
        if self._previous is not None:  # warm starts: every rank keeps the whole batch's labels
            self._previous[all_gather_cat(idx)] = all_gather_cat(proposals)
        loss = nll / max(float(counts[0]), 1.0) + regularizer
        if counts[1] > 0:
            loss = loss + self.beta * adm_nll / float(counts[1])
        return loss * world_size(), xstep

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(
        self,
        data: SegmentationData,
        weights: GridWeights | None = None,
        *,
        energies: bool = True,
        per_image: bool = False,
        batch_size: int = 64,
    ) -> dict[str, Any]:
        """Metrics of the current network on ``data`` (eval mode).

        Returns mIoU and pixel accuracy (when ``data.masks`` exists; IoU per class over all
        pixels of the set), seed accuracy and, with ``energies``, the grid-CRF objective with
        ``energy_lam`` in relaxed and discrete form (means over images of
        pCE + energy_lam * Potts / N), its per-pixel Potts parts (``potts_relaxed``,
        ``potts_hard``) and the partial cross-entropy. With ``per_image``, also lists of each
        image's mIoU (``image_miou``), ``image_pce`` and ``image_potts_hard``.

        Runs the unwrapped model on the whole of ``data`` (under ``torchrun``, on every rank: no
        collective, the same numbers everywhere).
        """
        was_training = self.model.training
        self.model.eval()
        if energies and weights is None:
            weights = contrast_weights(data.images, self.neighbourhood, contrast=self.contrast)
        k = None
        conf = None
        seed_hits = seed_total = 0
        pce_sum = relaxed_sum = potts_sum = 0.0
        image_miou: list[float] = []
        image_pce: list[float] = []
        image_potts: list[float] = []
        for start in range(0, len(data), batch_size):
            sl = slice(start, start + batch_size)
            images = data.images[sl]
            log_probs = self._log_probs(images)
            k = log_probs.shape[1]
            pred = log_probs.argmax(1)
            if data.masks is not None:
                c = confusion_matrix(pred, data.masks[sl], k, ignore_index=data.ignore_index)
                conf = c if conf is None else conf + c
                if per_image:
                    image_miou += [
                        mean_iou(confusion_matrix(p, m, k, ignore_index=data.ignore_index))
                        for p, m in zip(pred, data.masks[sl])
                    ]
            if data.scribbles is not None:
                seeds = data.scribbles[sl]
                labelled = seeds != data.ignore_index
                seed_hits += int((pred[labelled] == seeds[labelled]).sum())
                seed_total += int(labelled.sum())
                if energies:
                    n_pix = images.shape[-1] * images.shape[-2]
                    nll = F.nll_loss(
                        log_probs, seeds, ignore_index=data.ignore_index, reduction="none"
                    )
                    image_nll = nll.sum((1, 2)) / labelled.sum((1, 2)).clamp_min(1)
                    w = weights[sl]
                    hard = potts_energy(pred, w) / n_pix
                    pce_sum += float(image_nll.sum())
                    relaxed_sum += float(
                        self.energy_relaxed(log_probs.exp(), weights=w).sum() / n_pix
                    )
                    potts_sum += float(hard.sum())
                    if per_image:
                        image_pce += image_nll.tolist()
                        image_potts += hard.tolist()
        self.model.train(was_training)
        n = len(data)
        rec: dict[str, Any] = {}
        if conf is not None:
            rec["miou"] = mean_iou(conf)
            rec["pixel_accuracy"] = pixel_accuracy(conf)
        if seed_total:
            rec["seed_accuracy"] = seed_hits / seed_total
        if energies and data.scribbles is not None:
            rec["pce"] = pce_sum / n
            rec["potts_relaxed"] = relaxed_sum / n
            rec["potts_hard"] = potts_sum / n
            rec["energy_relaxed"] = (pce_sum + self.energy_lam * relaxed_sum) / n
            rec["energy_discrete"] = (pce_sum + self.energy_lam * potts_sum) / n
        if per_image:
            if data.masks is not None:
                rec["image_miou"] = image_miou
            if energies and data.scribbles is not None:
                rec["image_pce"], rec["image_potts_hard"] = image_pce, image_potts
        return rec

    # ------------------------------------------------------------------ training

    def _save(self, state: dict[str, Any]) -> None:
        if self.checkpoint is None:
            return
        if rank() == 0:  # rank 0 writes, atomically
            atomic_torch_save(self.checkpoint, state)
        if is_distributed():  # no rank goes on before the file is there
            torch.distributed.barrier()

    def fit(
        self,
        train: SegmentationData,
        test: SegmentationData | None = None,
        *,
        resume: bool = False,
        callback: Callable[[dict[str, Any]], bool | None] | None = None,
    ) -> SegmentationResult:
        """Run ``steps`` optimizer steps on ``train`` (which must carry scribbles).

        ``callback(record)`` is called after each evaluation; returning ``True`` stops training.
        Under ``torchrun`` it runs on every rank (with the same record, timings aside) and
        training stops when it returns ``True`` on any rank.
        """
        if not isinstance(train, SegmentationData):
            raise TypeError(f"train must be a SegmentationData, got {type(train).__name__}")
        train.require_scribbles()
        if test is not None and not isinstance(test, SegmentationData):
            raise TypeError(f"test must be a SegmentationData or None, got {type(test).__name__}")
        self._check_classes(train, "train")
        if test is not None:
            self._check_classes(test, "test")
        n = len(train)
        if self.batch_size < world_size():
            raise ValueError(
                f"batch_size ({self.batch_size}) must be at least the number of ranks "
                f"({world_size()}): every rank takes a share of each mini-batch"
            )
        share = shard_range(self.batch_size)  # this rank's part of every mini-batch
        weights = contrast_weights(train.images, self.neighbourhood, contrast=self.contrast)
        settings = dict(self.settings(), n_train=n)
        gen = make_generator(self.seed)
        step, samples, train_seconds, xstep_seconds = 0, 0, 0.0, 0.0
        history: list[dict[str, Any]] = []
        cached: torch.Tensor | None = None
        order = torch.empty(0, dtype=torch.long)
        prefetched: tuple[torch.Tensor, torch.Tensor] | None = None  # (batch, its proposals)
        diverged = False
        self._previous = (
            torch.full((n, *train.scribbles.shape[1:]), -1, dtype=torch.long)
            if self.warm_start
            else None
        )

        found = resume and self.checkpoint is not None and self.checkpoint.exists()
        if resume and self.checkpoint is not None and not all_ranks_agree(float(found)):
            raise FileNotFoundError(
                f"checkpoint {self.checkpoint} exists on some ranks only; resuming needs a file "
                "system that every rank sees"
            )
        if found:
            saved = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
            if saved["settings"] != settings:
                raise ValueError(
                    f"checkpoint {self.checkpoint} was written with settings {saved['settings']}, "
                    f"not {settings}; delete it or use resume=False"
                )
            self.model.load_state_dict(saved["model"])
            self.optimizer.load_state_dict(saved["optimizer"])
            gen.set_state(saved["generator"])
            step, samples = saved["step"], saved["samples"]
            train_seconds, xstep_seconds = saved["train_seconds"], saved["xstep_seconds"]
            history, cached, order = saved["history"], saved["cached"], saved["order"]
            prefetched = saved["prefetched"]  # the whole batch's labels: keep this rank's
            if prefetched is not None:
                prefetched = (prefetched[0], prefetched[1][share])
            diverged = saved["diverged"]
            if self.warm_start:
                self._previous = saved["previous"]

        def record(at: int) -> dict[str, Any]:
            broadcast_buffers(self.model)  # every rank evaluates the same (rank 0's) model
            rec: dict[str, Any] = {"step": at, "samples": samples, "epochs": samples / n}
            rec["train_seconds"], rec["xstep_seconds"] = train_seconds, xstep_seconds
            rec.update({f"train_{k}": v for k, v in self.evaluate(train, weights).items()})
            if test is not None:
                rec.update({f"test_{k}": v for k, v in self.evaluate(test, energies=False).items()})
            return rec

        def state() -> dict[str, Any]:
            broadcast_buffers(self.model)
            return {
                "settings": settings,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "generator": gen.get_state(),
                "step": step,
                "samples": samples,
                "train_seconds": train_seconds,
                "xstep_seconds": xstep_seconds,
                "history": history,
                "cached": cached,
                "order": order,
                # the labels of the whole prefetched batch (gathered from the ranks' shares)
                "prefetched": None
                if prefetched is None
                else (prefetched[0], all_gather_cat(prefetched[1])),
                "diverged": diverged,
                "previous": self._previous,
            }

        # GCO solves a batch in worker processes; the numba solver in threads (no pool)
        use_pool = (
            self.method == "adm"
            and self.n_jobs > 1
            and _resolve_solver(self.expansion_solver) == "gco"
        )
        pool_cm = ExpansionPool(self.n_jobs) if use_pool else contextlib.nullcontext()
        bar = None
        if self.progress and rank() == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps, initial=step, desc=f"{self.method}", unit="step")
        stop = False
        ahead = 2 if self.overlap else 1  # batches of the order that must be known
        thread = ThreadPoolExecutor(max_workers=1) if self.overlap else None
        future: tuple[torch.Tensor, Future] | None = None
        self._net = data_parallel(self.model)  # after a resume: DDP broadcasts rank 0's state
        try:
            with pool_cm as pool:
                self.model.train()
                while step < self.steps and not diverged and not stop:
                    t0 = time.perf_counter()
                    while order.numel() < ahead * self.batch_size:  # new epoch: append a shuffle
                        order = torch.cat([order, torch.randperm(n, generator=gen)])
                    idx, order = order[: self.batch_size], order[self.batch_size :]
                    self.optimizer.zero_grad(set_to_none=True)
                    try:
                        given, bad, tx = None, False, time.perf_counter()
                        if (
                            self.method == "adm"
                            and self.schedule == "cached"
                            and (cached is None or step % self.refresh_every == 0)
                        ):
                            cached = self._all_proposals(train, weights, pool)
                            xstep_seconds += time.perf_counter() - tx
                        if thread is not None:
                            if future is not None:
                                prefetched, future = (future[0], future[1].result()), None
                            if prefetched is not None and torch.equal(prefetched[0], idx):
                                given = prefetched[1]
                            prefetched = None
                            nxt = order[: self.batch_size]
                            future = self._submit_next(thread, train, nxt, share, weights, pool)
                            bad = future is None
                            xstep_seconds += time.perf_counter() - tx
                        loss, xs = self._step_loss(
                            train, idx[share], len(idx), weights, cached, pool, given, bad
                        )
                    except FloatingPointError:
                        diverged = True
                        break
                    loss.backward()
                    self.optimizer.step()
                    step += 1
                    samples += int(idx.numel())
                    xstep_seconds += xs
                    train_seconds += time.perf_counter() - t0
                    if bar is not None:
                        bar.update(1)
                        if world_size() == 1:  # under torchrun this rank holds a share only
                            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
                    at_eval = self.eval_every and step % self.eval_every == 0 and step < self.steps
                    if at_eval:
                        history.append(record(step))
                        stop = any_rank(bool(callback is not None and callback(history[-1])))
                    if step % self.checkpoint_every == 0 or at_eval:
                        if future is not None:  # the checkpoint holds the finished proposals
                            prefetched, future = (future[0], future[1].result()), None
                        self._save(state())
                if future is not None:
                    prefetched, future = (future[0], future[1].result()), None
                if diverged:  # a diverged run is never continued; ranks may differ here
                    prefetched = None
        finally:
            self._net = self.model
        if thread is not None:
            thread.shutdown(wait=True)
        if bar is not None:
            bar.close()
        if not history or history[-1]["step"] != step or diverged:
            try:
                final = record(step)
            except FloatingPointError:
                final = {"step": step, "samples": samples, "epochs": samples / n}
                diverged = True
            final["diverged"] = diverged
            history.append(final)
            if callback is not None:
                callback(final)
        self._save(state())
        return SegmentationResult(
            history=history,
            final=history[-1],
            steps=step,
            samples=samples,
            train_seconds=train_seconds,
            xstep_seconds=xstep_seconds,
            diverged=diverged,
            proposals=cached,
        )


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
    """The network's hard labelling ``(N, H, W)`` (eval mode, argmax; no CRF post-processing)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError("images must be a (N, C, H, W) tensor")
    was_training = model.training
    model.eval()
    out = [model(images[s : s + batch_size]).argmax(1) for s in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, *images.shape[-2:], dtype=torch.long)
