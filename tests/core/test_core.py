import json
import os

import pytest
import torch

from beyondgd.core import (
    CostMeter,
    atomic_write_json,
    atomic_write_text,
    check_choice,
    check_finite_tensor,
    check_int,
    check_number,
    derive_seed,
    make_generator,
)


def test_atomic_write_leaves_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "state.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": float("nan")})  # NaN is refused, nothing half-written
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind


def test_atomic_write_replaces(tmp_path):
    path = tmp_path / "sub" / "x.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert os.listdir(path.parent) == ["x.txt"]


def test_derive_seed_is_stable_and_distinct():
    assert derive_seed("fuse", 1) == derive_seed("fuse", "1")
    assert derive_seed("fuse", 1) != derive_seed("fuse", 2)
    g1, g2 = make_generator(5), make_generator(5)
    assert torch.equal(torch.randn(3, generator=g1), torch.randn(3, generator=g2))


def test_cost_meter_counts_and_round_trips():
    meter = CostMeter(dataset_size=10)
    meter.add(5)
    meter.add(10)
    assert meter.samples == 15 and meter.evaluations == 2 and meter.epochs == 1.5
    other = CostMeter()
    other.load_state_dict(meter.state_dict())
    assert other.samples == 15 and other.wall_time >= 0
    with pytest.raises(ValueError, match="dataset_size"):
        _ = CostMeter().epochs


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: check_number("lr", -1.0, low=0.0), "lr must be >= 0"),
        (lambda: check_number("lr", float("nan")), "lr must be finite"),
        (lambda: check_number("lr", "1"), "lr must be a real number"),
        (lambda: check_number("eps", 0.0, low=0.0, low_inclusive=False), "eps must be > 0"),
        (lambda: check_int("history_size", 0, low=1), "history_size must be >= 1"),
        (lambda: check_int("history_size", 2.5), "history_size must be an integer"),
        (lambda: check_choice("mode", "x", ("a", "b")), "mode must be one of"),
        (lambda: check_finite_tensor("x", torch.tensor([1.0, float("inf")])), "x must contain"),
        (lambda: check_finite_tensor("x", torch.tensor([1, 2])), "x must have a floating"),
        (lambda: check_finite_tensor("x", [1.0]), "x must be a torch.Tensor"),
    ],
)
def test_validation_messages_name_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", [0, 17, -1])
def test_check_finite_tensor_finds_one_bad_entry_anywhere(dtype, bad, where):
    x = torch.randn(6, 7, generator=torch.Generator().manual_seed(0)).to(dtype)
    assert check_finite_tensor("x", x) is x
    x.view(-1)[where] = bad
    with pytest.raises(ValueError, match="x must contain only finite"):
        check_finite_tensor("x", x)
    with pytest.raises(ValueError, match="x must contain only finite"):
        check_finite_tensor("x", x.t())  # non-contiguous


def test_check_finite_tensor_complex_integer_and_empty():
    z = torch.tensor([1 + 2j, 3 - 1j])
    assert check_finite_tensor("z", z, floating=False) is z
    with pytest.raises(ValueError, match="z must contain only finite"):
        check_finite_tensor("z", torch.tensor([1 + 2j, complex(0, float("nan"))]), floating=False)
    assert check_finite_tensor("i", torch.tensor([1, 2]), floating=False).dtype == torch.int64
    assert check_finite_tensor("e", torch.zeros(0, 3)).shape == (0, 3)
