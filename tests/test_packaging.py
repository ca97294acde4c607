"""What a user sees of the package itself: typing marker, top-level help, ``python -m``."""

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import beyondgd


def test_package_ships_py_typed():
    assert (Path(beyondgd.__file__).parent / "py.typed").is_file()


def test_top_level_docstring_names_every_subpackage():
    subpackages = {m.name for m in pkgutil.iter_modules(beyondgd.__path__) if m.ispkg}
    assert subpackages  # the walk found them
    for name in subpackages:
        importlib.import_module(f"beyondgd.{name}")
        assert f":mod:`beyondgd.{name}`" in beyondgd.__doc__, name


def test_python_dash_m_runs_the_cli():
    out = subprocess.run(
        [sys.executable, "-m", "beyondgd", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "reproduce" in out.stdout
