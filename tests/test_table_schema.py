"""Tables that follow the job's schema when --metadata_fields change
between runs, on a real PostgreSQL (tests/postgres.py) and the BigQuery
emulator (tests/emulators.py): a field added, removed, renamed or of
another type, for full runs and nightly runs (--previous = --output).

Each case asserts the exit status, the line printed, and every row's
metadata afterwards: a column the job no longer writes holds NULL on
every row a full run writes (never an old value beside a new vector), a
new one is added at launch, and what cannot be done is refused at launch
(status 2) before anything is embedded.
"""

from __future__ import annotations


import pytest

from pipeline import run
from tests import corpora
from tests import emulators
from tests import helpers
from tests import postgres

pytestmark = pytest.mark.services

N = 6


def _docs(version: str) -> list[dict]:
  """N documents with metadata a, b and c; `version` changes every
  value."""
  return [{'id': f'd{i}', 'text': f'document number {i} about schemas',
           'a': f'a{i}{version}', 'b': f'b{i}{version}',
           'c': f'c{i}{version}'} for i in range(N)]


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('schema')
  return {v: corpora.write_jsonl(str(tmp / f'{v}.jsonl'), _docs(v),
                                 bad=False).pattern for v in ('1', '2')}


def _run(capsys, argv) -> tuple[int, str, dict]:
  """(status, stderr, summary or {}) of one in-process run."""
  capsys.readouterr()
  status = run.main(argv)
  out, err = capsys.readouterr()
  return status, err, helpers.summary_of(out) if status == 0 else {}


def _error(err: str) -> str:
  lines = [line for line in err.splitlines()
           if line.startswith('pipeline.run: error:')]
  assert len(lines) == 1, err
  return lines[0]


def _fields(metadata: str) -> list:
  return ['--metadata_fields', metadata] if metadata else []


# PostgreSQL.


@pytest.fixture(scope='module')
def server():
  with postgres.running() as s:
    yield s


@pytest.fixture
def pg(server, corpus, minilm_export, capsys, request):
  """run(version, metadata, previous=False) on a table of this test's."""
  table = request.node.name.split('[')[0].replace('test_', '')[:40]
  uri = server.uri(table)

  def job(version, metadata, previous=False, *extra):
    argv = ['--input', corpus[version], '--output', uri, '--model_dir',
            minilm_export, '--progress_every', '0', *_fields(metadata),
            *(['--previous', uri] if previous else []), *extra]
    return _run(capsys, argv)

  def rows(*columns):
    with server.connect() as conn:
      return conn.execute(
          f'SELECT id, {", ".join(columns)} FROM {table} ORDER BY id'
      ).fetchall()

  def columns():
    with server.connect() as conn:
      return dict(conn.execute(
          'SELECT attname, format_type(atttypid, NULL) FROM pg_attribute '
          'WHERE attrelid = %s::regclass AND attnum > 0 AND NOT '
          'attisdropped', (table,)).fetchall())

  job.rows, job.columns, job.uri, job.server = rows, columns, uri, server
  job.table = table
  return job


def _want(version, *names):
  return [(f'd{i}', *(f'{n}{i}{version}' for n in names)) for i in range(N)]


def test_pg_removed_field_full_run_writes_null(pg):
  assert pg('1', 'a')[0] == 0
  assert pg.rows('a') == _want('1', 'a')
  status, err, summary = pg('2', '')
  assert status == 0 and summary['documents_embedded'] == N
  assert (f'{pg.uri} has column(s) a that this job does not write (not in '
          '--metadata_fields): this run writes NULL there on every row'
          ) in err
  # No value of the earlier run's `a` is left beside the new vectors.
  assert pg.rows('a') == [(f'd{i}', None) for i in range(N)]


def test_pg_added_field_is_added_at_launch(pg):
  assert pg('1', 'a')[0] == 0
  status, err, summary = pg('2', 'a,b')
  assert status == 0 and summary['rows_upserted'] == N
  assert f'Added column b (text) to {pg.uri}' in err
  assert pg.rows('a', 'b') == _want('2', 'a', 'b')


def test_pg_added_field_nightly_run(pg):
  """The column is added before the nightly run reads its previous: every
  row's b was NULL, so every row is written again with its b."""
  assert pg('1', 'a')[0] == 0
  status, err, summary = pg('1', 'a,b', True)
  assert status == 0, err
  assert f'Added column b (text) to {pg.uri}' in err
  assert summary['rows_upserted'] == N and summary['documents_reused'] == 0
  assert pg.rows('a', 'b') == _want('1', 'a', 'b')
  # The next night has nothing to do.
  status, _, summary = pg('1', 'a,b', True)
  assert status == 0 and summary['documents_reused'] == N


def test_pg_dry_run_adds_nothing(pg, corpus, minilm_export, caplog):
  """A dry run's launch (settings.probe False) says what a run would add,
  and adds nothing."""
  from pipeline import launch
  assert pg('1', 'a')[0] == 0
  plan = launch.plan_from_argv([
      '--input', corpus['2'], '--output', pg.uri, '--previous', pg.uri,
      '--model_dir', minilm_export, '--metadata_fields', 'a,b',
      '--dry_run', 'True'])
  assert plan.dry_run
  assert (f'dry run: a run would add column(s) b (text) to {pg.uri}'
          in caplog.messages)
  assert 'b' not in pg.columns()


def test_pg_removed_field_nightly_run_is_refused(pg):
  assert pg('1', 'a,b')[0] == 0
  before = pg.rows('a', 'b')
  status, err, _ = pg('2', 'a', True)
  assert status == 2
  assert _error(err) == (
      f'pipeline.run: error: --previous is the --output table {pg.uri}, '
      'whose column(s) b this job does not write: a nightly run would leave '
      'the rows it does not change with old values there; pass '
      '--metadata_fields with b, drop the column (ALTER TABLE '
      f'{pg.table} DROP COLUMN b), or run a full run without --previous')
  assert pg.rows('a', 'b') == before == _want('1', 'a', 'b')


def test_pg_renamed_field(pg):
  """a renamed c: a nightly run is refused and changes nothing (c is not
  added); a full run adds c and writes NULL into a."""
  assert pg('1', 'a')[0] == 0
  status, err, _ = pg('2', 'c', True)
  assert status == 2 and 'whose column(s) a this job does not write' in (
      _error(err))
  assert set(pg.columns()) >= {'a'} and 'c' not in pg.columns()
  assert pg.rows('a') == _want('1', 'a')
  status, err, _ = pg('2', 'c')
  assert status == 0, err
  assert pg.rows('a', 'c') == [(f'd{i}', None, f'c{i}2') for i in range(N)]


def test_pg_type_change_is_refused(pg):
  assert pg('1', 'a,b')[0] == 0
  with pg.server.connect() as conn:
    conn.execute(f'ALTER TABLE {pg.table} ALTER COLUMN a TYPE bigint '
                 'USING length(a)')
  for previous in (False, True):
    status, err, _ = pg('2', 'a,b', previous)
    assert status == 2
    assert _error(err) == (
        f'pipeline.run: error: {pg.uri}: column a is bigint, but this job '
        f'writes text there: ALTER TABLE {pg.table} ALTER COLUMN a TYPE '
        'text, or write to another table')
  assert pg.rows('a', 'b') == [(f'd{i}', len(f'a{i}1'), f'b{i}1')
                              for i in range(N)]


def test_pg_previous_lacking_a_field_is_refused(pg, corpus, minilm_export,
                                                capsys):
  assert pg('1', 'a')[0] == 0
  other = pg.server.uri(f'{pg.table}_new')
  status, err, _ = _run(capsys, [
      '--input', corpus['2'], '--output', other, '--previous', pg.uri,
      '--model_dir', minilm_export, '--metadata_fields', 'a,b'])
  assert status == 2
  assert _error(err) == (
      f'pipeline.run: error: --previous {pg.uri} has no column b, which '
      'this job reads (--metadata_fields): add it (ALTER TABLE '
      f'{pg.table} ADD COLUMN b text), or leave b out of --metadata_fields')


# BigQuery (emulator).


@pytest.fixture(scope='module')
def bq():
  with emulators.running(bigquery=True, datasets=['schema']) as (_, client):
    yield client


@pytest.fixture
def bqjob(bq, corpus, minilm_export, capsys, request):
  name = request.node.name.split('[')[0].replace('test_', '')
  table = f'{emulators.PROJECT}.schema.{name}'
  uri = f'bq://{table}'

  def job(version, metadata, previous=False, *extra):
    argv = ['--input', corpus[version], '--output', uri, '--model_dir',
            minilm_export, '--progress_every', '0', '--project',
            emulators.PROJECT, '--temp_location', 'gs://bucket/tmp',
            *_fields(metadata), *(['--previous', uri] if previous else []),
            *extra]
    return _run(capsys, argv)

  def rows(*columns):
    return sorted(tuple(r.values()) for r in bq.query(
        f'SELECT id, {", ".join(columns)} FROM `{table}`').result())

  def schema():
    return {f.name: f.field_type for f in bq.get_table(table).schema}

  job.rows, job.schema, job.uri, job.table = rows, schema, uri, table
  return job


def test_bq_added_removed_and_renamed_fields_full_runs(bqjob):
  assert bqjob('1', 'a')[0] == 0
  assert bqjob.rows('a') == _want('1', 'a')
  # Added: the column is added at launch and written.
  status, err, _ = bqjob('2', 'a,b')
  assert status == 0, err
  assert f'Added column b (STRING) to {bqjob.uri}' in err
  assert bqjob.schema()['b'] == 'STRING'
  assert bqjob.rows('a', 'b') == _want('2', 'a', 'b')
  # a renamed c (a removed, c added): NULL in a on every row.
  status, err, _ = bqjob('1', 'b,c')
  assert status == 0, err
  assert (f'{bqjob.uri} has column(s) a that this job does not write'
          in err)
  assert f'Added column c (STRING) to {bqjob.uri}' in err
  assert bqjob.rows('a', 'b', 'c') == [(f'd{i}', None, f'b{i}1', f'c{i}1')
                                       for i in range(N)]


def test_bq_nightly_runs(bqjob):
  """Added: the column is added and every row merged with its value;
  removed or renamed: refused at launch, nothing changed, nothing
  added."""
  assert bqjob('1', 'a')[0] == 0
  status, err, summary = bqjob('1', 'a,b', True)
  assert status == 0, err
  assert f'Added column b (STRING) to {bqjob.uri}' in err
  assert summary['rows_upserted'] == N
  assert bqjob.rows('a', 'b') == _want('1', 'a', 'b')
  for metadata in ('a', 'a,c'):  # b removed; b renamed c
    status, err, _ = bqjob('2', metadata, True)
    assert status == 2
    assert _error(err) == (
        f'pipeline.run: error: --previous is the --output table '
        f'{bqjob.uri}, whose column(s) b this job does not write: a '
        'nightly run would leave the rows it does not change with old '
        'values there; pass --metadata_fields with b, drop the column '
        f'(ALTER TABLE `{bqjob.table}` DROP COLUMN b), or run a full run '
        'without --previous')
  assert set(bqjob.schema()) >= {'a', 'b'} and 'c' not in bqjob.schema()
  assert bqjob.rows('a', 'b') == _want('1', 'a', 'b')


def test_bq_type_change_is_refused(bqjob, bq):
  assert bqjob('1', 'a')[0] == 0
  # The emulator changes the schema it reports (its storage stays text):
  # what the launch reads.
  table = bq.get_table(bqjob.table)
  from google.cloud import bigquery
  table.schema = [bigquery.SchemaField(f.name, 'INT64') if f.name == 'a'
                  else f for f in table.schema]
  bq.update_table(table, ['schema'])
  for previous in (False, True):
    status, err, _ = bqjob('2', 'a', previous)
    assert status == 2
    assert _error(err) == (
        f'pipeline.run: error: {bqjob.uri}: column a is INT64, but this job '
        f'writes STRING there: drop it (ALTER TABLE `{bqjob.table}` DROP '
        'COLUMN a) for the next run to add it as STRING, or write to '
        'another table')
  assert bqjob.rows('a') == _want('1', 'a')


def test_bq_previous_lacking_a_field_is_refused(bqjob, corpus, minilm_export,
                                                capsys):
  assert bqjob('1', 'a')[0] == 0
  status, err, _ = _run(capsys, [
      '--input', corpus['2'], '--output', f'{bqjob.uri}_new', '--previous',
      bqjob.uri, '--model_dir', minilm_export, '--project',
      emulators.PROJECT, '--temp_location', 'gs://bucket/tmp',
      '--metadata_fields', 'a,b'])
  assert status == 2
  assert _error(err) == (
      f'pipeline.run: error: --previous {bqjob.uri} has no column b, which '
      f'this job reads (--metadata_fields): add it (ALTER TABLE '
      f'`{bqjob.table}` ADD COLUMN b STRING), or leave b out of '
      '--metadata_fields')
