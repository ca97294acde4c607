"""Presets as data and ``--set`` with dotted keys, JSON values and type checks."""

import pytest
from harness_toys import Toy

from beyondgd.experiments.harness import apply_set, deep_merge, parse_set, resolve_config

CONFIG = {
    "seeds": 8,
    "budget": 1000,
    "lr": 0.1,
    "datasets": ["digits", "fashion-mnist"],
    "flag": True,
    "methods": {"adam": {"lr": 0.001, "batch_size": 128}, "fuse": {"switch": {"n": 5}}},
    "open": None,
}


def test_deep_merge_merges_objects_and_drops_none():
    merged = deep_merge(CONFIG, {"methods": {"adam": {"lr": 0.01}, "fuse": None}, "seeds": 3})
    assert merged["methods"] == {"adam": {"lr": 0.01, "batch_size": 128}}
    assert merged["seeds"] == 3 and CONFIG["methods"]["adam"]["lr"] == 0.001  # no aliasing


def test_parse_set_reads_json_values_with_dotted_keys():
    assert parse_set(["methods.adam.lr=0.01", 'datasets=["digits"]', "flag=false"]) == {
        "methods.adam.lr": 0.01,
        "datasets": ["digits"],
        "flag": False,
    }


def test_a_non_json_value_is_a_clear_error():
    with pytest.raises(ValueError, match=r"--set datasets: the value 'patches' is not JSON"):
        parse_set(["datasets=patches"])


@pytest.mark.parametrize("item", ["epochs", "=3"])
def test_missing_key_or_value_is_a_clear_error(item):
    with pytest.raises(ValueError, match="--set expects KEY=VALUE"):
        parse_set([item])


def test_apply_set_reaches_inside_objects():
    out = apply_set(CONFIG, {"methods.adam.lr": 0.01, "methods.fuse.switch.n": 7, "lr": 1})
    assert out["methods"]["adam"] == {"lr": 0.01, "batch_size": 128}
    assert out["methods"]["fuse"]["switch"]["n"] == 7
    assert out["lr"] == 1  # an integer where the preset has a number is fine
    assert CONFIG["methods"]["adam"]["lr"] == 0.001


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"datasets": "patches"}, r"--set datasets=\"patches\": expected list .* got string"),
        ({"seeds": 2.5}, r"--set seeds=2.5: expected integer"),
        ({"flag": 1}, r"--set flag=1: expected boolean"),
        ({"datasets": [1, 2]}, r"--set datasets\[0\]=1: expected string"),
        ({"methods.adam.lr": "fast"}, r"--set methods.adam.lr=\"fast\": expected number"),
        ({"methods.adam": {"lr": 0.1, "momentum": 0.9}}, r"unknown key 'momentum'"),
    ],
)
def test_a_wrong_type_names_the_key_the_value_and_the_type(settings, match):
    with pytest.raises(TypeError if "unknown" not in match else ValueError, match=match):
        apply_set(CONFIG, settings)


@pytest.mark.parametrize(
    "key, match",
    [
        ("nope", r"--set nope: unknown key 'nope' in the config; known: \['budget'"),
        ("methods.sgd.lr", r"--set methods.sgd.lr: unknown key 'sgd' in methods; known: \['adam'"),
        ("lr.x", r"--set lr.x: lr is not an object"),
    ],
)
def test_an_unknown_dotted_key_is_a_clear_error(key, match):
    with pytest.raises(ValueError, match=match):
        apply_set(CONFIG, {key: 1})


def test_an_open_value_takes_anything():
    assert apply_set(CONFIG, {"open": [1, "a"]})["open"] == [1, "a"]


def test_resolve_config_applies_preset_seeds_and_settings():
    config = resolve_config(Toy(), "full", seeds=4, settings={"methods.better.lr": 0.5})
    assert config["seeds"] == 4 and config["methods"]["better"]["lr"] == 0.5
    assert config["preset"] == "full"
    with pytest.raises(ValueError, match="preset must be one of"):
        resolve_config(Toy(), "paper")
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        resolve_config(Toy(), "quick", seeds=0)
