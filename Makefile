# `make test` and `make demo` do all of the set-up they need: a virtual environment in .venv,
# installed with the pins in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch's CPU wheels where that index can be reached (no CUDA download); elsewhere the pin of
# constraints.txt (torch==2.13.0) is met by a local +cpu wheel or by PyPI's build.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_ARG = $(shell $(PYTHON) -c "import urllib.request as r; r.urlopen('$(TORCH_INDEX)/torch/', timeout=5); print('--extra-index-url $(TORCH_INDEX)')" 2>/dev/null)

.PHONY: setup demo test lint gpu-test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_INDEX_ARG) -c constraints.txt -e ".[torch,jax,demo,diagnose,docs,test,kernels]"
	touch $@

# The main job: train encoders with InfoNCE and WEINCE, compare frozen features (weince-out/demo).
demo: setup
	$(BIN)/weince demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy weince_core adapters/weince_torch adapters/weince_jax adapters/weince_cupy

test: lint
	$(BIN)/python -m pytest

# On a machine with a CUDA GPU (and CuPy installed): the GPU-only tests, in one process (xdist's
# workers would each take a share of the GPU's memory).
gpu-test: setup
	$(BIN)/python -m pytest -m gpu -n 0

clean:
	rm -rf $(VENV)
