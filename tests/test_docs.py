"""The documentation's API pages list every public name: each package's ``__all__`` must appear
in an ``autosummary`` of ``docs/api/*.rst`` (so a new public name without docs fails here)."""

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import beyondgd

DOCS = Path(__file__).resolve().parents[1] / "docs"
API = DOCS / "api"


def documented_names(api_dir: Path = API) -> set[str]:
    """Fully qualified names listed in the ``autosummary`` directives of the API pages, and the
    modules of their ``automodule`` directives."""
    names: set[str] = set()
    for page in sorted(api_dir.glob("*.rst")):
        module = None
        in_summary = False
        for line in page.read_text().splitlines():
            if m := re.match(r"\.\. currentmodule:: (\S+)", line):
                module, in_summary = m.group(1), False
            elif m := re.match(r"\.\. automodule:: (\S+)", line):
                names.add(m.group(1))  # a module documented on the page itself
                in_summary = False
            elif line.startswith(".. autosummary::"):
                in_summary = True
            elif in_summary and (m := re.match(r"^ {3}([A-Za-z_][\w.]*)\s*$", line)):
                entry = m.group(1)
                names.add(entry if entry.startswith("beyondgd.") else f"{module}.{entry}")
            elif in_summary and line and not line.startswith(" "):
                in_summary = False
    return names


def resolve(name: str):
    """The object a fully qualified name refers to (a module or an attribute of one)."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


def public_packages() -> list[str]:
    """Every package of beyondgd that declares ``__all__``."""
    found = []
    for info in pkgutil.walk_packages(beyondgd.__path__, "beyondgd."):
        if info.ispkg and hasattr(importlib.import_module(info.name), "__all__"):
            found.append(info.name)
    return sorted(found)


PACKAGES = public_packages()


def test_the_public_packages_are_found():
    for name in ("beyondgd.optim", "beyondgd.penalties", "beyondgd.experiments.harness"):
        assert name in PACKAGES


@pytest.fixture(scope="module")
def documented():
    """Documented names, and the ids of the objects they refer to (a name re-exported by a
    second package, such as ``beyondgd.experiments.Claim``, shares its page)."""
    names = documented_names()
    return names, {id(resolve(name)) for name in names}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_has_an_api_page(package, documented):
    names, objects = documented
    module = importlib.import_module(package)
    missing = [
        name
        for name in module.__all__
        if f"{package}.{name}" not in names and id(getattr(module, name)) not in objects
    ]
    assert not missing, f"{package}: add {missing} to an autosummary in docs/api/*.rst"


def test_every_documented_name_exists():
    for name in documented_names():
        resolve(name)


def test_the_check_sees_a_missing_name(tmp_path):
    page = (API / "optim.rst").read_text()
    (tmp_path / "optim.rst").write_text(page.replace("   FUSE\n", ""))
    names = documented_names(tmp_path)
    assert "beyondgd.optim.AfterEpochs" in names
    assert "beyondgd.optim.FUSE" not in names


def test_every_api_page_is_in_the_api_toctree():
    index = (API / "index.rst").read_text()
    for page in API.glob("*.rst"):
        if page.name != "index.rst":
            assert f"\n   {page.stem}\n" in index, page.name
