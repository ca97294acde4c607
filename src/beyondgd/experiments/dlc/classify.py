r"""``dlc-classify``: a recurrent classifier trained with and without the label-space DLC hinge.

A GRU reads scikit-learn's 8x8 digits row by row (8 steps of 8 pixels) and predicts the class from
its last state. The per-datum energy over label distributions :math:`w` on the simplex is the
cross-entropy :math:`h(w) = -\sum_k w_k \log p_k(x)`; the baseline minimizes
:math:`h(w^*)` (one-hot :math:`w^*`), DLC adds :math:`\rho` times the star-convexity hinges at
label perturbations drawn by :class:`~beyondgd.landscape.SimplexSampler` (perturbed logits of the
smoothed one-hot label). Because :math:`h` is linear in :math:`w`, :math:`H_1 = \lambda[h(w^*) -
h(w')]_+` and :math:`H_2` act as margins on the log-probabilities, while :math:`H_3` is the
constant :math:`\frac{\mu}{2}\lambda(1-\lambda)\|\delta\|^2` with no gradient, so the default
terms are ``H1, H2``. Same network, initial weights, optimizer, epochs and batches for both arms;
the hinge adds no network evaluation (the energy at a perturbed label reuses the logits), so the
cost in network passes is equal. Each arm's learning rate is chosen on a fixed validation pool of
images that no test split ever uses. Metrics: test accuracy, negative log-likelihood and expected
calibration error (15 bins).

Reconstruction: the TPAMI paper's RNN experiments could not be read; this is a small stand-in of
the same family (an iterative/recurrent predictor with the hinge in its output space).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from beyondgd.core import derive_seed, finite_or_none, make_generator
from beyondgd.data import standardize
from beyondgd.experiments.dlc.common import (
    hinge_evaluations,
    make_hinge,
    method_label,
    tune_learning_rate,
    tuning_table,
)
from beyondgd.experiments.harness import (
    Claim,
    Method,
    MetricSpec,
    Problem,
    Reproduction,
    Table,
)
from beyondgd.experiments.registry import register
from beyondgd.landscape import SimplexSampler

NAME = "dlc-classify"


class RowGRU(nn.Module):
    """GRU over the image rows, a linear head on the last hidden state."""

    def __init__(self, n_in: int = 8, hidden: int = 32, n_classes: int = 10):
        super().__init__()
        self.rnn = nn.GRU(n_in, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.rnn(x)
        return self.head(h[-1])


def label_energy(w: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """:math:`h(w) = -\\sum_k w_k \\log p_k`; ``w`` ``(..., B, K)``, ``log_probs`` ``(B, K)``."""
    return -(w * log_probs).sum(-1)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15):
    """ECE: the confidence-weighted gap between confidence and accuracy over equal-width bins."""
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=probs.dtype)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += float(
                mask.double().mean() * (conf[mask].double().mean() - correct[mask].mean()).abs()
            )
    return ece


def digits_indices(labels, config: Mapping[str, Any], stream: tuple):
    """``(train, eval)`` indices into the 1797 digits for a replicate ``stream``.

    A fixed stratified share ``val_fraction`` of the images is the validation pool: tuning
    (``stream = ("validation", v)``) trains on a split of the other images and evaluates on the
    pool; a test replicate (``("test", seed)``) draws its own stratified train/test split of the
    other images only, so no test image is ever used for tuning."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    rest, pool = train_test_split(
        index, test_size=config["val_fraction"], random_state=0, stratify=labels
    )
    split = derive_seed(NAME, *stream, "split") % 2**32
    train, test = train_test_split(
        rest, test_size=config["test_fraction"], random_state=split, stratify=labels[rest]
    )
    return train, (pool if stream[0] == "validation" else test)


def digits_data(config: Mapping[str, Any], stream: tuple):
    """``x_train, y_train, x_eval, y_eval`` (``(N, 8, 8)`` row sequences and labels) of
    :func:`digits_indices`, standardised with the training part's statistics."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    train, test = digits_indices(y, config, stream)
    xtr, xte = standardize(
        torch.tensor(x[train], dtype=torch.float32), torch.tensor(x[test], dtype=torch.float32)
    )
    return (
        xtr.reshape(-1, 8, 8),
        torch.tensor(y[train]),
        xte.reshape(-1, 8, 8),
        torch.tensor(y[test]),
    )


def train_classifier(
    spec: Mapping[str, Any], config: Mapping[str, Any], lr: float, stream: tuple
) -> dict[str, Any]:
    """Train one arm on one replicate (``stream``) and evaluate it; the initial weights and the
    batch order depend on the replicate only, so both arms start alike and see the same
    batches."""
    xtr, ytr, xte, yte = digits_data(config, stream)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(NAME, *stream, "init") % 2**63)
        model = RowGRU(8, config["hidden"], 10)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = make_generator(derive_seed(NAME, *stream, "batches"))
    hinge_gen = make_generator(derive_seed(NAME, *stream, "hinge"))
    h = config["hinge"]
    hinge = make_hinge(label_energy, SimplexSampler(h["sigma"], h["smoothing"]), h)
    use_hinge = bool(spec["hinge"])
    passes = label_evals = 0
    for _ in range(config["epochs"]):
        for idx in torch.randperm(len(xtr), generator=gen).split(config["batch"]):
            log_probs = F.log_softmax(model(xtr[idx]), -1)
            passes += len(idx)
            loss = F.nll_loss(log_probs, ytr[idx])
            if use_hinge:
                onehot = F.one_hot(ytr[idx], 10).to(log_probs.dtype)
                out = hinge(onehot, log_probs, generator=hinge_gen)
                label_evals += len(idx) * hinge_evaluations(h)
                loss = loss + out.total
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        logits = model(xte)
        probs = logits.softmax(-1)
        metrics = finite_or_none(
            {
                "test_accuracy": float((logits.argmax(1) == yte).double().mean()),
                "test_nll": float(F.cross_entropy(logits, yte)),
                "ece": expected_calibration_error(probs, yte),
                "mean_confidence": float(probs.max(1).values.mean()),
            }
        )
    return {**metrics, "train_passes": passes, "label_energy_evals": label_evals}


@register
class DLCClassify(Reproduction):
    name = NAME
    title = "DLC label-space hinge for a recurrent digit classifier"
    summary = (
        "Adding the label-space star-convexity hinge to the cross-entropy of a recurrent "
        "classifier is claimed to improve its predictions. For a GRU reading scikit-learn's "
        "digits row by row, with the same network, initial weights, epochs and batches (equal "
        "network passes) and each arm's learning rate tuned on held-out validation images, we "
        "test whether DLC raises the test accuracy and lowers the expected calibration error "
        "against plain cross-entropy training; the test negative log-likelihood is exploratory."
    )
    base_config: dict[str, Any] = {
        "seeds": 20,
        "val_seeds": 2,
        "val_fraction": 0.2,
        "test_fraction": 0.25,
        "hidden": 32,
        "epochs": 30,
        "batch": 64,
        "lrs": [3e-3, 1e-2, 3e-2],
        "hinge": {
            "sigma": 2.0,
            "smoothing": 0.05,
            "lam": 0.5,
            "mu": 0.5,
            "rho": 1.0,
            "n_samples": 4,
            "aggregate": "sum",
            "terms": ["H1", "H2"],
            "antithetic": True,
        },
        "methods": {
            "baseline": {"label": "cross-entropy", "hinge": False},
            "dlc": {"label": "DLC", "hinge": True},
        },
    }
    presets = {
        "smoke": {"seeds": 2, "val_seeds": 1, "epochs": 1, "lrs": [3e-3]},
        "quick": {"seeds": 8, "val_seeds": 1, "epochs": 15},
        "full": {},
    }
    # measured with --workers 1 on the 2-core machine shared with other jobs (quick: 15 s of
    # compute, full: 84 s); 2-worker wall time estimated as half of that
    # quick: measured wall time in the fresh-clone `make run` of 2026-12-06 (2 workers)
    expected_seconds = {"smoke": 3, "quick": 9, "full": 45}
    metrics = (
        MetricSpec("test_accuracy", "test accuracy", lower_is_better=False),
        MetricSpec("ece", "expected calibration error"),
        MetricSpec("test_nll", "test NLL"),
    )
    cost_columns = ("train_passes", "label_energy_evals")

    def problems(self, config: Mapping[str, Any]) -> list[Problem]:
        return [Problem("digits-rows", {"hidden": config["hidden"]})]

    def needs_tuning(self, method: Method, config: Mapping[str, Any]) -> bool:
        return True

    def tune(self, problem: Problem, method: Method, config: Mapping[str, Any]) -> dict[str, Any]:
        def score(lr: float) -> float:
            accs = [
                train_classifier(method.params, config, lr, ("validation", v))["test_accuracy"]
                for v in range(int(config["val_seeds"]))
            ]
            return sum(0.0 if a is None else a for a in accs) / len(accs)

        return tune_learning_rate(method.params.get("lrs", config["lrs"]), score)

    def run(self, problem, method, seed, config, tuned) -> dict[str, Any]:
        lr = tuned[method.name]["params"]["lr"]
        return {**train_classifier(method.params, config, lr, ("test", seed)), "lr": lr}

    def claims(self, config: Mapping[str, Any]) -> list[Claim]:
        methods = config["methods"]
        if "dlc" not in methods or "baseline" not in methods:
            return []
        base = method_label(methods, "baseline")
        equal = {"cost": "train_passes"}
        return [
            Claim(
                f"DLC reaches a higher test accuracy than {base} training",
                "test_accuracy",
                "dlc",
                "baseline",
                lower_is_better=False,
                **equal,
            ),
            Claim(
                f"DLC has a lower expected calibration error than {base} training",
                "ece",
                "dlc",
                "baseline",
                **equal,
            ),
            Claim(
                f"DLC has a lower test NLL than {base} training",
                "test_nll",
                "dlc",
                "baseline",
                primary=False,
                **equal,
            ),
        ]

    def describe(self, config: Mapping[str, Any]) -> list[str]:
        h = config["hinge"]
        return [
            f"GRU with {config['hidden']} units over the 8 rows of scikit-learn's digits; a "
            f"fixed stratified {config['val_fraction']:g} of the images is the validation pool; "
            f"**one replicate = one seed** ({config['seeds']} seeds), which draws a stratified "
            f"{1 - config['test_fraction']:g}/{config['test_fraction']:g} train/test split of "
            "the other images, the initial network (the same for both arms), the batch order "
            f"and the hinge samples. Adam, {config['epochs']} epochs of batch {config['batch']}.",
            "Arms: "
            + "; ".join(
                f"**{method_label(config['methods'], n)}** (`{n}`): "
                + ("cross-entropy plus rho x the hinges" if s["hinge"] else "cross-entropy")
                for n, s in config["methods"].items()
            )
            + f". Hinge: simplex perturbations of the logits (sigma {h['sigma']:g}, label "
            f"smoothing {h['smoothing']:g}, antithetic {h['antithetic']}), terms "
            f"{', '.join(h['terms'])}, rho {h['rho']:g}, mu {h['mu']:g}, lambda {h['lam']:g}, "
            f"{h['n_samples']} samples ({h['aggregate']}).",
            "**Equal cost.** Both arms make the same network passes (`train_passes`: forward "
            "and backward passes of the GRU per training image, summed over epochs), which the "
            "claims hold equal. The hinge evaluates the label energy at the perturbed labels "
            "from the same logits (`label_energy_evals`, a dot product each, no network pass).",
            "**Tuning.** Each arm's Adam learning rate is chosen from "
            f"{config['lrs']} by the accuracy on the validation pool, after training on "
            f"{config['val_seeds']} split(s) drawn with seeds the test units never use.",
            "The cross-entropy is linear in the label distribution, so H3 has no gradient here; "
            "H1/H2 act as margins between the true class's log-probability and those of nearby "
            "label mixtures (compare the mean confidence of the two arms in `results.csv`).",
        ]

    def extra_tables(self, results) -> list[Table]:
        table = tuning_table(results, "validation accuracy")
        return [table] if table else []
