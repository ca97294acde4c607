"""``beyondgd``: list, run and report the reproductions.

beyondgd list
beyondgd reproduce NAME [NAME ...] | all  [--preset quick|full] [--seeds N] [--out DIR] [--resume]
beyondgd report [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time

from beyondgd.experiments import get, names, run_experiment, write_index
from beyondgd.experiments.base import PRESETS


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min"


def _cmd_list(args: argparse.Namespace) -> int:
    rows = [("name", "quick", "full", "what it tests")]
    for name in names():
        exp = get(name)
        rows.append(
            (
                name,
                _fmt_seconds(exp.expected_seconds["quick"]),
                _fmt_seconds(exp.expected_seconds["full"]),
                exp.title,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
    total = sum(get(n).expected_seconds["quick"] for n in names())
    print(
        "\nexpected time on 2 CPU cores: `reproduce all --preset quick` about "
        + _fmt_seconds(total)
    )
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    known = names()
    selected = known if args.names == ["all"] else args.names
    unknown = [n for n in selected if n not in known]
    if unknown:
        print(f"error: unknown experiment(s) {unknown}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    for name in selected:
        result = run_experiment(
            get(name),
            preset=args.preset,
            seeds=args.seeds,
            out_dir=args.out,
            resume=args.resume,
            progress=not args.no_progress,
        )
        print(f"{name}: report at {result.out_dir / 'report.md'}")
        for v in result.report.verdicts:
            print(f"  [{v.status}] {v.claim}")
    index = write_index(args.out)
    print(f"all reports: {index}  ({time.perf_counter() - t0:.0f} s)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    print(write_index(args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beyondgd",
        description="Reproductions of optimization methods beyond gradient descent, at equal cost.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the reproductions and their expected run time")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("reproduce", help="run reproductions and write their reports")
    p.add_argument("names", nargs="+", metavar="NAME", help="experiment names, or 'all'")
    p.add_argument("--preset", choices=PRESETS, default="quick")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (overrides the preset)")
    p.add_argument("--out", default="results", help="results directory (default: results)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("report", help="gather all reports into OUT/index.html")
    p.add_argument("--out", default="results", help="results directory (default: results)")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
