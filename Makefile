# `make test` and `make demo` do all of the set-up they need: a virtual environment in .venv,
# installed with the pins in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch's CPU wheels where that index can be reached (no CUDA download); elsewhere the pin of
# constraints.txt (torch==2.13.0) is met by a local +cpu wheel or by PyPI's build. Probed only
# when the environment is (re)built; `make TORCH_INDEX= setup` skips it.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_ARG = $(shell $(PYTHON) -c "import urllib.request as r; r.urlopen('$(TORCH_INDEX)/torch/', timeout=5); print('--extra-index-url $(TORCH_INDEX)')" 2>/dev/null)
# Triton and NVRTC (the `kernels` extra) have wheels for Linux only; elsewhere their tests skip.
EXTRAS = torch,jax,demo,diagnose,docs,test$(if $(filter Linux,$(shell uname -s)),$(COMMA)kernels)
COMMA := ,

.PHONY: setup demo test lint gpu-test clean

setup: $(VENV)/.installed

# The pins of triton and the CUDA libraries (nvidia-*, cuda-*) were resolved with the CPU build of
# torch, which needs none of them; PyPI's CUDA build pins its own. Where the two disagree (only
# there) the install is retried with torch's pins of those packages and constraints.txt's of
# every other.
$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c "import sys; sys.exit(sys.version_info < (3, 11))" || { \
	  echo "make setup: the pins of constraints.txt need Python 3.11 or newer;" \
	    "name one with make PYTHON=python3.12" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	index='$(TORCH_INDEX_ARG)'; \
	$(BIN)/python -m pip install --quiet $$index -c constraints.txt -e ".[$(EXTRAS)]" || { \
	  echo "make setup: retrying with torch's own pins of triton and the CUDA libraries" >&2; \
	  grep -v -i -E '^(triton|nvidia-|cuda-)' constraints.txt > $(VENV)/constraints-torch.txt; \
	  $(BIN)/python -m pip install --quiet $$index -c $(VENV)/constraints-torch.txt -e ".[$(EXTRAS)]"; }
	touch $@

# The main job: train encoders with InfoNCE and WEINCE, compare frozen features (weince-out/demo).
demo: setup
	$(BIN)/weince demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy weince_core adapters/weince_torch adapters/weince_jax adapters/weince_cupy weince

# In parallel (pytest-xdist); loadscope keeps a module's process-starting fixtures on one worker.
test: lint
	$(BIN)/python -m pytest -n auto --dist loadscope

# On a machine with a CUDA GPU (and CuPy installed): the GPU-only tests, in one process (xdist's
# workers would each take a share of the GPU's memory).
gpu-test: setup
	$(BIN)/python -m pytest -m gpu

clean:
	rm -rf $(VENV)
