"""A nightly run whose --output is its --previous, killed (SIGKILL) at any
point: the prefix is never empty, and the same command run again succeeds
and leaves exactly the output a full run of that night gives, one record
per id.

The kill points are the commit's steps (transforms/backends/files.py:
commit), reached with transforms/failpoints.py: the job really is killed
there, which no signal sent from outside could time. `write`: a temporary
shard written (the old shards untouched); `commit:journal`: the journal
written, nothing renamed; `commit:rename`: half the new shards renamed
over old ones of the same name; `commit:stale`: every new shard in place,
old ones deleted, the temporary folder not yet.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys

import pytest

from pipeline import run
from tests import corpora
from tests import emulators
from tests import helpers
from tests import postgres
from transforms import failpoints

pytestmark = pytest.mark.services

SHARDS = '8'


def _days(tmp_path):
  docs = corpora.sample_docs(120)
  day1 = corpora.write_jsonl(str(tmp_path / 'day1.jsonl'), docs)
  changed = {d['id'] for d in docs[::7]}
  day2_docs = [dict(d, text=d['text'] + ' (revised)') if d['id'] in changed
               else d for d in docs[5:]] + corpora.sample_docs(10, 200)
  day2 = corpora.write_jsonl(str(tmp_path / 'day2.jsonl'), day2_docs)
  return day1, day2


@pytest.fixture(scope='module', params=['tfrecord', 'parquet'])
def nights(request, tmp_path_factory, minilm_export):
  """Day 1 (full) and a full run of day 2, the reference."""
  tmp = tmp_path_factory.mktemp(f'in-place-{request.param}')
  day1, day2 = _days(tmp)
  common = ['--model_dir', minilm_export, '--output_format', request.param,
            '--num_shards', SHARDS, '--progress_every', '0']
  full2 = str(tmp / 'full2' / 'emb')
  assert run.main(['--input', day2.pattern, '--output', full2, *common]) == 0
  return day1, day2, common, {r['id']: r for r in corpora.read_output(full2)}


def _shards(prefix: str) -> list:
  return sorted(p for p in glob.glob(prefix + '-*-of-*')
                if '_dead_letter' not in p)


@pytest.mark.parametrize('point', ['write', 'commit:journal',
                                   'commit:rename', 'commit:stale'])
def test_a_nightly_run_into_its_previous_survives_a_kill(
    tmp_path, nights, point, capsys):
  day1, day2, common, want = nights
  prefix = str(tmp_path / 'out' / 'emb')
  assert run.main(['--input', day1.pattern, '--output', prefix,
                   *common]) == 0
  capsys.readouterr()
  nightly = ['--input', day2.pattern, '--output', prefix, '--previous',
             prefix, *common]
  killed = subprocess.run(
      [sys.executable, '-m', 'pipeline.run', *nightly], cwd=corpora.ROOT,
      capture_output=True, text=True, timeout=600,
      env={**os.environ, failpoints.ENV: point})
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  # Never empty: the old shards, the new ones, or both side by side.
  assert _shards(prefix), os.listdir(tmp_path / 'out')
  if point == 'write':  # nothing was put in place yet
    assert len(_shards(prefix)) == int(SHARDS)
  # The same command again: it finishes the interrupted commit first.
  assert run.main(nightly) == 0
  out, err = capsys.readouterr()
  summary = helpers.summary_of(out)
  assert summary['reconciled'] is True
  if point.startswith('commit:'):
    assert 'was stopped while it put its' in err, err
  got = corpora.read_output(prefix)
  assert len(got) == len({r['id'] for r in got})  # one record per id
  helpers.assert_same_records({r['id']: r for r in got}, want)
  assert len(_shards(prefix)) == int(SHARDS)
  assert glob.glob(str(tmp_path / 'out' / 'beam-temp-*')) == []


def test_a_postgresql_night_killed_after_one_batch(tmp_path, minilm_export,
                                                  capsys):
  """PostgreSQL takes a night's changes in a transaction per batch: killed
  after one, the table holds part of the night; the retry reads it as
  its --previous and finishes it."""
  day1, day2 = _days(tmp_path)
  common = ['--model_dir', minilm_export, '--progress_every', '0']
  full2 = str(tmp_path / 'full2' / 'emb')
  assert run.main(['--input', day2.pattern, '--output', full2, *common]) == 0
  want = {r['id']: r for r in corpora.read_output(full2)}
  with postgres.running() as server:
    uri = server.uri('emb')
    assert run.main(['--input', day1.pattern, '--output', uri,
                     *common]) == 0
    hashes = lambda records: {r['id']: r['content_hash'] for r in records}  # noqa: E731
    before = hashes(corpora.read_output(uri))
    nightly = ['--input', day2.pattern, '--output', uri, '--previous', uri,
               *common]
    killed = subprocess.run(
        [sys.executable, '-m', 'pipeline.run', *nightly], cwd=corpora.ROOT,
        capture_output=True, text=True, timeout=600,
        env={**os.environ, failpoints.ENV: 'postgres:batch'})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # Part of the night: not day 1's table any more, not day 2's yet.
    partial = hashes(corpora.read_output(uri))
    assert partial != before and partial != hashes(want.values())
    capsys.readouterr()
    assert run.main(nightly) == 0
    got = corpora.read_output(uri)
  assert len(got) == len({r['id'] for r in got})
  helpers.assert_same_records({r['id']: r for r in got}, want)


def test_a_bigquery_night_killed_before_its_merge(tmp_path, minilm_export,
                                                 capsys):
  """BigQuery applies a night with one MERGE: killed before it, the table
  is day 1's whole; the retry merges, and removes what the killed run
  staged."""
  day1, day2 = _days(tmp_path)
  full2 = str(tmp_path / 'full2' / 'emb')
  assert run.main(['--input', day2.pattern, '--output', full2, '--model_dir',
                   minilm_export, '--progress_every', '0']) == 0
  want = {r['id']: r for r in corpora.read_output(full2)}
  with emulators.running(bigquery=True, datasets=['inplace']) as (emus, _):
    table = f'bq://{emulators.PROJECT}.inplace.emb'
    common = ['--model_dir', minilm_export, '--progress_every', '0',
              '--project', emulators.PROJECT,
              '--temp_location', 'gs://bucket/tmp']
    assert run.main(['--input', day1.pattern, '--output', table,
                     *common]) == 0
    day1_rows = sorted((r['id'], r['content_hash'])
                       for r in corpora.read_output(table))
    nightly = ['--input', day2.pattern, '--output', table, '--previous',
               table, *common]
    # The job in a process of its own, with the emulators' endpoints and
    # the test-only BigQuery client patches (tests/worker_site).
    killed = subprocess.run(
        [sys.executable, '-m', 'pipeline.run', *nightly], cwd=corpora.ROOT,
        capture_output=True, text=True, timeout=600,
        env={**os.environ, **emulators.worker_env(emus),
             failpoints.ENV: 'bigquery:merge'})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert sorted((r['id'], r['content_hash'])
                  for r in corpora.read_output(table)) == day1_rows
    changes = 'gs://bucket/tmp/beam-text-embed-changes/**'
    from apache_beam.io.filesystems import FileSystems
    assert FileSystems.match([changes])[0].metadata_list  # staged, left
    capsys.readouterr()
    assert run.main(nightly) == 0
    got = corpora.read_output(table)
    assert not FileSystems.match([changes])[0].metadata_list
  assert len(got) == len({r['id'] for r in got})
  helpers.assert_same_records({r['id']: r for r in got}, want)
