"""Serial, a local process pool and embedded Ray give the same records; runs resume across
executors; failures are reported by key and finished units are kept."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import harness_toys
import pandas as pd
import pytest
from harness_toys import KILL_SCRIPT, DiesOnce, Failing, Slow, Toy, Tuned

from beyondgd.experiments.harness import UnitFailed, run_experiment

TOYS_DIR = str(Path(harness_toys.__file__).parent)


def _numbers(run_dir: Path):
    table = pd.read_csv(run_dir / "results.csv").drop(columns="wall_time_s")
    curves = pd.read_csv(run_dir / "curves.csv")
    verdicts = json.loads((run_dir / "metrics.json").read_text())["report"]["verdicts"]
    return table, curves, verdicts


def _same(a: Path, b: Path) -> None:
    ta, ca, va = _numbers(a)
    tb, cb, vb = _numbers(b)
    pd.testing.assert_frame_equal(ta, tb)
    pd.testing.assert_frame_equal(ca, cb)
    assert va == vb


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": TOYS_DIR}},
    )
    yield ray
    ray.shutdown()
    assert not ray.is_initialized()


def test_serial_pool_and_ray_give_identical_records(tmp_path, ray_session):
    serial = run_experiment(Toy(), out_dir=tmp_path / "serial", workers=1, progress=False)
    run_experiment(Toy(), out_dir=tmp_path / "pool", workers=2, progress=False)
    run_experiment(Toy(), out_dir=tmp_path / "ray", executor="ray", progress=False)
    _same(serial.out_dir, tmp_path / "pool" / "toy")
    _same(serial.out_dir, tmp_path / "ray" / "toy")
    assert serial.metrics["report"]["verdicts"][0]["status"] == "holds"


def test_tuning_units_run_first_and_are_checkpointed(tmp_path):
    result = run_experiment(Tuned(), out_dir=tmp_path, workers=2, progress=False)
    table = pd.read_csv(result.out_dir / "results.csv")
    better = table[table["method"] == "better"]
    assert (better["loss"] - 0.1 * better["seed"]).round(9).eq(3.0).all()  # tuned shift 2
    assert result.metrics["tuned"]["p1/better"]["shift"] == 2.0
    lines = (result.out_dir / "checkpoint.jsonl").read_text().splitlines()
    keys = [json.loads(line)["key"] for line in lines[1:]]
    assert set(keys[:2]) == {"tune/p1/better", "tune/p2/better"}  # before any run unit


def test_a_unit_that_raises_is_reported_by_key_and_the_rest_is_kept(tmp_path):
    with pytest.raises(UnitFailed, match=r"unit 'p2/better/seed=1' failed: RuntimeError: boom"):
        run_experiment(Failing(), out_dir=tmp_path, workers=1, progress=False)
    lines = (tmp_path / "toy-failing" / "checkpoint.jsonl").read_text().splitlines()
    keys = {json.loads(line)["key"] for line in lines[1:]}
    assert "p1/base/seed=0" in keys and len(keys) == 8 * 2 + 3  # p1, then p2 up to the failure
    # the pool keeps the finished units too, and resume completes only the rest
    with pytest.raises(UnitFailed, match="p2/better/seed=1"):
        run_experiment(Failing(), out_dir=tmp_path / "pool", workers=2, progress=False)
    lines = (tmp_path / "pool" / "toy-failing" / "checkpoint.jsonl").read_text().splitlines()
    assert len(lines) - 1 >= 18


def test_killed_run_resumes_under_another_executor_with_the_same_numbers(tmp_path):
    reference = run_experiment(Slow(), out_dir=tmp_path / "ref", workers=1, progress=False)
    out = tmp_path / "killed"
    script = KILL_SCRIPT.format(toys_dir=TOYS_DIR, out=str(out), workers=2)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    ckpt = out / "toy-slow" / "checkpoint.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if ckpt.exists() and len(ckpt.read_text().splitlines()) >= 5:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its pool, mid-run
    proc.wait(timeout=30)
    done_before = len(ckpt.read_text().splitlines()) - 1
    assert 4 <= done_before < 32
    seen = []
    resumed = run_experiment(
        Slow(),
        out_dir=out,
        workers=1,
        resume=True,
        progress=False,
        on_checkpoint=lambda n, key: seen.append(key),
    )
    assert len(seen) == 32 - done_before  # only the missing units ran
    _same(reference.out_dir, resumed.out_dir)


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    run_experiment(Toy(), out_dir=tmp_path, workers=1, progress=False)
    with pytest.raises(ValueError, match="different configuration"):
        run_experiment(
            Toy(),
            out_dir=tmp_path,
            workers=1,
            progress=False,
            resume=True,
            settings={"effect": 2.0},
        )


def test_a_torn_checkpoint_line_is_run_again(tmp_path):
    reference = run_experiment(Toy(), out_dir=tmp_path, workers=1, progress=False)
    ckpt = reference.out_dir / "checkpoint.jsonl"
    lines = ckpt.read_text().splitlines()
    ckpt.write_text("\n".join(lines[:10]) + "\n" + lines[10][:25])  # killed mid-write
    seen = []
    run_experiment(Toy(), out_dir=tmp_path / "x", workers=1, progress=False)
    resumed = run_experiment(
        Toy(),
        out_dir=tmp_path,
        workers=1,
        progress=False,
        resume=True,
        on_checkpoint=lambda n, key: seen.append(key),
    )
    assert len(seen) == 32 - 9
    _same(tmp_path / "x" / "toy", resumed.out_dir)


def test_ray_retries_a_unit_whose_worker_dies_and_resumes_a_local_run(tmp_path, ray_session):
    config_dir = tmp_path / "markers"
    config_dir.mkdir()
    result = run_experiment(
        DiesOnce(),
        out_dir=tmp_path,
        executor="ray",
        progress=False,
        settings={"marker_dir": str(config_dir)},
    )
    assert (config_dir / "died").exists()  # it did die once
    table = pd.read_csv(result.out_dir / "results.csv")
    assert len(table) == 2 * 2 * 8 * 3  # and every unit finished
    # a run started locally and finished under Ray gives the serial numbers
    reference = run_experiment(Toy(), out_dir=tmp_path / "ref", workers=1, progress=False)

    def stop(n, key):
        if n == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(
            Toy(), out_dir=tmp_path / "mixed", workers=1, progress=False, on_checkpoint=stop
        )
    resumed = run_experiment(
        Toy(), out_dir=tmp_path / "mixed", executor="ray", resume=True, progress=False
    )
    _same(reference.out_dir, resumed.out_dir)


def test_serial_units_run_on_the_callers_instance(tmp_path):
    class Counting(Toy):
        name = "toy-counting"
        calls = 0

        def run(self, problem, method, seed, config, tuned):
            self.calls += 1  # an instance-level cache must survive between units
            return super().run(problem, method, seed, config, tuned)

    repro = Counting()
    run_experiment(repro, out_dir=tmp_path, workers=1, progress=False)
    assert repro.calls == 2 * 2 * 8
