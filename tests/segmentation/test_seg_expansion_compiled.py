"""The numba alpha-expansion: its max-flow against scipy's, each move against brute force and
GCO's, whole solves against GCO's, the carried-over flows against fresh ones, and the solver
choice (``solver=`` / ``"auto"``) with its errors."""

import dataclasses
import itertools
import multiprocessing
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

pytest.importorskip("numba", reason="numba is an optional extra")

from beyondgd.segmentation import _expansion_compiled as compiled  # noqa: E402
from beyondgd.segmentation import proposals  # noqa: E402
from beyondgd.segmentation.grid import contrast_weights, edge_list  # noqa: E402


def grid_pairs(height, width):
    ids = np.arange(height * width).reshape(height, width)
    pairs = []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        for y in range(height - dy):
            for x in range(width):
                if 0 <= x + dx < width:
                    pairs.append((ids[y, x], ids[y + dy, x + dx]))
    return np.array(pairs, dtype=np.int64)


def random_integer_problem(rng, height, width, n_labels, max_weight=30):
    pairs = grid_pairs(height, width)
    costs = rng.integers(0, 100, size=(height * width, n_labels)).astype(np.int64)
    weights = rng.integers(1, max_weight, size=len(pairs)).astype(np.int64)
    return costs, pairs, weights


def energy(costs, pairs, weights, labels):
    unary = costs[np.arange(len(labels)), labels].sum()
    return int(unary + (weights * (labels[pairs[:, 0]] != labels[pairs[:, 1]])).sum())


def expand(costs, pairs, weights, labels, to_expand, n_iter, reuse_flows=True):
    labels = labels.copy()
    reuse_max_bytes = 2**62 if reuse_flows else 0  # every flow kept, or none
    n_cycles = compiled.expansion(
        costs, pairs, weights, labels, np.asarray(to_expand, dtype=np.int64), n_iter,
        reuse_max_bytes,
    )  # fmt: skip
    return labels, n_cycles


def gco_expansion_on(costs, pairs, weights, labels, alpha):
    """One GCO expansion move on ``alpha`` from ``labels``."""
    from gco import pygco

    n_sites, n_labels = costs.shape
    graph = pygco.GCO()
    graph.create_general_graph(n_sites, n_labels)
    try:
        graph.set_data_cost(costs.astype(np.intc))
        graph.set_all_neighbors(
            pairs[:, 0].astype(np.intc), pairs[:, 1].astype(np.intc), weights.astype(np.intc)
        )
        graph.set_smooth_cost((1 - np.eye(n_labels)).astype(np.intc))
        for site, label in enumerate(labels):
            graph.init_label_at_site(site, int(label))
        graph.expansion_on_alpha(alpha)
        return graph.get_labels().astype(np.int64)
    finally:
        graph.destroy_graph()


# ---- max-flow ----------------------------------------------------------------------------------


def run_max_flow(pairs, forward, backward, terminal):
    n = len(terminal)
    first, head, sister, arc_of_pair = compiled.arc_layout(pairs, n)
    r_cap = np.zeros(len(head), dtype=np.int64)
    r_cap[arc_of_pair[:, 0]], r_cap[arc_of_pair[:, 1]] = forward, backward
    tr_cap = terminal.copy()
    parent, is_sink = np.empty(n, dtype=np.int64), np.zeros(n, dtype=bool)
    work = [np.zeros(n, dtype=np.int64) for _ in range(4)]
    flow = compiled.max_flow(
        first, head, sister, r_cap, tr_cap, parent, is_sink, work[0], work[1], work[2], work[3]
    )
    return flow, (parent != compiled._FREE) & is_sink


def test_max_flow_equals_scipy_and_its_cut_has_that_capacity():
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import maximum_flow

    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(2, 40))
        all_pairs = np.array([(p, q) for p in range(n) for q in range(p + 1, n)])
        pairs = all_pairs[rng.random(len(all_pairs)) < rng.uniform(0.05, 0.5)]
        if not len(pairs):
            pairs = all_pairs[:1]
        forward = rng.integers(0, 50, len(pairs)) * (rng.random(len(pairs)) < 0.8)
        backward = rng.integers(0, 50, len(pairs)) * (rng.random(len(pairs)) < 0.5)
        terminal = rng.integers(-60, 60, n)
        flow, sink_side = run_max_flow(pairs, forward, backward, terminal)
        # scipy: node n is the source, n + 1 the sink
        rows = np.concatenate([pairs[:, 0], pairs[:, 1], np.full(n, n), np.arange(n)])
        cols = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(n), np.full(n, n + 1)])
        caps = np.concatenate([forward, backward, terminal.clip(0), (-terminal).clip(0)])
        graph = csr_matrix((caps.astype(np.int32), (rows, cols)), shape=(n + 2, n + 2))
        assert flow == maximum_flow(graph, n, n + 1).flow_value, trial
        # the returned cut: source side = not sink_side; its capacity equals the flow
        source_side = ~sink_side
        cut = terminal.clip(0)[sink_side].sum() + (-terminal).clip(0)[source_side].sum()
        cut += forward[source_side[pairs[:, 0]] & sink_side[pairs[:, 1]]].sum()
        cut += backward[sink_side[pairs[:, 0]] & source_side[pairs[:, 1]]].sum()
        assert cut == flow, trial


# ---- expansion moves ----------------------------------------------------------------------------


def test_each_move_is_the_brute_force_optimum_of_its_move_space():
    rng = np.random.default_rng(1)
    for trial in range(200):
        costs, pairs, weights = random_integer_problem(rng, 3, 3, 3)
        labels = rng.integers(0, 3, 9)
        alpha = int(rng.integers(0, 3))
        masks = itertools.product([False, True], repeat=9)
        moves = (np.where(np.array(m), alpha, labels) for m in masks)
        best = min(energy(costs, pairs, weights, m) for m in moves)
        moved, _ = expand(costs, pairs, weights, labels, [alpha], 1)
        assert energy(costs, pairs, weights, moved) == best, trial
        # applied only when it lowers the energy: a tie keeps every label
        if best == energy(costs, pairs, weights, labels):
            assert np.array_equal(moved, labels), trial


def test_each_move_lowers_the_energy_exactly_as_gco_does():
    rng = np.random.default_rng(2)
    for _ in range(25):
        costs, pairs, weights = random_integer_problem(
            rng, 20, 25, 4, max_weight=int(rng.integers(2, 200))
        )
        labels = rng.integers(0, 4, 500)
        for alpha in range(4):
            ours, _ = expand(costs, pairs, weights, labels, [alpha], 1)
            theirs = gco_expansion_on(costs, pairs, weights, labels, alpha)
            assert energy(costs, pairs, weights, ours) == energy(costs, pairs, weights, theirs)


def test_move_gain_is_the_energy_difference():
    rng = np.random.default_rng(4)
    for trial in range(100):
        costs, pairs, weights = random_integer_problem(rng, 5, 6, 4)
        first, head, _, arc_of_pair = compiled.arc_layout(pairs, 30)
        arc_weight = np.empty(len(head), dtype=np.int64)
        arc_weight[arc_of_pair[:, 0]], arc_weight[arc_of_pair[:, 1]] = weights, weights
        labels, alpha = rng.integers(0, 4, 30), int(rng.integers(0, 4))
        moved = (rng.random(30) < 0.5) & (labels != alpha)
        gain = compiled._move_gain(costs, first, head, arc_weight, labels, alpha, moved)
        after = np.where(moved, alpha, labels)
        expected = energy(costs, pairs, weights, after) - energy(costs, pairs, weights, labels)
        assert gain == expected, trial


def integer_problem(seed, n_labels, size=16, n_iter=-1, potts=None):
    """A validated ``_IntegerProblem`` (seeds, allowed labels, cycle caps vary with the seed)."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(3, size, size, generator=gen, dtype=torch.float64)
    unary = torch.rand(n_labels, size, size, generator=gen, dtype=torch.float64) * (1 + seed % 3)
    pairs, w = edge_list(contrast_weights(image), 0)
    seeds = np.full(size * size, -1)
    sites = torch.randperm(size * size, generator=gen)[: seed % 7].numpy()
    seeds[sites] = torch.randint(0, n_labels, (len(sites),), generator=gen).numpy()
    allowed = np.ones(n_labels, dtype=bool)
    if seed % 5 == 0 and n_labels > 2:
        allowed[-1] = False
        seeds[seeds == n_labels - 1] = -1
    weight = w.numpy() * (0.3 + seed % 4 if potts is None else potts)
    flat_unary, pairs = unary.reshape(n_labels, -1).numpy(), pairs.numpy()
    # (unary, pairs, weights, seeds, allowed, init, resolution, n_iter, image name)
    args = (flat_unary, pairs, weight, seeds, allowed, None, None, n_iter, "")
    return proposals._integer_problem(*args, solver="numba")[0]


def test_whole_solves_return_gco_labels_and_cycles():
    # Each move is an exact optimum and ties are improbable on random real-valued problems, so
    # both solvers walk the same path.
    for seed in range(40):
        problem = integer_problem(seed, 2 + seed % 4, n_iter=(-1, 1, 2, 5)[seed % 4])
        ours = proposals._solve_integer_problem(problem)
        theirs = proposals._solve_integer_problem(dataclasses.replace(problem, solver="gco"))
        assert np.array_equal(ours[0], theirs[0]) and ours[1] == theirs[1], seed


def test_carried_over_flows_give_the_moves_of_fresh_flows():
    several_cycles = 0
    for seed in range(30):
        problem = integer_problem(seed + 100, 4, size=20, potts=1.5)
        args = (problem.costs, problem.pair_index, problem.pair_weight, problem.init)
        to_expand = list(problem.labels_to_expand)
        reused, cycles_reused = expand(*args, to_expand, -1, reuse_flows=True)
        fresh, cycles_fresh = expand(*args, to_expand, -1, reuse_flows=False)
        assert np.array_equal(reused, fresh) and cycles_reused == cycles_fresh, seed
        several_cycles += cycles_reused >= 2  # a label's second cut starts from its first flow
    assert several_cycles >= 15


def new_move_state(n_sites, n_arcs):
    """``[cap_r, cap_tr, r_cap, tr_cap]`` of ``move_residual``, zero."""
    return [np.zeros(n_arcs, np.int64), np.zeros(n_sites, np.int64)] + [
        np.zeros(n_arcs, np.int64),
        np.zeros(n_sites, np.int64),
    ]


def cut_move(problem, layout, state, labels, alpha, fresh):
    """The labels after the min-cut move on ``alpha`` from ``labels``, through ``state``."""
    costs, pairs, weights = problem
    first, head, sister, arc_of_pair = layout
    n = len(labels)
    compiled.move_residual(costs, pairs, weights, arc_of_pair, labels, alpha, *state, fresh)
    parent, is_sink = np.empty(n, dtype=np.int64), np.zeros(n, dtype=bool)
    work = [np.zeros(n, dtype=np.int64) for _ in range(4)]
    compiled.max_flow(first, head, sister, state[2], state[3], parent, is_sink, *work)
    return np.where((parent != compiled._FREE) & is_sink, alpha, labels)


def test_move_residual_carries_a_flow_over_to_lower_and_higher_capacities():
    # A max-flow for one labelling (the unary minimum), carried over to another (after an
    # expansion on another label, then 20% of the sites relabelled at random: capacities fall
    # below the flow and grow), must give the new graph's minimum cut. (Random integer costs
    # made flows too small to tell a wrong carry-over apart; these problems do: dropping the
    # flow, or returning an excess the wrong way, changes the cut.)
    n_clipped = 0
    for seed in range(40):
        problem = integer_problem(seed + 200, 4, size=20, potts=1.5)
        arrays = (problem.costs, problem.pair_index, problem.pair_weight)
        n = problem.costs.shape[0]
        layout = compiled.arc_layout(problem.pair_index, n)
        alpha = seed % 4
        after, _ = expand(*arrays, problem.init, [(seed + 1) % 4], 1)
        rng = np.random.default_rng(seed)
        after = np.where(rng.random(n) < 0.2, rng.integers(0, 4, n), after)

        state = new_move_state(n, len(layout[1]))
        cut_move(arrays, layout, state, problem.init, alpha, True)
        forward, backward = layout[3][:, 0], layout[3][:, 1]
        flow = state[0][forward] - state[2][forward]  # net flow p -> q of each pair
        carried = cut_move(arrays, layout, state, after, alpha, False)
        fresh = cut_move(arrays, layout, new_move_state(n, len(layout[1])), after, alpha, True)
        n_clipped += int(((flow > state[0][forward]) | (-flow > state[0][backward])).sum())
        assert energy(*arrays, carried) == energy(*arrays, fresh), seed
    assert n_clipped > 0  # the branch that clips a flow above its new capacity ran


def test_cycle_caps_and_zero_cycles():
    problem = integer_problem(101, 4, size=20, potts=1.5)
    args = (problem.costs, problem.pair_index, problem.pair_weight, problem.init)
    labels, n_cycles = expand(*args, [0, 1, 2, 3], 0)
    assert n_cycles == 0 and np.array_equal(labels, problem.init)
    one, n_one = expand(*args, [0, 1, 2, 3], 1)
    converged, n_all = expand(*args, [0, 1, 2, 3], -1)
    assert n_one == 1 and n_all >= 2
    assert energy(problem.costs, problem.pair_index, problem.pair_weight, converged) <= energy(
        problem.costs, problem.pair_index, problem.pair_weight, one
    )


def test_large_problems_start_every_cut_from_zero_flow_with_the_same_labels(monkeypatch):
    problem = integer_problem(11, 4, size=20)
    expected = proposals._solve_integer_problem(problem)
    seen = []
    original = compiled.expansion

    def spy(*args):
        seen.append(args[-1])
        return original(*args)

    monkeypatch.setattr(compiled, "expansion", spy)
    monkeypatch.setattr(proposals, "_REUSE_FLOWS_MAX_BYTES", 0)
    labels, n_cycles = proposals._solve_integer_problem(problem)
    assert seen == [False]
    assert np.array_equal(labels, expected[0]) and n_cycles == expected[1]


# ---- the solver choice --------------------------------------------------------------------------


@pytest.fixture
def small():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(3, 6, 6, generator=gen)
    return torch.rand(3, 6, 6, generator=gen), contrast_weights(image)


def test_auto_is_numba_where_installed_and_gco_where_not(monkeypatch):
    assert proposals._resolve_solver("auto") == "numba"
    monkeypatch.setattr(proposals, "_compiled_expansion", lambda: None)
    assert proposals._resolve_solver("auto") == "gco"


def test_solvers_agree_through_the_public_function(small):
    unary, weights = small
    numba = proposals.alpha_expansion(unary, weights, potts_weight=0.7, solver="numba")
    gco = proposals.alpha_expansion(unary, weights, potts_weight=0.7, solver="gco")
    assert torch.equal(numba.labels, gco.labels) and numba.energy == gco.energy


def test_rejects_an_unknown_solver(small):
    unary, weights = small
    with pytest.raises(ValueError, match="^solver must be one of"):
        proposals.alpha_expansion(unary, weights, solver="maxflow")


def test_numba_solver_without_numba_names_the_extra(small, monkeypatch):
    unary, weights = small
    monkeypatch.setattr(proposals, "_compiled_expansion", lambda: None)
    with pytest.raises(ImportError, match=r'^solver=\'numba\' needs numba: pip install "beyondgd'):
        proposals.alpha_expansion(unary, weights, solver="numba")


def test_threads_solve_the_batch_as_one_thread_does():
    gen = torch.Generator().manual_seed(5)
    images, unary = torch.rand(5, 3, 12, 12, generator=gen), torch.rand(5, 4, 12, 12, generator=gen)
    kwargs = dict(potts_weight=0.9, solver="numba")
    serial = proposals.alpha_expansion_batch(unary, contrast_weights(images), n_jobs=1, **kwargs)
    threads = proposals.alpha_expansion_batch(unary, contrast_weights(images), n_jobs=3, **kwargs)
    for field in ("labels", "energy", "unary_energy", "pairwise_energy", "resolution", "n_cycles"):
        assert torch.equal(getattr(serial, field), getattr(threads, field)), field


def batch_problem(seed=5):
    gen = torch.Generator().manual_seed(seed)
    images, unary = torch.rand(5, 3, 12, 12, generator=gen), torch.rand(5, 4, 12, 12, generator=gen)
    return unary, contrast_weights(images)


def test_calls_of_any_batch_size_share_one_pool_of_threads(monkeypatch):
    unary, weights = batch_problem()
    solved_on = []  # the threads that ran each image (kept alive, so none is mistaken for another)
    scale_and_expand = compiled.scale_and_expand

    def spy(*args):
        solved_on.append(threading.current_thread())
        return scale_and_expand(*args)

    monkeypatch.setattr(compiled, "scale_and_expand", spy)
    monkeypatch.setattr(proposals, "_solver_threads", {})
    for n_images in (5, 2, 4, 3, 5):
        proposals.alpha_expansion_batch(
            unary[:n_images], weights[:n_images], n_jobs=3, solver="numba"
        )
    assert len(solved_on) == 19 and len(set(solved_on)) <= 3
    assert threading.main_thread() not in solved_on
    assert list(proposals._solver_threads) == [3]


def _solve_in_child(queue):
    unary, weights = batch_problem()
    labels = proposals.alpha_expansion_batch(unary, weights, n_jobs=2, solver="numba").labels
    queue.put(labels.numpy())


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="no fork on this platform")
def test_a_forked_child_gets_threads_of_its_own():
    # The parent's pool exists before the fork; its threads do not exist in the child, which
    # would wait for them forever if it reused the pool.
    unary, weights = batch_problem()
    expected = proposals.alpha_expansion_batch(unary, weights, n_jobs=2, solver="numba").labels
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_solve_in_child, args=(queue,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        child.start()
    try:
        labels = queue.get(timeout=60)
    except Exception:
        pytest.fail("the forked child did not solve the batch within 60 s")
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    assert np.array_equal(labels, expected.numpy()) and child.exitcode == 0


# ---- the compiled build (scale_problem) against the float path (_integer_problem) -------------


def float_problem(seed, n_labels, size=12):
    """``_integer_problem``'s float arguments: seeds, allowed labels, an initial labelling, an
    explicit resolution and weights that round to zero vary with the seed."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(3, size, size, generator=gen, dtype=torch.float64)
    unary = torch.randn(n_labels, size, size, generator=gen, dtype=torch.float64) * 10.0 ** (
        seed % 5 - 2
    )
    pairs, w = edge_list(contrast_weights(image), 0)
    weight = w.numpy() * (0.3 + seed % 4)
    if seed % 3 == 0:  # a few pairs far below the resolution: rounded to 0 and dropped
        weight[::7] *= 1e-9
    seeds = np.full(size * size, -1, dtype=np.int64)
    sites = torch.randperm(size * size, generator=gen)[: seed % 9].numpy()
    seeds[sites] = torch.randint(0, n_labels, (len(sites),), generator=gen).numpy()
    allowed = np.ones(n_labels, dtype=bool)
    if seed % 4 == 1 and n_labels > 2:
        allowed[0] = False
        seeds[seeds == 0] = -1
    elif seed % 7 == 3:  # a single allowed label: nothing to expand on
        allowed[:] = np.arange(n_labels) == seed % n_labels
        seeds[seeds != seed % n_labels] = -1
    init = None
    if seed % 2:
        choices = np.flatnonzero(allowed)
        init = choices[torch.randint(0, len(choices), (size * size,), generator=gen).numpy()]
    resolution = None if seed % 5 else 1e-3 * 10.0 ** (seed % 5 - 2)
    flat_unary = unary.reshape(n_labels, -1).numpy()
    return flat_unary, pairs.numpy(), weight, seeds, allowed, init, resolution


def compiled_scale(flat_unary, pairs, weight, seeds, allowed, init, resolution):
    labels = np.full(flat_unary.shape[1], -7, dtype=np.int64)
    out = compiled.scale_problem(
        np.ascontiguousarray(flat_unary),
        pairs,
        weight,
        seeds,
        allowed,
        np.empty(0, dtype=np.int64) if init is None else init.astype(np.int64),
        np.nan if resolution is None else resolution,
        proposals._DEFAULT_LARGEST_TERM,
        proposals._FLOAT64_MIN_NORMAL,
        proposals.GCO_MAX_ENERGYTERM,
        proposals._INT32_MAX,
        labels,
    )
    return out, labels


def test_compiled_build_is_the_float_paths_integer_problem_bit_for_bit():
    dropped = 0
    for seed in range(80):
        args = float_problem(seed, 2 + seed % 4)
        expected, resolution = proposals._integer_problem(*args, -1, "", solver="numba")
        (status, used, _, _, costs, pairs, weights, to_expand), labels = compiled_scale(*args)
        assert status == compiled.SCALED_OK, seed
        assert used == resolution, seed
        assert costs.dtype == expected.costs.dtype and np.array_equal(costs, expected.costs), seed
        assert np.array_equal(pairs, expected.pair_index), seed
        assert np.array_equal(weights, expected.pair_weight), seed
        assert np.array_equal(labels, expected.init), seed
        assert tuple(to_expand) == expected.labels_to_expand, seed
        dropped += len(pairs) < len(args[1])
    assert dropped > 0  # the zero-weight branch ran


def error_of(call):
    try:
        with np.errstate(all="ignore"):  # the float range overflows in one case, on purpose
            call()
    except ValueError as exc:
        return str(exc)
    return None


KINDS = {  # status -> _scaling_error's kind
    "SEED_NOT_ALLOWED": "seed not allowed",
    "LARGEST_NOT_FINITE": "largest not finite",
    "LARGEST_TOO_SMALL": "largest too small",
    "RESOLUTION_TOO_FINE": "resolution too fine",
    "SEED_COST_TOO_LARGE": "seed cost too large",
    "INTEGER_OVERFLOW": "integer overflow",
}


def test_compiled_build_fails_as_the_float_path_does():
    unary = np.array([[0.0, 5.0, 1.0], [2.0, 0.0, 3.0]])  # (K=2, N=3)
    pairs = np.array([[0, 1], [1, 2]], dtype=np.int64)
    weight = np.array([1.0, 2.0])
    free, allowed = np.full(3, -1, dtype=np.int64), np.ones(2, dtype=bool)
    many = np.array([[0, j] for j in range(1, 301)], dtype=np.int64)  # site 0: 300 pairs
    cases = [  # (status, float arguments)
        (compiled.SEED_NOT_ALLOWED, (unary, pairs, weight, np.array([-1, 1, -1]),
                                     np.array([True, False]), None, None)),
        (compiled.LARGEST_NOT_FINITE, (np.array([[1.7e308, 0, 0], [-1.7e308, 0, 0]]), pairs,
                                       weight, free, allowed, None, None)),
        # the default resolution would be subnormal (1e-316 / 9.9e6) or 0 (1e-318 / 9.9e6)
        (compiled.LARGEST_TOO_SMALL, (unary * 1e-316, pairs, weight * 1e-317, free, allowed,
                                      None, None)),
        (compiled.LARGEST_TOO_SMALL, (unary * 1e-318, pairs, weight * 0.0, free, allowed, None,
                                      None)),
        (compiled.RESOLUTION_TOO_FINE, (unary, pairs, weight, free, allowed, None, 1e-9)),
        # a seeded site whose pair weights are exactly the limit: its hard cost is one above
        (compiled.SEED_COST_TOO_LARGE, (unary, pairs[:1], np.array([1e7]),
                                        np.array([0, -1, -1]), allowed, None, 1.0)),
        (compiled.INTEGER_OVERFLOW, (np.zeros((2, 301)), many, np.full(300, 1e7),
                                     np.full(301, -1, dtype=np.int64), allowed, None, 1.0)),
    ]  # fmt: skip
    for status, args in cases:
        name = next(k for k in KINDS if getattr(compiled, k) == status)
        expected = error_of(
            lambda args=args: proposals._integer_problem(*args, -1, " 3", solver="numba")
        )
        assert expected is not None, name
        (got, used, largest, largest_int, *_), _ = compiled_scale(*args)
        assert got == status, name
        message = str(proposals._scaling_error(KINDS[name], " 3", largest, used, largest_int))
        assert message == expected, name


def test_batch_errors_name_the_image_with_the_compiled_build():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 6, 6, generator=gen)
    unary = torch.rand(3, 2, 6, 6, generator=gen, dtype=torch.float64)
    seeds = torch.full((3, 6, 6), 255)
    seeds[2, 0, 0] = 1
    allowed = torch.tensor([[True, True], [True, True], [True, False]])
    with pytest.raises(ValueError, match="^seeds 2 use a label that allowed_labels excludes"):
        proposals.alpha_expansion_batch(
            unary, contrast_weights(images), seeds=seeds, allowed_labels=allowed, solver="numba"
        )


def test_argmin_boundaries_counts_the_argmins_label_changes_between_4_neighbours():
    rng = np.random.default_rng(0)
    for _ in range(60):  # small integer costs: many ties, which go to the first minimum
        shape = (3, int(rng.integers(2, 6)), int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        unary = rng.integers(0, 3, shape).astype(np.float64)
        argmin = unary.argmin(axis=1)
        expected = (argmin[:, 1:] != argmin[:, :-1]).sum(axis=(1, 2))
        expected += (argmin[:, :, 1:] != argmin[:, :, :-1]).sum(axis=(1, 2))
        np.testing.assert_array_equal(compiled.argmin_boundaries(unary), expected)


def test_threads_start_the_image_with_the_longest_argmin_boundary_first(monkeypatch):
    # image 0: one flat region; image 1: a checkerboard (every pair a change); image 2: halves
    unary = np.zeros((3, 2, 6, 6))
    unary[1, 0][(np.indices((6, 6)).sum(0) % 2) == 0] = 1.0
    unary[2, 0, :, 3:] = 1.0
    assert proposals._longest_first(unary) == [1, 2, 0]
    started = []
    scale_and_expand = compiled.scale_and_expand

    def spy(unary_of_image, *args):
        started.append(float(unary_of_image.sum()))
        return scale_and_expand(unary_of_image, *args)

    monkeypatch.setattr(compiled, "scale_and_expand", spy)
    weights = contrast_weights(torch.zeros(3, 3, 6, 6))
    proposals.alpha_expansion_batch(unary, weights, n_jobs=1, solver="numba")
    assert started == [0.0, 18.0, 18.0]  # one thread: index order
    started.clear()
    # the pool's one thread takes the images in the order they were handed to it
    with ThreadPoolExecutor(1) as one_thread:
        monkeypatch.setattr(proposals, "_threads_of", lambda workers: one_thread)
        result = proposals.alpha_expansion_batch(unary, weights, n_jobs=2, solver="numba")
    assert started[0] == 18.0 and started[-1] == 0.0
    serial = proposals.alpha_expansion_batch(unary, weights, n_jobs=1, solver="numba")
    assert torch.equal(result.labels, serial.labels)  # each image's result in its own place


def test_threads_raise_the_first_failing_image_of_the_batch_not_the_first_started():
    unary = torch.zeros(3, 2, 6, 6, dtype=torch.float64)
    unary[2, 0][(torch.arange(6)[:, None] + torch.arange(6)) % 2 == 0] = 1.0  # started first
    seeds = torch.full((3, 6, 6), 255)
    seeds[0, 0, 0] = seeds[2, 0, 0] = 1
    allowed = torch.tensor([[True, False], [True, True], [True, False]])
    assert proposals._longest_first(unary.numpy())[0] == 2
    with pytest.raises(ValueError, match="^seeds 0 use a label that allowed_labels excludes"):
        proposals.alpha_expansion_batch(
            unary, contrast_weights(torch.zeros(3, 3, 6, 6)), seeds=seeds,
            allowed_labels=allowed, n_jobs=2, solver="numba",
        )  # fmt: skip
