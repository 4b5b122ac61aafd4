# emb-provider: `make demo` runs the main job end to end, `make test` runs the whole suite (what CI runs),
# `make check` is the fast loop: ruff (lint + import order) and the unit tier (no model build, no Triton).
#
# make setup [PYTHON=python3.12] [VENV=.venv]: a venv with the export + serve stack and CPU torch.
# Supported Pythons: 3.11 and 3.12 (3.11 preferred when PYTHON is not given). The pins rule the others out:
# onnxruntime==1.32.0 has no wheels for 3.10 and older, numpy<2 (which Triton's python stub needs) none for 3.13+.
PYTHON_VERSIONS := 3.11 3.12
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTRITON := nvidia-pytriton==0.7.0
# torch's CPU build: pinned with its +cpu local version, so pip can never take PyPI's CUDA build (several GB) instead.
# It comes from PyTorch's CPU index, or from any source pip is configured with (a wheelhouse in find-links, a
# mirror). Keep TORCH_VERSION equal to the torch pin in pyproject.toml.
TORCH_VERSION := 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

# Interpreters to try, in order: PYTHON when given, else python3.11, python3.12, then python3.
PYTHON_CANDIDATES := $(if $(PYTHON),$(PYTHON),$(addprefix python,$(PYTHON_VERSIONS)) python3)
space := $(subst ,, )
SUPPORTED := Python $(subst $(space), or ,$(PYTHON_VERSIONS))
PY_VERSION := import sys; print("%d.%d" % sys.version_info[:2])
# What `exporter serve` checks before starting Triton (libpython for the python stub, numpy<2), as an early warning.
STUB_CHECK := import sys; sys.excepthook = lambda t, e, tb: print(f"error: {e}", file=sys.stderr); \
	from exporter.serve import check_stub_environment; check_stub_environment()

.PHONY: setup demo test check clean gpu-bench

setup: $(STAMP)

# Re-installs only when pyproject.toml or this Makefile changed (idempotent, quick otherwise).
$(STAMP): pyproject.toml Makefile
	@if [ ! -x $(BIN)/python ]; then \
	  chosen=; for py in $(PYTHON_CANDIDATES); do \
	    v=$$($$py -c '$(PY_VERSION)' 2>/dev/null) || { [ -z "$(PYTHON)" ] && continue; \
	      echo "error: PYTHON=$(PYTHON) could not be run" >&2; exit 1; }; \
	    case " $(PYTHON_VERSIONS) " in *" $$v "*) chosen=$$py; break;; esac; \
	    if [ -n "$(PYTHON)" ]; then \
	      echo "error: PYTHON=$(PYTHON) is Python $$v; make setup supports $(SUPPORTED)" \
	        "(onnxruntime==1.32.0 has no wheels for 3.10 and older, numpy<2, which Triton's python stub needs," \
	        "none for 3.13 and newer)" >&2; exit 1; fi; \
	  done; \
	  if [ -z "$$chosen" ]; then \
	    echo "error: no supported Python found (tried: $(PYTHON_CANDIDATES)); make setup needs" \
	      "$(SUPPORTED): install one, or name it with PYTHON=/path/to/python3.11" >&2; exit 1; fi; \
	  echo "creating $(VENV) with $$chosen (Python $$($$chosen -c '$(PY_VERSION)'))"; \
	  $$chosen -m venv $(VENV) || exit 1; \
	fi; \
	v=$$($(BIN)/python -c '$(PY_VERSION)'); \
	case " $(PYTHON_VERSIONS) " in *" $$v "*) ;; *) \
	  echo "error: $(VENV) holds Python $$v; make setup supports $(SUPPORTED):" \
	    "rm -rf $(VENV) and run make setup again" >&2; exit 1;; esac; \
	if [ -n "$(PYTHON)" ] && [ "$$v" != "$$($(PYTHON) -c '$(PY_VERSION)' 2>/dev/null)" ]; then \
	  echo "error: $(VENV) holds Python $$v, not PYTHON=$(PYTHON)'s: rm -rf $(VENV) and run make setup again" >&2; \
	  exit 1; fi
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch first, alone (see TORCH_INDEX above): the project's torch==$(TORCH_VERSION) pin is then met, and
	# torch's own dependencies come with the rest from pip's usual sources.
	@$(BIN)/python -m pip install -q --no-deps "torch==$(TORCH_VERSION)+cpu" --extra-index-url $(TORCH_INDEX) || { \
	  echo "error: no CPU build of torch $(TORCH_VERSION) for Python $$($(BIN)/python -c '$(PY_VERSION)') is" \
	    "reachable: neither $(TORCH_INDEX) nor pip's configured sources (index, find-links) gave" \
	    "torch==$(TORCH_VERSION)+cpu. Not falling back to PyPI's torch, a multi-GB CUDA build: get online," \
	    "set TORCH_INDEX to a mirror of PyTorch's CPU index, or put the +cpu wheel in a find-links directory." >&2; \
	  exit 1; }
	$(BIN)/python -m pip install -q -e ".[test]"
	# tritonserver binary (python backend) for local serving; its own deps are already covered.
	$(BIN)/python -m pip install -q --no-deps $(PYTRITON)
	@$(BIN)/python -c '$(STUB_CHECK)' || \
	  echo "warning: the export tools are installed, but 'exporter serve' (and make demo / make test) will refuse" \
	    "to start Triton with this Python, for the reasons above" >&2
	@touch $(STAMP)

demo: setup
	$(BIN)/python scripts/demo.py

test: setup
	$(BIN)/python -m pytest -q -ra

# The unit tier (tests/conftest.py assigns tiers): in-process, under a minute on 2 cores.
check: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m unit

# GPU host: its own environment (.venv-gpu, see scripts/gpu.sh), a repository built for the cuda target per
# precision, the real Triton and the served benchmark (docs/benchmarks/gpu-<date>-served.*). Needs no `make setup`.
# make gpu-bench [PRECISIONS=fp16,bf16,int4] [WHEEL_PARTS=dir] [PYTHON=python3] [GPU_SUITE=served|peers|int8|large|memory|all]
gpu-bench:
	scripts/gpu.sh

clean:
	rm -rf $(VENV) model_repository/*/ build dist *.egg-info
