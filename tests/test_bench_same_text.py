"""`bench/same_text.py --smoke` as docs/performance.md says to run it:
corpora with and without identical texts, each run in its own process,
checked from the last line (one JSON object). Counts are asserted; times
are not (a smoke corpus is all start-up)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import corpora
from tests import helpers
from tests import readme

pytestmark = pytest.mark.bench

ROOT = corpora.ROOT


def test_smoke_counts_the_copies_and_computes_less():
  argv = readme.command('bench/same_text.py', '--smoke')
  assert argv[0] == '.venv/bin/python'
  env = dict(os.environ, HF_HUB_OFFLINE='1')
  proc = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = helpers.summary_of(proc.stdout)
  cases, ratios = out['cases'], out['ratios']
  one, distinct = cases['one_text'], cases['distinct']
  assert one['documents'] == distinct['documents'] == 120
  assert one['same_text'] == 119 and distinct['same_text'] == 0
  dup, nodup = cases['dup30'], cases['nodup']
  assert dup['documents'] == nodup['documents']
  copies = dup['documents'] - round(dup['documents'] / 1.3)
  assert dup['same_text'] == copies > 0 and nodup['same_text'] == 0
  assert dup['tokens_computed'] < nodup['tokens_computed']
  assert ratios['dup30_vs_nodup_tokens_computed'] == round(
      dup['tokens_computed'] / nodup['tokens_computed'], 3)
  # The scaled case (memory) belongs to the full sizes.
  assert set(cases) == {'one_text', 'distinct', 'dup30', 'nodup'}
