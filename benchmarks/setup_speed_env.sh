#!/usr/bin/env bash
# Create .venv-speed for benchmarks/speed.py: o2o (editable) + CPU torch 2.13.0 + d3rlpy 2.8.1.
# A separate venv because d3rlpy pins gymnasium==1.0.0 and o2o pins gymnasium 1.4.0; d3rlpy's
# update path (the only part the benchmark uses) does not touch gymnasium's changed API.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-speed"
pip_install() { "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }
if [[ ! -x "$venv/bin/python" ]]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
# torch before anything that depends on it, pinned, so pip never resolves another build.
pip_install "torch==2.13.0"
pip_install -e "$root"
pip_install -r "$root/benchmarks/requirements-speed.txt"
pip_install --no-deps "d3rlpy==2.8.1"
"$venv/bin/python" -c "import torch, d3rlpy, o2o; print('torch', torch.__version__, 'd3rlpy', d3rlpy.__version__)"
