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

The runs every case starts from are made once for the module: day 1 in
each file format (each case copies it into a folder of its own, which its
nightly run then changes in place) and the full runs of day 2 that the
cases compare with.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal

import pytest

from pipeline import run
from tests import corpora
from tests import emulators
from tests import helpers
from tests import postgres
from transforms import failpoints

pytestmark = pytest.mark.services

SHARDS = '8'


@pytest.fixture(scope='module')
def days(tmp_path_factory):
  """The two nights' inputs: day 2 drops 5 documents, revises every 7th
  and adds 10."""
  tmp = tmp_path_factory.mktemp('in-place-days')
  docs = corpora.sample_docs(120)
  day1 = corpora.write_jsonl(str(tmp / 'day1.jsonl'), docs)
  changed = {d['id'] for d in docs[::7]}
  day2_docs = [dict(d, text=d['text'] + ' (revised)') if d['id'] in changed
               else d for d in docs[5:]] + corpora.sample_docs(10, 200)
  day2 = corpora.write_jsonl(str(tmp / 'day2.jsonl'), day2_docs)
  return day1, day2


@pytest.fixture(scope='module')
def full_runs(tmp_path_factory, minilm_export, days):
  """Full runs of both days in a file format, each made once for the module:
  a function of the format giving (day 1 inputs, day 2's, the runs' flags,
  the folder holding day 1's output, day 2's records by id)."""
  made = {}

  def of(output_format: str) -> tuple:
    if output_format not in made:
      tmp = tmp_path_factory.mktemp(f'in-place-{output_format}')
      day1, day2 = days
      common = ['--model_dir', minilm_export, '--output_format',
                output_format, '--num_shards', SHARDS,
                '--progress_every', '0']
      assert run.main(['--input', day1.pattern, '--output',
                       str(tmp / 'day1' / 'emb'), *common]) == 0
      full2 = str(tmp / 'full2' / 'emb')
      assert run.main(['--input', day2.pattern, '--output', full2,
                       *common]) == 0
      made[output_format] = (day1, day2, common, str(tmp / 'day1'), {
          r['id']: r for r in corpora.read_output(full2)})
    return made[output_format]

  return of


@pytest.fixture(params=['tfrecord', 'parquet'])
def nights(request, full_runs):
  """Day 1 (full, in its own folder: a case copies it) and a full run of
  day 2, the reference, in one file format."""
  return full_runs(request.param)


@pytest.fixture
def reference(full_runs) -> dict:
  """Day 2's records by id, of a full run, for the cases on PostgreSQL and
  BigQuery (the records do not depend on the file format)."""
  return full_runs('tfrecord')[-1]


def _shards(prefix: str) -> list:
  return sorted(p for p in glob.glob(prefix + '-*-of-*')
                if '_dead_letter' not in p)


@pytest.mark.parametrize('point', ['write', 'commit:journal',
                                   'commit:rename', 'commit:stale'])
def test_a_nightly_run_into_its_previous_survives_a_kill(
    tmp_path, nights, point, capsys):
  _, day2, common, day1_folder, want = nights
  # Day 1's output, in a folder of this case's own.
  shutil.copytree(day1_folder, tmp_path / 'out')
  prefix = str(tmp_path / 'out' / 'emb')
  assert len(_shards(prefix)) == int(SHARDS)
  capsys.readouterr()
  nightly = ['--input', day2.pattern, '--output', prefix, '--previous',
             prefix, *common]
  killed = helpers.run_command(
      helpers.job_command(*nightly),
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


def test_a_postgresql_night_killed_after_one_batch(minilm_export, capsys,
                                                  days, reference):
  """PostgreSQL takes a night's changes in a transaction per batch: killed
  after one, the table holds part of the night; the retry reads it as
  its --previous and finishes it."""
  day1, day2 = days
  common = ['--model_dir', minilm_export, '--progress_every', '0']
  want = reference
  with postgres.running() as server:
    uri = server.uri('emb')
    assert run.main(['--input', day1.pattern, '--output', uri,
                     *common]) == 0
    hashes = lambda records: {r['id']: r['content_hash'] for r in records}  # noqa: E731
    before = hashes(corpora.read_output(uri))
    nightly = ['--input', day2.pattern, '--output', uri, '--previous', uri,
               *common]
    killed = helpers.run_command(
        helpers.job_command(*nightly),
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


def test_a_bigquery_night_killed_before_its_merge(minilm_export, capsys,
                                                 days, reference):
  """BigQuery applies a night with one MERGE: killed before it, the table
  is day 1's whole; the retry merges, and removes what the killed run
  staged."""
  day1, day2 = days
  want = reference
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
    killed = helpers.run_command(
        helpers.job_command(*nightly),
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
