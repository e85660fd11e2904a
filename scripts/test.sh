#!/usr/bin/env bash
# The test command (README command 2; .ci/run calls it): services up, virtualenv set up from the
# project's own files, lint, the architecture's import contracts, then the whole suite. Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-services.sh
bash scripts/ensure-browser.sh  # Debian's Chromium, for the web console's tests/browser
[ -x .venv/bin/python ] || python3 -m venv .venv
# torch first, pinned: this version's CPU wheel is at hand; a looser spec pulls a CUDA build.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[test]'
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/pytest -q "$@"
