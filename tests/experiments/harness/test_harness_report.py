"""Reports: standalone pages with working figures, index.html with one line per reproduction."""

import re

from harness_toys import Toy, Tuned

from beyondgd.experiments.harness import run_experiment, write_index
from beyondgd.experiments.harness.report import Report, inline


def test_a_report_page_stands_alone_with_its_figures(tmp_path):
    result = run_experiment(Toy(), out_dir=tmp_path, workers=1, progress=False)
    page = (result.out_dir / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<style>" in page
    sources = re.findall(r"<img src='([^']+)'", page)
    assert {"verdicts.png", "curve-trace.png", "metric-loss.png"} <= set(sources)
    for src in sources:
        assert (result.out_dir / src).is_file()
    md = (result.out_dir / "report.md").read_text()
    assert "## Primary claims" in md and "## Secondary claims (exploratory)" in md
    assert md.index("## Primary claims") < md.index("## Secondary claims")
    assert "| better beats base (problem = p1) | **holds** | n = 8;" in md
    assert "`" not in page


def test_index_opens_with_one_line_per_reproduction(tmp_path):
    run_experiment(Toy(), out_dir=tmp_path, workers=1, progress=False)
    run_experiment(Tuned(), out_dir=tmp_path, workers=1, progress=False)
    page = write_index(tmp_path).read_text()
    table = page[: page.index("<section")]
    assert table.count("<tr><td><a href='#") == 2  # one line each, before any section
    assert "2 holds" in table and "<td>8</td>" in table
    assert "href='toy/report.html'" in table
    # the sections' figures resolve from the index's folder
    for src in re.findall(r"<img src='([^']+)'", page):
        assert (tmp_path / src).is_file()


def test_inline_markdown_is_rendered_and_html_escaped():
    assert inline("use `--set a=1` **now** <b>") == (
        "use <code>--set a=1</code> <b>now</b> &lt;b&gt;"
    )


def test_report_round_trips_through_metrics_json(tmp_path):
    result = run_experiment(Toy(), out_dir=tmp_path, workers=1, progress=False)
    again = Report.from_dict(result.report.to_dict())
    assert again.to_markdown() == result.report.to_markdown()
