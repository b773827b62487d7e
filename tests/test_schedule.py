"""--previous_if_exists: a schedule that passes the same flags every night.

No output at --previous yet is a first, full run where the place that holds
it exists (a folder, a Cloud Storage bucket, a BigQuery dataset, a
PostgreSQL database and schema); an output there is a nightly run; either
way the launch says which, and so does the summary ("previous"). A missing
place is a mistyped location: one error line and exit status 2, never a
full re-embedding. Without the flag a --previous with no output is refused
as before. Real components: local files, the Cloud Storage and BigQuery
emulators (tests/emulators.py), PostgreSQL (tests/postgres.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from apache_beam.io.filesystems import FileSystems

from pipeline import run
from tests import corpora
from tests import emulators
from tests import helpers
from tests import postgres

pytestmark = pytest.mark.services

N = 12
CHANGED = 2  # documents whose text changes on the second night
NOTICE = '--previous_if_exists: '


def _run(capsys, argv) -> tuple[int, dict, list[str]]:
  """(exit status, summary or {}, the lines printed on stderr)."""
  status = run.main(argv)
  out = capsys.readouterr()
  return (status, helpers.summary_of(out.out) if status == 0 else {},
          out.err.splitlines())


def _notices(err: list[str]) -> list[str]:
  return [line for line in err if line.startswith(NOTICE)]


def _refused(capsys, argv, *words) -> str:
  """The launch refuses: status 2, nothing run, one error line that holds
  every one of `words`."""
  status, _, err = _run(capsys, argv)
  assert status == 2, err
  errors = [line for line in err if line.startswith('pipeline.run: error:')]
  assert len(errors) == 1 and all(w in errors[0] for w in words), err
  assert not _notices(err)
  return errors[0]


@pytest.fixture(scope='module')
def nights(tmp_path_factory):
  """Night 1's corpus, and night 2's with CHANGED texts changed."""
  tmp = tmp_path_factory.mktemp('nights')
  docs = corpora.sample_docs(N)
  day2 = [dict(d, text=d['text'] + ' (revised)') if i < CHANGED else d
          for i, d in enumerate(docs)]
  return (corpora.write_jsonl(str(tmp / 'day1.jsonl'), docs, bad=False),
          corpora.write_jsonl(str(tmp / 'day2.jsonl'), day2, bad=False))


def _first_then_nightly(capsys, argv, nights, shown: str,
                        found: str) -> list[dict]:
  """The same flags two nights running: a full run that says so, then a
  nightly one that reuses the unchanged documents."""
  first = _run(capsys, ['--input', nights[0].pattern, *argv])
  assert first[0] == 0, first[2]
  note = f'none yet at {shown}: full run'
  assert first[1]['previous'] == note
  assert _notices(first[2]) == [NOTICE + note]
  assert (first[1]['documents_embedded'], first[1]['documents_reused']) == (
      N, 0)
  second = _run(capsys, ['--input', nights[1].pattern, *argv])
  assert second[0] == 0, second[2]
  note = f'{found}: nightly run'
  assert second[1]['previous'] == note
  assert _notices(second[2]) == [NOTICE + note]
  assert (second[1]['documents_embedded'], second[1]['documents_reused'],
          second[1]['reconciled']) == (CHANGED, N - CHANGED, True)
  return [first[1], second[1]]


def test_files(tmp_path, capsys, minilm_export, nights):
  out = str(tmp_path / 'nightly' / 'emb')
  argv = ['--output', out, '--model_dir', minilm_export, '--previous', out,
          '--previous_if_exists']
  # The folder is missing: a mistyped location, not a first night.
  _refused(capsys, ['--input', nights[0].pattern, *argv],
           f'--previous {out}: folder {tmp_path}/nightly does not exist')
  assert not os.path.exists(tmp_path / 'nightly')
  os.mkdir(tmp_path / 'nightly')
  _first_then_nightly(capsys, argv, nights, out, f'{out}-*.tfrecord')

  # Without the flag, a --previous with no output is refused, as before,
  # and a nightly run's summary is as it was.
  plain = ['--input', nights[1].pattern, '--output', out, '--model_dir',
           minilm_export]
  _refused(capsys, plain + ['--previous', str(tmp_path / 'nightly' / 'x')],
           'matches no', 'leave --previous out for a first run')
  status, summary, err = _run(capsys, plain + ['--previous', out])
  assert status == 0 and 'previous' not in summary and not _notices(err)
  # The flag without --previous would do nothing: refused.
  _refused(capsys, plain + ['--previous_if_exists=true'],
           '--previous_if_exists needs --previous')


@pytest.fixture(scope='module')
def cloud():
  with emulators.running(bigquery=True, datasets=['nightly']) as (emu,
                                                                  client):
    yield emu, client


def test_cloud_storage(cloud, capsys, minilm_export, nights):
  del cloud
  common = ['--model_dir', minilm_export, '--previous_if_exists']
  missing = 'gs://no-such-bucket/nightly/emb'
  _refused(capsys, ['--input', nights[0].pattern, '--output', missing,
                    '--previous', missing, *common],
           f'--previous {missing}: bucket gs://no-such-bucket does not exist')
  # A bucket is there, with no object under the prefix's "folder" yet:
  # Cloud Storage has no folders before their first object.
  out = 'gs://bucket/nightly/emb'
  assert not FileSystems.match(['gs://bucket/nightly/*'])[0].metadata_list
  _first_then_nightly(capsys, ['--output', out, '--previous', out, *common],
                      nights, out, f'{out}-*.tfrecord')


def test_bigquery_refusals(cloud, capsys, minilm_export, nights):
  del cloud
  common = ['--input', nights[0].pattern, '--model_dir', minilm_export,
            '--temp_location', 'gs://bucket/tmp', '--project',
            emulators.PROJECT]
  # (An output in a missing dataset is refused before, by the preflight.)
  output = f'bq://{emulators.PROJECT}.nightly.docs_other'
  table = f'bq://{emulators.PROJECT}.no_such_dataset.docs'
  _refused(capsys, [*common, '--output', output, '--previous', table,
                    '--previous_if_exists'],
           f'--previous {table}: dataset {emulators.PROJECT}.no_such_dataset '
           'does not exist')
  table = f'bq://{emulators.PROJECT}.nightly.not_yet'
  _refused(capsys, [*common, '--output', table, '--previous', table],
           'the table does not exist', 'leave --previous out')


def _upload(docs, name: str) -> str:
  """Replaces gs://bucket/corpus/ with docs, as one JSONL file."""
  old = FileSystems.match(['gs://bucket/corpus/*'])[0].metadata_list
  if old:
    FileSystems.delete([m.path for m in old])
  emulators.upload_jsonl(docs, f'gs://bucket/corpus/{name}.jsonl')
  return 'gs://bucket/corpus/*.jsonl'


def _template(argv, env) -> tuple[dict, list[str]]:
  """flex/main.py, as the Flex Template's launcher starts it, with the
  default local runner: (summary, the lines printed on stderr)."""
  proc = subprocess.run([sys.executable, 'flex/main.py', *argv],
                        cwd=corpora.ROOT, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return (helpers.summary_of(proc.stdout),
          proc.stderr.splitlines())


def test_template_first_night_then_nightly(cloud, capsys, minilm_export):
  """The nightly Flex Template's same parameters two nights running
  (docs/dataflow.md, "A nightly schedule"), output and --previous the same
  BigQuery table: night 1 finds no table and embeds everything, night 2
  only what changed; the table then equals a full run's."""
  emu, _ = cloud
  env = dict(os.environ, **emulators.worker_env(emu))
  env.pop('BQ_EMULATOR_TRACE')
  table = f'bq://{emulators.PROJECT}.nightly.docs'
  docs = corpora.sample_docs(N + 1)
  # An id held twice: the table takes changes by id, so from the first
  # night on the later copy is a dead letter (duplicate_id).
  docs.append(dict(docs[-1], text='another text under the same id'))
  params = {'input': 'gs://bucket/corpus/*.jsonl', 'output': table,
            'previous': table, 'previous_if_exists': 'true',
            'model_dir': minilm_export, 'metadata_fields': 'source'}
  argv = [f'--{k}={v}' for k, v in params.items()] + [
      '--temp_location=gs://bucket/tmp', f'--project={emulators.PROJECT}']
  _upload(docs, 'day1')
  first, err1 = _template(argv, env)
  assert first['previous'] == f'none yet at {table}: full run'
  assert _notices(err1) == [NOTICE + first['previous']]
  assert (first['documents_embedded'], first['documents_reused'],
          first['dead_letters_by_type']) == (N + 1, 0, {'duplicate_id': 1})

  # Night 2: CHANGED texts changed, one document gone, one new.
  day2 = [dict(d, text=d['text'] + ' (revised)') if i < CHANGED else d
          for i, d in enumerate(docs) if i != CHANGED]
  day2.append(dict(corpora.sample_docs(1, start=100)[0], id='new-0'))
  _upload(day2, 'day2')
  second, err2 = _template(argv, env)
  assert second['previous'] == f'{table}: nightly run'
  assert _notices(err2) == [NOTICE + second['previous']]
  assert (second['documents_embedded'], second['documents_reused'],
          second['documents_removed'], second['reconciled']) == (
              CHANGED + 1, N + 1 - CHANGED - 1, 1, True)
  with capsys.disabled():
    for night, err, summary in ((1, err1, first), (2, err2, second)):
      print(f'\nnight {night}:', *err, json.dumps({k: summary[k] for k in (
          'documents_read', 'documents_embedded', 'documents_reused',
          'documents_removed', 'documents_rejected', 'previous')}),
            sep='\n  ')

  # A full run of night 2's corpus, to another table, equals the table.
  full = f'bq://{emulators.PROJECT}.nightly.docs_full'
  status, _, err = _run(capsys, [
      '--input', params['input'], '--output', full, '--model_dir',
      minilm_export, '--metadata_fields', 'source', '--on_duplicate_id',
      'first', '--temp_location', 'gs://bucket/tmp', '--project',
      emulators.PROJECT])
  assert status == 0, err
  got = {r['id']: r for r in corpora.read_output(table)}
  assert len(got) == len(day2) - 1  # the duplicate id once
  helpers.assert_same_records(
      got, {r['id']: r for r in corpora.read_output(full)}, atol=1e-5)


@pytest.fixture(scope='module')
def server():
  with postgres.running() as s:
    yield s


def test_postgres(server, capsys, minilm_export, nights):
  common = ['--input', nights[0].pattern, '--model_dir', minilm_export]
  for uri, words in (
      (server.uri('no_such_schema.emb'),
       ('schema no_such_schema does not exist in database postgres',)),
      (server.uri('emb', database='no_such_db'),
       ('cannot connect to PostgreSQL', 'database "no_such_db" does not '
        'exist'))):
    _refused(capsys, [*common, '--output', uri, '--previous', uri,
                      '--previous_if_exists'], '--previous', *words)
  uri = server.uri('emb')
  _refused(capsys, [*common, '--output', uri, '--previous', uri],
           'table emb does not exist; leave --previous out')
  summaries = _first_then_nightly(
      capsys, ['--output', uri, '--previous', uri, '--model_dir',
               minilm_export, '--previous_if_exists'], nights, uri, uri)
  # The second night wrote only its changes into the table.
  assert summaries[1]['rows_upserted'] == CHANGED
