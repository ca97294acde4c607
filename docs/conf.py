"""Sphinx configuration of the beyondgd documentation (built by ``make docs``).

Offline by design: no intersphinx, MathJax bundled by ``sphinx-mathjax-offline`` (no CDN), the
gallery runs on the CPU. ``BEYONDGD_DOCS_GALLERY=0`` skips running the examples (quick builds).
"""

from __future__ import annotations

import os
import warnings

from sphinx_gallery.sorting import ExplicitOrder

import beyondgd

project = "beyondgd"
author = "the beyondgd developers"
copyright = "the beyondgd developers"  # noqa: A001 - Sphinx's name
version = release = getattr(beyondgd, "__version__", "0.1.0")

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "sphinx-mathjax-offline",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/**/*.ipynb"]
html_theme = "pydata_sphinx_theme"
html_title = "beyondgd"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    # API pages: no right-hand sidebar, so the docstrings' display math has the width
    # no "**" key: it would also match the API stubs, which have no right sidebar
    "secondary_sidebar_items": {
        "index": ["page-toc"],
        "guide/*": ["page-toc"],
        "api/*": ["page-toc"],
        "auto_examples/**": ["page-toc"],
        "api/generated/*": [],
    },
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False

# API reference: one stub page per public name, from the package's __all__ lists (docs/api/*.rst).
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc "Parameters" sections say the types
numpydoc_show_class_members = False  # the class template lists members itself
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# numpydoc keeps each docstring's "References" list; the text need not cite every entry.
suppress_warnings = ["ref.citation"]


def _skip_member(app, what, name, obj, skip, options):
    """Hide scikit-learn's generated metadata-routing setters (``set_fit_request`` ...)."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)


# Gallery: examples/<method>/plot_*.py, executed on the CPU (each under 30 s on one core).
run_gallery = os.environ.get("BEYONDGD_DOCS_GALLERY", "1") != "0"
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    # fuse_torchrun.py runs under torchrun only; the torchrun guide page shows it
    "ignore_pattern": r"(__init__|fuse_torchrun)\.py$",
    "plot_gallery": "True" if run_gallery else "False",
    "download_all_examples": False,
    "remove_config_comments": True,
    "subsection_order": ExplicitOrder(
        [f"../examples/{m}" for m in ("fuse", "weep", "cdec", "dlc", "adm")]
    ),
    "within_subsection_order": "FileNameSortKey",
    "min_reported_time": 0,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "write_computation_times": False,  # its pages load DataTables from a CDN
}

# numpy/torch emit UserWarnings at import time on some machines; they are not doc errors.
warnings.filterwarnings("ignore", category=UserWarning, message=".*Matplotlib.*non-GUI.*")
os.environ.setdefault("MPLBACKEND", "Agg")
