import subprocess
import sys

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
