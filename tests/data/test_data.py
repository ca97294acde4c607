import numpy as np
import pytest
import torch

from beyondgd import data  # data.test_functions: pytest collects a bare test_* name
from beyondgd.data import (
    DataNotFoundError,
    load_digits_split,
    load_fashion_mnist,
    read_idx,
)
from beyondgd.data.fashion_mnist import DEFAULT_PATH


@pytest.fixture
def tiny_idx_folder(tmp_path, write_fashion_mnist):
    """A generated stand-in with the real layout: the loader is covered without the package."""
    rng = np.random.default_rng(0)
    return write_fashion_mnist(
        tmp_path,
        train=(rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, (7,))),
        test=(rng.integers(0, 256, (3, 28, 28)), rng.integers(0, 10, (3,))),
    )


def test_loader_reads_idx_layout(tiny_idx_folder):
    x, y = load_fashion_mnist("train", path=tiny_idx_folder)
    raw = read_idx(tiny_idx_folder / "train-images-idx3-ubyte.gz")
    assert x.shape == (7, 28, 28) and y.shape == (7,) and y.dtype == torch.int64
    assert torch.allclose(x, torch.from_numpy(raw).float() / 255)
    x, _ = load_fashion_mnist("test", path=tiny_idx_folder, limit=2)
    assert x.shape == (2, 28, 28)


def test_loader_env_var(tiny_idx_folder, monkeypatch):
    monkeypatch.setenv("BEYONDGD_FASHION_MNIST", str(tiny_idx_folder))
    assert load_fashion_mnist("test")[0].shape[0] == 3


def test_missing_data_says_how_to_install(tmp_path):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(path=tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="train-images-idx3-ubyte"):
        load_fashion_mnist(path=tmp_path)


def test_bad_idx_and_arguments(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation", path=tmp_path)
    with pytest.raises(ValueError, match="limit"):
        load_fashion_mnist(path=tmp_path, limit=0)


def test_real_fashion_mnist_when_installed():
    import os

    if not os.path.exists(f"{DEFAULT_PATH}/t10k-images-idx3-ubyte.gz"):
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    x, y = load_fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and set(y.tolist()) == set(range(10))


def test_digits_split_is_standardised_and_reproducible():
    a = load_digits_split(seed=3)
    b = load_digits_split(seed=3)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    xtr = a[0]
    assert xtr.shape == (1347, 64)
    assert torch.allclose(xtr.mean(0), torch.zeros(64), atol=1e-5)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_split(test_fraction=1.5)


def test_test_functions_minimum_values():
    for fn in data.test_functions().values():
        assert fn.random_start(0).shape == (fn.dim,)
    fns = data.test_functions()
    ones = torch.ones(2, dtype=torch.float64)
    assert fns["rosenbrock"](ones) == 0
    assert fns["beale"](torch.tensor([3.0, 0.5], dtype=torch.float64)) == 0
    assert abs(float(fns["ackley"](torch.zeros(2, dtype=torch.float64)))) < 1e-12
    st = fns["styblinski-tang"]
    assert abs(float(st(torch.full((2,), -2.903534, dtype=torch.float64))) - st.f_star) < 1e-9
    quad = fns["quadratic-20d-cond1e+04"]
    assert float(quad(torch.ones(20, dtype=torch.float64))) == 0
