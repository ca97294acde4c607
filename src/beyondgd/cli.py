"""``beyondgd``: list, run and report the reproductions.

beyondgd list
beyondgd reproduce NAME [NAME ...] | all  [--preset smoke|quick|full|paper] [--seeds N]
                   [--workers N | --executor ray [--address auto|ray://host:port]]
                   [--out DIR] [--resume] [--set KEY=JSON ...] [--show-config]
beyondgd report [--out DIR]
beyondgd segment train   --images DIR --scribbles DIR [--masks DIR] --method adm|gd|pce --lam L
                         [--norm batch|group] --out DIR
torchrun --nproc_per_node N -m beyondgd segment train ...   (data-parallel, gloo on the CPU)
beyondgd segment compare --images DIR --scribbles DIR --masks DIR [--lams L ...] --out DIR
beyondgd segment predict --model FILE --images DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from beyondgd.experiments import get, names, resolve_config, run_experiment, write_index
from beyondgd.experiments.harness import PRESETS, UnitFailed, count_units, parse_set
from beyondgd.experiments.harness.executors import EXECUTORS, default_workers
from beyondgd.experiments.harness.runner import presets_of

#: what ``list`` assumes a preset's time was measured on
LIST_CORES = 2


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show (required options,
    flags, None) or the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if action.required or action.default in (None, False) or "default" in help_text:
            return action.help
        return super()._get_help_string(action)


_HELP = _HelpFormatter


def _fmt_seconds(s: float) -> str:
    if s != s:  # NaN: the preset does not exist
        return "-"
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _cmd_list(args: argparse.Namespace) -> int:
    presets = ("quick", "full", "paper")
    rows = [("name",) + presets + ("what it tests",)]
    totals = dict.fromkeys(presets, 0.0)
    for name in names():
        exp = get(name)
        cells = []
        for preset in presets:
            s = float(exp.expected_seconds.get(preset, float("nan")))
            cells.append(
                "-" if s != s else f"{_fmt_seconds(s)} ({s * LIST_CORES / 3600:.2g} core-h)"
            )
            if s == s:
                totals[preset] += s
        rows.append((name, *cells, exp.title))
    widths = [max(len(r[i]) for r in rows) for i in range(len(presets) + 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1])
    print(
        f"\ntimes: wall time on {LIST_CORES} CPU cores with --workers {LIST_CORES} (core-hours = "
        f"{LIST_CORES} x wall); paper presets are sized for a Ray cluster or a GPU. "
        f"`reproduce all --preset quick`: about {_fmt_seconds(totals['quick'])}."
    )
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    known = names()
    selected = known if args.names == ["all"] else args.names
    unknown = [n for n in selected if n not in known]
    if unknown:
        print(f"error: unknown experiment(s) {unknown}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    settings = parse_set(args.set)
    if args.show_config:
        for name in selected:
            config = resolve_config(get(name), args.preset, args.seeds, settings=settings)
            print(f"# {name} ({count_units(get(name), config)} units)")
            print(json.dumps(config, indent=2, sort_keys=True))
        return 0
    t0 = time.perf_counter()
    workers = args.workers if args.workers is not None else default_workers()
    for name in selected:
        exp = get(name)
        if args.names == ["all"] and args.preset not in presets_of(exp):
            print(f"{name}: no {args.preset!r} preset, skipped")
            continue
        try:
            result = run_experiment(
                exp,
                preset=args.preset,
                seeds=args.seeds,
                out_dir=args.out,
                resume=args.resume,
                progress=not args.no_progress,
                settings=_settings_for(exp, args.preset, settings)
                if len(selected) > 1
                else settings,
                workers=workers,
                executor=args.executor,
                address=args.address,
            )
        except UnitFailed as err:
            print(
                f"error: {name}: {err}\nfinished units are checkpointed; fix the cause and "
                "rerun with --resume",
                file=sys.stderr,
            )
            return 1
        print(f"{name}: report at {result.out_dir / 'report.html'}")
        for v in result.report.verdicts:
            tag = "" if v.get("primary", True) else " (exploratory)"
            print(f"  [{v['status']}] {v['claim']}{tag}")
    index = write_index(args.out)
    print(f"all reports: {index}  ({time.perf_counter() - t0:.0f} s)")
    return 0


def _settings_for(exp, preset: str, settings: dict) -> dict:
    """With several reproductions, each takes the ``--set`` keys its config has."""
    config = exp.config(preset)
    return {k: v for k, v in settings.items() if k.split(".")[0] in config}


def _cmd_report(args: argparse.Namespace) -> int:
    print(write_index(args.out))
    return 0


def _load_folder(args: argparse.Namespace, *, need_masks: bool = False):
    from beyondgd.data.scenes import load_scribble_folder

    if need_masks and not args.masks:
        raise ValueError(
            "--masks is required: the comparison selects lambda and reports mIoU on held-out "
            "images with ground-truth masks (use `segment train` without masks)"
        )
    size = None if args.size is None else (args.size, args.size)
    return load_scribble_folder(
        args.images, args.scribbles, masks=args.masks, size=size, class_names=args.class_names
    )


def _cmd_segment_train(args: argparse.Namespace) -> int:
    import warnings

    from beyondgd.core.distributed import process_group_from_env

    # Under torchrun (WORLD_SIZE in the environment) every rank joins a gloo group (the command
    # trains on the CPU), trains on its share of each batch, and the group is destroyed at the end.
    with process_group_from_env(backend="gloo"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="batch norm under")  # the note says it once
        return _segment_train(args)


def _segment_train(args: argparse.Namespace) -> int:
    from beyondgd.core.distributed import rank, world_size
    from beyondgd.segmentation import SegmentationTrainer, SegNet, save_segnet

    main_rank = rank() == 0
    data = _load_folder(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if world_size() > 1 and main_rank:
        print(f"data-parallel training on {world_size()} ranks (gloo, CPU)")
        if args.norm == "batch":
            print(
                "note: batch norm is not synchronised across ranks on the CPU (SyncBatchNorm "
                "needs CUDA): each rank normalises with its own share of the batch, so the "
                "numbers differ from one process; --norm group needs no synchronisation"
            )
    torch_seed(args.seed)
    model = SegNet(data.images.shape[1], data.n_classes, width=args.width, norm=args.norm)
    common = dict(
        lr=args.lr,
        batch_size=args.batch_size,
        n_jobs=args.n_jobs,
        seed=args.seed,
        progress=not args.no_progress,
        eval_every=args.eval_every,
    )
    pre = SegmentationTrainer(
        model,
        method="pce",
        lam=0.0,
        steps=args.pretrain_steps,
        checkpoint=out / "pretrain.ckpt",
        **common,
    ).fit(data, resume=args.resume)
    regularizer = "dense" if args.regularizer == "dense" else "grid"
    fine = SegmentationTrainer(
        model,
        method=args.method,
        lam=args.lam,
        regularizer=regularizer,
        steps=args.steps,
        checkpoint=out / "finetune.ckpt",
        **common,
    ).fit(data, resume=args.resume)
    if not main_rank:  # rank 0 writes the model and prints the summary
        return 0
    save_segnet(
        out / "model.pt",
        model,
        class_names=data.class_names,
        method=args.method,
        lam=args.lam,
        image_size=list(data.images.shape[-2:]),
        world_size=world_size(),
    )
    summary = {
        "pretrain": pre.history,
        "finetune": fine.history,
        "diverged": fine.diverged,
        "train_seconds": pre.train_seconds + fine.train_seconds,
        "xstep_seconds": fine.xstep_seconds,
    }
    (out / "history.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(_train_summary(args, data, pre, fine))
    print(f"model: {out / 'model.pt'}  (history of every step: {out / 'history.json'})")
    return 0


#: the training summary's fields, in order: (key of the final record, label, what it means)
_SUMMARY_FIELDS = (
    ("train_seed_accuracy", "seed accuracy", "share of scribbled pixels predicted as scribbled"),
    ("train_pce", "pCE", "partial cross-entropy on the scribbled pixels, mean over images"),
    (
        "train_potts_hard",
        "Potts (hard labels)",
        "weighted share of neighbouring pixel pairs whose predicted labels differ, per pixel",
    ),
    (
        "train_energy_discrete",
        "energy (discrete)",
        "pCE + lambda x Potts of the hard labels: the grid-CRF loss ADM's X-step minimises",
    ),
    (
        "train_energy_relaxed",
        "energy (relaxed)",
        "pCE + lambda x Potts of the soft predictions: what GD minimises",
    ),
    ("train_miou", "mIoU", "mean intersection over union with --masks, over all pixels"),
    ("train_pixel_accuracy", "pixel accuracy", "share of mask pixels predicted right"),
)


def _train_summary(args: argparse.Namespace, data, pre, fine) -> str:
    """What `segment train` prints at the end: each number with what it means."""
    final = fine.final
    n = len(data)
    lines = [
        f"trained on {n} images ({data.images.shape[-2]} x {data.images.shape[-1]}, "
        f"{data.n_classes} classes): {pre.steps} pCE pre-training steps, then {fine.steps} "
        f"{args.method} steps at lambda = {args.lam:g} (batch {args.batch_size}; "
        f"{final.get('epochs', fine.samples / n):.1f} epochs = passes over the {n} images), "
        f"{pre.train_seconds + fine.train_seconds:.0f} s"
        + (f", of which alpha-expansion {fine.xstep_seconds:.0f} s" if fine.xstep_seconds else ""),
    ]
    if fine.diverged:
        lines.append("training stopped early: the loss became non-finite (diverged)")
    lines.append("on the training images, after fine-tuning:")
    for key, label, meaning in _SUMMARY_FIELDS:
        value = final.get(key)
        if isinstance(value, float):
            lines.append(f"  {label:<20} {value:8.4f}   {meaning}")
    if data.masks is None:
        lines.append("  (no --masks: mIoU needs ground truth; seed accuracy is the only accuracy)")
    return "\n".join(lines)


def _cmd_segment_compare(args: argparse.Namespace) -> int:
    from beyondgd.experiments import get, run_experiment

    _load_folder(args, need_masks=True)  # fail early, before any training
    lams = [float(x) for x in args.lams]
    overrides = {
        "datasets": ["folder"],
        "sweep_datasets": [],
        "folder": {
            "images": str(args.images),
            "scribbles": str(args.scribbles),
            "masks": str(args.masks),
            "size": args.size,
            "val_fraction": 0.2,
            "test_fraction": 0.2,
        },
        "pretrain_steps": args.pretrain_steps,
        "finetune_steps": args.steps,
        "width": args.width,
        "batch": args.batch_size,
        "pretrain_lr": args.lr,
        "lr": args.lr,
        "n_jobs": args.n_jobs,
        # the energies of GD and ADM are compared at the largest lambda of the grid
        "lam_ref": max(lams),
    }
    result = run_experiment(
        get("adm"),
        preset="quick",
        seeds=args.seeds,
        out_dir=args.out,
        resume=args.resume,
        progress=not args.no_progress,
        config_overrides=overrides,
        settings={"methods.gd-grid.lams": lams, "methods.adm.lams": lams},
    )
    print(f"report: {result.out_dir / 'report.html'}")
    for v in result.report.verdicts:
        print(f"  [{v['status']}] {v['claim']}")
    return 0


def _cmd_segment_predict(args: argparse.Namespace) -> int:
    from beyondgd.data.scenes import colorize, load_images, save_label_png
    from beyondgd.segmentation import load_segnet, predict

    model, info = load_segnet(args.model)
    names, images = load_images(args.images, size=args.size)
    trained = info["meta"].get("image_size")
    if trained is not None and list(images.shape[-2:]) != list(trained):
        print(
            f"note: predicting at {images.shape[-2]} x {images.shape[-1]}; the model was trained "
            f"at {trained[0]} x {trained[1]} (--size {trained[0]} resizes to that)"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = predict(model, images)
    from PIL import Image

    for name, lab in zip(names, labels):
        save_label_png(out / f"{name}.png", lab)
        Image.fromarray(colorize(lab)).save(out / f"{name}_color.png")
    print(f"{len(names)} masks written to {out} (label ids; *_color.png for viewing)")
    return 0


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _segment_parsers(sub) -> None:
    seg = sub.add_parser(
        "segment", help="scribble-supervised segmentation on your own images", formatter_class=_HELP
    )
    seg_sub = seg.add_subparsers(dest="segment_command", required=True)

    def data_args(p, masks_required=False):
        p.add_argument("--images", required=True, help="folder of images (png/jpg)")
        p.add_argument(
            "--scribbles",
            required=True,
            help="folder of scribble PNGs with the images' names: one channel, 255 = unlabelled, "
            "classes 0..K-1",
        )
        p.add_argument(
            "--masks",
            required=masks_required,
            default=None,
            help="folder of ground-truth label PNGs (optional for train)",
        )
        p.add_argument(
            "--size",
            type=int,
            default=None,
            help="resize images to SIZE x SIZE (default: keep their size, the same for all)",
        )
        p.add_argument(
            "--class-names",
            nargs="+",
            default=None,
            help="one name per class id 0..K-1 (default: class_0, ... for the ids found, which "
            "must then all appear in the scribbles or masks)",
        )

    def train_args(p):
        p.add_argument("--steps", type=int, default=400, help="fine-tuning steps")
        p.add_argument("--pretrain-steps", type=int, default=400, help="pCE pre-training steps")
        p.add_argument("--batch-size", type=int, default=8, help="images per step")
        p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
        p.add_argument("--width", type=int, default=16, help="network width")
        p.add_argument(
            "--n-jobs",
            type=int,
            default=2,
            help="images solved at once by alpha-expansion (threads; GCO: processes)",
        )
        p.add_argument("--out", required=True, help="output folder")
        p.add_argument("--resume", action="store_true", help="continue from the checkpoints")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = seg_sub.add_parser(
        "train", help="pCE pre-training, then pce | gd | adm fine-tuning", formatter_class=_HELP
    )
    data_args(p)
    train_args(p)
    p.add_argument(
        "--method",
        choices=("adm", "gd", "pce"),
        default="adm",
        help="fine-tuning: ADM (alpha-expansion X-step), GD on the relaxed loss, or pCE alone",
    )
    p.add_argument("--lam", type=float, default=3.0, help="regularization weight lambda")
    p.add_argument(
        "--regularizer",
        choices=("grid", "dense"),
        default="grid",
        help="GD's regularizer (ADM always uses the grid Potts model)",
    )
    p.add_argument(
        "--eval-every", type=int, default=0, help="record metrics every N steps (0: at the end)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the network and the batches")
    p.add_argument(
        "--norm",
        choices=("batch", "group"),
        default="batch",
        help="the network's normalisation: batch norm, or group norm (per image; needs no "
        "synchronisation when training on several ranks with torchrun)",
    )
    p.set_defaults(func=_cmd_segment_train)

    p = seg_sub.add_parser(
        "compare", help="pCE vs GD vs ADM on your data, with a report", formatter_class=_HELP
    )
    data_args(p, masks_required=True)
    train_args(p)
    p.add_argument("--lams", nargs="+", default=["1", "3", "10"], help="lambda grid")
    p.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="training seeds: the replicates of the verdicts (a verdict needs 6 or more)",
    )
    p.set_defaults(func=_cmd_segment_compare)

    p = seg_sub.add_parser(
        "predict", help="write PNG masks predicted by a trained model", formatter_class=_HELP
    )
    p.add_argument("--model", required=True, help="model.pt written by `segment train`")
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="resize images to SIZE x SIZE (default: keep their size); the output says when "
        "it differs from the size the model was trained at",
    )
    p.add_argument("--out", required=True, help="output folder for the masks")
    p.set_defaults(func=_cmd_segment_predict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beyondgd",
        formatter_class=_HELP,
        description="Reproductions of optimization methods beyond gradient descent, at equal cost.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "list", help="list the reproductions and their expected run time", formatter_class=_HELP
    )
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser(
        "reproduce", help="run reproductions and write their reports", formatter_class=_HELP
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="experiment names, or 'all'")
    p.add_argument(
        "--preset",
        choices=PRESETS,
        default="quick",
        help="size of the run: smoke (seconds, a check), quick (minutes: what make run does), "
        "full (hours on one machine), paper (the papers' grids: a cluster or a GPU)",
    )
    p.add_argument(
        "--seeds", type=int, default=None, help="number of seeds (default: the preset's)"
    )
    p.add_argument("--out", default="results", help="results directory")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel local processes (default: every core); 1 runs serially in this process",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local process pool, or Ray tasks (pip install 'beyondgd[ray]')",
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (auto | ray://host:port); default: an embedded local Ray",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one config value of the preset; dotted keys reach inside "
        "(--set methods.adam.lr=0.01), VALUE is JSON and must have the preset's type "
        "(--set 'datasets=[\"patches\"]'); the report names every override",
    )
    p.add_argument(
        "--show-config",
        action="store_true",
        help="print the resolved config and the number of runs, and exit without running",
    )
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser(
        "report", help="gather all reports into OUT/index.html", formatter_class=_HELP
    )
    p.add_argument("--out", default="results", help="results directory")
    p.set_defaults(func=_cmd_report)

    _segment_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
