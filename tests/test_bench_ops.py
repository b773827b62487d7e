"""`bench/ops.py --smoke` as docs/performance.md says to run it: the
per-op profile of an export's packed call in fp32 and bf16, from its last
line (one JSON object). The op names come from TensorFlow's profiler, so
the test checks that the products it attributes time to are there."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests import corpora

PRODUCTS = ('_MklNativeFusedMatMul', '_MklMatMul', 'MatMul', '_FusedMatMul')


def test_smoke_profiles_both_precisions(minilm_export):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, 'bench/ops.py', '--smoke', '--model_dir',
       minilm_export], cwd=corpora.ROOT, env=env, capture_output=True,
      text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  summary = json.loads(lines[-1])
  assert lines[0].startswith('cpu: ')
  assert (summary['rows'], summary['length']) == (2, 16)
  assert set(summary['precisions']) == {'fp32', 'bf16'}
  for precision, figures in summary['precisions'].items():
    assert figures['ms_per_call'] > 0 and figures['gflops'] > 0, precision
    ops = figures['ops_ms']
    # The projections ran as matrix-product kernels, and took time.
    assert any(ops.get(name, 0) > 0 for name in PRODUCTS), (precision, ops)
  # bf16 runs its products in bf16 (casts appear), fp32 has nothing to
  # cast in its encoder layers.
  assert summary['precisions']['bf16']['ops_ms'].get('Cast', 0) > 0
  assert summary['ratio_bf16_vs_fp32'] > 0
