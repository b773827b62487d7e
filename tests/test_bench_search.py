"""`bench/search.py --smoke` as docs/performance.md says to run it: a real
run of the job, two larger outputs made from it, and the documented search
command on each, in its own process. The figures are checked from the last
line (one JSON object); times and memory are printed, not asserted (a
smoke output is all start-up)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import corpora
from tests import readme

pytestmark = pytest.mark.bench

ROOT = corpora.ROOT


def test_smoke_searches_both_sizes():
  argv = readme.command('bench/search.py', '--smoke')
  assert argv[0] == '.venv/bin/python'
  env = dict(os.environ, HF_HUB_OFFLINE='1')
  proc = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  out = json.loads(lines[-1])
  assert [s['records'] for s in out['sizes']] == [1000, 4000]
  assert out['records_ratio'] == 4.0
  assert all(s['seconds'] > 0 and s['peak_mb'] > 0 for s in out['sizes'])
  # The smaller output's hits, as the command prints them: three queries,
  # ten hits each, ranked.
  queries = [line for line in lines if line.startswith('query: ')]
  assert len(queries) == 3
  hits = [line.split() for line in lines
          if line.split() and line.split()[0].isdigit()]
  assert [int(h[0]) for h in hits] == list(range(1, 11)) * 3
  assert all(h[2].startswith('n') for h in hits)
