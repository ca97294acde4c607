"""Runs a reproduction: forms the units, runs them on an executor, checkpoints every record on
the driver, then builds the results table, the verdicts and the report.

Files under ``OUT/NAME/``:

- ``checkpoint.jsonl`` -- a header line (the config fingerprint), then one line per finished
  unit, appended and flushed in completion order (a torn last line from a kill is ignored), so
  ``resume=True`` continues under any executor with the same numbers;
- ``results.csv`` -- the tidy results table; ``curves.csv`` -- the curves, long format;
- ``metrics.json`` -- config, versions, timings, tuning choices and the report with every
  verdict's statistics (``report.verdicts[i]``);
- ``report.md`` / ``report.html`` (a standalone page) and the figures.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beyondgd.core import atomic_write_json, atomic_write_text, check_int
from beyondgd.experiments.harness.base import PRESETS
from beyondgd.experiments.harness.config import apply_set
from beyondgd.experiments.harness.executors import Task, adopt, make_executor
from beyondgd.experiments.harness.report import Report, build_report


@dataclass
class RunResult:
    out_dir: Path
    metrics: dict[str, Any]
    report: Report


def versions() -> dict[str, str]:
    import numpy
    import pandas
    import scipy
    import torch

    import beyondgd

    return {
        "beyondgd": beyondgd.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "pandas": pandas.__version__,
        "platform": platform.platform(),
    }


def fingerprint(name: str, config: Mapping[str, Any]) -> str:
    text = json.dumps({"experiment": name, "config": config}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def presets_of(target: Any) -> tuple[str, ...]:
    return tuple(target.presets)


def resolve_config(
    target: Any,
    preset: str,
    seeds: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The config for ``preset``; ``seeds`` sets the number of seeds, ``overrides`` replaces
    top-level keys (from Python), ``settings`` are ``--set`` dotted keys (type-checked)."""
    if preset not in presets_of(target):
        raise ValueError(
            f"preset must be one of {list(presets_of(target))} for {target.name!r}, got {preset!r}"
        )
    config = copy.deepcopy(target.config(preset))
    if overrides:
        unknown = set(overrides) - set(config)
        if unknown:
            raise ValueError(
                f"config_overrides has keys {sorted(unknown)} that {target.name!r} does not use; "
                f"known keys: {sorted(config)}"
            )
        config.update(copy.deepcopy(dict(overrides)))
    if settings:
        config = apply_set(config, settings)
    if seeds is not None:
        n = check_int("seeds", seeds, low=1)
        config["seeds"] = n
    config["preset"] = preset
    return config


class _Checkpoint:
    """Append-only JSON lines: a header, then ``{"key", "record"}`` per finished unit."""

    def __init__(self, path: Path, fp: str, resume: bool):
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if resume and path.exists():
            lines = path.read_text().splitlines()
            header = json.loads(lines[0]) if lines else {}
            if header.get("fingerprint") != fp:
                raise ValueError(
                    f"{path} was written for a different configuration (preset, seeds or --set "
                    "differ); rerun without --resume to start afresh"
                )
            for line in lines[1:]:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    break  # a line torn by a kill: that unit runs again
                self.records[item["key"]] = item["record"]
        # rewrite cleanly (drops a torn tail), atomically
        text = json.dumps({"fingerprint": fp}) + "\n"
        text += "".join(json.dumps({"key": k, "record": r}) + "\n" for k, r in self.records.items())
        atomic_write_text(path, text)
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def add(self, key: str, record: dict[str, Any]) -> None:
        self.records[key] = record
        self._fh.write(json.dumps({"key": key, "record": record}) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def plan(
    target: Any, config: Mapping[str, Any]
) -> tuple[list[Task], list[Task], dict[str, dict[str, Any]]]:
    """``(tuning tasks, run tasks, unit info)`` for a config, in report order. Run tasks get
    their ``tuned`` values filled in after tuning."""
    cls = type(target)
    info: dict[str, dict[str, Any]] = {}
    tune_tasks, run_units = [], []
    methods = target.methods(config)
    for problem in target.problems(config):
        for method in methods:
            if not target.applies(problem, method, config):
                continue
            if target.needs_tuning(method, config):
                key = f"tune/{problem.name}/{method.name}"
                tune_tasks.append(
                    Task(
                        key,
                        "tune",
                        cls,
                        dict(config),
                        problem=problem,
                        method=method,
                        threads=target.cpus_per_unit,
                        seed_root=target.name,
                    )
                )
                info[key] = {"kind": "tune", "problem": problem.name, "method": method.name}
        for seed in target.seeds(config):
            for method in methods:
                if not target.applies(problem, method, config):
                    continue
                key = f"{problem.name}/{method.name}/seed={seed}"
                run_units.append(
                    Task(
                        key,
                        "run",
                        cls,
                        dict(config),
                        problem=problem,
                        method=method,
                        seed=seed,
                        threads=target.cpus_per_unit,
                        seed_root=target.name,
                    )
                )
                info[key] = {
                    "kind": "run",
                    "problem": problem.name,
                    "problem_params": dict(problem.params),
                    "method": method.name,
                    "seed": seed,
                }
    keys = [t.key for t in tune_tasks + run_units]
    if len(set(keys)) != len(keys):
        raise RuntimeError(f"{target.name}: problem or method names repeat (duplicate unit keys)")
    return tune_tasks, run_units, info


def count_units(target: Any, config: Mapping[str, Any]) -> int:
    tune, run, _ = plan(target, config)
    return len(tune) + len(run)


def run_experiment(
    target: Any,
    *,
    preset: str = "quick",
    seeds: int | None = None,
    out_dir: str | Path = "results",
    resume: bool = False,
    progress: bool = True,
    config_overrides: Mapping[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
    workers: int | None = None,
    executor: str = "local",
    address: str | None = None,
    on_checkpoint: Callable[[int, str], None] | None = None,
) -> RunResult:
    """Run a reproduction (or a not-yet-ported experiment) and write its files.

    Parameters
    ----------
    workers
        Cores to use (default 1: in this process; the command line defaults to every core);
        the local pool runs ``workers // cpus_per_unit`` units at a time. With
        ``executor="ray"``, the CPUs of the embedded Ray when ``address`` is None.
    resume
        Continue from ``checkpoint.jsonl`` written for the same configuration, whatever executor
        wrote it.
    on_checkpoint
        Called as ``on_checkpoint(n_done, key)`` after each record is checkpointed.
    """
    from tqdm.auto import tqdm

    workers = 1 if workers is None else check_int("workers", workers, low=1)
    config = resolve_config(target, preset, seeds, config_overrides, settings)
    threads = target.cpus_per_unit or 1
    pool = make_executor(executor, workers=workers, address=address, threads=threads)
    adopt(target)
    run_dir = Path(out_dir) / target.name
    run_dir.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(target.name, config)
    ckpt = _Checkpoint(run_dir / "checkpoint.jsonl", fp, resume)
    started = time.perf_counter()
    tune_tasks, main_tasks, info = plan(target, config)
    order = [t.key for t in tune_tasks + main_tasks]
    bar = tqdm(
        total=len(order),
        initial=sum(k in ckpt.records for k in order),
        desc=target.name,
        unit="unit",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )

    def on_done(key: str, record: dict[str, Any]) -> None:
        ckpt.add(key, record)
        bar.update(1)
        bar.set_postfix_str(key[-40:], refresh=False)
        if on_checkpoint is not None:
            on_checkpoint(len(ckpt.records), key)

    try:
        if hasattr(target, "prepare"):  # data on the driver: no cache races in workers
            target.prepare(config)
        with bar, pool:
            todo = [t for t in tune_tasks if t.key not in ckpt.records]
            pool.run(todo, on_done)
            tuned: dict[str, dict[str, dict[str, Any]]] = {}
            for t in tune_tasks:
                tuned.setdefault(t.problem.name, {})[t.method.name] = ckpt.records[t.key]["tuned"]
            todo = [
                Task(**{**t.__dict__, "tuned": tuned.get(t.problem.name, {})})
                if t.kind == "run"
                else t
                for t in main_tasks
                if t.key not in ckpt.records
            ]
            pool.run(todo, on_done)
    finally:
        ckpt.close()

    records = {k: ckpt.records[k] for k in order}
    elapsed = time.perf_counter() - started
    compute = sum(r["wall_time_s"] for r in records.values())
    metrics: dict[str, Any] = {
        "experiment": target.name,
        "title": target.title,
        "preset": preset,
        "config": config,
        "config_overrides": {**dict(config_overrides or {}), **dict(settings or {})},
        "fingerprint": fp,
        "versions": versions(),
        "executor": {"kind": executor, "workers": workers, "address": address},
        "wall_time_s": {"this_invocation": elapsed, "units_total": compute},
    }
    header = (
        f"Preset {preset}, {len(order)} units, {compute:.0f} s of compute "
        f"({elapsed:.0f} s wall in this invocation, {workers} worker(s), {executor}); "
        f"beyondgd {metrics['versions']['beyondgd']}, torch {metrics['versions']['torch']}."
    )
    if metrics["config_overrides"]:
        # a trimmed or changed preset must never read as the preset itself
        header += " Config overrides: " + json.dumps(metrics["config_overrides"], sort_keys=True)
        header += "."
    from beyondgd.experiments.harness.results import build_results

    results = build_results(records, info, order, config)
    results.table.to_csv(run_dir / "results.csv", index=False)
    results.curves.to_csv(run_dir / "curves.csv", index=False)
    report = build_report(target, config, results, run_dir, header)
    metrics["tuned"] = {f"{p}/{m}": v for (p, m), v in results.tuned.items()}
    metrics["report"] = report.to_dict()
    atomic_write_json(run_dir / "metrics.json", metrics)
    atomic_write_text(run_dir / "report.md", report.to_markdown())
    atomic_write_text(run_dir / "report.html", report.to_page())
    return RunResult(run_dir, metrics, report)


__all__ = [
    "PRESETS",
    "RunResult",
    "count_units",
    "presets_of",
    "resolve_config",
    "run_experiment",
]
