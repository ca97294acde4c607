"""``beyondgd report``: one ``index.html`` with every experiment's verdicts, tables and figures."""

from __future__ import annotations

import html
import json
from pathlib import Path

from beyondgd.core import atomic_write_text

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.holds { background: #d9f2d9; } .does-not-hold { background: #f7d6d6; }
.inconclusive { background: #f6efcf; }
figure { margin: 1em 0; } img { max-width: 100%; }
figcaption, .note, .meta { color: #555; font-size: 0.9em; }
section { border-top: 2px solid #ddd; margin-top: 2em; }
"""


def write_index(results_dir: str | Path = "results") -> Path:
    """Gather ``results_dir/*/report.html`` into ``results_dir/index.html``; return its path."""
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
    e = html.escape
    summary = ["<table><tr><th>experiment</th><th>preset</th><th>claim</th><th>verdict</th></tr>"]
    sections = []
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        for v in metrics["report"]["verdicts"]:
            cls = v["status"].replace(" ", "-")
            summary.append(
                f"<tr><td><a href='#{e(run.name)}'>{e(run.name)}</a></td>"
                f"<td>{e(metrics['preset'])}</td><td>{e(v['claim'])}</td>"
                f"<td class='{cls}'>{e(v['status'])}</td></tr>"
            )
        body = (run / "report.html").read_text()
        sections.append(f"<section id='{e(run.name)}'>{body}</section>")
    summary.append("</table>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>beyondgd results</title>"
        f"<style>{_STYLE}</style></head><body><h1>beyondgd reproductions</h1>"
        "<p>Every verdict below is computed by the experiment from its own numbers.</p>"
        + "\n".join(summary)
        + "\n".join(sections)
        + "</body></html>\n"
    )
    index = results_dir / "index.html"
    atomic_write_text(index, page)
    return index
