# Everyday commands; `.ci/run` does the same on a fresh machine (services, venv, then check).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3.11

.PHONY: install check lint typecheck test demo clean

STAMP := $(VENV)/.installed

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# Re-installs when pyproject.toml changes; torch==2.13.0 (cpu extra) comes from the machine's local CPU build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[dev,cpu]"
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install gridshift with the dev and cpu extras

check: $(STAMP)  ## Lint, format check, types, tests (what CI runs)
	PATH="$(abspath $(VENV))/bin:$$PATH" scripts/check.sh

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

test: $(STAMP)  ## The README's test command
	$(PY) -m pytest -q

demo: $(STAMP)  ## The main job on the embedded default (SQLite, in-process broker, tiny CPU model)
	$(VENV)/bin/gridshift demo

clean:
	rm -rf .gridshift build dist .pytest_cache .mypy_cache .ruff_cache
