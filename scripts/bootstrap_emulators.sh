#!/usr/bin/env bash
# Creates or refreshes .venv-emulators/ from requirements-emulators.txt: the
# local GCS and BigQuery emulators that the tests start on 127.0.0.1. Kept
# apart from .venv so that their pins and pytest plugins stay out of the
# project's environment. Idempotent (a stamp of the lock's hash).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python_bin="${PYTHON:-python3.11}"
venv="$root/.venv-emulators"
if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv" >&2
  "$python_bin" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'pip==26.3' 2>&1 | grep -v '^WARNING: Location' || true
fi
stamp="$venv/.installed-$(sha256sum requirements-emulators.txt | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "bootstrap: installing requirements-emulators.txt" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check --no-compile -r requirements-emulators.txt 2>&1 | grep -v '^WARNING: Location' || true
  # Bytecode in parallel, as scripts/bootstrap.sh makes it.
  "$venv/bin/python" -m compileall -q -q -j 0 "$venv"/lib/python3*/site-packages || true
  "$venv/bin/python" -c "import bqemulator, gcp_storage_emulator, numpy" \
    || { echo "bootstrap: emulator install check failed" >&2; exit 1; }
  touch "$stamp"
fi
