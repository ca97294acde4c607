"""The tidy results table and the verdicts computed from it.

Every row a run returned becomes one row of a pandas DataFrame, with the unit's ``problem``,
``method``, ``seed``, the problem's scalar parameters and the unit's ``wall_time_s`` added.
A claim filters that table, reduces the rows of each independent replicate to one number per
arm, pairs the arms on the replicates both have, and hands the pairs to the statistics core.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from beyondgd.experiments.harness import stats
from beyondgd.experiments.harness.base import Claim

RESERVED = ("unit", "problem", "method", "seed", "wall_time_s")


@dataclass
class Results:
    """The results of one run: rows, curves and tuning choices, ordered by unit."""

    table: pd.DataFrame
    curves: pd.DataFrame
    tuned: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def build_results(
    records: Mapping[str, Mapping[str, Any]],
    unit_info: Mapping[str, Mapping[str, Any]],
    order: Sequence[str],
    config: Mapping[str, Any] | None = None,
) -> Results:
    """The results table from checkpointed records, in unit order (``order``)."""
    rows, curve_rows, tuned = [], [], {}
    for key in order:
        rec, info = records[key], unit_info[key]
        if info["kind"] == "tune":
            tuned[(info["problem"], info["method"])] = rec["tuned"]
            continue
        extra = {
            k: v
            for k, v in info.get("problem_params", {}).items()
            if isinstance(v, (bool, int, float, str)) and k not in RESERVED
        }
        base = {
            "unit": key,
            "problem": info["problem"],
            "method": info["method"],
            "seed": info["seed"],
            **extra,
            "wall_time_s": rec["wall_time_s"],
        }
        for row in rec["rows"]:
            clash = set(row) & set(RESERVED)
            if clash:
                raise ValueError(f"unit {key}: row columns {sorted(clash)} are set by the harness")
            rows.append({**base, **row})
        for name, curve in rec.get("curves", {}).items():
            for x, y in zip(curve["x"], curve["y"]):
                curve_rows.append(
                    {
                        "unit": key,
                        "problem": info["problem"],
                        "method": info["method"],
                        "seed": info["seed"],
                        "curve": name,
                        "x": x,
                        "y": np.nan if y is None else y,
                    }
                )
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.fillna(value=np.nan).infer_objects()
    cols = ["unit", "problem", "method", "seed", "curve", "x", "y"]
    return Results(table, pd.DataFrame(curve_rows, columns=cols), tuned, dict(config or {}))


def select(table: pd.DataFrame, where: Mapping[str, Any]) -> pd.DataFrame:
    """Rows whose columns match ``where`` (a value, or a list of accepted values)."""
    mask = pd.Series(True, index=table.index)
    for col, want in where.items():
        if col not in table.columns:
            raise ValueError(f"filter column {col!r} is not in the results table {list(table)}")
        if isinstance(want, (list, tuple, set)):
            mask &= table[col].isin(list(want))
        else:
            mask &= table[col] == want
    return table[mask]


def replicate_values(table: pd.DataFrame, claim: Claim, column: str) -> pd.DataFrame:
    """One value of ``column`` per (group, replicate, arm): the claim's aggregate of its rows.

    A replicate with any missing value (a failed run) is missing as a whole."""
    keys = list(claim.group_by) + list(claim.replicate) + ["method"]
    for col in keys + [column]:
        if col not in table.columns:
            raise ValueError(
                f"claim {claim.sentence!r}: column {col!r} is not in the results table "
                f"(columns: {list(table.columns)})"
            )
    return _per_group(table, keys, column, claim.aggregate).reset_index()


def _per_group(table: pd.DataFrame, keys: list[str], column: str, how: str) -> pd.Series:
    """``column`` reduced by ``how`` within each ``keys`` group; NaN where any row is missing
    (a group with a failed run has failed as a whole)."""
    values = pd.to_numeric(table[column], errors="coerce")
    grouped = values.groupby([table[k] for k in keys], sort=False, dropna=False)
    out = grouped.agg(how)
    out[values.isna().groupby([table[k] for k in keys], sort=False, dropna=False).any()] = np.nan
    return out.rename(column)


def _fill_failed(values: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """Failed runs (NaN) rank behind every finished one: replaced by a value just beyond the
    worst finite value (the rank tests only see their order)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    spread = float(finite.max() - finite.min()) + 1.0
    worst = finite.max() + spread if lower_is_better else finite.min() - spread
    return np.where(np.isfinite(values), values, worst)


@dataclass
class PairedData:
    group: dict[str, Any]
    replicates: list[tuple]
    method: np.ndarray
    baseline: np.ndarray
    method_cost: np.ndarray | None
    baseline_cost: np.ndarray | None
    n_failed_method: int
    n_failed_baseline: int
    n_unpaired: int


def paired_data(table: pd.DataFrame, claim: Claim) -> list[PairedData]:
    """Per group of the claim, the paired per-replicate values of the two arms."""
    data = select(table, dict(claim.where))
    data = data[data["method"].isin([claim.method, claim.baseline])]
    if data.empty:
        return []
    vals = replicate_values(data, claim, claim.metric)
    if claim.cost is not None:
        costs = replicate_values(data, claim, claim.cost)
        vals["__cost"] = costs[claim.cost].to_numpy()
    out = []
    group_cols = list(claim.group_by)
    groups = [((), vals)] if not group_cols else vals.groupby(group_cols, sort=False)
    for gkey, gdf in groups:
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        index = list(claim.replicate)
        m = gdf[gdf["method"] == claim.method].set_index(index)
        b = gdf[gdf["method"] == claim.baseline].set_index(index)
        common = [r for r in m.index if r in b.index]
        unpaired = len(set(m.index) ^ set(b.index))
        mv = m.loc[common, claim.metric].to_numpy(dtype=float)
        bv = b.loc[common, claim.metric].to_numpy(dtype=float)
        out.append(
            PairedData(
                group=dict(zip(group_cols, gkey)),
                replicates=[r if isinstance(r, tuple) else (r,) for r in common],
                method=mv,
                baseline=bv,
                method_cost=None if claim.cost is None else m.loc[common, "__cost"].to_numpy(float),
                baseline_cost=None
                if claim.cost is None
                else b.loc[common, "__cost"].to_numpy(float),
                n_failed_method=int(np.isnan(mv).sum()),
                n_failed_baseline=int(np.isnan(bv).sum()),
                n_unpaired=unpaired,
            )
        )
    return out


def _scaled(values: np.ndarray, scale: str, what: str) -> np.ndarray:
    if scale == "linear":
        return values
    finite = values[np.isfinite(values)]
    if (finite <= 0).any():
        raise ValueError(f"a log10-scale claim needs positive {what} values, got {finite.min()}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(values)


def _sentence(claim: Claim, group: Mapping[str, Any]) -> str:
    if not group:
        return claim.sentence
    try:
        text = claim.sentence.format(**group)
    except (KeyError, IndexError):
        text = claim.sentence
    if text == claim.sentence:  # no placeholders: name the group at the end
        text += " (" + ", ".join(f"{k} = {v}" for k, v in group.items()) + ")"
    return text


def _raw_median(values: np.ndarray, lower_is_better: bool) -> float | None:
    """Median on the metric's own scale, a failed run counted as the worst (None if that is
    the median)."""
    worst = math.inf if lower_is_better else -math.inf
    return _json_float(float(np.median(np.where(np.isnan(values), worst, values))))


def _json_float(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def evaluate_claims(table: pd.DataFrame, claims: Sequence[Claim]) -> list[dict[str, Any]]:
    """Every claim (one verdict per group) with its test, Holm-adjusted p and status.

    Primary verdicts come first, then the secondary (exploratory) ones; Holm runs within each
    of the two families."""
    pending = []
    for claim in claims:
        for pd_ in paired_data(table, claim):
            pending.append((claim, pd_))
    verdicts: list[dict[str, Any]] = []
    for primary in (True, False):
        family = [(c, p) for c, p in pending if c.primary == primary]
        tests = []
        for claim, pdata in family:
            if pdata.method.size == 0:
                tests.append(None)
                continue
            both = _scaled(np.concatenate([pdata.method, pdata.baseline]), claim.scale, "metric")
            both = _fill_failed(both, claim.lower_is_better)
            mv, bv = both[: pdata.method.size], both[pdata.method.size :]
            tests.append(
                stats.paired_test(
                    mv,
                    bv,
                    lower_is_better=claim.lower_is_better,
                    kind=claim.kind,
                    margin=claim.margin,
                )
            )
        valid = [t.p_value for t in tests if t is not None]
        adjusted = iter(stats.holm(valid))
        n_needed = stats.replicates_needed(max(len(valid), 1))
        for (claim, pdata), test in zip(family, tests):
            entry: dict[str, Any] = {
                "claim": _sentence(claim, pdata.group),
                "group": {
                    k: (v.item() if hasattr(v, "item") else v) for k, v in pdata.group.items()
                },
                "metric": claim.metric,
                "lower_is_better": claim.lower_is_better,
                "scale": claim.scale,
                "method": claim.method,
                "baseline": claim.baseline,
                "kind": claim.kind,
                "margin": claim.margin,
                "primary": claim.primary,
                "replicate": list(claim.replicate),
                "aggregate": claim.aggregate,
                "cost_measure": claim.cost,
                "cost_note": claim.cost_note,
                "test": stats.TEST_NAME,
                "n_needed": n_needed,
                "failed_runs": {
                    "method": pdata.n_failed_method,
                    "baseline": pdata.n_failed_baseline,
                },
                "unpaired_replicates": pdata.n_unpaired,
            }
            if test is None:
                entry.update(
                    status="too few replicates",
                    n=0,
                    estimate=None,
                    ci_low=None,
                    ci_high=None,
                    p_value=None,
                    p_adjusted=None,
                    cost_ratio=None,
                    wins=0,
                    median_method=None,
                    median_baseline=None,
                )
                verdicts.append(entry)
                continue
            p_adj = next(adjusted)
            ratio = None
            if claim.cost is not None:
                ratio = stats.cost_ratio(pdata.method_cost, pdata.baseline_cost)
            status = stats.decide(test, p_adj, n_needed=n_needed, cost=ratio)
            entry.update(
                status=status,
                n=test.n,
                estimate=_json_float(test.estimate),
                ci_low=_json_float(test.ci_low),
                ci_high=_json_float(test.ci_high),
                p_value=test.p_value,
                p_adjusted=p_adj,
                cost_ratio=ratio,
                wins=test.wins,
                median_method=_raw_median(pdata.method, claim.lower_is_better),
                median_baseline=_raw_median(pdata.baseline, claim.lower_is_better),
            )
            verdicts.append(entry)
    return verdicts


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3g}"


def evidence(v: Mapping[str, Any]) -> str:
    """The evidence cell: n, the estimate with its CI and the adjusted p (and cost ratio)."""
    if v["n"] == 0:
        return "no paired replicates"
    unit = " (log10)" if v["scale"] == "log10" else ""
    lo = "-inf" if v["ci_low"] is None else _fmt(v["ci_low"])
    hi = "+inf" if v["ci_high"] is None else _fmt(v["ci_high"])
    text = (
        f"n = {v['n']}; {v['method']} better by {_fmt(v['estimate'])}{unit} "
        f"[95% CI {lo}, {hi}]; p_adj = {_fmt(v['p_adjusted'])}; "
        f"medians {_fmt(v['median_method'])} vs {_fmt(v['median_baseline'])}"
    )
    if v["kind"] != "superiority":
        text += f"; margin {v['margin']:g}"
    if v["cost_ratio"] is not None:
        text += f"; cost ratio {v['cost_ratio']:.3g} ({v['cost_measure']})"
        if v.get("cost_note"):  # e.g. what else differs in cost (wall time)
            text += f"; {v['cost_note']}"
    if v["status"] == "too few replicates":
        text += f"; needs n >= {v['n_needed']}"
    failed = v["failed_runs"]
    if failed["method"] or failed["baseline"]:
        text += f"; failed runs {failed['method']} / {failed['baseline']} (ranked last)"
    return text


def summarize(
    table: pd.DataFrame, column: str, by: Sequence[str] = ("problem", "method")
) -> pd.DataFrame:
    """Per (problem, method): median, min, max over seeds of the per-seed mean of ``column``,
    and the number of seeds with a failed (missing) value."""
    per_seed = _per_group(table, [*by, "seed"], column, "mean").reset_index()
    g = per_seed.groupby(list(by), sort=False)[column]
    out = g.agg(["median", "min", "max", "count"]).reset_index()
    failed = per_seed[column].isna().groupby([per_seed[k] for k in by], sort=False).sum()
    out["failed"] = failed.to_numpy()
    return out
