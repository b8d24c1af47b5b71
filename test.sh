#!/usr/bin/env bash
# The test suite: install into ./.venv if needed, then run every test, learning tests included.
# `./test.sh --fast` skips the tests marked slow; other arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/ensure_venv.sh
if [[ "${1:-}" == "--fast" ]]; then
  shift
  exec .venv/bin/python -m pytest -m "not slow" "$@"
fi
exec .venv/bin/python -m pytest -m "slow or not slow" "$@"
