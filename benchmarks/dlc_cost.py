"""DLC's cost: training-step time against the baseline, and test-time solver throughput.

    python benchmarks/dlc_cost.py [--quick] [--only training|throughput|icp]

1. Training step of the registration model (PointNet energy, batch 16, 256 points): the unrolled
   baseline, baseline + hinges (``dlc``) and energy + hinges (``prise``). The hinges need
   ``2 + 2 n_samples`` energy-sized evaluations (g(Y), E at R*, at the perturbed points and at
   the points at lambda), so the expected overhead over the baseline is about
   ``(2 + 2 n_samples) x`` the share of one energy evaluation (forward + backward) in a baseline
   step; that target is printed next to the measured ratio.
2. Throughput (pairs/s, one thread) on the same CGAL test pairs (procedural shapes without the
   Debian package): beyondgd's batched ICP, the learned model's Gauss-Newton (10 iterations), and
   open3d's ``registration_icp`` (point-to-point, same iteration cap and tolerance), with each
   one's success rate (< 5 deg) for context, and each one's throughput as a ratio to open3d's
   (> 1: faster). open3d is optional (``pip install open3d-cpu``). ``--only icp``: just the
   two ICPs (no training step, no Gauss-Newton).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _timing import median_time
from beyondgd.data import (
    DataNotFoundError,
    load_cgal_meshes,
    make_registration_pairs,
    procedural_shapes,
)
from beyondgd.registration import PointNetRegistration, RegistrationTrainer, geodesic_error, icp


def _pairs(n: int, n_points: int, angle_range, seed: int, meshes):
    return make_registration_pairs(
        meshes, n, n_points=n_points, angle_range=angle_range, noise=0.01, seed=seed
    )


def bench_training(meshes, quick: bool) -> None:
    batch, n_points, n_samples = 16, 256, 4
    hidden = (32, 64, 128)
    repeats = 3 if quick else 10
    pairs = _pairs(batch, n_points, (0.0, 90.0), 0, meshes)
    src, tgt, rot = pairs.source, pairs.target, pairs.rotation
    print(f"\n== training step: batch {batch}, {n_points} points, PointNet {hidden}")
    times = {}
    for loss in ("baseline", "dlc", "prise"):
        torch.manual_seed(0)
        trainer = RegistrationTrainer(
            PointNetRegistration(hidden), loss=loss, n_samples=n_samples,
            jacobian="finite-difference",
        )  # fmt: skip
        gen = torch.Generator().manual_seed(0)
        step = lambda t=trainer, g=gen: t.step(src, tgt, rot, generator=g)  # noqa: E731
        times[loss] = median_time(step, repeats)
    model = PointNetRegistration(hidden)
    gy = model.features(tgt).detach()

    def one_energy():
        e = model.energy(rot, src, gy).sum()
        e.backward()

    t_energy = median_time(one_energy, repeats)
    share = t_energy / times["baseline"]
    target = 1 + (2 + 2 * n_samples) * share
    print(f"{'loss':<10}{'s/step':>10}{'vs baseline':>14}")
    for loss, t in times.items():
        print(f"{loss:<10}{t:>10.4f}{t / times['baseline']:>13.2f}x")
    print(
        f"one energy evaluation (fwd+bwd): {t_energy:.4f} s = {share:.1%} of a baseline step; "
        f"expected dlc/baseline <= 1 + (2 + 2 x {n_samples}) x {share:.3f} = {target:.2f}x, "
        f"measured {times['dlc'] / times['baseline']:.2f}x"
    )


def _open3d_icp(pairs, n_iters: int):
    try:
        import open3d as o3d
    except ImportError as err:  # not installed, or its shared libraries (libusb) are missing
        return str(err)
    reg = o3d.pipelines.registration
    criteria = reg.ICPConvergenceCriteria(
        relative_fitness=1e-6, relative_rmse=1e-6, max_iteration=n_iters
    )
    clouds = []
    for s, t in zip(pairs.source.double().numpy(), pairs.target.double().numpy()):
        ps, pt = o3d.geometry.PointCloud(), o3d.geometry.PointCloud()
        ps.points = o3d.utility.Vector3dVector(s)
        pt.points = o3d.utility.Vector3dVector(t)
        clouds.append((ps, pt))
    est = reg.TransformationEstimationPointToPoint()

    def run():
        return np.stack(
            [reg.registration_icp(ps, pt, 10.0, np.eye(4), est, criteria).transformation
             for ps, pt in clouds]
        )  # fmt: skip

    return run


def bench_throughput(meshes, source: str, quick: bool, gauss_newton: bool = True) -> None:
    n_pairs = 32 if quick else 128
    repeats = 2 if quick else 5
    n_iters = 30
    pairs = _pairs(n_pairs, 256, (0.0, 45.0), 1, meshes)
    print(f"\n== test-time throughput: {n_pairs} pairs from {source}, 256 points, angles 0-45 deg")
    rows = []

    def ours():
        return icp(pairs.source, pairs.target, n_iters=n_iters, tol=1e-6).rotation

    t = median_time(ours, repeats)
    err = geodesic_error(ours(), pairs.rotation, degrees=True)
    rows.append(("beyondgd icp (batched, KD-tree)", t, err))

    if gauss_newton:
        torch.manual_seed(0)
        model = PointNetRegistration((32, 64, 128)).eval()  # untrained: only the speed matters

        def gn():
            return model.register(pairs.source, pairs.target, n_iters=10).w

        t = median_time(gn, repeats)
        rows.append(("beyondgd Gauss-Newton (10 it, untrained net)", t, None))

    o3d_run = _open3d_icp(pairs, n_iters)
    if isinstance(o3d_run, str):
        print(
            "open3d: skipped: pip install open3d-cpu (on Debian it also needs "
            f"apt-get install libusb-1.0-0); import failed with: {o3d_run}"
        )
    else:
        t = median_time(o3d_run, repeats)
        err = geodesic_error(
            torch.from_numpy(o3d_run()[:, :3, :3]).float(), pairs.rotation, degrees=True
        )
        rows.append(("open3d registration_icp (point-to-point)", t, err))
    peer = rows[-1][1] if rows[-1][0].startswith("open3d") else None
    print(f"{'solver':<46}{'pairs/s':>10}{'vs open3d':>11}{'< 5 deg':>10}{'median err':>12}")
    for name, t, e in rows:
        succ = "-" if e is None else f"{float((e < 5).float().mean()):.2f}"
        med = "-" if e is None else f"{float(e.median()):.2f}"
        ratio = "-" if peer is None else f"{peer / t:.2f}x"  # throughput ratio, > 1: faster
        print(f"{name:<46}{n_pairs / t:>10.1f}{ratio:>11}{succ:>10}{med:>12}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer pairs and repeats")
    parser.add_argument(
        "--only", choices=("training", "throughput", "icp"), help="run one section only"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        meshes, source = load_cgal_meshes(), "CGAL meshes"
    except (DataNotFoundError, ImportError):
        meshes = procedural_shapes(20, seed=1, kinds=("superquadric", "blob"))
        source = "procedural shapes (CGAL meshes missing: apt-get install libcgal-demo)"
    t0 = time.perf_counter()
    if args.only in (None, "training"):
        bench_training(meshes, args.quick)
    if args.only in (None, "throughput", "icp"):
        bench_throughput(meshes, source, args.quick, gauss_newton=args.only != "icp")
    print(
        f"\n(total {time.perf_counter() - t0:.0f} s; one torch thread; torch {torch.__version__})"
    )


if __name__ == "__main__":
    main()
