"""Every docstring example of every beyondgd module runs (``doctest``), so the examples that the
API pages show cannot rot."""

import doctest
import importlib
import importlib.util
import pkgutil

import pytest
import torch

import beyondgd


def modules_with_examples() -> list[str]:
    """Names of the modules whose source has a ``>>>`` example (found without importing them)."""
    names = ["beyondgd"] + [
        info.name for info in pkgutil.walk_packages(beyondgd.__path__, "beyondgd.")
    ]
    found = []
    for name in sorted(set(names)):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            with open(spec.origin, encoding="utf-8") as fh:
                if ">>>" in fh.read():
                    found.append(name)
    return found


MODULES = modules_with_examples()


def _fashion_mnist_missing() -> str | None:
    from beyondgd.data import DataNotFoundError, load_fashion_mnist

    try:
        load_fashion_mnist("test", limit=1)
    except DataNotFoundError:
        return "Fashion-MNIST is not installed (Debian package dataset-fashion-mnist; `make data`)"
    return None


# Modules whose examples read data that a machine may lack: name -> reason to skip, or None.
NEEDS_DATA = {"beyondgd.data.fashion_mnist": _fashion_mnist_missing}


def test_modules_with_examples_are_found():
    assert len(MODULES) > 20 and "beyondgd.optim.fuse" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith("beyondgd"):
            pytest.skip(f"{name} needs the optional dependency {exc.name!r}")
        raise
    if name in NEEDS_DATA and (reason := NEEDS_DATA[name]()):
        pytest.skip(reason)
    torch.manual_seed(0)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, name) if t.examples]
    assert tests, f"{name} has '>>>' in its source but doctest found no example"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
