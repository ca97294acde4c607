"""Reports: the standard tables, figures and verdict tables built from the results table,
rendered as Markdown, as a standalone HTML page per reproduction, and as ``index.html``."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from beyondgd.core import atomic_write_text
from beyondgd.experiments.harness.base import Figure, Table

if TYPE_CHECKING:
    from beyondgd.experiments.harness.base import Reproduction
    from beyondgd.experiments.harness.results import Results

STATUS_RULE = (
    "How verdicts are decided (the same rule in every report): pairs are formed on independent "
    "replicates only; the effect is the Hodges-Lehmann estimate of the paired difference "
    "(positive = the method is better) with a 95% interval from the inverted Wilcoxon "
    "signed-rank test; p is the one-sided Wilcoxon test of the claim, Holm-corrected across the "
    "primary claims (and separately across the exploratory ones). **holds**: adjusted p < 0.05, "
    "the whole 95% interval on the claimed side and the method's median not worse; "
    "**does not hold**: the "
    "interval excludes the claimed effect; **inconclusive**: neither; **too few replicates**: n "
    "below what the exact test needs to reach significance; **not at equal cost**: the arms' "
    "cost ratio is outside [0.95, 1.05], whatever the numbers say. A failed run ranks behind "
    "every finished one."
)

STYLE = """
body { font-family: system-ui, -apple-system, sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1.2em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; } h2 { font-size: 1.35em; margin-top: 1.6em; } h3 { font-size: 1.1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.88em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f1f3f5; }
td.status { font-weight: 600; white-space: nowrap; }
.holds { background: #d7f0d7; } .does-not-hold { background: #f6d4d4; }
.inconclusive { background: #f6efcf; } .too-few-replicates { background: #e4e4f4; }
.not-at-equal-cost { background: #f3dcc0; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption, .note, .meta { color: #555; font-size: 0.9em; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; font-size: 0.92em; }
section { border-top: 2px solid #ddd; margin-top: 2.5em; }
nav a { margin-right: 0.8em; }
"""


def inline(text: str) -> str:
    """Escape ``text`` for HTML, then render Markdown's inline ``code`` and **bold**."""
    out = html.escape(str(text))
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


@dataclass
class Report:
    """What a reproduction found; verdicts are dicts with the statistics core's fields."""

    title: str
    summary: str
    header: str = ""
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        return cls(
            title=data["title"],
            summary=data["summary"],
            header=data.get("header", ""),
            verdicts=list(data.get("verdicts", [])),
            paragraphs=list(data.get("paragraphs", [])),
            tables=[Table(**t) for t in data.get("tables", [])],
            figures=[Figure(**f) for f in data.get("figures", [])],
            notes=list(data.get("notes", [])),
        )

    # ---- helpers
    def _groups(self) -> list[tuple[str, list[dict[str, Any]]]]:
        primary = [v for v in self.verdicts if v.get("primary", True)]
        secondary = [v for v in self.verdicts if not v.get("primary", True)]
        out = [("Primary claims", primary)]
        if secondary:
            out.append(("Secondary claims (exploratory)", secondary))
        return out

    @staticmethod
    def _evidence(v: Mapping[str, Any]) -> str:
        if "evidence" in v:
            return v["evidence"]
        from beyondgd.experiments.harness.results import evidence

        return evidence(v)

    # ---- Markdown
    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        if self.header:
            out += [self.header, ""]
        out += [f"**Claim tested.** {self.summary}", ""]
        for title, verdicts in self._groups():
            if not verdicts:
                continue
            out += [f"## {title}", "", "| claim | verdict | evidence |", "|---|---|---|"]
            out += [f"| {v['claim']} | **{v['status']}** | {self._evidence(v)} |" for v in verdicts]
            out.append("")
        out += [p + "\n" for p in self.paragraphs]
        for table in self.tables:
            out += [f"## {table.title}", ""]
            out.append("| " + " | ".join(table.columns) + " |")
            out.append("|" + "---|" * len(table.columns))
            out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
            out += ["", table.note, ""] if table.note else [""]
        for fig in self.figures:
            out += [f"![{fig.caption}]({fig.filename})", "", f"*{fig.caption}*", ""]
        if self.notes:
            out += ["## Notes", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(out)

    # ---- HTML
    def to_html(self, prefix: str = "", level: int = 1) -> str:
        """An HTML fragment; ``prefix`` is prepended to figure paths (relative to the page)."""
        e = html.escape
        h, h2 = f"h{level}", f"h{level + 1}"
        out = [f"<{h}>{e(self.title)}</{h}>"]
        if self.header:
            out.append(f"<p class='meta'>{inline(self.header)}</p>")
        out.append(f"<p><b>Claim tested.</b> {inline(self.summary)}</p>")
        for title, verdicts in self._groups():
            if not verdicts:
                continue
            out.append(f"<{h2}>{e(title)}</{h2}>")
            out.append("<table><tr><th>claim</th><th>verdict</th><th>evidence</th></tr>")
            for v in verdicts:
                cls = v["status"].replace(" ", "-")
                out.append(
                    f"<tr><td>{inline(v['claim'])}</td><td class='status {cls}'>"
                    f"{e(v['status'])}</td><td>{inline(self._evidence(v))}</td></tr>"
                )
            out.append("</table>")
        out += [f"<p>{inline(p)}</p>" for p in self.paragraphs]
        for table in self.tables:
            out.append(f"<{h2}>{inline(table.title)}</{h2}><table><tr>")
            out += [f"<th>{inline(c)}</th>" for c in table.columns]
            out.append("</tr>")
            for row in table.rows:
                out.append("<tr>" + "".join(f"<td>{inline(_cell(c))}</td>" for c in row) + "</tr>")
            out.append("</table>")
            if table.note:
                out.append(f"<p class='note'>{inline(table.note)}</p>")
        for fig in self.figures:
            out.append(
                f"<figure><img src='{e(prefix + fig.filename)}' alt='{e(fig.caption)}'>"
                f"<figcaption>{inline(fig.caption)}</figcaption></figure>"
            )
        if self.notes:
            out.append(f"<{h2}>Notes</{h2}><ul>")
            out += [f"<li>{inline(n)}</li>" for n in self.notes]
            out.append("</ul>")
        return "\n".join(out)

    def to_page(self) -> str:
        """A standalone page (figures beside it)."""
        return _page(
            self.title,
            "<p class='meta'><a href='../index.html'>all reproductions</a></p>" + self.to_html(),
        )


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        f"{body}\n</body></html>\n"
    )


# ------------------------------------------------------------------------------------------------
# The standard report of a declarative reproduction
# ------------------------------------------------------------------------------------------------
def _range(median: float, lo: float, hi: float, n: int) -> str:
    if n == 0:
        return "failed"
    if n == 1 or lo == hi:
        return f"{median:.3g}"
    return f"{median:.3g} [{lo:.3g}, {hi:.3g}]"


def method_labels(config: Mapping[str, Any]) -> dict[str, str]:
    """``name -> "label (name)"`` where a method has a label of its own, else the name."""
    out = {}
    for name, params in config.get("methods", {}).items():
        label = params.get("label") if isinstance(params, Mapping) else None
        out[name] = f"{label} ({name})" if label and label != name else name
    return out


def summary_table(target: Reproduction, results: Results) -> Table | None:
    """Per problem and method: each declared metric's median [min, max] over seeds."""
    from beyondgd.experiments.harness.results import summarize

    if not target.metrics or results.table.empty:
        return None
    cols = [m for m in target.metrics if m.column in results.table.columns]
    sums = {m.column: summarize(results.table, m.column) for m in cols}
    first = sums[cols[0].column]
    labels = method_labels(results.config)
    rows = []
    for i in range(len(first)):
        method = first["method"].iloc[i]
        row: list[Any] = [first["problem"].iloc[i], labels.get(method, method)]
        for m in cols:
            s = sums[m.column].iloc[i]
            cell = _range(s["median"], s["min"], s["max"], int(s["count"]))
            if s["failed"]:
                cell += f" ({int(s['failed'])} failed)"
            row.append(cell)
        rows.append(row)
    arrows = {True: "lower is better", False: "higher is better"}
    return Table(
        "Results per problem and method: median [min, max] over seeds",
        ["problem", "method"] + [f"{m.label} ({arrows[m.lower_is_better]})" for m in cols],
        rows,
        note="Each seed's value is the mean over its rows (trials, images) first.",
    )


def cost_table(target: Reproduction, results: Results) -> Table | None:
    from beyondgd.experiments.harness.results import summarize

    cols = [c for c in (*target.cost_columns, "wall_time_s") if c in results.table.columns]
    if not cols or results.table.empty:
        return None
    sums = {c: summarize(results.table, c) for c in cols}
    first = sums[cols[0]]
    labels = method_labels(results.config)
    rows = [
        [first["problem"].iloc[i], labels.get(first["method"].iloc[i], first["method"].iloc[i])]
        + [f"{sums[c]['median'].iloc[i]:.4g}" for c in cols]
        for i in range(len(first))
    ]
    return Table(
        "Cost per run (median over seeds)",
        ["problem", "method"] + list(cols),
        rows,
        note="wall_time_s is the unit's wall time on one worker (cpus_per_unit threads).",
    )


def build_report(
    target: Reproduction,
    config: Mapping[str, Any],
    results: Results,
    out_dir: Path,
    header: str,
) -> Report:
    from beyondgd.experiments.harness import plotting
    from beyondgd.experiments.harness.results import evaluate_claims

    verdicts = (
        evaluate_claims(results.table, target.claims(config)) if not results.table.empty else []
    )
    tables = [t for t in (summary_table(target, results), cost_table(target, results)) if t]
    tables += target.extra_tables(results)
    figures: list[Figure] = []
    if verdicts:
        plotting.plot_verdicts(out_dir / "verdicts.png", verdicts)
        figures.append(
            Figure(
                "verdicts.png",
                "Each claim's effect (Hodges-Lehmann estimate, positive = the method is better) "
                "with its 95% interval; colour = status; margins dashed",
            )
        )
    for spec in target.curves:
        data = results.curves[results.curves["curve"] == spec.name]
        if data.empty:
            continue
        fname = f"curve-{spec.name}.png"
        plotting.plot_curves(out_dir / fname, data, spec, method_labels(config))
        figures.append(
            Figure(
                fname, f"{spec.ylabel} against {spec.xlabel}: median over seeds, interquartile band"
            )
        )
    for spec in target.metrics:
        if spec.column not in results.table.columns:
            continue
        fname = f"metric-{spec.column}.png"
        plotting.plot_metric(out_dir / fname, results.table, spec)
        figures.append(
            Figure(fname, f"{spec.label} per seed (dots) and median (bar), per problem and method")
        )
    figures += target.extra_figures(results, out_dir)
    return Report(
        title=target.title,
        summary=target.summary,
        header=header,
        verdicts=verdicts,
        paragraphs=[STATUS_RULE] + list(target.describe(config)),
        tables=tables,
        figures=figures,
    )


# ------------------------------------------------------------------------------------------------
# index.html
# ------------------------------------------------------------------------------------------------
def _summary_line(run: str, metrics: Mapping[str, Any]) -> str:
    e = html.escape
    verdicts = metrics["report"]["verdicts"]
    primary = [v for v in verdicts if v.get("primary", True)]
    counts: dict[str, int] = {}
    for v in primary:
        counts[v["status"]] = counts.get(v["status"], 0) + 1
    statuses = (
        " ".join(
            f"<span class='status {s.replace(' ', '-')}'>&nbsp;{n} {e(s)}&nbsp;</span>"
            for s, n in counts.items()
        )
        or "no verdicts"
    )
    ns = [v["n"] for v in primary if isinstance(v.get("n"), int)]
    n_text = "-" if not ns else (str(ns[0]) if min(ns) == max(ns) else f"{min(ns)}-{max(ns)}")
    compute = metrics["wall_time_s"]["units_total"]
    return (
        f"<tr><td><a href='#{e(run)}'>{e(run)}</a> (<a href='{e(run)}/report.html'>page</a>)</td>"
        f"<td>{e(metrics['preset'])}</td><td>{statuses}</td><td>{n_text}</td>"
        f"<td>{compute:.0f} s</td><td>{e(metrics['title'])}</td></tr>"
    )


def write_index(results_dir: str | Path = "results") -> Path:
    """Gather ``results_dir/*/metrics.json`` into ``results_dir/index.html``: one summary line
    per reproduction, then each report with working figure paths."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(
            f"results directory {str(results_dir)!r} does not exist; run `beyondgd reproduce` first"
        )
    runs = sorted(p.parent for p in results_dir.glob("*/metrics.json"))
    if not runs:
        raise FileNotFoundError(
            f"no finished runs under {str(results_dir)!r} (no */metrics.json); "
            "run `beyondgd reproduce` first"
        )
    lines, sections = [], []
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        lines.append(_summary_line(run.name, metrics))
        report = Report.from_dict(metrics["report"])
        fragment = report.to_html(prefix=run.name + "/", level=2)
        sections.append(f"<section id='{html.escape(run.name)}'>{fragment}</section>")
    body = (
        "<h1>beyondgd reproductions</h1>"
        "<p>One line per reproduction: the statuses of its primary claims, the number of "
        "independent replicates per claim and the compute it took. Every verdict is computed "
        "from the run's own numbers.</p>"
        "<table><tr><th>reproduction</th><th>preset</th><th>primary claims</th><th>n</th>"
        "<th>compute</th><th>what it tests</th></tr>"
        + "\n".join(lines)
        + "</table>"
        + "\n".join(sections)
    )
    index = results_dir / "index.html"
    atomic_write_text(index, _page("beyondgd results", body))
    return index
