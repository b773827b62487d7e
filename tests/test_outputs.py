"""Parquet and PostgreSQL + pgvector outputs, against the TFRecord run.

PostgreSQL is a real server (tests/postgres.py: the pgserver wheel's
postgres 16 with pgvector, on a socket in a temporary folder). Every
pipeline run is the CLI's main() in this process.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline import read
from pipeline import run
from tests import corpora
from tests import helpers
from tests import postgres
from transforms import records

pytestmark = pytest.mark.services

N = 40



def _by_id(prefix, fmt='auto') -> dict:
  return {r['id']: r for r in corpora.read_output(prefix, fmt)}


def _day2(docs):
  """10% of the documents changed, 3 removed."""
  changed = {d['id'] for d in docs[::10]}
  gone = {d['id'] for d in docs[1:4]}
  return ([dict(d, text=d['text'] + ' (revised)') if d['id'] in changed
           else d for d in docs if d['id'] not in gone], changed, gone)


@pytest.fixture(scope='module')
def reference(tmp_path_factory, minilm_export):
  """Day 1 and day 2 corpora (with bad records) and their TFRecord runs."""
  tmp = tmp_path_factory.mktemp('outputs')
  docs = corpora.sample_docs(N)
  day1 = corpora.write_jsonl(str(tmp / 'day1.jsonl'), docs)
  day2_docs, changed, gone = _day2(docs)
  day2 = corpora.write_jsonl(str(tmp / 'day2.jsonl'), day2_docs)
  common = ['--model_dir', minilm_export, '--metadata_fields', 'source']
  for name, corpus in (('day1', day1), ('day2', day2)):
    assert run.main(['--input', corpus.pattern, '--output',
                     str(tmp / name / 'emb'), *common]) == 0
  return {'tmp': tmp, 'common': common, 'day1': day1, 'day2': day2,
          'changed': changed, 'gone': gone,
          'want1': _by_id(str(tmp / 'day1' / 'emb')),
          'want2': _by_id(str(tmp / 'day2' / 'emb')),
          'letters': sorted(d['error_type'] for d in corpora.read_dead_letters(
              str(tmp / 'day1' / 'emb_dead_letter')))}


def test_parquet_output(reference, capsys, minilm_export):
  tmp, common = reference['tmp'], reference['common']
  out = str(tmp / 'pq' / 'emb')
  argv = ['--input', reference['day1'].pattern, '--output', out,
          '--output_format', 'parquet', *common]
  summary = helpers.run_job(capsys, argv + ['--num_shards', '3'])
  assert summary['output'] == out + '-*.parquet'
  assert summary['dead_letter'] == out + '_dead_letter-*.parquet'
  assert len(glob.glob(out + '-[0-9]*-of-00003.parquet')) == 3
  helpers.assert_same_records(_by_id(out), reference['want1'], atol=1e-6)

  # Readable in one line by pyarrow, pandas and DuckDB, typed as declared.
  import pandas as pd
  import pyarrow.parquet as pq
  import pyarrow as pa
  table = pq.read_table(glob.glob(out + '-[0-9]*-of-*.parquet')[0])
  vector = table.schema.field('embedding').type
  assert pa.types.is_fixed_size_list(vector) and vector.list_size == 384
  assert vector.value_type == pa.float32()
  assert str(table.schema.field('embedded_at').type) == 'timestamp[us, tz=UTC]'
  assert table.schema.field('truncated').type == 'bool'
  # The documented globs (docs/running.md: PREFIX-*.parquet) match the
  # embeddings only, though the dead letters lie beside them.
  assert glob.glob(out + '_dead_letter-*.parquet')
  frame = pd.concat(pd.read_parquet(p) for p in glob.glob(out + '-*.parquet'))
  assert len(frame) == N and set(frame['source']) == {
      d['source'] for d in corpora.sample_docs(N)}
  duck = subprocess.run(
      [postgres.PYTHON, '-c', 'import duckdb, sys; p = sys.argv[1]; print('
       'duckdb.sql(f"SELECT count(*) FROM \'{p}\'").fetchall(), duckdb.sql('
       'f"SELECT count(*), min(len(embedding)), count(DISTINCT id) FROM '
       '(SELECT id, embedding FROM \'{p}\')").fetchall())',
       out + '-*.parquet'], capture_output=True, text=True, check=True)
  assert duck.stdout.strip() == f'[({N},)] [({N}, 384, {N})]'

  # Dead letters as Parquet, with the JSONL run's reasons.
  letters = corpora.read_dead_letters(out + '_dead_letter')
  assert sorted(d['error_type'] for d in letters) == reference['letters']

  # A re-run with fewer shards leaves exactly one copy.
  helpers.run_job(capsys, argv + ['--num_shards', '1'])
  assert len(glob.glob(out + '-0*.parquet')) == 1
  assert len(read.load(out).ids) == N

  # Parquet as --previous: nothing passes through the encoder.
  summary = helpers.run_job(capsys, argv + ['--previous', out])
  assert (summary['documents_reused'], summary['documents_embedded']) == (
      N, 0)
  helpers.assert_same_records(_by_id(out), reference['want1'], atol=1e-6)

  # Dead letters as JSONL beside a Parquet output.
  helpers.run_job(capsys, argv + ['--dead_letter_format', 'jsonl',
                                  '--dead_letter', str(tmp / 'pq' / 'dl')])
  assert glob.glob(str(tmp / 'pq' / 'dl-*.jsonl'))


@pytest.fixture(scope='module')
def server():
  with postgres.running() as s:
    yield s


def _rows(server, query, *args):
  with server.connect() as conn:
    return conn.execute(query, args).fetchall()


def test_postgres_full_then_nightly_delta(reference, server, capsys):
  common = reference['common']
  uri = server.uri('emb')
  argv = ['--input', reference['day1'].pattern, '--output', uri, *common]
  summary = helpers.run_job(capsys, argv + ['--pg_index', 'hnsw'])
  assert summary['output'] == uri and summary['reconciled'] is True
  assert summary['rows_upserted'] == N
  assert summary['dead_letter'] == uri.replace('table=emb',
                                               'table=emb_dead_letter')
  # Rows equal the TFRecord run's records.
  want1 = reference['want1']
  helpers.assert_same_records(_by_id(uri), want1, atol=1e-6)
  assert _rows(server, "SELECT format_type(atttypid, atttypmod) FROM "
               "pg_attribute WHERE attrelid = 'emb'::regclass AND "
               "attname = 'embedding'") == [('vector(384)',)]
  indexes = _rows(server, "SELECT indexdef FROM pg_indexes WHERE "
                  "tablename = 'emb'")
  assert any('USING hnsw (embedding vector_cosine_ops)' in d
             for (d,) in indexes), indexes
  letters = _rows(server, 'SELECT error_type FROM emb_dead_letter')
  assert sorted(e for (e,) in letters) == reference['letters']

  # Every document is its own nearest neighbour (cosine distance).
  for doc_id, record in want1.items():
    vector = '[' + ','.join(map(repr, record['embedding'])) + ']'
    assert _rows(server, 'SELECT id FROM emb ORDER BY embedding <=> %s '
                 'LIMIT 1', vector) == [(doc_id,)]

  # The same run again: idempotent, one copy, every row of this run.
  helpers.run_job(capsys, argv)
  assert _rows(server, 'SELECT count(*), count(DISTINCT id) FROM emb') == [
      (N, N)]
  stamp1 = _rows(server, 'SELECT DISTINCT embedded_at FROM emb')
  assert len(stamp1) == 1

  # Nightly: --previous names the output table; only the delta is written.
  changed, gone = reference['changed'], reference['gone']
  report = reference['tmp'] / 'pg-nightly.html'
  summary = helpers.run_job(capsys, ['--input', reference['day2'].pattern,
                                     '--output', uri, '--previous', uri,
                                     '--report', str(report), *common])
  assert (summary['documents_embedded'], summary['documents_reused'],
          summary['documents_removed']) == (
              len(changed), N - len(gone) - len(changed), len(gone))
  assert (summary['rows_upserted'], summary['rows_deleted']) == (
      len(changed), len(gone))
  assert summary['reconciled'] is True
  # The report's nightly panel: the table keeps its unchanged rows in
  # place (none carried), and this run's rows are the changed ones.
  panel = dict(re.findall(r'<span id="nightly-([a-z-]+)">([\d,]+)</span>',
                          report.read_text(encoding='utf-8')))
  assert panel == {
      'read': str(summary['documents_read']),
      'embedded': str(len(changed)),
      'reused': str(summary['documents_reused']),
      'rejected': str(summary['documents_rejected']),
      'removed': str(len(gone)), 'carried': '0',
      'records': str(N - len(gone)), 'records-this-run': str(len(changed))}
  assert 'table: its unchanged rows stay where they are' in report.read_text(
      encoding='utf-8')
  # The table now equals a full run of day 2 ...
  helpers.assert_same_records(_by_id(uri), reference['want2'], atol=1e-5)
  # ... and only the changed rows were touched.
  touched = {i for (i,) in _rows(
      server, 'SELECT id FROM emb WHERE embedded_at <> %s', stamp1[0][0])}
  assert touched == changed


def _blocked_run(server, argv) -> subprocess.Popen:
  """`python -m pipeline.run ARGV` in a child process, returned once one of
  its writes (INSERT or DELETE) waits on a table lock the test holds."""
  proc = subprocess.Popen(
      [sys.executable, '-m', 'pipeline.run', *argv], stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), cwd=corpora.ROOT)
  deadline = time.monotonic() + 180
  waiting = []
  while not waiting and time.monotonic() < deadline and proc.poll() is None:
    time.sleep(0.2)
    with server.connect() as conn:
      waiting = conn.execute(
          "SELECT query FROM pg_stat_activity WHERE wait_event_type = "
          "'Lock' AND (query LIKE 'INSERT INTO%%' OR query LIKE "
          "'DELETE FROM%%')").fetchall()
  assert waiting, proc.communicate(timeout=60)
  return proc


def test_postgres_server_stopped_mid_write(reference, server, capsys,
                                          tmp_path):
  """The run blocks on a table lock inside its first write; the server
  stops under it. The run fails naming the write; a re-run (full, day 1)
  leaves exactly one copy of day 1's records."""
  uri = server.uri('emb')
  zeros = '[' + ','.join(['0.5'] * 384) + ']'
  with server.connect() as conn:
    conn.execute("INSERT INTO emb (id, embedding, embedded_at) VALUES "
                 "('stale-doc', %s, now())", (zeros,))
  lock = server.connect()
  lock.autocommit = False
  lock.execute('LOCK TABLE emb IN ACCESS EXCLUSIVE MODE')
  proc = _blocked_run(server, ['--input', reference['day1'].pattern,
                               '--output', uri, *reference['common']])
  server.stop()
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 1
  # One line naming the write and the cause, no traceback.
  last = err.strip().splitlines()[-1]
  assert 'Traceback' not in err, err[-3000:]
  assert last.startswith('pipeline.run: error: '), last
  assert f'PostgreSQL write to {uri} failed' in last
  assert 'a re-run leaves one copy' in last

  server.start()
  summary = helpers.run_job(capsys, ['--input', reference['day1'].pattern,
                                     '--output', uri, *reference['common']])
  assert summary['rows_deleted'] == 1  # stale-doc
  helpers.assert_same_records(_by_id(uri), reference['want1'], atol=1e-6)


def test_read_cli_and_load(reference, capsys):
  prefix = str(reference['tmp'] / 'day1' / 'emb')
  ids, vectors, table = read.load(prefix)
  assert vectors.dtype == np.float32 and vectors.shape == (N, 384)
  want = reference['want1']
  assert sorted(ids) == sorted(want)
  np.testing.assert_array_equal(vectors[0], want[ids[0]]['embedding'])
  assert set(records.EMBEDDINGS.names) | {'source'} == set(table.column_names)
  assert read.main([prefix, '--head', '2']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 3 and lines[-1] == f'{N} records, 384-d embeddings'
  assert lines[0].startswith('id=')
  assert read.main([str(reference['tmp'] / 'nothing')]) == 2
  assert 'not an output of this job' in capsys.readouterr().err


def test_readme_schema_table_is_the_declaration():
  with open(os.path.join(corpora.ROOT, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  for layout in (records.EMBEDDINGS, records.DEAD_LETTERS):
    assert layout.markdown_table() in readme, (
        f'README schema table of {layout.name} is stale: paste '
        'records.%s.markdown_table()' % layout.name.upper())


def test_postgres_nightly_killed_then_rerun(reference, server, capsys):
  """A nightly run into its --previous table is killed (SIGKILL) while its
  writes wait on a lock, after it read the table and embedded the night's
  changes. The same night run again leaves one current record per id: the
  table equals a full run of day 2."""
  uri = server.uri('emb_killed')
  common = reference['common']
  helpers.run_job(capsys, ['--input', reference['day1'].pattern, '--output',
                           uri, *common])
  lock = server.connect()
  lock.autocommit = False
  # SHARE mode: reads go on, inserts, updates and deletes wait.
  lock.execute('LOCK TABLE emb_killed IN SHARE MODE')
  nightly = ['--input', reference['day2'].pattern, '--output', uri,
             '--previous', uri, *common]
  proc = _blocked_run(server, nightly)
  proc.kill()
  proc.communicate(timeout=60)
  assert proc.returncode == -9
  lock.rollback()
  lock.close()

  summary = helpers.run_job(capsys, nightly)
  assert (summary['documents_embedded'], summary['documents_removed']) == (
      len(reference['changed']), len(reference['gone']))
  assert _rows(server, 'SELECT count(*), count(DISTINCT id) FROM '
               'emb_killed') == [(N - 3, N - 3)]
  helpers.assert_same_records(_by_id(uri), reference['want2'], atol=1e-5)


def test_postgres_table_written_whole_from_previous_files(reference, server,
                                                          capsys):
  """A table that is not --previous takes every record: the unchanged ones
  streamed from the previous output (day 1's TFRecord files), stamped as
  this run's, so that the full run's clean-up keeps them."""
  uri = server.uri('emb_whole')
  summary = helpers.run_job(capsys, [
      '--input', reference['day2'].pattern, '--output', uri, '--previous',
      str(reference['tmp'] / 'day1' / 'emb'), *reference['common']])
  changed = len(reference['changed'])
  assert (summary['documents_embedded'], summary['documents_reused'],
          summary['records_carried'], summary['rows_upserted']) == (
              changed, N - 3 - changed, N - 3 - changed, N - 3)
  assert summary['reconciled'] is True
  helpers.assert_same_records(_by_id(uri), reference['want2'], atol=1e-5)
  assert len(_rows(server, 'SELECT DISTINCT embedded_at FROM '
                   'emb_whole')) == 1
