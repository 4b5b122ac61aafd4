# emb-provider: `make demo` runs the main job end to end, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTRITON := nvidia-pytriton==0.7.0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: setup demo test clean

setup: $(STAMP)

# Re-installs only when pyproject.toml or this Makefile changed (idempotent, quick otherwise).
$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	# tritonserver binary (python backend) for local serving; its own deps are already covered.
	$(BIN)/python -m pip install -q --no-deps $(PYTRITON)
	@touch $(STAMP)

demo: setup
	$(BIN)/python scripts/demo.py

test: setup
	$(BIN)/python -m pytest -q -ra

clean:
	rm -rf $(VENV) model_repository/*/ build dist *.egg-info
