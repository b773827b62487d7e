#!/usr/bin/env bash
# The whole test suite, set-up included: creates .venv/ from the pinned locks
# (runtime + test) and .venv-emulators/ (local GCS and BigQuery emulators,
# which the tests start on 127.0.0.1), then runs pytest offline, in two
# processes by test file (pytest-xdist). Extra arguments go to pytest
# (-n 0 runs it in one process).
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh --test
scripts/bootstrap_emulators.sh
scripts/bootstrap_browser.sh
scripts/fetch_gpt2_vocab.sh
export TF_CPP_MIN_LOG_LEVEL=2 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest -n 2 --dist loadfile tests "$@"
