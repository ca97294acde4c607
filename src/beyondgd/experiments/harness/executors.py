"""Where units run: in this process, in a local process pool, or as Ray tasks.

Every executor calls the same :func:`execute_task` on a picklable :class:`Task` and hands each
finished record to the driver's ``on_done`` callback in completion order (the driver checkpoints
it at once). Inside the worker, the torch threads and the seeds are set per unit from the unit's
key, so a record does not depend on where or after what it ran. A unit that raises stops the
run with :class:`UnitFailed` naming its key; units already running are waited for and kept.
Under Ray a unit whose worker process dies is retried (``max_retries``).
"""

from __future__ import annotations

import os
import random
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

EXECUTORS = ("local", "ray")
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class UnitFailed(RuntimeError):
    """A unit raised; ``key`` names it. Every other finished unit is checkpointed."""

    def __init__(self, key: str, detail: str):
        last = detail.strip().splitlines()[-1] if detail.strip() else "unknown error"
        super().__init__(f"unit {key!r} failed: {last}\n{detail}")
        self.key = key


@dataclass(frozen=True)
class Task:
    """One unit of work, self-contained so that it can be shipped to another process."""

    key: str
    kind: str  # "run" | "tune"
    target: Any  # the reproduction class
    config: dict[str, Any]
    problem: Any = None
    method: Any = None
    seed: int = 0
    tuned: Any = None
    threads: int = 1
    seed_root: str = ""


def default_workers() -> int:
    """Every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: one instance per reproduction class and process: what an instance keeps between units (a
#: pre-trained state of a not-yet-ported experiment) is built once per worker, not per unit
_INSTANCES: dict[type, Any] = {}


def instance(cls: type) -> Any:
    """This process's instance of ``cls``."""
    if cls not in _INSTANCES:
        _INSTANCES[cls] = cls()
    return _INSTANCES[cls]


def adopt(target: Any) -> None:
    """Make ``target`` this process's instance of its class (the driver's own object runs the
    serial units)."""
    _INSTANCES[type(target)] = target


def _seed_everything(task: Task) -> None:
    import numpy as np
    import torch

    from beyondgd.core import derive_seed

    seed = derive_seed(task.seed_root, task.key)
    torch.manual_seed(seed % 2**63)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def execute_task(task: Task) -> tuple[str, dict[str, Any]]:
    """Run one task where it lands; returns ``(key, record)``."""
    import torch
    from threadpoolctl import threadpool_limits

    from beyondgd.experiments.harness.base import as_unit_result

    previous = torch.get_num_threads()
    torch.set_num_threads(task.threads)
    # BLAS / OpenMP pools too: two workers with a pool of every core each spin against each other
    limits = threadpool_limits(limits=task.threads)
    try:
        _seed_everything(task)
        target = instance(task.target)
        t0 = time.perf_counter()
        if task.kind == "tune":
            record = {"tuned": target.tune(task.problem, task.method, task.config)}
        elif task.kind == "run":
            value = target.run(task.problem, task.method, task.seed, task.config, task.tuned)
            res = as_unit_result(value, task.key)
            record = {"rows": res.rows, "curves": res.curves}
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown task kind {task.kind!r}")
        record["wall_time_s"] = time.perf_counter() - t0
        return task.key, record
    finally:
        limits.restore_original_limits()
        torch.set_num_threads(previous)


def _guarded(task: Task) -> tuple[str, dict[str, Any] | None, str | None]:
    """``execute_task`` with the traceback carried back as text (exceptions from worker
    processes do not always pickle)."""
    try:
        key, record = execute_task(task)
        return key, record, None
    except Exception:  # noqa: BLE001 - reported by key on the driver
        return task.key, None, traceback.format_exc()


OnDone = Callable[[str, dict[str, Any]], None]


class Executor:
    """Runs batches of tasks; a context manager around a whole run (pools, Ray sessions)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, tasks: Sequence[Task], on_done: OnDone) -> None:
        raise NotImplementedError


class SerialExecutor(Executor):
    """In this process, in order."""

    def run(self, tasks: Sequence[Task], on_done: OnDone) -> None:
        for task in tasks:
            key, record, error = _guarded(task)
            if error is not None:
                raise UnitFailed(key, error)
            on_done(key, record)


class PoolExecutor(Executor):
    """A ``concurrent.futures`` process pool of spawned workers (no forked torch thread pools),
    started at the first batch and kept for the whole run."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = None

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(self, tasks: Sequence[Task], on_done: OnDone) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if not tasks:
            return
        if self._pool is None:
            ctx = mp.get_context("spawn")
            # workers load their BLAS / OpenMP libraries with one thread each; a unit raises
            # its own limit (execute_task)
            saved = {k: os.environ.get(k) for k in _THREAD_ENV}
            os.environ.update(dict.fromkeys(_THREAD_ENV, "1"))
            try:
                self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
                # start the workers now, while the environment says one thread
                list(self._pool.map(int, range(self.workers)))
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        futures = {self._pool.submit(_guarded, t): t.key for t in tasks}
        try:
            _collect(futures, on_done)
        except BaseException:
            # the driver is stopping (a failed unit, Ctrl-C): start nothing more
            for fut in futures:
                fut.cancel()
            raise


def _collect(futures: dict, on_done: OnDone) -> None:
    """Hand finished futures to ``on_done`` as they complete; after a failure, cancel what has
    not started, keep what was running, then raise the first failure."""
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    failure: UnitFailed | None = None
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            if fut.cancelled():
                continue
            key = futures[fut]
            try:
                key, record, error = fut.result()
            except BrokenProcessPool as err:
                record, error = None, f"its worker process died ({err}); rerun with --resume"
            if error is None:
                on_done(key, record)
            elif failure is None:
                failure = UnitFailed(key, error)
                for other in pending:
                    other.cancel()
        pending = {f for f in pending if not f.cancelled()}
    if failure is not None:
        raise failure


class RayExecutor(Executor):
    """Ray core tasks with ``num_cpus`` = the unit's threads. ``address=None`` starts an
    embedded local Ray with ``workers`` CPUs unless Ray is already initialised; ``"auto"`` or
    ``"ray://host:port"`` joins a cluster. What this executor started, it shuts down. A task
    whose worker process dies is retried up to ``max_retries`` times."""

    def __init__(self, address: str | None, workers: int, max_retries: int = 3):
        try:
            import ray
        except ImportError as err:
            raise ImportError(
                'the Ray executor needs Ray: pip install -c constraints.txt "beyondgd[ray]"'
            ) from err
        self.ray = ray
        self.address, self.workers, self.max_retries = address, workers, max_retries
        self._started = False

    def __enter__(self) -> RayExecutor:
        ray = self.ray
        if not ray.is_initialized():
            if self.address is None:
                ray.init(
                    num_cpus=self.workers,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            else:
                ray.init(address=self.address, log_to_driver=False)
            self._started = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False

    def run(self, tasks: Sequence[Task], on_done: OnDone) -> None:
        ray = self.ray
        if not tasks:
            return
        remote = ray.remote(max_retries=self.max_retries, retry_exceptions=False)(_guarded)
        refs = {
            remote.options(num_cpus=t.threads, name=t.key[:100]).remote(t): t.key for t in tasks
        }
        pending = list(refs)
        failure: UnitFailed | None = None
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        key, record, error = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - e.g. retries exhausted
                        key, record, error = refs[ref], None, f"{type(err).__name__}: {err}"
                    if error is None:
                        on_done(key, record)
                    elif failure is None:
                        failure = UnitFailed(key, error)
                        for other in pending:  # units not started are dropped
                            ray.cancel(other, force=False)
                if failure is not None and pending:
                    # keep every unit that still finishes; cancelled ones raise on get
                    ready, _ = ray.wait(pending, num_returns=len(pending), timeout=None)
                    pending = []
                    for ref in ready:
                        try:
                            key, record, error = ray.get(ref)
                        except Exception:  # noqa: BLE001 - cancelled
                            continue
                        if error is None:
                            on_done(key, record)
        except BaseException:
            for ref in pending:  # the driver is stopping: start nothing more
                ray.cancel(ref, force=False)
            raise
        if failure is not None:
            raise failure


def make_executor(
    kind: str = "local", *, workers: int = 1, address: str | None = None, threads: int = 1
) -> Executor:
    """An executor for ``workers`` cores whose units use ``threads`` each: ``local`` runs
    ``workers // threads`` units at a time (one: in this process), ``ray`` asks Ray for
    ``threads`` CPUs per unit (an embedded Ray gets ``workers`` CPUs)."""
    if kind not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {kind!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if kind == "ray":
        return RayExecutor(address, workers)
    if address is not None:
        raise ValueError("address is for the Ray executor (--executor ray)")
    slots = max(1, workers // max(1, threads))
    return SerialExecutor() if slots == 1 else PoolExecutor(slots)
