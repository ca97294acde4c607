"""Runs an experiment: units in order, an atomic checkpoint after each, then the report.

Files under ``OUT/NAME/``:

- ``checkpoint.json`` -- the config fingerprint and every finished unit's record, rewritten
  atomically after each unit, so ``resume=True`` after a kill continues where it stopped;
- ``metrics.json`` -- config, versions, per-unit records, the report's tables and verdicts, timings;
- ``report.md`` / ``report.html`` -- the report; ``*.png`` -- its figures.

Each unit draws its random numbers from seeds derived from its own key, so a resumed run gives
the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beyondgd.core import atomic_write_json, atomic_write_text, check_choice, check_int
from beyondgd.experiments.base import PRESETS, Experiment, Report, Unit


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict[str, Any]
    report: Report


@contextlib.contextmanager
def _restore_threads(n: int):
    import torch

    try:
        yield
    finally:
        torch.set_num_threads(n)


def versions() -> dict[str, str]:
    import numpy
    import scipy
    import torch

    import beyondgd

    return {
        "beyondgd": beyondgd.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
    }


def fingerprint(name: str, config: dict[str, Any]) -> str:
    text = json.dumps({"experiment": name, "config": config}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_config(
    experiment: Experiment,
    preset: str,
    seeds: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The experiment's config for ``preset``, with ``seeds`` and ``overrides`` applied."""
    check_choice("preset", preset, PRESETS)
    config = copy.deepcopy(experiment.config(preset))
    if overrides:
        unknown = set(overrides) - set(config)
        if unknown:
            raise ValueError(
                f"config_overrides (--set) has keys {sorted(unknown)} that {experiment.name!r} "
                f"does not use; known keys: {sorted(config)}"
            )
        config.update(copy.deepcopy(overrides))
    if seeds is not None:
        config["seeds"] = list(range(check_int("seeds", seeds, low=1)))
    config["preset"] = preset
    return config


def run_experiment(
    experiment: Experiment,
    *,
    preset: str = "quick",
    seeds: int | None = None,
    out_dir: str | Path = "results",
    resume: bool = False,
    progress: bool = True,
    config_overrides: dict[str, Any] | None = None,
    on_checkpoint: Callable[[int, str], None] | None = None,
) -> RunResult:
    """Run ``experiment`` and write its files under ``out_dir/experiment.name``.

    Parameters
    ----------
    resume
        Continue from ``checkpoint.json`` if it was written for the same configuration; units
        already finished are not run again. Without it, an existing checkpoint is replaced.
    on_checkpoint
        Called as ``on_checkpoint(n_done, key)`` after each checkpoint is written (for tests and
        monitoring).
    """
    from tqdm.auto import tqdm

    config = resolve_config(experiment, preset, seeds, config_overrides)
    run_dir = Path(out_dir) / experiment.name
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.json"
    fp = fingerprint(experiment.name, config)

    records: dict[str, dict[str, Any]] = {}
    if resume and ckpt_path.exists():
        saved = json.loads(ckpt_path.read_text())
        if saved.get("fingerprint") != fp:
            raise ValueError(
                f"{ckpt_path} was written for a different configuration of {experiment.name!r} "
                "(preset, seeds or overrides differ); rerun without --resume to start afresh"
            )
        records = saved["records"]

    units: list[Unit] = experiment.units(config)
    keys = [u.key for u in units]
    if len(set(keys)) != len(keys):
        raise RuntimeError(f"experiment {experiment.name!r} produced duplicate unit keys")
    todo = [u for u in units if u.key not in records]

    import torch

    started = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(experiment.num_threads)
    bar = tqdm(
        total=len(units),
        initial=len(units) - len(todo),
        desc=experiment.name,
        unit="run",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    with bar, _restore_threads(previous_threads):
        for unit in todo:
            bar.set_postfix_str(unit.key, refresh=True)
            t0 = time.perf_counter()
            record = experiment.run_unit(unit, config)
            record["wall_time_s"] = time.perf_counter() - t0
            records[unit.key] = record
            atomic_write_json(ckpt_path, {"fingerprint": fp, "records": records})
            bar.update(1)
            if on_checkpoint is not None:
                on_checkpoint(len(records), unit.key)

    ordered = {k: records[k] for k in keys}
    report = experiment.analyze(config, ordered, run_dir)
    config = dict(config, num_threads=experiment.num_threads)
    elapsed = time.perf_counter() - started
    metrics = {
        "experiment": experiment.name,
        "title": experiment.title,
        "preset": preset,
        "config": config,
        "config_overrides": config_overrides or {},
        "fingerprint": fp,
        "versions": versions(),
        "wall_time_s": {
            "this_invocation": elapsed,
            "units_total": sum(r["wall_time_s"] for r in ordered.values()),
        },
        "records": ordered,
        "report": report.to_dict(),
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    header = (
        f"Preset `{preset}`, seeds {config['seeds']}, {len(units)} runs, "
        f"{metrics['wall_time_s']['units_total']:.0f} s of compute; "
        f"beyondgd {metrics['versions']['beyondgd']}, torch {metrics['versions']['torch']}."
    )
    if config_overrides:
        # a trimmed or changed preset must never read as the preset itself
        header += " Config overrides: " + json.dumps(config_overrides, sort_keys=True) + "."
    atomic_write_text(run_dir / "report.md", report.to_markdown(header))
    atomic_write_text(
        run_dir / "report.html", report.to_html(prefix=f"{experiment.name}/", header=header)
    )
    return RunResult(run_dir, metrics, report)
