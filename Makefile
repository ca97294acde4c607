# Every target sets itself up on a fresh machine: a virtualenv in .venv, torch pinned by
# constraints.txt (the CPU wheel; an unpinned torch would pull several GB of CUDA packages).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
PRESET ?= quick
# Debian packages with real data (and open3d's libusb): file that shows it is there -> package.
DEBIAN_DATA := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz:dataset-fashion-mnist \
               /usr/share/doc/libcgal-dev/data.tar.gz:libcgal-demo
DEBIAN_LIBS := libusb-1.0-0

.PHONY: run test bench lint docs data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip setuptools wheel

# One stamp per extras set; reinstalls when pyproject.toml or constraints.txt change. `make run`
# and `make test` install only what they use; `make bench` adds the peers (open3d, torchmin).
$(VENV)/.installed-%: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e ".[$*]"
	@touch $@

# Debian data packages where this machine allows apt-get; otherwise the tests that need them skip
# and the experiments say how to install them.
data:
	@missing=""; for pair in $(DEBIAN_DATA); do f=$${pair%%:*}; p=$${pair##*:}; \
	  [ -f $$f ] || missing="$$missing $$p"; done; \
	dpkg -s $(DEBIAN_LIBS) >/dev/null 2>&1 || missing="$$missing $(DEBIAN_LIBS)"; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages:$$missing"; \
	  (apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $$missing >/dev/null 2>&1)) || \
	  echo "warning: could not install$$missing; what needs them will say so"; \
	else echo "note: missing Debian packages:$$missing (sudo apt-get install$$missing)"; fi

run: $(VENV)/.installed-sparse,registration,seg data
	$(BIN)/beyondgd reproduce all --preset $(PRESET)
	@echo "report: results/index.html (one report.md per experiment under results/)"

test: $(VENV)/.installed-dev,sparse,registration,seg,ray data
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-all data
	@set -e; for f in benchmarks/[!_]*.py; do echo "== $$f"; $(BIN)/python $$f; done

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks examples docs/conf.py
	$(BIN)/ruff format --check src tests benchmarks examples docs/conf.py

# HTML documentation in docs/_build/html (warnings are errors, no network). The gallery runs the
# examples/ scripts; BEYONDGD_DOCS_GALLERY=0 skips running them for a quick build.
docs: $(VENV)/.installed-docs,sparse,registration,seg data
	MPLBACKEND=Agg $(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "documentation: docs/_build/html/index.html"

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache docs/_build docs/auto_examples docs/api/generated
