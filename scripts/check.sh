#!/usr/bin/env bash
# The project's checks, in the order CI runs them: lint, format, types, tests.
# Run inside the virtualenv (`make check` or `.ci/run` do that). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "ruff check ."
python -m ruff check .
step "ruff format --check ."
python -m ruff format --check .
step "mypy (scheduler, workers; see [tool.mypy])"
python -m mypy
step "make test (the README's test command: python -m pytest -q) $*"
set +e
if [ "$#" -gt 0 ]; then python -m pytest -q "$@"; else make test; fi
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests (exit 5): failing, a check that tests nothing is not a pass" >&2
  exit 1
fi
exit "$rc"
