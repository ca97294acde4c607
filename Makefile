# Every target sets itself up on a fresh machine: a virtualenv in .venv, torch pinned by
# constraints.txt (the CPU wheel; an unpinned torch would pull several GB of CUDA packages).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
PRESET ?= quick
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: run test bench lint data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip setuptools wheel

# One stamp per extras set; reinstalls when pyproject.toml or constraints.txt change.
$(VENV)/.installed-%: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e ".[$*]"
	@touch $@

# Debian data packages where this machine allows apt-get; otherwise the tests that need them skip.
data:
	@if [ -f $(FASHION_MNIST) ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing dataset-fashion-mnist (Debian)"; \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
	  echo "warning: could not install dataset-fashion-mnist; experiments needing it will say so"; \
	else echo "note: Fashion-MNIST missing; run 'sudo apt-get install dataset-fashion-mnist'"; fi

run: $(VENV)/.installed-all data
	$(BIN)/beyondgd reproduce all --preset $(PRESET)
	@echo "report: results/index.html (one report.md per experiment under results/)"

test: $(VENV)/.installed-dev,all data
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-bench,all data
	@set -e; for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f; done

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
