"""One writer per output (transforms/leases): two runs started together on
one output, on file, PostgreSQL and BigQuery outputs: exactly one runs,
the other is refused at launch (status 2) in one line naming the holder,
and the output equals a single run's, record by record. A holder killed
with SIGKILL does not block the next run.

Both runs start at once; the one that takes the lease is held just after
taking it (transforms/failpoints.py: lease:held) until the other has been
refused, so that the two overlap whatever the machine's speed. The rules
themselves (expiry, a holder provably gone, a renewal after a take-over)
are checked on the lease of a local file (tests/unit/test_lease_rules.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pipeline import run
from tests import corpora
from tests import emulators
from tests import helpers
from tests import postgres
from tests import readme
from transforms import failpoints
from transforms import leases

pytestmark = pytest.mark.services

# ------------------------------------------------------------ two real runs


def _start(argv, resume: str, extra_env=None) -> subprocess.Popen:
  env = {**os.environ, **(extra_env or {}),
         failpoints.PAUSE_ENV: 'lease:held', failpoints.RESUME_ENV: resume}
  return subprocess.Popen([sys.executable, '-m', 'pipeline.run', *argv],
                          cwd=corpora.ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _lease_command(*argv, env=None) -> subprocess.CompletedProcess:
  """python -m pipeline.lease, in a process of its own."""
  if argv[0] == '.venv/bin/python':  # a documented command
    argv = argv[3:]
  return subprocess.run([sys.executable, '-m', 'pipeline.lease', *argv],
                        cwd=corpora.ROOT, capture_output=True, text=True,
                        timeout=300, env=env)


def _documented_clear(output: str) -> list:
  """The documented `pipeline.lease --clear out/emb`, on this test's
  output."""
  return [output if a == 'out/emb' else a
          for a in readme.command('pipeline.lease', '--clear')]


def _race(argv, tmp_path, output: str, extra_env=None, show=None) -> dict:
  """Two runs of argv started together: the one refused, then the other
  let go. Returns what each did, and what pipeline.lease said meanwhile
  (`show`: the command that shows the lease)."""
  resume = str(tmp_path / 'resume')
  runs = [_start(argv, resume, extra_env), _start(argv, resume, extra_env)]
  deadline = time.monotonic() + 300
  refused = None
  while refused is None and time.monotonic() < deadline:
    refused = next((p for p in runs if p.poll() is not None), None)
    time.sleep(0.1)
  assert refused is not None, 'neither run was refused'
  winner = next(p for p in runs if p is not refused)
  refused_out, refused_err = refused.communicate()
  env = {**os.environ, **(extra_env or {})}
  shown = _lease_command(*(show or [output]), env=env)
  cleared = _lease_command(*_documented_clear(output), env=env)
  open(resume, 'w').close()
  out, err = winner.communicate(timeout=600)
  return {'refused': (refused.returncode, refused_err),
          'winner': (winner.returncode, out, err, winner.pid),
          'shown': shown, 'cleared': cleared}


def _check_race(race: dict) -> None:
  status, err = race['refused']
  winner_status, out, winner_err, pid = race['winner']
  assert winner_status == 0, winner_err[-3000:]
  assert helpers.summary_of(out)['reconciled'] is True
  assert status == 2, err[-3000:]
  line = err.strip().splitlines()[-1]
  assert line.startswith('pipeline.run: error: '), line
  assert 'is being written by another run' in line
  assert f'pid {pid} on {leases.this_host()}' in line
  assert 'python -m pipeline.lease --clear' in line
  assert race['shown'].returncode == 0
  assert f'held: pid {pid}' in race['shown'].stdout
  # A lease whose run is alive here is not cleared by hand.
  assert race['cleared'].returncode == 2
  assert 'still runs on this machine' in race['cleared'].stderr


def _days(tmp_path):
  docs = corpora.sample_docs(60)
  day1 = corpora.write_jsonl(str(tmp_path / 'day1.jsonl'), docs)
  day2 = corpora.write_jsonl(str(tmp_path / 'day2.jsonl'), [
      dict(d, text=d['text'] + ' (revised)') if i % 5 == 0 else d
      for i, d in enumerate(docs[3:])] + corpora.sample_docs(6, 100))
  return day1, day2


def _by_id(records) -> dict:
  got = {r['id']: r for r in records}
  assert len(got) == len(records), 'an id is there twice'
  return got


def test_two_nightly_runs_on_one_file_output(tmp_path, minilm_export):
  """The issue's case: two in-place nightly runs at once, --num_shards 2."""
  day1, day2 = _days(tmp_path)
  common = ['--model_dir', minilm_export, '--num_shards', '2',
            '--progress_every', '0']
  # Day 1 once, then a copy for each of the two nights.
  assert run.main(['--input', day1.pattern, '--output',
                   str(tmp_path / 'day1' / 'emb'), *common]) == 0
  outputs = {}
  for name in ('raced', 'single'):
    shutil.copytree(tmp_path / 'day1', tmp_path / name)
    outputs[name] = str(tmp_path / name / 'emb')
  nightly = lambda prefix: ['--input', day2.pattern, '--output', prefix,  # noqa: E731
                            '--previous', prefix, *common]
  race = _race(nightly(outputs['raced']), tmp_path, outputs['raced'])
  _check_race(race)
  assert run.main(nightly(outputs['single'])) == 0
  helpers.assert_same_records(
      _by_id(corpora.read_output(outputs['raced'])),
      _by_id(corpora.read_output(outputs['single'])))
  assert not os.path.exists(outputs['raced'] + '.lease')


def test_a_killed_holder_does_not_block_the_next_run(tmp_path, minilm_export,
                                                     capsys):
  day1, _ = _days(tmp_path)
  prefix = str(tmp_path / 'out' / 'emb')
  argv = ['--input', day1.pattern, '--output', prefix, '--model_dir',
          minilm_export, '--progress_every', '0']
  holder = _start(argv, str(tmp_path / 'never'))
  deadline = time.monotonic() + 300
  while not os.path.exists(prefix + '.lease'):
    assert holder.poll() is None, holder.communicate()[1][-3000:]
    assert time.monotonic() < deadline
    time.sleep(0.1)
  holder.send_signal(signal.SIGKILL)
  holder.communicate()
  shown = _lease_command(prefix)
  assert 'its process is gone' in shown.stdout, shown
  capsys.readouterr()
  assert run.main(argv) == 0
  _, err = capsys.readouterr()
  assert f'pid {holder.pid}' in err and 'taking over the lease' in err, err
  assert len(_by_id(corpora.read_output(prefix))) == 60
  assert not os.path.exists(prefix + '.lease')


def test_two_runs_on_one_postgresql_table(tmp_path, minilm_export):
  day1, day2 = _days(tmp_path)
  common = ['--model_dir', minilm_export, '--progress_every', '0']
  with postgres.running() as server:
    tables = {name: server.uri(name) for name in ('raced', 'single')}
    for uri in tables.values():
      assert run.main(['--input', day1.pattern, '--output', uri,
                       *common]) == 0
    nightly = lambda uri: ['--input', day2.pattern, '--output', uri,  # noqa: E731
                           '--previous', uri, *common]
    race = _race(nightly(tables['raced']), tmp_path, tables['raced'])
    _check_race(race)
    assert run.main(nightly(tables['single'])) == 0
    got = _by_id(corpora.read_output(tables['raced']))
    helpers.assert_same_records(
        got, _by_id(corpora.read_output(tables['single'])))
    with server.connect() as conn:  # released: no lease row left
      assert conn.execute(
          'SELECT count(*) FROM text_embed_leases').fetchone()[0] == 0


def test_two_runs_on_one_bigquery_table(tmp_path, minilm_export):
  """Two full runs into one table (the documented pipeline.lease command
  shows the holder: the table of its example, on the emulator)."""
  day1, _ = _days(tmp_path)
  show = readme.fill(readme.command('pipeline.lease', 'bq://'),
                     MY_PROJECT=emulators.PROJECT)
  raced = show[-1]
  dataset = raced.split('.')[-2]
  with emulators.running(bigquery=True, datasets=[dataset]) as (emus,
                                                                client):
    common = ['--model_dir', minilm_export, '--progress_every', '0',
              '--project', emulators.PROJECT,
              '--temp_location', 'gs://bucket/tmp']
    single = f'bq://{emulators.PROJECT}.{dataset}.single'
    full = lambda uri: ['--input', day1.pattern, '--output', uri, *common]  # noqa: E731
    race = _race(full(raced), tmp_path, raced,
                 extra_env=emulators.worker_env(emus), show=show)
    _check_race(race)
    assert run.main(full(single)) == 0
    got = _by_id(corpora.read_output(raced))
    helpers.assert_same_records(got, _by_id(corpora.read_output(single)))
    left = list(client.query(
        f'SELECT count(*) AS n FROM `{emulators.PROJECT}.{dataset}.'
        '_text_embed_leases`').result())
    assert left[0]['n'] == 0
