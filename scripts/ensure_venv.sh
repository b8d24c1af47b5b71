#!/usr/bin/env bash
# Create ./.venv and install o2o into it (editable, with dev tools) when missing or stale.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.o2o-installed"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "o2o: creating virtualenv in $venv" >&2
  "${PYTHON:-python3}" -m venv "$venv"
fi
if [[ ! -f "$stamp" || "$root/pyproject.toml" -nt "$stamp" ]]; then
  echo "o2o: installing o2o and its dependencies into $venv (first run only)" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[dev]"
  touch "$stamp"
fi
