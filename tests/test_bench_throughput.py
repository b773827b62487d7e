"""`bench/throughput.py --smoke` as docs/performance.md says to run it: every
case (the pipeline packed and bucketed, in bf16, under XLA packed and
bucketed, the bare loop in fp32 and bf16, sentence-transformers in fp32 and
bf16, MLTransform, fixed128) in its own process, checked from the
last line (one JSON object). Speed is not asserted: a smoke corpus is
all start-up, and timing belongs to the full run. Accuracy is: the bf16
run's vectors against the fp32 run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import corpora

pytestmark = pytest.mark.bench

CASES = ('bare', 'bare_bf16', 'pipeline', 'pipeline_bucketed',
         'pipeline_bf16', 'pipeline_xla', 'pipeline_xla_bucketed', 'st',
         'st_bf16', 'mltransform', 'fixed128')
RATIOS = ('ratio_bf16_vs_st_bf16', 'ratio_fp32_vs_st_fp32', 'ratio_vs_bare',
          'ratio_vs_bare_bf16', 'ratio_bf16_vs_fp32_encoder',
          'ratio_bf16_vs_fp32_bare', 'ratio_vs_mltransform',
          'padding_efficiency', 'ratio_packed_vs_bucketed',
          'ratio_packed_vs_bucketed_encoder', 'ratio_xla_packed_vs_bucketed',
          'padding_efficiency_xla')


def _smoke(script: str) -> tuple[list, dict]:
  """A bench script's --smoke run as documented: its output lines and its
  last line's JSON object."""
  env = dict(os.environ, HF_HUB_OFFLINE='1', TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run([sys.executable, script, '--smoke'],
                        cwd=corpora.ROOT, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  return lines, json.loads(lines[-1])


def test_smoke_runs_every_case_and_prints_the_ratios():
  lines, summary = _smoke('bench/throughput.py')
  for key in RATIOS:
    assert isinstance(summary[key], (int, float)) and summary[key] > 0, key
  assert 0 < summary['padding_efficiency'] <= 1
  # Peak memory of the run on twice the corpus against the 1x run: flat
  # (the full benchmark measured 1.5% at 10x; a process's peak varies by a
  # few percent from run to run). Memory that grew with the corpus would
  # break this bound long before 10x.
  assert isinstance(summary['rss_growth'], float)
  assert -0.15 < summary['rss_growth'] < 0.15, summary['rss_growth']
  cases = summary['cases']
  assert set(CASES) <= set(cases)
  docs = cases['pipeline']['documents']
  for name in CASES:
    case = cases[name]
    # Every case embedded every document of the same corpus.
    assert case['documents'] == docs, name
    assert case['wall_s'] >= case['inner_s'] > 0, name
    assert case['peak_rss_mb'] > 100, name
    assert 0 < case['padding_efficiency'] <= 1, name
  # Bucketed batching pads less than padding everything to 128.
  assert (cases['pipeline']['padding_efficiency'] >
          cases['fixed128']['padding_efficiency'])
  # The same texts give the same real tokens whatever the precision, the
  # packing or XLA.
  for name in ('pipeline_bf16', 'bare', 'bare_bf16', 'pipeline_bucketed',
               'pipeline_xla', 'pipeline_xla_bucketed'):
    assert cases['pipeline']['tokens'] == cases[name]['tokens'], name
  # The default runs packed rows, --packing off length buckets.
  assert cases['pipeline']['packing'] == 'packed rows'
  assert cases['pipeline_bucketed']['packing'] == 'length buckets'
  assert cases['pipeline_xla']['packing'] == 'packed rows'
  # Under XLA, one shape per row length, and packed rows pad less than
  # buckets computed at their full row counts.
  assert summary['xla_shapes'] == summary['xla_row_lengths']
  assert (cases['pipeline_xla']['encoder_shapes'] <
          cases['pipeline_xla_bucketed']['encoder_shapes'])
  assert (summary['padding_efficiency_xla'] >
          summary['padding_efficiency_xla_bucketed'])
  # The memory runs: the larger corpus has twice the documents.
  assert cases['pipeline_0.04x']['documents'] == 2 * cases[
      'pipeline_0.02x']['documents']
  # bf16 against fp32, every document of the two pipeline runs: the
  # accuracy docs/performance.md states (min cosine 0.999).
  cosine = summary['bf16_vs_fp32_cosine']
  assert cosine['documents'] == docs
  assert 0.999 <= cosine['min'] <= cosine['p1'] <= cosine['median'] <= 1.0
  # Start-up, beside sentence-transformers' model load: within the wall
  # time of its case.
  for name in ('pipeline', 'pipeline_bf16', 'st', 'st_bf16'):
    assert 0 < cases[name]['startup_s'] < cases[name]['wall_s'], name
  # The machine: its CPU's name and the flags that decide bf16's speed.
  assert summary['cpu']['cpus'] >= 1
  assert set(summary['cpu']['flags']) <= {
      'avx2', 'avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_bf16',
      'amx_tile'}
  assert lines[0].startswith('cpu: ')
  # The table: a header and one line per case.
  header = next(i for i, line in enumerate(lines)
                if line.startswith('case '))
  assert [line.split()[0] for line in lines[header + 1:header + 14]] == [
      *CASES, 'pipeline_0.02x', 'pipeline_0.04x']


# Op kernels that are matrix products, as TensorFlow's profiler names them.
PRODUCTS = ('_MklNativeFusedMatMul', '_MklMatMul', 'MatMul', '_FusedMatMul')


def test_ops_smoke_profiles_both_precisions():
  """`bench/ops.py --smoke` as docs/performance.md says to run it (here,
  after the smoke run above, which exports the preset it profiles): the
  per-op profile of the packed call in fp32 and bf16, from its last line
  (one JSON object)."""
  lines, summary = _smoke('bench/ops.py')
  assert lines[0].startswith('cpu: ')
  assert (summary['rows'], summary['length']) == (2, 16)
  assert set(summary['precisions']) == {'fp32', 'bf16'}
  for precision, figures in summary['precisions'].items():
    assert figures['ms_per_call'] > 0 and figures['gflops'] > 0, precision
    assert 0 < figures['products_share'] <= 1, precision
    ops = figures['ops_ms']
    # The projections ran as matrix-product kernels, and took time.
    assert any(ops.get(name, 0) > 0 for name in PRODUCTS), (precision, ops)
  # bf16 casts what enters and leaves its products; fp32 has nothing to
  # cast in its layers.
  assert summary['precisions']['bf16']['ops_ms'].get('Cast', 0) > 0
  assert summary['ratio_bf16_vs_fp32'] > 0
