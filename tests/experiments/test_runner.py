import json
import math

import pytest
import torch

from beyondgd.core import derive_seed, make_generator
from beyondgd.experiments import Experiment, Report, Table, Unit, Verdict, run_experiment
from beyondgd.experiments.stats import compare_paired


class NoisyMeans(Experiment):
    """A tiny experiment: each unit draws random numbers from a seed derived from its key."""

    name = "toy-noisy-means"
    title = "toy"
    claim = "method b has a lower mean than method a"
    expected_seconds = {"quick": 1, "full": 1}

    def __init__(self):
        self.calls = 0

    def config(self, preset):
        return {"seeds": [0, 1, 2, 3, 4, 5], "n": 50}

    def units(self, config):
        return [
            Unit(f"{m}/seed={s}", {"method": m, "seed": s})
            for s in config["seeds"]
            for m in ("a", "b")
        ]

    def run_unit(self, unit, config):
        self.calls += 1
        gen = make_generator(derive_seed(self.name, unit.key))
        shift = 0.0 if unit.params["method"] == "a" else -1.0
        x = torch.randn(config["n"], generator=gen) + shift
        return {"mean": float(x.mean()), "method": unit.params["method"]}

    def analyze(self, config, records, out_dir):
        a = [records[f"a/seed={s}"]["mean"] for s in config["seeds"]]
        b = [records[f"b/seed={s}"]["mean"] for s in config["seeds"]]
        cmp = compare_paired(b, a)
        return Report(
            self.title,
            self.claim,
            tables=[
                Table(
                    "means",
                    ["method", "median"],
                    [["a", cmp.median_baseline], ["b", cmp.median_method]],
                )
            ],
            verdicts=[Verdict(self.claim, cmp.status, cmp.evidence("b", "a", "mean"))],
        )


def _numbers(metrics):
    """Everything in metrics.json except timings and versions."""
    return {
        k: {kk: vv for kk, vv in rec.items() if kk != "wall_time_s"}
        for k, rec in metrics["records"].items()
    }, metrics["report"]


class Killed(Exception):
    pass


def test_killed_run_resumes_to_identical_metrics(tmp_path):
    full = run_experiment(NoisyMeans(), out_dir=tmp_path / "a", progress=False)

    def kill_after_second(n_done, key):
        if n_done == 2:
            raise Killed

    exp = NoisyMeans()
    with pytest.raises(Killed):
        run_experiment(exp, out_dir=tmp_path / "b", progress=False, on_checkpoint=kill_after_second)
    ckpt = json.loads((tmp_path / "b" / exp.name / "checkpoint.json").read_text())
    assert len(ckpt["records"]) == 2
    assert not (tmp_path / "b" / exp.name / "metrics.json").exists()

    resumed_exp = NoisyMeans()
    resumed = run_experiment(resumed_exp, out_dir=tmp_path / "b", resume=True, progress=False)
    assert resumed_exp.calls == 12 - 2  # the two finished units were not run again
    assert _numbers(resumed.metrics) == _numbers(full.metrics)
    on_disk = json.loads((tmp_path / "b" / exp.name / "metrics.json").read_text())
    assert _numbers(on_disk) == _numbers(full.metrics)


def test_same_seed_gives_identical_numbers(tmp_path):
    r1 = run_experiment(NoisyMeans(), out_dir=tmp_path / "1", progress=False)
    r2 = run_experiment(NoisyMeans(), out_dir=tmp_path / "2", progress=False)
    assert _numbers(r1.metrics) == _numbers(r2.metrics)


def test_without_resume_reruns_everything(tmp_path):
    run_experiment(NoisyMeans(), out_dir=tmp_path, progress=False)
    again = NoisyMeans()
    run_experiment(again, out_dir=tmp_path, progress=False)
    assert again.calls == 12


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    run_experiment(NoisyMeans(), out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        run_experiment(NoisyMeans(), out_dir=tmp_path, progress=False, resume=True, seeds=2)


def test_files_and_verdict_from_numbers(tmp_path):
    result = run_experiment(NoisyMeans(), out_dir=tmp_path, progress=False)
    run_dir = tmp_path / "toy-noisy-means"
    for name in ("metrics.json", "report.md", "report.html", "checkpoint.json"):
        assert (run_dir / name).exists()
    # b's mean is lower by 1 on every seed: the paired test must say so (6 pairs, p = 1/64).
    assert result.report.verdicts[0].status == "holds"
    assert "holds" in (run_dir / "report.md").read_text()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["config"]["seeds"] == [0, 1, 2, 3, 4, 5]
    assert metrics["versions"]["torch"] == torch.__version__


def test_seeds_override_and_bad_overrides(tmp_path):
    result = run_experiment(NoisyMeans(), out_dir=tmp_path, progress=False, seeds=2)
    assert len(result.metrics["records"]) == 4
    with pytest.raises(ValueError, match="seeds"):
        run_experiment(NoisyMeans(), out_dir=tmp_path, progress=False, seeds=0)
    with pytest.raises(ValueError, match="config_overrides"):
        run_experiment(NoisyMeans(), out_dir=tmp_path, progress=False, config_overrides={"x": 1})
    with pytest.raises(ValueError, match="preset"):
        run_experiment(NoisyMeans(), out_dir=tmp_path, progress=False, preset="huge")


@pytest.mark.parametrize(
    ("method", "baseline", "status"),
    [
        ([1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7], "holds"),  # better on all 6 pairs
        ([2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6], "does not hold"),  # worse everywhere
        ([1, 2, 3], [2, 3, 4], "inconclusive"),  # better, but 3 pairs cannot reach p < 0.05
        ([1, 1, 1, 1], [1, 1, 1, 1], "does not hold"),  # a tie is not a win
        # medians tie (both fail half the time) but the method wins every differing pair
        ([9, 9, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6], [9] * 12, "holds"),
        ([9, 9, 9, 9, 9, 9, 9, 9, 9, 4, 9, 9], [9] * 12, "does not hold"),  # one win, p = 0.5
    ],
)
def test_compare_paired_rules(method, baseline, status):
    assert compare_paired(method, baseline).status == status


def test_compare_paired_log_and_higher_is_better():
    cmp = compare_paired([1e-8] * 6, [1e-2] * 5 + [1e-9], log=True)
    assert cmp.wins == 5 and cmp.status == "holds"
    assert compare_paired([0.9] * 6, [0.8] * 6, lower_is_better=False).status == "holds"
    assert math.isnan(compare_paired([1.0], [2.0]).p_value)
    with pytest.raises(ValueError, match="equal length"):
        compare_paired([1, 2], [1])


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {test_dir!r})
from test_runner import NoisyMeans
from beyondgd.experiments import run_experiment

def die(n_done, key):
    if n_done == 2 and {kill}:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception handlers: a real kill

run_experiment(NoisyMeans(), out_dir={out!r}, progress=False, resume={resume},
               on_checkpoint=die)
"""


def test_sigkilled_process_resumes_to_identical_metrics(tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    test_dir = str(Path(__file__).parent)
    out = str(tmp_path / "run")

    def run(kill, resume):
        script = KILL_SCRIPT.format(test_dir=test_dir, kill=kill, out=out, resume=resume)
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)

    killed = run(kill=True, resume=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ckpt = json.loads((tmp_path / "run" / "toy-noisy-means" / "checkpoint.json").read_text())
    assert len(ckpt["records"]) == 2
    resumed = run(kill=False, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    reference = run_experiment(NoisyMeans(), out_dir=tmp_path / "ref", progress=False)
    metrics = json.loads((tmp_path / "run" / "toy-noisy-means" / "metrics.json").read_text())
    assert _numbers(metrics) == _numbers(reference.metrics)
