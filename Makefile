# Everyday commands; `.ci/run` does the same on a fresh machine (services, venv, then check).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3.11

.PHONY: install check lint typecheck test demo clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

install: $(PY)  ## Create .venv and install gridshift with the dev and cpu extras
	$(PY) -m pip install -e ".[dev,cpu]"

check: $(PY)  ## Lint, format check, types, tests (what CI runs)
	PATH="$(abspath $(VENV))/bin:$$PATH" scripts/check.sh

lint: $(PY)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(PY)
	$(PY) -m mypy

test: $(PY)  ## The README's test command
	$(PY) -m pytest -q

demo: $(PY)  ## The main job on the embedded default (SQLite, in-process broker, tiny CPU model)
	$(VENV)/bin/gridshift demo

clean:
	rm -rf .gridshift build dist .pytest_cache .mypy_cache .ruff_cache
