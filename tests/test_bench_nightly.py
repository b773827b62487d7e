"""`bench/nightly.py --smoke` as docs/incremental.md says to run it: a full
run and a nightly run at two corpus sizes, each in its own process, checked
from the last line (one JSON object). Figures are not asserted against
targets: a smoke corpus is all start-up, and timing belongs to the full
benchmark (docs/incremental.md quotes it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import corpora

ROOT = corpora.ROOT
sys.path.insert(0, os.path.join(ROOT, 'bench'))
import nightly  # noqa: E402

pytestmark = pytest.mark.bench


def test_the_days_differ_as_stated(tmp_path):
  day1, day2, want = nightly.write_days(str(tmp_path), 2000)
  with open(day1, encoding='utf-8') as f:
    first = {d['id']: d['text'] for d in map(json.loads, f)}
  with open(day2, encoding='utf-8') as f:
    second = {d['id']: d['text'] for d in map(json.loads, f)}
  assert len(first) == 2000 and len(second) == want['read'] == 1998
  assert len(set(first) - set(second)) == want['removed'] == 2
  assert sum(first[i] != t for i, t in second.items()) == want[
      'changed'] == 10


def test_smoke_runs_full_and_nightly_at_two_sizes():
  env = dict(os.environ, HF_HUB_OFFLINE='1')
  proc = subprocess.run([sys.executable, 'bench/nightly.py', '--smoke'],
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  summary = json.loads(lines[-1])
  sizes = summary['sizes']
  assert [s['documents'] for s in sizes] == [300, 1500]
  for row in sizes:
    n = row['documents']
    # The nightly run embedded exactly the changed documents and reused
    # the others (the script also checks this, and fails otherwise).
    changed = max(1, round(n * nightly.CHANGED))
    removed = max(1, round(n * nightly.REMOVED))
    assert (row['embedded'], row['removed']) == (changed, removed)
    assert row['reused'] == n - removed - changed
    for key in ('full_s', 'nightly_s'):
      assert row[key] > 0, key
    # A TensorFlow process tree holds hundreds of MB; 0 would mean the
    # sampler saw nothing.
    for key in ('full_peak_mb', 'nightly_peak_mb'):
      assert row[key] > 200, key
  large = sizes[-1]
  assert summary['nightly_time_share'] == round(
      large['nightly_s'] / large['full_s'], 4)
  assert summary['nightly_memory_growth'] == round(
      large['nightly_peak_mb'] / sizes[0]['nightly_peak_mb'], 4)
  header = next(i for i, line in enumerate(lines)
                if line.strip().startswith('documents'))
  assert [line.split()[0] for line in lines[header + 1:header + 3]] == [
      '300', '1,500']
