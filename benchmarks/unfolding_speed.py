"""Unfolding speed: C-DEC's reconstruction time against the iterative solver it unrolls, and its
training throughput against a plain PyTorch loop.

    python benchmarks/unfolding_speed.py [--quick] [--threads N] [--device DEVICE]

(1) Reconstruction to equal test error (cdec.md, "Speed"). A C-DEC (DECONET, L layers, K = 3
    continuation stages, N = 4n, log-cosh) is trained on Fashion-MNIST (the bundled image patches
    when the Debian package is missing); its test MSE is the target. The solver it unrolls, run
    as a convergent method (FISTA on the dual of the smoothed analysis-L1 problem
    ``min ||W x||_1 + mu/2 ||x - x0||^2 s.t. ||A x - y|| <= eps``, exact block prox, step
    ``mu / ||[W; A]||^2``, TFOCS continuation ``x0 <- x`` every ``restart`` iterations), is run
    with the *same learned W*, with the identity and with an orthonormal Haar transform, until its
    test MSE reaches the target. Reported: iterations (vs C-DEC's K L layers) and wall time (vs
    one C-DEC forward pass) as ratios, or "not reached" with the best MSE it got to.
(2) Training throughput in images/s (forward + backward + Adam step, batch 128, log-cosh) of
    ``CDEC`` against a plain loop that does the same matmuls with no module machinery, at 28 x 28
    with N = 10 n, L = 10 (``--quick``: 14 x 14, N = 4 n, L = 5).

``--quick`` trains a 14 x 14 model for a few epochs (about a minute on one core); without it the
28 x 28 model trains for several minutes and the solvers run on 200 test images.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch.nn import functional as F

from _timing import median_time
from beyondgd.data import DataNotFoundError, load_fashion_mnist, load_image_patches, pool2x2
from beyondgd.unfolding import (
    CDEC,
    GaussianCS,
    Trainer,
    haar_analysis_matrix,
    log_cosh_loss,
)


def load_images(side: int, n_train: int, n_test: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Standardised flat train / test images (Fashion-MNIST, or bundled patches)."""
    try:
        train, _ = load_fashion_mnist("train", limit=n_train)
        test, _ = load_fashion_mnist("test", limit=n_test)
        if side == 14:
            train, test = pool2x2(train), pool2x2(test)
        name = f"Fashion-MNIST {side}x{side}"
    except DataNotFoundError:
        train = load_image_patches("train", n_train, size=side, split_by="location")
        test = load_image_patches("test", n_test, size=side, split_by="location")
        name = f"grey patches {side}x{side} (Fashion-MNIST not installed)"
    train, test = train.reshape(n_train, -1), test.reshape(n_test, -1)
    mean, std = train.mean(), train.std()
    return (train - mean) / std, (test - mean) / std, name


@torch.no_grad()
def dual_fista(op, w, y, eps, mu, iters, restart, callback=None):
    """FISTA on the dual of the smoothed analysis-L1 problem, with TFOCS continuation.

    Returns the final primal iterate; ``callback(k, x)`` after every iteration (it may return
    True to stop).
    """
    a = op.matrix
    step = mu / float(torch.linalg.matrix_norm(torch.cat([w, a]), ord=2)) ** 2
    x0 = y @ a
    z1 = y.new_zeros(y.shape[0], w.shape[0])
    z2 = torch.zeros_like(y)
    v1, v2, t = z1, z2, 1.0
    x = x0
    for k in range(1, iters + 1):
        x = x0 + (v1 @ w - v2 @ a) / mu
        n1 = torch.clamp(v1 - step * (x @ w.T), -1.0, 1.0)
        r = v2 - step * (y - x @ a.T)
        norm = r.norm(dim=1, keepdim=True).clamp_min(1e-30)
        n2 = r * torch.clamp(1.0 - step * eps / norm, min=0.0)
        t_new = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        v1 = n1 + (t - 1.0) / t_new * (n1 - z1)
        v2 = n2 + (t - 1.0) / t_new * (n2 - z2)
        z1, z2, t = n1, n2, t_new
        if restart and k % restart == 0:  # continuation: re-centre, keep the duals
            x0 = x0 + (z1 @ w - z2 @ a) / mu
            v1, v2, t = z1, z2, 1.0
        if callback is not None and callback(k, x):
            break
    return x


#: (mu, continuation restart period; 0 = none) for the reference solver
SOLVER_SETTINGS = ((100.0, 0), (100.0, 50), (10.0, 0), (1.0, 0), (1.0, 50))


def bench_reconstruction(quick: bool, device: torch.device) -> None:
    side, red, layers, stages = (14, 4, 5, 3) if quick else (28, 4, 5, 3)
    n_train, n_test, epochs = (1000, 500, 6) if quick else (2000, 200, 6)
    xtr, xte, name = load_images(side, n_train, n_test)
    n = xtr.shape[1]
    m = round(0.25 * n)
    op = GaussianCS(m, n, seed=0).to(device)
    gen = torch.Generator().manual_seed(0)
    noise = 1e-4
    xtr, xte = xtr.to(device), xte.to(device)
    ytr = op(xtr) + noise * torch.randn(n_train, m, generator=gen).to(device)
    yte = op(xte) + noise * torch.randn(n_test, m, generator=gen).to(device)
    eps = noise * math.sqrt(m)
    model = CDEC(
        op,
        redundancy=red,
        layers=layers,
        stages=stages,
        eps=eps,
        clamp=(float(xtr.min()), float(xtr.max())),
        seed=1,
    ).to(device)
    t0 = time.perf_counter()
    result = Trainer(model, "log-cosh", lr=1e-2, max_epochs=epochs, patience=None).fit(
        (ytr, xtr), test=(yte, xte)
    )
    target = result.final["test_mse"]
    model.eval()
    with torch.no_grad():
        t_net = median_time(lambda: model(yte), 5)
    print(
        f"\n== (1) reconstruction to C-DEC's test MSE: {name}, m = {m} (25%), N = {red}n, "
        f"L = {layers}, K = {stages}; trained {epochs} epochs on {n_train} images in "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print(
        f"C-DEC: test MSE {target:.4f}, {stages * layers} layers, "
        f"{t_net * 1e3:.1f} ms for {n_test} test images"
    )
    print(
        "solver (dual FISTA + continuation)  mu     restart  iters to target  iter ratio  "
        "time ratio  best MSE (at iter)"
    )
    transforms = {
        "learned W": model.net.W.detach(),
        "identity": torch.eye(n, device=device),
        "Haar": haar_analysis_matrix(side, side, levels=1 if side == 14 else 2, device=device),
    }
    max_iter = 2000
    for label, w in transforms.items():
        for mu, restart in SOLVER_SETTINGS:
            state = {"best": math.inf, "best_k": 0, "hit": None}

            def watch(k, x, state=state):
                mse = float(F.mse_loss(x, xte))
                if mse < state["best"]:
                    state["best"], state["best_k"] = mse, k
                if mse <= target:
                    state["hit"] = k
                    return True
                return False

            dual_fista(op, w, yte, eps, mu, max_iter, restart, watch)
            best = f"{state['best']:.4f} ({state['best_k']})"
            if state["hit"] is None:
                print(
                    f"{label:<36}{mu:<7g}{restart:<9d}not reached in {max_iter:<5d}"
                    f"{'-':>9}  {'-':>10}  {best}"
                )
                continue
            k = state["hit"]
            t_solver = median_time(
                lambda w=w, mu=mu, restart=restart, k=k: dual_fista(
                    op, w, yte, eps, mu, k, restart
                ),
                2,
            )
            print(
                f"{label:<36}{mu:<7g}{restart:<9d}{k:<17d}{k / (stages * layers):>9.1f}  "
                f"{t_solver / t_net:>10.1f}  {best}"
            )


def plain_cdec_step(w, a, y, x, opt, layers, stages, mu, eps, a_decay, b_decay, lipschitz, lo, hi):
    """One training step of C-DEC written as bare tensor code (same matmuls, no modules)."""
    opt.zero_grad(set_to_none=True)
    r = math.sqrt(mu / lipschitz)
    scale = (1 - r) / (1 + r)
    x0 = y @ a
    z1 = y.new_zeros(y.shape[0], w.shape[0])
    z2 = torch.zeros_like(y)
    for _ in range(stages):
        u1, u2, t1, t2, th = z1, z2, 1.0, 1.0, 1.0
        for _ in range(layers):
            v1 = (1 - th) * u1 + th * z1
            v2 = (1 - th) * u2 + th * z2
            xh = x0 + (v1 @ w - v2 @ a) / mu
            s1, s2 = t1 / th, t2 / th
            z1 = torch.clamp(v1 - s1 * (xh @ w.T), -s1, s1)
            q = v2 - s2 * (y - xh @ a.T)
            z2 = torch.sign(q) * torch.clamp(q.abs() - s2 * eps, min=0.0)
            u1 = (1 - th) * u1 + th * z1
            u2 = (1 - th) * u2 + th * z2
            t1, t2, th = a_decay * t1, b_decay * t2, min(1.0, th * scale)
        xh = torch.clamp(xh, lo, hi)
        x0, z1, z2 = xh, u1, u2
    loss = log_cosh_loss(xh, x)
    loss.backward()
    opt.step()


def bench_throughput(quick: bool, device: torch.device) -> None:
    side, red, layers, stages = (14, 4, 5, 3) if quick else (28, 10, 10, 3)
    batch, steps = 128, (10 if quick else 3)
    n = side * side
    m = round(0.25 * n)
    op = GaussianCS(m, n, seed=0).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, n, generator=gen).to(device)
    y = op(x)
    lo, hi = -1.0, 3.0
    model = CDEC(op, redundancy=red, layers=layers, stages=stages, clamp=(lo, hi), seed=1)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def lib_step():
        opt.zero_grad(set_to_none=True)
        model.training_loss(y, x, log_cosh_loss).backward()
        opt.step()

    w = model.net.W.detach().clone().requires_grad_(True)
    opt_plain = torch.optim.Adam([w], lr=1e-3)

    def plain_step():
        plain_cdec_step(
            w, op.matrix, y, x, opt_plain, layers, stages, 100.0, 0.0, 0.5, 0.3, 1000.0, lo, hi
        )

    def per_second(step):
        step()  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * batch / (time.perf_counter() - t0)

    lib, plain = per_second(lib_step), per_second(plain_step)
    print(
        f"\n== (2) training throughput: {side}x{side}, N = {red}n ({red * n} x {n} W), "
        f"L = {layers}, K = {stages}, batch {batch}, {steps} timed steps"
    )
    print(f"beyondgd CDEC       {lib:9.1f} images/s")
    print(f"plain PyTorch loop  {plain:9.1f} images/s   ratio plain / CDEC = {plain / lib:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="14 x 14 images, small models")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device {device}")
    bench_reconstruction(args.quick, device)
    bench_throughput(args.quick, device)


if __name__ == "__main__":
    main()
