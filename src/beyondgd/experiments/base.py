"""The older experiment interface, kept for the reproductions not yet on the declarative harness
(cdec, dlc-*, adm): units of work, and an ``analyze`` that builds the report by hand.

An :class:`Experiment` lists independent :class:`Unit` s, runs each one to a JSON-serialisable
record, and turns all records into a :class:`Report`. The harness runner
(:mod:`beyondgd.experiments.harness.runner`) runs them like declarative reproductions (executors,
checkpoints, resume) and renders their reports with the same pages.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from beyondgd.experiments.harness.base import Figure, Table

VERDICTS = ("holds", "does not hold", "inconclusive")
PRESETS = ("quick", "full")


@dataclass(frozen=True)
class Unit:
    """One independent piece of work; ``key`` is unique within a run and stable across runs."""

    key: str
    params: dict[str, Any]


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
class Report:
    """What an experiment found; the runner renders it (report.md, report.html, index.html)."""

    title: str
    claim: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
