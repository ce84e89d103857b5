#!/usr/bin/env bash
# Set up (if needed) and run the checks: ruff, then the whole test suite against real servers
# and the real model. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
