r"""Alpha-expansion proposals: the X-step of ADM, a multi-label Potts MRF solved by graph cuts.

The X-step of ADM (Marin et al. 2019) minimises, for one image with pixels :math:`p` and
labellings :math:`X`,

.. math::
    E(X) = \sum_p U_{X_p, p} + \lambda \sum_{pq} w_{pq} [X_p \ne X_q],

with unary costs :math:`U` (``-beta log S``), the Potts weight :math:`\lambda` and the grid pair
weights :math:`w_{pq} \ge 0` of :mod:`beyondgd.segmentation.grid`. Scribble seeds are hard
constraints :math:`X_p = y_p`. Alpha-expansion (Boykov, Veksler & Zabih 2001) visits each label
:math:`\alpha` in turn and lets every pixel either keep its label or switch to :math:`\alpha`,
choosing the best such move exactly by one min-cut; a move is applied only when it lowers the
energy, so the energy never increases. For two labels a labelling that no expansion improves is a
global minimum (the binary energy is submodular); for more labels it is within a factor 2 of one
(Potts, non-negative unaries).

Two solvers take the same integer problem and make the same moves (``solver=``): GCO v3 through
the ``gco-wrapper`` package, and beyondgd's own alpha-expansion compiled with numba
(:mod:`beyondgd.segmentation._expansion_compiled`: Boykov-Kolmogorov max-flow on int64
capacities, the graph's arcs laid out once per image, no per-site calls), which the default
``"auto"`` picks where numba is installed (both come with ``pip install "beyondgd[seg]"``). Every
move is an exact optimal one, so the two lower the energy move by move alike; they can part only
where two cuts tie (on 24 X-step problems captured from the ADM benchmark they returned the same
labels, 1.5-1.6x faster with numba). The numba path builds each image's integer problem and
solves it in one compiled call that releases the GIL, so ``n_jobs`` images are solved in threads.

Both work on integers, so the energy is rounded:

*Integer scaling.* Each pixel's unary is first shifted so its smallest allowed cost is 0 (this
changes no minimiser). All terms are then divided by a ``resolution`` (the energy of one integer
unit) and rounded. GCO refuses (by aborting the process) any single data cost or pair weight above
``GCO_MAX_ENERGYTERM = 1e7``; by default the largest term -- shifted unary, scaled pair weight, or
seed cost below -- maps to about ``9.9e6``, so the relative resolution is about ``1e-7`` of the
largest term, and terms smaller than ``resolution / 2`` round to 0. Any labelling's integer energy
times ``resolution`` is within ``(n_pixels + n_pairs) * resolution / 2`` of its exact energy (up
to the per-pixel shift), so the returned labelling is optimal (for two labels) up to
``(n_pixels + n_pairs) * resolution``. Inside GCO a data cost and the pair terms of a pixel add up
in 32-bit integers (``EnergyTermType`` and the max-flow capacities are ``int``; the total energy,
``EnergyType``, is ``long long`` in the build ``gco-wrapper`` ships -- see ``cgco.h`` and
``cgco.py``): with at most 8 neighbours a pixel's sum stays below ``1.7e8``, far from ``2^31``;
both bounds are checked before GCO is called.

*Seeds.* A seeded pixel ``p`` gets cost 0 for ``y_p`` and :math:`M_p = 1 + \sum_q W_{pq}` (its
integer pair weights) for every other label. The initial labelling respects the seeds, and every
expansion move keeps them: in the move space, any move that relabels ``p`` away from ``y_p`` has a
counterpart that is identical except that ``p`` keeps ``y_p`` (keeping the current label is always
allowed), and the counterpart's energy is lower by at least :math:`M_p - \sum_q W_{pq} > 0`.
The min-cut picks the exact optimum of the move, hence never a violating one; by induction no
returned labelling violates a seed. (The global version of this argument -- a cost above the
initial energy, which moves never exceed -- works too, but that cost can be far above GCO's
per-term limit; the per-pixel cost is far smaller and just as safe.)

*Label restriction.* ``allowed_labels`` (e.g. the classes present in the image's seeds) is exact,
not a penalty: the initial labelling uses only allowed labels and only allowed labels are expanded
on, so no other label can appear. It also makes the solve faster (one min-cut per allowed label).

References
----------
.. [1] D. Marin, M. Tang, I. Ben Ayed, Y. Boykov, "Beyond Gradient Descent for Regularized
   Segmentation Losses", CVPR 2019, arXiv:1809.02322.
.. [2] Y. Boykov, O. Veksler, R. Zabih, "Fast approximate energy minimization via graph cuts",
   IEEE TPAMI 23(11), 2001.
.. [3] V. Kolmogorov, R. Zabih, "What energy functions can be minimized via graph cuts?",
   IEEE TPAMI 26(2), 2004.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import itertools
import math
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from beyondgd.core import check_choice, check_int, check_number
from beyondgd.segmentation.grid import GridWeights, grid_pairs

__all__ = [
    "EXPANSION_SOLVERS",
    "GCO_MAX_ENERGYTERM",
    "BatchExpansionResult",
    "ExpansionPool",
    "ExpansionResult",
    "alpha_expansion",
    "alpha_expansion_batch",
]

#: GCO aborts the process when a single data cost or pair weight exceeds this (GCoptimization.h).
GCO_MAX_ENERGYTERM = 10_000_000
# The largest integer term by default: 1% below GCO's limit leaves room for rounding.
_DEFAULT_LARGEST_TERM = 9_900_000
# Below this the default resolution (largest / _DEFAULT_LARGEST_TERM) would be subnormal or 0.
_FLOAT64_MIN_NORMAL = float(np.finfo(np.float64).tiny)
_SMALLEST_SCALABLE_TERM = _FLOAT64_MIN_NORMAL * _DEFAULT_LARGEST_TERM
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_GCO_INSTALL_HINT = 'pip install "beyondgd[seg]" (installs gco-wrapper)'
_NUMBA_INSTALL_HINT = 'pip install "beyondgd[seg]" (installs numba)'
# Above this, the numba solver starts every cut from zero flow instead of keeping each label's.
_REUSE_FLOWS_MAX_BYTES = 256 * 2**20
#: Values of ``solver``: ``"auto"`` is ``"numba"`` where numba is installed, else ``"gco"``.
EXPANSION_SOLVERS = ("auto", "numba", "gco")


@dataclass(frozen=True)
class ExpansionResult:
    """Result of :func:`alpha_expansion` on one image.

    Attributes
    ----------
    labels : torch.Tensor
        ``(H, W)`` int64 labelling, on the device of ``unary`` (CPU for an ndarray).
    unary_energy : float
        :math:`\\sum_p U_{X_p, p}` of the original (unshifted, unrounded) unary, in float64.
    pairwise_energy : float
        :math:`\\lambda \\sum_{pq} w_{pq} [X_p \\ne X_q]`, in float64.
    energy : float
        ``unary_energy + pairwise_energy``.
    resolution : float
        Energy of one integer unit in the solver (see the module notes on integer scaling).
    n_cycles : int
        Expansion cycles begun (a cycle visits every allowed label once; the last one stops
        early once every allowed label has failed in a row).
    """

    labels: torch.Tensor
    unary_energy: float
    pairwise_energy: float
    energy: float
    resolution: float
    n_cycles: int


@dataclass(frozen=True)
class BatchExpansionResult:
    """Result of :func:`alpha_expansion_batch`: ``labels`` ``(B, H, W)`` int64 and per-image
    float64 ``(B,)`` tensors ``unary_energy``, ``pairwise_energy``, ``energy`` and
    ``resolution``, and ``n_cycles`` ``(B,)`` int64 (see :class:`ExpansionResult`)."""

    labels: torch.Tensor
    unary_energy: torch.Tensor
    pairwise_energy: torch.Tensor
    energy: torch.Tensor
    resolution: torch.Tensor
    n_cycles: torch.Tensor


@dataclass(frozen=True)
class _IntegerProblem:
    """One image's problem as the solvers take it; numpy only, so it pickles small to a worker."""

    # int32 for GCO, int64 for the numba solver
    costs: np.ndarray  # (n_sites, K), C order: cost of site s taking label l at [s, l]
    pair_index: np.ndarray  # (E, 2), pair_index[:, 0] < pair_index[:, 1]
    pair_weight: np.ndarray  # (E,), > 0
    init: np.ndarray  # (n_sites,)
    labels_to_expand: tuple[int, ...]
    n_iter: int
    solver: str = "gco"  # "gco" or "numba", resolved


def _import_gco():
    """``(gco.pygco, gcoInitLabelAtSite)``, imported lazily: gco-wrapper is an optional extra."""
    try:
        from gco import cgco, pygco
    except ImportError as err:
        raise ImportError(
            f"alpha-expansion needs the gco-wrapper package: {_GCO_INSTALL_HINT}"
        ) from err
    return pygco, _unchecked_init_label_at_site(cgco._cgco._name)


@functools.cache
def _unchecked_init_label_at_site(library: str):
    """``gcoInitLabelAtSite`` from a second ctypes handle on the same library, without
    ``argtypes``: plain Python ints then pass as C ints with no per-call conversion (about 10x
    faster than gco-wrapper's declared function for the thousands of calls per image)."""
    function = ctypes.CDLL(library).gcoInitLabelAtSite
    function.restype = ctypes.c_int
    return function


@functools.cache
def _compiled_expansion():
    """The numba-compiled alpha-expansion module, or None where numba is not installed."""
    try:
        return importlib.import_module("beyondgd.segmentation._expansion_compiled")
    except ImportError:
        return None


def _resolve_solver(solver: object) -> str:
    """``"numba"`` or ``"gco"``; raises with the install hint where the library is missing."""
    solver = check_choice("solver", solver, EXPANSION_SOLVERS)
    if solver == "auto":
        solver = "numba" if _compiled_expansion() is not None else "gco"
    if solver == "numba" and _compiled_expansion() is None:
        raise ImportError(f"solver='numba' needs numba: {_NUMBA_INSTALL_HINT}")
    if solver == "gco":
        _import_gco()  # fail early, in this process, with the install hint
    return solver


_solver_threads: dict[int, ThreadPoolExecutor] = {}
_solver_threads_lock = threading.Lock()


def _forget_solver_threads() -> None:
    """In a forked child: the parent's pools have no threads there (a submit would wait)."""
    global _solver_threads_lock
    _solver_threads.clear()
    _solver_threads_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX only
    os.register_at_fork(after_in_child=_forget_solver_threads)


def _threads_of(workers: int) -> ThreadPoolExecutor:
    """A pool of up to ``workers`` threads kept for the process: starting two threads per call
    cost 4-5 ms of a 34 ms call on 8 images called back to back (30 ms with kept threads). A
    pool starts a thread only when no idle one is there, so it holds at most as many as the
    most images solved at once; idle threads cost nothing."""
    with _solver_threads_lock:
        threads = _solver_threads.get(workers)
        if threads is None:
            threads = ThreadPoolExecutor(workers, thread_name_prefix="beyondgd-expansion")
            _solver_threads[workers] = threads
        return threads


def _longest_first(unary: np.ndarray) -> list[int]:
    """Image indices of a ``(B, K, H, W)`` batch, the likely longest solve first, so that the
    threads do not end with one long image running alone. The solve time grows with the length
    of the unary argmin's boundary (correlation 0.71 over 48 images of ADM X-steps), here its
    count of label changes between 4-neighbours (numba, 0.2 ms for 8 images of 64 x 64 with 4
    labels). On 6 X-step batches captured from the ADM benchmark, 2 threads: 28.4-30.5 against
    30.7-31.9 ms per call (8 alternated runs); in the training benchmark the X-step moved less
    than its run-to-run noise (25.1 and 25.3 against 25.1 and 26.0 ms)."""
    boundary = _compiled_expansion().argmin_boundaries(unary)
    return sorted(range(len(boundary)), key=lambda index: -boundary[index])


def _solve_integer_problem(problem: _IntegerProblem) -> tuple[np.ndarray, int]:
    """Run alpha-expansion on one validated integer problem: ``(labels (n_sites,), n_cycles)``.

    This is the unit of work sent to pool workers, so it takes and returns numpy only.
    """
    if problem.solver == "numba":
        labels = problem.init.astype(np.int64)  # a copy: solved in place
        n_cycles = _compiled_expansion().expansion(
            problem.costs.astype(np.int64, copy=False),
            problem.pair_index.astype(np.int64, copy=False),
            problem.pair_weight.astype(np.int64, copy=False),
            labels,
            np.array(problem.labels_to_expand, dtype=np.int64),
            problem.n_iter,
            _REUSE_FLOWS_MAX_BYTES,
        )
        return labels, int(n_cycles)
    pygco, init_label_at_site = _import_gco()
    n_sites, n_labels = problem.costs.shape
    graph = pygco.GCO()
    graph.create_general_graph(n_sites, n_labels)
    try:
        graph.set_data_cost(problem.costs)
        if problem.pair_weight.size:
            graph.set_all_neighbors(
                problem.pair_index[:, 0], problem.pair_index[:, 1], problem.pair_weight
            )
        graph.set_smooth_cost((1 - np.eye(n_labels)).astype(np.intc))
        # GCO starts from label 0 everywhere and sets other labels one site per call (the
        # problem was validated when it was built, so no bounds checks here).
        sites = np.flatnonzero(problem.init)
        list(
            map(
                init_label_at_site,
                itertools.repeat(int(graph.handle)),
                sites.tolist(),
                problem.init[sites].tolist(),
            )
        )
        # Our own cycle loop (not GCO's expansion()) so only the allowed labels are expanded on.
        # It stops as soon as every allowed label has failed in a row, not at the end of a
        # cycle: the labelling is then a fixed point, so the rest of the cycle (and the next)
        # could not change it. A label whose move just succeeded counts as failed: expanding
        # on it again at once offers no move the last one did not.
        labels_to_expand = problem.labels_to_expand
        n_cycles, failed = 0, 0
        while (problem.n_iter == -1 or n_cycles < problem.n_iter) and failed < len(
            labels_to_expand
        ):
            n_cycles += 1
            for label in labels_to_expand:
                failed = 1 if graph.expansion_on_alpha(label) else failed + 1
                if failed == len(labels_to_expand):
                    break
        labels = graph.get_labels().astype(np.int64)
    finally:
        graph.destroy_graph()
    return labels, n_cycles


class ExpansionPool:
    """A reusable process pool for :func:`alpha_expansion_batch` (GCO is CPU-bound and serial;
    the numba solver needs no pool: ``n_jobs`` runs it in threads, with no pickling).

    A trainer that computes proposals every mini-batch should open one pool and pass it on each
    call, so the worker processes start once. Workers receive numpy arrays only (the integer
    problem of one image; no tensors) and return the labelling.

    Start method: ``"fork"`` where the platform has it (Linux), else ``"spawn"``. With
    ``"spawn"`` or ``"forkserver"`` every worker re-imports the main module, so a script that
    calls the trainer without an ``if __name__ == "__main__":`` guard runs again inside each
    worker (measured here: a nested experiment per worker, then a broken pool); ``"fork"`` has
    no such requirement and starts in milliseconds. The usual caveat of forking a threaded
    process (a lock held by another thread at fork time) does not reach the workers: they run
    only numpy and GCO code, no torch operation, logging or printing -- the same reasoning that
    makes ``fork`` the default for PyTorch's DataLoader workers on Linux.

    Parameters
    ----------
    n_jobs : int
        Number of worker processes, ``>= 1``, or ``-1`` for one per CPU core.
    start_method : {"forkserver", "spawn", "fork"} or None
        Overrides the start method.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.segmentation.grid import contrast_weights
    >>> from beyondgd.segmentation.proposals import ExpansionPool, alpha_expansion_batch
    >>> images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> unary = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    >>> with ExpansionPool(2) as pool:  # doctest: +SKIP
    ...     result = alpha_expansion_batch(unary, contrast_weights(images), pool=pool)
    """

    def __init__(self, n_jobs: int, *, start_method: str | None = None) -> None:
        self.n_jobs = _check_n_jobs(n_jobs)
        if start_method is None:
            available = multiprocessing.get_all_start_methods()
            start_method = "fork" if "fork" in available else "spawn"
        check_choice("start_method", start_method, multiprocessing.get_all_start_methods())
        self.start_method = start_method
        context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            # Preload this module (spares each worker a torch import) but not "__main__", which
            # would run an unguarded script inside the fork server.
            context.set_forkserver_preload([__name__])
        self._executor: ProcessPoolExecutor | None = ProcessPoolExecutor(
            max_workers=self.n_jobs, mp_context=context
        )

    @property
    def closed(self) -> bool:
        return self._executor is None

    def _map(self, problems: Sequence[_IntegerProblem]) -> list[tuple[np.ndarray, int]]:
        if self._executor is None:
            raise ValueError("pool is closed; open a new ExpansionPool")
        return list(self._executor.map(_solve_integer_problem, problems))

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> ExpansionPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        # Best effort only: workers of a forgotten pool should not outlive it.
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


# ---- validation ---------------------------------------------------------------------------------


def _check_n_jobs(n_jobs: object) -> int:
    n_jobs = check_int("n_jobs", n_jobs, low=-1)
    if n_jobs == 0:
        raise ValueError("n_jobs must be >= 1 or -1 (all cores), got 0")
    return (os.cpu_count() or 1) if n_jobs == -1 else n_jobs


def _float_array(name: str, value: object, ndim: int, dims: str) -> np.ndarray:
    """``value`` (tensor or ndarray) as a finite float64 numpy array with ``ndim`` dimensions."""
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
        array = value.detach().to("cpu", torch.float64).numpy()
    elif isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.floating):
            raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
        array = value.astype(np.float64)
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}"
        )
    if array.ndim != ndim:
        raise ValueError(f"{name} must have shape {dims}, got {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must contain only finite values (found NaN or inf)")
    return array


def _int_array(name: str, value: object, shape: tuple[int, ...], dims: str) -> np.ndarray:
    """``value`` (tensor or ndarray of an integer dtype) as an int64 array of ``shape``."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must have an integer dtype, got {value.dtype}")
        array = value.detach().to("cpu", torch.int64).numpy()
    elif isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.integer):
            raise TypeError(f"{name} must have an integer dtype, got {value.dtype}")
        array = value.astype(np.int64)
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}"
        )
    if array.shape != shape:
        raise ValueError(
            f"{name} must have shape {dims} = {shape} to match unary, got {array.shape}"
        )
    return array


def _bool_array(name: str, value: object, shape: tuple[int, ...], dims: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        if value.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool mask, got dtype {value.dtype}")
        array = value.detach().cpu().numpy()
    elif isinstance(value, np.ndarray):
        if value.dtype != np.bool_:
            raise TypeError(f"{name} must be a bool mask, got dtype {value.dtype}")
        array = value
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy.ndarray, got {type(value).__name__}"
        )
    if array.shape != shape:
        raise ValueError(
            f"{name} must have shape {dims} = {shape} to match unary, got {array.shape}"
        )
    return array


def _checked_pair_weights(weights: object, batch: int, height: int, width: int) -> np.ndarray:
    """The pair weights of every image, ``(B, E)`` float64 in :func:`grid_pairs`' order, after
    checking ``weights``' structure and values."""
    if not isinstance(weights, GridWeights):
        raise TypeError(f"weights must be a grid.GridWeights, got {type(weights).__name__}")
    if (weights.height, weights.width) != (height, width):
        raise ValueError(
            f"weights are for {weights.height}x{weights.width} images but unary is "
            f"{height}x{width} (H x W)"
        )
    if len(weights.maps) != len(weights.offsets) or not weights.offsets:
        raise ValueError("weights must have one map per offset and at least one offset")
    for (dy, dx), wmap in zip(weights.offsets, weights.maps):
        # Row-major numbering with p < q for every pair, as grid.OFFSETS has it.
        if not (0 <= dy < height and abs(dx) < width and (dy > 0 or dx > 0)):
            raise ValueError(
                f"weights offsets must satisfy 0 <= dy < H, |dx| < W and (dy > 0 or dx > 0), "
                f"got {(dy, dx)}"
            )
        expected = (batch, height - dy, width - abs(dx))
        if not isinstance(wmap, torch.Tensor) or tuple(wmap.shape) != expected:
            got = tuple(wmap.shape) if isinstance(wmap, torch.Tensor) else type(wmap).__name__
            raise ValueError(
                f"weights map for offset {(dy, dx)} must have shape {expected} "
                f"(batch of {batch} to match unary), got {got}"
            )
        if not wmap.is_floating_point():
            raise ValueError("weights maps must be finite floating-point tensors")
    # one float64 array, checked at once (a trainer calls this every step)
    maps = [wmap.detach().reshape(batch, -1) for wmap in weights.maps]
    pair_weights = torch.cat(maps, 1).to("cpu", torch.float64).numpy()
    low, high = (pair_weights.min(), pair_weights.max()) if pair_weights.size else (0.0, 0.0)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("weights maps must be finite floating-point tensors")
    if low < 0:
        raise ValueError(
            "weights must be >= 0 (a Potts model with negative weights is not submodular)"
        )
    return pair_weights


def _check_seed_labels(seeds: np.ndarray, n_labels: int, ignore_index: int) -> np.ndarray:
    """Seeds as int64 with -1 for unlabelled pixels."""
    labelled = seeds != ignore_index
    bad = labelled & ((seeds < 0) | (seeds >= n_labels))
    if bad.any():
        raise ValueError(
            f"seeds must be in [0, {n_labels}) or ignore_index={ignore_index}, "
            f"got {int(seeds[bad].flat[0])}"
        )
    return np.where(labelled, seeds, -1)


# ---- integer problem ----------------------------------------------------------------------------


def _degree(pair_index: np.ndarray, pair_weight: np.ndarray, n_sites: int) -> np.ndarray:
    """Each site's total pair weight, in ``pair_weight``'s dtype."""
    degree = np.zeros(n_sites, dtype=pair_weight.dtype)
    np.add.at(degree, pair_index[:, 0], pair_weight)
    np.add.at(degree, pair_index[:, 1], pair_weight)
    return degree


def _scaling_error(
    kind: str, image: str, largest: float = 0.0, resolution: float = 1.0, largest_int: int = 0
) -> ValueError:
    """The error of a problem that cannot be scaled to GCO's integers (both build paths)."""
    if kind == "seed not allowed":
        return ValueError(f"seeds{image} use a label that allowed_labels excludes")
    if kind == "largest not finite":
        return ValueError(
            f"unary{image} or potts_weight * weights are too large: their range overflows float64"
        )
    if kind == "largest too small":
        return ValueError(
            f"unary{image} and potts_weight * weights are too small to scale to integers: the "
            f"largest term {largest:g} is below {_SMALLEST_SCALABLE_TERM:g}; multiply both by "
            "the same constant (the minimiser does not change) or pass resolution"
        )
    if kind == "resolution too fine":
        return ValueError(
            f"resolution={resolution:g} is too fine for image{image}: its largest term "
            f"{largest:g} would be {largest / resolution:.3g} integer units, above GCO's limit "
            f"of {GCO_MAX_ENERGYTERM}; use resolution >= {largest / GCO_MAX_ENERGYTERM:g}"
        )
    if kind == "seed cost too large":
        return ValueError(
            f"resolution={resolution:g} is too fine for image{image}: a seed cost needs "
            f"{largest_int} integer units, above GCO's limit of {GCO_MAX_ENERGYTERM}"
        )
    return ValueError(f"image{image}: the integer energy would overflow GCO's integer types")


def _integer_problem(
    unary: np.ndarray,
    pair_index: np.ndarray,
    pair_weight: np.ndarray,
    seeds: np.ndarray,
    allowed: np.ndarray,
    init: np.ndarray | None,
    resolution: float | None,
    n_iter: int,
    image: str,
    solver: str = "gco",
) -> tuple[_IntegerProblem, float]:
    """Scale one image's validated float problem to integers (GCO's limits; see the module notes).

    ``unary`` is ``(K, N)``, ``pair_weight`` already multiplied by the Potts weight, ``seeds``
    ``(N,)`` with -1 for unlabelled, ``allowed`` ``(K,)``. Returns the problem and its resolution.
    """
    n_labels, n_sites = unary.shape
    seeded = seeds >= 0
    any_seeded = bool(seeded.any())
    if any_seeded and not allowed[seeds[seeded]].all():
        raise _scaling_error("seed not allowed", image)
    # (K, N) throughout, the layout unary comes in; (N, K) only for the solver at the end.
    costs = unary if allowed.all() else np.where(allowed[:, None], unary, np.inf)
    if init is None:
        init = costs.argmin(axis=0)
    costs = costs - costs.min(axis=0)
    costs[~allowed] = 0.0  # never used: those labels are neither initial nor expanded on
    if any_seeded:
        costs[:, seeded] = 0.0  # replaced by the hard-constraint costs below
    seed_degree = np.zeros(n_sites)
    if any_seeded:
        seed_degree = _degree(pair_index, pair_weight, n_sites)
    largest = max(
        float(costs.max(initial=0.0)),  # the seeded sites' costs are 0 here
        float(pair_weight.max(initial=0.0)),
        float(seed_degree[seeded].max(initial=0.0)),
    )
    if not math.isfinite(largest):
        raise _scaling_error("largest not finite", image)
    if resolution is None:
        resolution = largest / _DEFAULT_LARGEST_TERM if largest > 0 else 1.0
        if resolution < _FLOAT64_MIN_NORMAL:  # subnormal or 0: the scaling loses its digits
            raise _scaling_error("largest too small", image, largest)
    if largest / resolution > GCO_MAX_ENERGYTERM:
        raise _scaling_error("resolution too fine", image, largest, resolution)
    int_costs = np.rint(costs / resolution).astype(np.int64)
    int_weight = np.rint(pair_weight / resolution).astype(np.int64)
    keep = int_weight > 0  # zero pairs only cost time in the solvers
    if not keep.all():
        int_weight, pair_index = int_weight[keep], pair_index[keep]
    int_degree = _degree(pair_index, int_weight, n_sites)
    if any_seeded:
        seed_sites = np.flatnonzero(seeded)
        # Per-pixel hard-constraint cost, larger than any pair change the pixel can cause.
        hard_cost = int_degree[seed_sites] + 1
        int_costs[:, seed_sites] = np.where(allowed[:, None], hard_cost, 0)
        int_costs[seeds[seed_sites], seed_sites] = 0
    largest_int = int(int_costs.max(initial=0))
    if largest_int > GCO_MAX_ENERGYTERM:
        raise _scaling_error("seed cost too large", image, largest, resolution, largest_int)
    # GCO adds a pixel's data cost and (twice) its pair terms in 32-bit; totals are 64-bit.
    node_sum = largest_int + 2 * int(int_degree.max(initial=0))
    total = int(int_costs.max(axis=0).sum()) + int(int_weight.sum())
    if node_sum > _INT32_MAX or total > _INT64_MAX:
        raise _scaling_error("integer overflow", image)

    init = np.where(seeded, seeds, init) if any_seeded else init
    # GCO takes C ints; the numba solver int64 (no conversion in the worker)
    dtype = np.int64 if solver == "numba" else np.intc
    problem = _IntegerProblem(
        costs=np.ascontiguousarray(int_costs.T, dtype=dtype),
        pair_index=np.ascontiguousarray(pair_index, dtype=dtype),
        pair_weight=np.ascontiguousarray(int_weight, dtype=dtype),
        init=init.astype(dtype),
        labels_to_expand=tuple(int(k) for k in np.flatnonzero(allowed)),
        n_iter=n_iter,
        solver=solver,
    )
    return problem, float(resolution)


# ---- public API ---------------------------------------------------------------------------------


def alpha_expansion(
    unary: torch.Tensor | np.ndarray,
    weights: GridWeights,
    *,
    seeds: torch.Tensor | np.ndarray | None = None,
    potts_weight: float = 1.0,
    n_iter: int = 5,
    init: torch.Tensor | np.ndarray | None = None,
    allowed_labels: torch.Tensor | np.ndarray | None = None,
    ignore_index: int = 255,
    resolution: float | None = None,
    solver: str = "auto",
) -> ExpansionResult:
    r"""Minimise a Potts energy on one image by alpha-expansion, seeds as hard constraints.

    .. math::
        E(X) = \sum_p U_{X_p, p} + \lambda \sum_{pq} w_{pq} [X_p \ne X_q]
        \quad \text{s.t. } X_p = y_p \text{ on the seeds}, \; X_p \in \text{allowed labels}.

    Each cycle tries an expansion move on every allowed label; a move is the exact optimum over
    "keep your label or switch to :math:`\alpha`" and is applied only if it lowers the energy, so
    the energy never increases. Two labels: the result is a global minimum once converged;
    more labels: within a factor 2 of one (Potts, non-negative unaries), often equal. Energies
    are rounded to integers for the solver (see the module notes); the returned energies are
    recomputed in float64 from the labels and the original inputs.

    Parameters
    ----------
    unary : torch.Tensor or numpy.ndarray
        ``(K, H, W)`` float costs :math:`U`, ``K >= 2`` (for ADM, ``-beta log S``); finite.
    weights : GridWeights
        Pair weights :math:`w_{pq} \ge 0` of batch size 1 for ``H x W`` images
        (:func:`beyondgd.segmentation.grid.contrast_weights`).
    seeds : torch.Tensor or numpy.ndarray, optional
        ``(H, W)`` integer labels, ``ignore_index`` where unlabelled. Never violated.
    potts_weight : float, default 1.0
        :math:`\lambda \ge 0`.
    n_iter : int, default 5
        Expansion cycles; ``-1`` runs until a cycle changes nothing. Stops early on convergence.
    init : torch.Tensor or numpy.ndarray, optional
        ``(H, W)`` initial labelling (allowed labels); default: the per-pixel argmin of the
        unary over the allowed labels. The seeds are imposed on it.
    allowed_labels : torch.Tensor or numpy.ndarray, optional
        ``(K,)`` bool mask of the labels that may be used (default all); must include every seed
        label.
    ignore_index : int, default 255
        Seed value meaning "unlabelled"; must not be a label in ``[0, K)``.
    resolution : float, optional
        Energy of one integer unit in the solver (default: the largest term maps to about
        ``9.9e6`` units). Raises if a term would exceed GCO's limit of ``1e7`` units (kept for
        both solvers, so they solve the same problem).
    solver : {"auto", "numba", "gco"}, default "auto"
        ``"numba"``: beyondgd's compiled alpha-expansion; ``"gco"``: GCO through gco-wrapper;
        ``"auto"``: numba where it is installed, else GCO. Same integer problem, same moves
        (see the module notes).

    Returns
    -------
    ExpansionResult
        ``labels`` ``(H, W)`` int64 and the float64 ``unary_energy``, ``pairwise_energy``,
        ``energy``; also ``resolution`` and ``n_cycles``.

    Raises
    ------
    ImportError
        If the solver's library (numba or gco-wrapper) is not installed
        (``pip install "beyondgd[seg]"``).

    References
    ----------
    .. [1] D. Marin, M. Tang, I. Ben Ayed, Y. Boykov, "Beyond Gradient Descent for Regularized
       Segmentation Losses", CVPR 2019, arXiv:1809.02322.
    .. [2] Y. Boykov, O. Veksler, R. Zabih, "Fast approximate energy minimization via graph
       cuts", IEEE TPAMI 23(11), 2001.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.segmentation.grid import contrast_weights
    >>> from beyondgd.segmentation.proposals import alpha_expansion
    >>> image = torch.zeros(3, 4, 6)
    >>> image[:, :, 3:] = 1.0                       # two flat regions, an edge between them
    >>> unary = torch.zeros(2, 4, 6)                 # no preference anywhere...
    >>> seeds = torch.full((4, 6), 255)
    >>> seeds[1, 0], seeds[2, 5] = 0, 1              # ...but one click per region
    >>> result = alpha_expansion(unary, contrast_weights(image, 4), seeds=seeds, n_iter=-1)
    >>> result.labels
    tensor([[0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1]])
    """
    array = _float_array("unary", unary, 3, "(K, H, W)")
    _, height, width = array.shape
    if seeds is not None:
        seeds = _int_array("seeds", seeds, (height, width), "(H, W)")[None]
    if init is not None:
        init = _int_array("init", init, (height, width), "(H, W)")[None]
    if allowed_labels is not None:
        allowed_labels = _bool_array("allowed_labels", allowed_labels, (array.shape[0],), "(K,)")
        allowed_labels = allowed_labels[None]
    batch = _solve(
        array[None],
        _device_of(unary),
        weights,
        seeds,
        potts_weight,
        n_iter,
        init,
        allowed_labels,
        ignore_index,
        resolution,
        solver,
        pool=None,
        n_jobs=1,
    )
    return ExpansionResult(
        labels=batch.labels[0],
        unary_energy=float(batch.unary_energy[0]),
        pairwise_energy=float(batch.pairwise_energy[0]),
        energy=float(batch.energy[0]),
        resolution=float(batch.resolution[0]),
        n_cycles=int(batch.n_cycles[0]),
    )


def alpha_expansion_batch(
    unary: torch.Tensor | np.ndarray,
    weights: GridWeights,
    *,
    seeds: torch.Tensor | np.ndarray | None = None,
    potts_weight: float = 1.0,
    n_iter: int = 5,
    init: torch.Tensor | np.ndarray | None = None,
    allowed_labels: torch.Tensor | np.ndarray | None = None,
    ignore_index: int = 255,
    resolution: float | None = None,
    solver: str = "auto",
    n_jobs: int = 1,
    pool: ExpansionPool | None = None,
) -> BatchExpansionResult:
    r""":func:`alpha_expansion` on each image of a batch, in parallel threads or processes if asked.

    Parameters
    ----------
    unary : torch.Tensor or numpy.ndarray
        ``(B, K, H, W)`` float costs.
    weights : GridWeights
        Pair weights of batch size ``B``.
    seeds, init : torch.Tensor or numpy.ndarray, optional
        ``(B, H, W)`` integer seeds (``ignore_index`` = unlabelled) and initial labellings.
    allowed_labels : torch.Tensor or numpy.ndarray, optional
        ``(B, K)`` bool masks, one per image (e.g. the classes in each image's seeds).
    potts_weight, n_iter, ignore_index, resolution, solver
        As in :func:`alpha_expansion` (``resolution`` applies to every image).
    n_jobs : int, default 1
        Images solved at once (``-1``: one per core); ``1`` solves serially in this process. The
        numba solver runs them in threads of this process (it releases the GIL; the threads
        are kept for later calls; the image with the longest unary-argmin boundary starts
        first); GCO in a pool of worker processes opened for this call only. Ignored when
        ``pool`` is given.
    pool : ExpansionPool, optional
        An open pool to reuse across calls (preferred when calling every mini-batch).

    Returns
    -------
    BatchExpansionResult
        ``labels`` ``(B, H, W)`` int64 and per-image float64 energies. Images are independent
        and both solvers are deterministic, so parallel results equal serial ones exactly.

    References
    ----------
    .. [1] D. Marin, M. Tang, I. Ben Ayed, Y. Boykov, "Beyond Gradient Descent for Regularized
       Segmentation Losses", CVPR 2019, arXiv:1809.02322.
    .. [2] Y. Boykov, O. Veksler, R. Zabih, "Fast approximate energy minimization via graph
       cuts", IEEE TPAMI 23(11), 2001.

    Examples
    --------
    >>> import torch
    >>> from beyondgd.segmentation.grid import contrast_weights
    >>> from beyondgd.segmentation.proposals import alpha_expansion_batch
    >>> gen = torch.Generator().manual_seed(0)
    >>> images, unary = torch.rand(2, 3, 8, 8, generator=gen), torch.rand(2, 4, 8, 8, generator=gen)
    >>> result = alpha_expansion_batch(unary, contrast_weights(images), potts_weight=0.5)
    >>> result.labels.shape, result.energy.dtype
    (torch.Size([2, 8, 8]), torch.float64)
    """
    array = _float_array("unary", unary, 4, "(B, K, H, W)")
    n_images, n_labels, height, width = array.shape
    if seeds is not None:
        seeds = _int_array("seeds", seeds, (n_images, height, width), "(B, H, W)")
    if init is not None:
        init = _int_array("init", init, (n_images, height, width), "(B, H, W)")
    if allowed_labels is not None:
        allowed_labels = _bool_array(
            "allowed_labels", allowed_labels, (n_images, n_labels), "(B, K)"
        )
    if pool is not None and not isinstance(pool, ExpansionPool):
        raise TypeError(f"pool must be an ExpansionPool or None, got {type(pool).__name__}")
    if pool is not None and pool.closed:
        raise ValueError("pool is closed; open a new ExpansionPool")
    n_jobs = _check_n_jobs(n_jobs)
    return _solve(
        array,
        _device_of(unary),
        weights,
        seeds,
        potts_weight,
        n_iter,
        init,
        allowed_labels,
        ignore_index,
        resolution,
        solver,
        pool=pool,
        n_jobs=n_jobs,
    )


def _device_of(unary: object) -> torch.device:
    return unary.device if isinstance(unary, torch.Tensor) else torch.device("cpu")


def _compiled_build_and_solve(
    unary: np.ndarray,
    pair_index: np.ndarray,
    pair_weights: np.ndarray,
    seeds: np.ndarray,
    allowed: np.ndarray,
    init: np.ndarray | None,
    resolution: float | None,
    n_iter: int,
):
    """``index -> ((labels, n_cycles), resolution)`` for the numba solver: image ``index``'s
    integer problem built and solved in one compiled call (the same problem as
    :func:`_integer_problem`'s, see ``scale_and_expand``). ``pair_weights`` ``(B, E)`` are
    already times the Potts weight."""
    kernel = _compiled_expansion()
    n_images, n_labels = unary.shape[:2]
    flat_unary = np.ascontiguousarray(unary.reshape(n_images, n_labels, -1))
    flat_seeds = seeds.reshape(n_images, -1).astype(np.int64, copy=False)
    flat_init = None if init is None else init.reshape(n_images, -1).astype(np.int64, copy=False)
    no_init = np.empty(0, dtype=np.int64)
    kinds = {
        kernel.SEED_NOT_ALLOWED: "seed not allowed",
        kernel.LARGEST_NOT_FINITE: "largest not finite",
        kernel.LARGEST_TOO_SMALL: "largest too small",
        kernel.RESOLUTION_TOO_FINE: "resolution too fine",
        kernel.SEED_COST_TOO_LARGE: "seed cost too large",
        kernel.INTEGER_OVERFLOW: "integer overflow",
    }

    def build_and_solve(index: int) -> tuple[tuple[np.ndarray, int], float]:
        labels = np.empty(flat_unary.shape[2], dtype=np.int64)
        status, n_cycles, used, largest, largest_int = kernel.scale_and_expand(
            flat_unary[index],
            pair_index,
            pair_weights[index],
            flat_seeds[index],
            allowed[index],
            no_init if flat_init is None else flat_init[index],
            math.nan if resolution is None else resolution,
            n_iter,
            _DEFAULT_LARGEST_TERM,
            _FLOAT64_MIN_NORMAL,
            GCO_MAX_ENERGYTERM,
            _INT32_MAX,
            _REUSE_FLOWS_MAX_BYTES,
            labels,
        )
        if status != kernel.SCALED_OK:
            image = "" if n_images == 1 else f" {index}"
            raise _scaling_error(kinds[status], image, largest, used, largest_int)
        return (labels, int(n_cycles)), float(used)

    return build_and_solve


def _solve(
    unary: np.ndarray,
    device: torch.device,
    weights: object,
    seeds: np.ndarray | None,
    potts_weight: object,
    n_iter: object,
    init: np.ndarray | None,
    allowed: np.ndarray | None,
    ignore_index: object,
    resolution: object,
    solver: object,
    *,
    pool: ExpansionPool | None,
    n_jobs: int,
) -> BatchExpansionResult:
    """Shared body of the public functions: ``unary`` is a finite ``(B, K, H, W)`` float64 array,
    the optional arrays are shape-checked; the remaining arguments are validated here."""
    n_images, n_labels, height, width = unary.shape
    if n_labels < 2:
        raise ValueError(f"unary must have K >= 2 labels, got K={n_labels}")
    pair_weights = _checked_pair_weights(weights, n_images, height, width)
    potts_weight = check_number("potts_weight", potts_weight, low=0.0)
    n_iter = check_int("n_iter", n_iter, low=-1)
    ignore_index = check_int("ignore_index", ignore_index)
    if 0 <= ignore_index < n_labels:
        raise ValueError(f"ignore_index must not be a label in [0, {n_labels}), got {ignore_index}")
    if resolution is not None:
        resolution = check_number("resolution", resolution, low=0.0, low_inclusive=False)
    if allowed is None:
        allowed = np.ones((n_images, n_labels), dtype=bool)
    empty = ~allowed.any(axis=1)
    if empty.any():
        raise ValueError(
            f"allowed_labels must allow at least one label (image {int(empty.argmax())})"
        )
    if seeds is None:
        seeds = np.full((n_images, height, width), -1, dtype=np.int64)
    else:
        seeds = _check_seed_labels(seeds, n_labels, ignore_index)
    if init is not None:
        bad = (init < 0) | (init >= n_labels)
        if bad.any():
            raise ValueError(f"init must be labels in [0, {n_labels}), got {int(init[bad][0])}")
        disallowed = ~np.take_along_axis(allowed, init.reshape(n_images, -1), axis=1)
        if disallowed.any():
            raise ValueError("init uses a label that allowed_labels excludes")
    solver = _resolve_solver(solver)

    pair_index = grid_pairs(weights.offsets, height, width).numpy()  # shared: read only

    def problem_of(index: int) -> tuple[_IntegerProblem, float]:
        return _integer_problem(
            unary[index].reshape(n_labels, -1),
            pair_index,
            pair_weights[index] * potts_weight,
            seeds[index].reshape(-1),
            allowed[index],
            None if init is None else init[index].reshape(-1),
            resolution,
            n_iter,
            image="" if n_images == 1 else f" {index}",
            solver=solver,
        )

    flat_unary = unary.reshape(n_images, n_labels, -1)

    def energies_of(index: int, labels: np.ndarray) -> tuple[float, float]:
        """Image ``index``'s unary energy and pair weight cut by ``labels`` (per image, so the
        solver threads compute them too)."""
        with np.errstate(over="ignore"):  # an overflow is reported below
            unary_energy = np.take_along_axis(flat_unary[index], labels[None], 0).sum()
            cut = labels[pair_index[:, 0]] != labels[pair_index[:, 1]]
            return float(unary_energy), float((pair_weights[index] * cut).sum())

    workers = 1 if pool is not None else min(n_jobs, n_images)
    if solver == "numba" and pool is None:
        build_and_solve = _compiled_build_and_solve(
            unary, pair_index, pair_weights * potts_weight, seeds, allowed, init, resolution, n_iter
        )

        def solve(index: int):
            solution, used = build_and_solve(index)
            return solution, used, energies_of(index, solution[0])

        # Threads build and solve: the compiled build and solver hold no GIL.
        if workers > 1:  # keyed by n_jobs, so every batch size shares one pool
            threads = _threads_of(n_jobs)
            started = {i: threads.submit(solve, i) for i in _longest_first(unary)}
            done = [started[index].result() for index in range(n_images)]  # first error first
        else:
            done = [solve(index) for index in range(n_images)]
        solutions, resolutions, energies = zip(*done)
    else:
        problems, resolutions = zip(*[problem_of(index) for index in range(n_images)])
        if pool is not None:
            solutions = pool._map(problems)
        elif workers > 1:
            with ExpansionPool(workers) as call_pool:
                solutions = call_pool._map(problems)
        else:
            solutions = [_solve_integer_problem(problem) for problem in problems]
        energies = [energies_of(index, s[0]) for index, s in enumerate(solutions)]

    flat_labels = np.stack([s[0] for s in solutions])  # (B, N)
    unary_energy = torch.tensor([e[0] for e in energies], dtype=torch.float64)
    pairwise_energy = potts_weight * torch.tensor([e[1] for e in energies], dtype=torch.float64)
    energy = unary_energy + pairwise_energy
    labels = torch.from_numpy(flat_labels.reshape(n_images, height, width))
    if not bool(torch.isfinite(energy).all()):
        raise ValueError("the energy overflows float64: unary or potts_weight * weights too large")
    return BatchExpansionResult(
        labels=labels.to(device),
        unary_energy=unary_energy.to(device),
        pairwise_energy=pairwise_energy.to(device),
        energy=energy.to(device),
        resolution=torch.tensor(list(resolutions), dtype=torch.float64, device=device),
        n_cycles=torch.tensor([s[1] for s in solutions], dtype=torch.int64, device=device),
    )
