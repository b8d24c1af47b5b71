#!/usr/bin/env bash
# The test suite: install into ./.venv if needed, then run every test, learning tests included.
# `./test.sh --fast` skips the tests marked slow; other arguments go to pytest.
# The tests run in one worker process per core (pytest-xdist, at most 4: each worker holds its
# own JAX runtime); a test file stays on one worker so its module fixtures are built once.
# Tests marked serial start their own worker processes (a local Ray cluster) and run alone,
# after the others. O2O_TEST_WORKERS=1 runs everything in this process (e.g. for pdb).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/ensure_venv.sh
select="slow or not slow"
if [[ "${1:-}" == "--fast" ]]; then
  shift
  select="not slow"
fi
cores="$(nproc 2>/dev/null || echo 1)"
workers="${O2O_TEST_WORKERS:-$((cores < 4 ? cores : 4))}"
if [[ "$workers" -le 1 ]]; then
  exec .venv/bin/python -m pytest -m "$select" "$@"
fi
# pytest exits 5 when the selection holds no test: fine for one of the two runs.
parallel=0
.venv/bin/python -m pytest -m "($select) and not serial" -n "$workers" --dist loadfile "$@" ||
  parallel=$?
serial=0
.venv/bin/python -m pytest -m "($select) and serial" "$@" || serial=$?
if [[ "$parallel" -eq 5 && "$serial" -eq 5 ]]; then exit 5; fi
for status in "$parallel" "$serial"; do
  if [[ "$status" -ne 0 && "$status" -ne 5 ]]; then exit "$status"; fi
done
