import subprocess
import sys

import pytest

from beyondgd.cli import main


def test_list_shows_every_experiment_with_times(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("fuse-testfns", "fuse-pinn", "fuse-classify"):
        assert name in out
    assert "expected time" in out


def test_unknown_experiment_is_a_clear_error(capsys, tmp_path):
    assert main(["reproduce", "no-such-thing", "--out", str(tmp_path)]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_report_without_results_is_a_clear_error(capsys, tmp_path):
    assert main(["report", "--out", str(tmp_path / "missing")]) == 2
    assert "beyondgd reproduce" in capsys.readouterr().err


def test_bad_seeds_is_a_clear_error(capsys, tmp_path):
    assert main(["reproduce", "fuse-testfns", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "seeds must be >= 1" in capsys.readouterr().err


def test_console_script_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "beyondgd.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "reproduce" in out


def test_report_gathers_every_run_with_its_figures(tmp_path, capsys):
    pytest.importorskip("gco")
    from beyondgd.experiments import get, run_experiment

    tiny = {
        "datasets": ["texture"], "size": 16, "n_train": 6, "n_val": 3, "n_test": 3, "width": 2,
        "pretrain_steps": 1, "finetune_steps": 1, "expansion_iters": 1, "n_jobs": 1,
        "lams": {"gd-grid": [1.0], "gd-dense": [1.0], "adm": [1.0]}, "lengths": [],
        "example_images": 1,
    }  # fmt: skip
    run_experiment(get("adm"), out_dir=tmp_path, progress=False, config_overrides=tiny)
    assert main(["report", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text()
    assert "<section id='adm'>" in page and "src='adm/texture_lambda.png'" in page
    assert page.count("<td class='") >= 5  # one coloured verdict cell per claim
