import json
import subprocess
import sys

import pytest

from beyondgd.cli import main


def test_list_shows_every_experiment_with_times(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("fuse-testfns", "fuse-pinn", "fuse-classify", "weep-recovery", "adm"):
        assert name in out
    assert "core-h" in out and "on 2 CPU cores" in out


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
        "seeds": 1, "sweep_datasets": [], "size": 16, "n_train": 6, "n_val": 3, "n_test": 3,
        "width": 2, "pretrain_steps": 1, "finetune_steps": 1, "eval_every": 0,
        "example_images": 1,
    }  # fmt: skip
    run_experiment(
        get("adm"), preset="smoke", out_dir=tmp_path, progress=False, config_overrides=tiny
    )
    assert main(["report", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text()
    assert "<section id='adm'>" in page and "src='adm/lambda.png'" in page
    assert page.count("<td class='") >= 5  # one coloured verdict cell per claim


def test_set_values_parse_as_json():
    from beyondgd.experiments.harness import parse_set

    assert parse_set(["epochs=3", 'datasets=["patches"]', 'mode="fast"', "x=1.5"]) == {
        "epochs": 3,
        "datasets": ["patches"],
        "mode": "fast",
        "x": 1.5,
    }
    assert parse_set(None) == {}


def test_a_non_json_set_value_is_a_clear_error(capsys, tmp_path):
    assert main(["reproduce", "cdec", "--set", "datasets=patches", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--set datasets: the value 'patches' is not JSON" in err and "double quotes" in err


def test_a_set_value_of_the_wrong_type_is_a_clear_error(capsys, tmp_path):
    # a string where the preset has a list used to be iterated letter by letter
    argv = ["reproduce", "cdec", "--set", 'datasets="patches"', "--out", str(tmp_path)]
    assert main(argv) == 2
    assert 'datasets="patches": expected list' in capsys.readouterr().err
    argv = ["reproduce", "fuse-pinn", "--set", 'methods.adam.lr="big"', "--out", str(tmp_path)]
    assert main(argv) == 2
    assert 'methods.adam.lr="big": expected number' in capsys.readouterr().err


@pytest.mark.parametrize("item", ["epochs", "=3"])
def test_set_without_key_value_is_a_clear_error(item, capsys, tmp_path):
    assert main(["reproduce", "cdec", "--set", item, "--out", str(tmp_path)]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err


def test_set_with_an_unknown_key_is_a_clear_error(capsys, tmp_path):
    assert main(["reproduce", "cdec", "--set", "no_such_key=1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'no_such_key' in the config; known:" in err
    argv = ["reproduce", "fuse-pinn", "--set", "methods.nope.lr=1", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "unknown key 'nope' in methods" in capsys.readouterr().err


def test_show_config_prints_the_overridden_config_and_runs_nothing(capsys, tmp_path):
    argv = ["reproduce", "cdec", "--preset", "full", "--set", 'datasets=["patches"]']
    assert main([*argv, "--set", "layers=[5]", "--show-config", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # full preset on one dataset and one layer count: 1 ratio x 7 arms x 8 seeds
    assert out.startswith("# cdec (56 units)")
    config = json.loads(out.split("\n", 1)[1])
    assert config["datasets"] == ["patches"] and config["layers"] == [5]
    assert not any(tmp_path.iterdir())


def test_overrides_are_named_in_the_report_header(tmp_path):
    argv = ["reproduce", "fuse-testfns", "--preset", "smoke", "--set", "seeds=2", "--workers", "1"]
    assert main([*argv, "--out", str(tmp_path), "--no-progress"]) == 0
    report = (tmp_path / "fuse-testfns" / "report.md").read_text()
    assert 'Config overrides: {"seeds": 2}.' in report
    metrics = json.loads((tmp_path / "fuse-testfns" / "metrics.json").read_text())
    assert metrics["config_overrides"] == {"seeds": 2}
    assert metrics["config"]["seeds"] == 2
    assert (tmp_path / "index.html").exists()
