"""The pieces every reproduction is made of: units of work, and the report computed from them.

An :class:`Experiment` lists independent :class:`Unit` s (one method on one problem with one seed),
runs each one to a JSON-serialisable record, and turns all records into a :class:`Report` whose
verdicts are computed from the numbers. The runner (:mod:`beyondgd.experiments.runner`) owns
scheduling, progress, checkpoints and files, so an experiment module holds only the science.
"""

from __future__ import annotations

import abc
import html
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

VERDICTS = ("holds", "does not hold", "inconclusive")
PRESETS = ("quick", "full")


@dataclass(frozen=True)
class Unit:
    """One independent piece of work; ``key`` is unique within a run and stable across runs."""

    key: str
    params: dict[str, Any]


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class Verdict:
    """A claim and what the numbers say about it."""

    claim: str
    status: str
    evidence: str

    def __post_init__(self) -> None:
        if self.status not in VERDICTS:
            raise ValueError(f"status must be one of {VERDICTS}, got {self.status!r}")


@dataclass
class Figure:
    filename: str
    caption: str


@dataclass
class Report:
    """What a reproduction found, rendered to Markdown (report.md) and HTML (index.html)."""

    title: str
    claim: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self, header: str = "") -> str:
        out = [f"# {self.title}", ""]
        if header:
            out += [header, ""]
        out += [f"**Claim tested.** {self.claim}", ""]
        if self.verdicts:
            out += ["## Verdicts (computed from this run's numbers)", ""]
            out += ["| claim | verdict | evidence |", "|---|---|---|"]
            out += [f"| {v.claim} | **{v.status}** | {v.evidence} |" for v in self.verdicts]
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

    def to_html(self, prefix: str = "", header: str = "") -> str:
        """An HTML fragment; ``prefix`` is prepended to figure paths (relative to the page)."""
        e = html.escape
        out = [f"<h2>{e(self.title)}</h2>"]
        if header:
            out.append(f"<p class='meta'>{e(header)}</p>")
        out.append(f"<p><b>Claim tested.</b> {e(self.claim)}</p>")
        if self.verdicts:
            out.append("<table><tr><th>claim</th><th>verdict</th><th>evidence</th></tr>")
            for v in self.verdicts:
                cls = v.status.replace(" ", "-")
                out.append(
                    f"<tr><td>{e(v.claim)}</td><td class='{cls}'>{e(v.status)}</td>"
                    f"<td>{e(v.evidence)}</td></tr>"
                )
            out.append("</table>")
        out += [f"<p>{e(p)}</p>" for p in self.paragraphs]
        for table in self.tables:
            out.append(f"<h3>{e(table.title)}</h3><table><tr>")
            out += [f"<th>{e(c)}</th>" for c in table.columns]
            out.append("</tr>")
            for row in table.rows:
                out.append("<tr>" + "".join(f"<td>{e(_cell(c))}</td>" for c in row) + "</tr>")
            out.append("</table>")
            if table.note:
                out.append(f"<p class='note'>{e(table.note)}</p>")
        for fig in self.figures:
            out.append(
                f"<figure><img src='{e(prefix + fig.filename)}' alt='{e(fig.caption)}'>"
                f"<figcaption>{e(fig.caption)}</figcaption></figure>"
            )
        if self.notes:
            out.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in self.notes) + "</ul>")
        return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class Experiment(abc.ABC):
    """Base class of a reproduction; subclasses are registered with :func:`register`.

    Subclasses set the class attributes and implement the four methods. ``config`` must put the
    list of seeds under ``"seeds"`` so ``--seeds N`` can override it.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    claim: ClassVar[str]
    #: expected wall time in seconds on 2 CPU cores, per preset (shown by ``beyondgd list``)
    expected_seconds: ClassVar[dict[str, float]]
    #: torch intra-op threads while it runs: small problems run fastest on one thread, and
    #: more threads than free cores slow every small op down many times over
    num_threads: ClassVar[int] = 1

    @abc.abstractmethod
    def config(self, preset: str) -> dict[str, Any]:
        """The full configuration for ``preset`` (JSON-serialisable)."""

    @abc.abstractmethod
    def units(self, config: dict[str, Any]) -> list[Unit]:
        """The independent units of work for ``config``, in a fixed order."""

    @abc.abstractmethod
    def run_unit(self, unit: Unit, config: dict[str, Any]) -> dict[str, Any]:
        """Run one unit and return its record (JSON-serialisable, finite numbers)."""

    @abc.abstractmethod
    def analyze(
        self, config: dict[str, Any], records: dict[str, dict[str, Any]], out_dir: Path
    ) -> Report:
        """Turn all records into a report; write figures into ``out_dir``."""
