"""`bench/gpu.py --smoke` as its docstring says to run it: one subprocess,
the whole precision x XLA x packing x budget matrix through the pipeline's
encode path, checked from its last line (one JSON object)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import corpora

pytestmark = pytest.mark.bench

ROOT = corpora.ROOT


def test_smoke_runs_every_row_of_the_matrix():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', HF_HUB_OFFLINE='1')
  proc = subprocess.run([sys.executable, 'bench/gpu.py', '--smoke'],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  summary = json.loads(lines[-1])
  rows = summary['rows']
  # 3 precisions x XLA off/on x packing off/on x the smoke budgets, each
  # once.
  budgets = sorted({r['budget'] for r in rows})
  assert len(budgets) >= 2
  assert sorted((r['precision'], r['xla'], r['packing'], r['budget'])
                for r in rows) == (
      sorted((p, x, k, b) for p in ('fp32', 'bf16', 'fp16')
             for x in ('off', 'on') for k in ('off', 'on') for b in budgets))
  # The markdown table: a header, its rule and one line per row.
  table = [line for line in lines if line.startswith('| ')]
  assert table[0].startswith('| precision | xla | packing | budget |')
  assert len(table) == 1 + len(rows)
  docs = summary['docs']
  assert docs == summary['docs_asked'] > 0
  for r in rows:
    where = (r['precision'], r['xla'], r['packing'], r['budget'])
    assert 'error' not in r, (where, r['error'])
    assert r['docs'] == docs and r['failed'] == 0, where
    assert r['handler_counters']['documents_embedded'] == docs, where
    assert r['tokens_per_second'] > 0 and r['docs_per_second'] > 0, where
    assert 0 < r['padding_efficiency'] <= 1, where
    assert r['padded_tokens'] >= r['tokens'], where
    assert r['shapes'] >= 1 and r['encoder_calls'] >= r['shapes'], where
    assert len(r['encoder_shapes']) == r['shapes'], where
    assert sum(calls for _, _, calls in r['encoder_shapes']) == (
        r['encoder_calls']), where
    # The warm-up ran every shape the timed pass did: no compilation inside
    # the timing.
    assert r['shapes_not_warmed'] == 0, where
    assert r['warmup_seconds'] > 0 and r['tflop'] > 0, where
    assert r['min_cosine_vs_fp32'] >= 0.99, where
  # The same documents, the same real tokens in every configuration.
  assert len({r['tokens'] for r in rows}) == 1
  # Low precision really ran in low precision, and XLA changes only
  # rounding.
  for r in rows:
    if r['precision'] != 'fp32':
      assert r['max_rel_diff_vs_fp32'] > 0, r
    elif r['xla'] == 'on':
      assert r['max_rel_diff_vs_fp32'] < 1e-4, r
  # Packed rows: the same documents in fewer padded tokens, the same
  # embeddings up to rounding, and under XLA one shape per row length.
  by_key = {(r['precision'], r['xla'], r['packing'], r['budget']): r
            for r in rows}
  lengths = set(summary['packed_row_lengths'])
  assert max(lengths) == summary['max_seq_length']
  for (precision, xla, packing, budget), r in by_key.items():
    if packing == 'off':
      assert r.get('max_abs_diff_vs_bucketed') is None, r
      continue
    bucketed = by_key[precision, xla, 'off', budget]
    where = (precision, xla, budget)
    assert r['padded_tokens'] < bucketed['padded_tokens'], where
    assert r['padding_efficiency'] > bucketed['padding_efficiency'], where
    assert r['encoder_calls'] <= bucketed['encoder_calls'], where
    assert {length for _, length, _ in r['encoder_shapes']} <= lengths, where
    if xla == 'on':
      per_length = [length for _, length, _ in r['encoder_shapes']]
      assert len(per_length) == len(set(per_length)), (where, r)
    if precision == 'fp32':
      assert r['max_abs_diff_vs_bucketed'] < 1e-5, (where, r)
    else:
      # Rounded differently, but still the same documents' vectors.
      assert r['max_abs_diff_vs_bucketed'] < 0.05, (where, r)
  assert summary['model']['config']['model_type'] == 'roberta'
  assert summary['total_seconds'] > 0
