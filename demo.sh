#!/usr/bin/env bash
# The main job: install into ./.venv if needed, then run `o2o demo` (extra args pass through).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/ensure_venv.sh
exec .venv/bin/o2o demo "$@"
