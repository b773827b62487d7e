"""gs:// and BigQuery in and out, against local emulators (tests/emulators.py).

The pipeline runs in this process (the BigQuery patches of Beam's clients
hold only here); its output is compared with a run on local files.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from apache_beam.io.filesystems import FileSystems

from pipeline import run
from tests import corpora
from tests import emulators
from tests import helpers

pytestmark = pytest.mark.services

DATASET = 'ds'


@pytest.fixture(scope='module')
def cloud():
  with emulators.running(bigquery=True, datasets=[DATASET]) as (_, client):
    yield client



def _table(name: str) -> str:
  return f'bq://{emulators.PROJECT}.{DATASET}.{name}'


def _rows(client, name: str) -> list[dict]:
  query = f'SELECT * FROM `{emulators.PROJECT}.{DATASET}.{name}`'
  return [dict(r) for r in client.query(query).result()]


def _write(path: str, data: bytes) -> None:
  with FileSystems.create(path) as f:
    f.write(data)


def _mixed_jsonl(docs, bad_lines) -> bytes:
  lines = [json.dumps(d).encode() for d in docs]
  for i, line in enumerate(bad_lines):
    lines.insert(2 * i + 1, line)
  return b'\n'.join(lines) + b'\n'


BAD = [b'{"id": "broken", ', b'{"id": "empty", "text": "  "}',
       b'\xff{"id": "bytes"}']


@pytest.fixture(scope='module')
def local_run(tmp_path_factory, minilm_export):
  """The reference: the same two files, read from local disk."""
  docs = corpora.sample_docs(24)
  tmp = tmp_path_factory.mktemp('local')
  files = {'a.jsonl': _mixed_jsonl(docs[:12], BAD),
           'b.jsonl': _mixed_jsonl(docs[12:], BAD[:1])}
  for name, data in files.items():
    (tmp / name).write_bytes(data)
  out = str(tmp / 'out' / 'emb')
  assert run.main(['--input', str(tmp / '*.jsonl'), '--output', out,
                   '--model_dir', minilm_export,
                   '--metadata_fields', 'source']) == 0
  records = {r['id']: r for r in corpora.read_output(out)}
  assert len(records) == 24
  return docs, files, records, corpora.read_dead_letters(
      out + '_dead_letter')


def _offsets(letters) -> list:
  """(file name, byte offset, error) of dead letters, wherever they live."""
  return sorted((d['source'].rsplit('/', 1)[1], d['error_type'])
                for d in letters)


def test_gcs_input_and_output(cloud, capsys, local_run, minilm_export):
  del cloud
  docs, files, want, want_letters = local_run
  for name, data in files.items():
    _write(f'gs://bucket/corpus/{name}', data)
  out = 'gs://bucket/out/emb'
  argv = ['--input', 'gs://bucket/corpus/*.jsonl', '--output', out,
          '--model_dir', minilm_export, '--metadata_fields', 'source']
  summary = helpers.run_job(capsys, argv)
  assert summary['reconciled'] is True
  assert summary['documents_read'] == len(docs) + 4
  got = {r['id']: r for r in corpora.read_output(out)}
  assert sorted(got) == sorted(want)
  for doc_id, record in got.items():
    assert record['embedding'] == want[doc_id]['embedding']
    assert record['metadata'] == want[doc_id]['metadata'] == {
        'source': next(d['source'] for d in docs if d['id'] == doc_id)}
  letters = corpora.read_dead_letters(out + '_dead_letter')
  assert _offsets(letters) == _offsets(want_letters)
  assert all(d['source'].startswith('gs://bucket/corpus/') for d in letters)

  # A re-run to the same prefix leaves one copy of each record, also when
  # it writes fewer shards than the run before.
  def shards():
    return sorted(m.path for m in
                  FileSystems.match([out + '-*.tfrecord'])[0].metadata_list)
  helpers.run_job(capsys, argv + ['--num_shards', '3'])
  assert len(shards()) == 3
  helpers.run_job(capsys, argv + ['--num_shards', '2'])
  assert [s[-len('-00000-of-00002.tfrecord'):] for s in shards()] == [
      '-00000-of-00002.tfrecord', '-00001-of-00002.tfrecord']
  assert sorted(r['id'] for r in corpora.read_output(out)) == sorted(want)


def _check_table_rows(rows, want, docs, model='minilm-l6'):
  assert sorted(r['id'] for r in rows) == sorted(want)
  for row in rows:
    record = want[row['id']]
    # float32 values are exact in FLOAT64: equal, not close.
    assert row['embedding'] == record['embedding']
    assert (row['num_tokens'], row['truncated'], row['num_chunks'],
            row['content_hash'], row['pooling']) == (
                record['num_tokens'], bool(record['truncated']),
                record['num_chunks'], record['content_hash'], 'mean')
    assert row['model'] == model and row['embedded_at'] is not None
    assert row['source'] == next(d['source'] for d in docs
                                 if d['id'] == row['id'])


def test_bigquery_output_file_loads_and_rerun(cloud, capsys, tmp_path,
                                              local_run, minilm_export):
  docs, files, want, want_letters = local_run
  for name, data in files.items():
    (tmp_path / name).write_bytes(data)
  argv = ['--input', str(tmp_path / '*.jsonl'), '--output', _table('emb'),
          '--model_dir', minilm_export, '--metadata_fields', 'source',
          '--temp_location', 'gs://bucket/tmp', '--project',
          emulators.PROJECT]
  summary = helpers.run_job(capsys, argv)
  assert summary['reconciled'] is True
  assert summary['output'] == _table('emb')
  _check_table_rows(_rows(cloud, 'emb'), want, docs)
  # pipeline.read on the table: the local run's records, value for value.
  helpers.assert_same_records(
      {r['id']: r for r in corpora.read_output(_table('emb'))}, want, atol=0)
  letters = _rows(cloud, 'emb_dead_letter')
  assert sorted(d['error_type'] for d in letters) == sorted(
      d['error_type'] for d in want_letters)
  assert all(d['source'].startswith(str(tmp_path)) and d['message']
             and d['failed_at'] is not None for d in letters)

  # WRITE_TRUNCATE (the default): a re-run replaces, one copy remains.
  helpers.run_job(capsys, argv)
  _check_table_rows(_rows(cloud, 'emb'), want, docs)
  assert len(_rows(cloud, 'emb_dead_letter')) == len(want_letters)

  # The table as --previous (read back with DIRECT_READ), and as the output
  # again: every document is reused, nothing passes through the encoder.
  summary = helpers.run_job(capsys, argv + ['--previous', _table('emb')])
  assert (summary['documents_reused'], summary['documents_embedded'],
          summary['documents_removed']) == (len(docs), 0, 0)
  assert (summary['rows_upserted'], summary['rows_deleted']) == (0, 0)
  assert summary['reconciled'] is True
  _check_table_rows(_rows(cloud, 'emb'), want, docs)

  # A night's changes into the table it read from: only the delta is
  # written (staged, loaded, then one MERGE of upserts and deletes).
  before = {r['id']: r['embedded_at'] for r in _rows(cloud, 'emb')}
  changed = {d['id'] for d in docs[::8]}
  gone = {docs[1]['id'], docs[2]['id']}
  day2 = [dict(d, text=d['text'] + ' (revised)') if d['id'] in changed
          else d for d in docs if d['id'] not in gone]
  corpus2 = corpora.write_jsonl(str(tmp_path / 'day2.jsonl'), day2)
  nightly = ['--input', corpus2.pattern, '--output', _table('emb'),
             '--previous', _table('emb'), *argv[4:]]
  summary = helpers.run_job(capsys, nightly)
  assert (summary['documents_embedded'], summary['documents_reused'],
          summary['documents_removed']) == (
              len(changed), len(day2) - len(changed), len(gone))
  assert (summary['rows_upserted'], summary['rows_deleted']) == (
      len(changed), len(gone))
  assert summary['reconciled'] is True
  with capsys.disabled():
    print('bigquery nightly:', json.dumps(
        {k: summary[k] for k in ('documents_read', 'documents_embedded',
                                 'documents_reused', 'documents_removed',
                                 'rows_upserted', 'rows_deleted')}))
  # The table equals a full run of day 2 ...
  full = str(tmp_path / 'full2' / 'emb')
  helpers.run_job(capsys, ['--input', corpus2.pattern, '--output', full,
                           '--model_dir', minilm_export, '--metadata_fields',
                           'source'])
  helpers.assert_same_records(
      {r['id']: r for r in corpora.read_output(_table('emb'))},
      {r['id']: r for r in corpora.read_output(full)}, atol=1e-5)
  # ... only the changed rows were rewritten, and nothing staged is left.
  after = {r['id']: r['embedded_at'] for r in _rows(cloud, 'emb')}
  assert {i for i, t in after.items() if t != before[i]} == changed
  assert not [t.table_id for t in cloud.list_tables(DATASET)
              if '_changes_' in t.table_id]
  assert not FileSystems.match(
      ['gs://bucket/tmp/beam-text-embed-changes/*/*'])[0].metadata_list
  # The same night again (a retry): nothing to change, one row per id.
  # It removes changes an earlier night staged but never merged (a run
  # killed before its merge); another table's stay.
  changes = 'gs://bucket/tmp/beam-text-embed-changes'
  for table in ('emb', 'other'):
    spec = _table(table)[len('bq://'):]
    with FileSystems.create(f'{changes}/{spec}-20261201T000000_0f1e2d3c/'
                            'changes-00000-of-00001.json') as f:
      f.write(b'{}\n')
  summary = helpers.run_job(capsys, nightly)
  assert [m.path for m in FileSystems.match([f'{changes}/**'])[0].metadata_list
          ] == [f'{changes}/{_table("other")[len("bq://"):]}-20261201T000000_'
                '0f1e2d3c/changes-00000-of-00001.json']
  assert (summary['rows_upserted'], summary['rows_deleted'],
          summary['documents_reused']) == (0, 0, len(day2))
  assert sorted(r['id'] for r in _rows(cloud, 'emb')) == sorted(after)

  # A table that is not --previous is written whole (WRITE_TRUNCATE): the
  # unchanged records stream from the previous output, here local files.
  summary = helpers.run_job(capsys, ['--input', corpus2.pattern, '--output',
                                     _table('emb_copy'), '--previous', full,
                                     *argv[4:]])
  assert (summary['documents_reused'], summary['records_carried'],
          summary['documents_embedded'], summary['rows_upserted']) == (
              len(day2), len(day2), 0, 0)
  helpers.assert_same_records(
      {r['id']: r for r in corpora.read_output(_table('emb_copy'))},
      {r['id']: r for r in corpora.read_output(full)}, atol=0)


def test_bigquery_streaming_inserts(cloud, capsys, tmp_path, local_run,
                                    minilm_export):
  docs, files, want, _ = local_run
  for name, data in files.items():
    (tmp_path / name).write_bytes(data)
  argv = ['--input', str(tmp_path / '*.jsonl'),
          '--output', _table('emb_stream'), '--model_dir', minilm_export,
          '--metadata_fields', 'source', '--project', emulators.PROJECT,
          '--bq_write_method', 'STREAMING_INSERTS']
  assert run.main(argv) == 2  # WRITE_TRUNCATE cannot stream: said up front
  assert 'WRITE_APPEND' in capsys.readouterr().err
  summary = helpers.run_job(capsys, argv + ['--bq_write_disposition',
                                            'WRITE_APPEND'])
  assert summary['reconciled'] is True
  _check_table_rows(_rows(cloud, 'emb_stream'), want, docs)
  # A nightly run into the table it reads merges staged files: said up
  # front.
  assert run.main(argv + ['--bq_write_disposition', 'WRITE_APPEND',
                          '--previous', _table('emb_stream')]) == 2
  assert 'drop --bq_write_method STREAMING_INSERTS' in (
      capsys.readouterr().err)


def test_bigquery_input_table_and_query(cloud, capsys, tmp_path, local_run,
                                        minilm_export):
  docs, _, want, _ = local_run
  from google.cloud import bigquery
  table = f'{emulators.PROJECT}.{DATASET}.docs'
  cloud.create_table(bigquery.Table(table, schema=[
      bigquery.SchemaField('id', 'STRING'),
      bigquery.SchemaField('text', 'STRING'),
      bigquery.SchemaField('source', 'STRING')]))
  rows = [{'id': d['id'], 'text': d['text'], 'source': d['source']}
          for d in docs]
  rows += [{'id': 'null-text', 'text': None, 'source': 'x'},
           {'id': 'blank', 'text': ' \n', 'source': 'x'}]
  assert not cloud.insert_rows_json(table, rows)

  out = str(tmp_path / 'from_table' / 'emb')
  summary = helpers.run_job(capsys, [
      '--input', _table('docs'), '--output', out, '--model_dir',
      minilm_export, '--metadata_fields', 'source', '--project',
      emulators.PROJECT])
  assert summary['documents_read'] == len(docs) + 2
  assert summary['reconciled'] is True
  got = {r['id']: r for r in corpora.read_output(out)}
  assert sorted(got) == sorted(want)
  for doc_id, record in got.items():
    np.testing.assert_array_equal(record['embedding'],
                                  want[doc_id]['embedding'])
    assert record['metadata'] == want[doc_id]['metadata']
  letters = corpora.read_dead_letters(out + '_dead_letter')
  assert sorted(d['error_type'] for d in letters) == ['empty_text',
                                                       'missing_text']
  assert {d['source'] for d in letters} == {_table('docs')}

  first = docs[0]['source']
  out = str(tmp_path / 'from_query' / 'emb')
  summary = helpers.run_job(capsys, [
      '--input_query', f"SELECT id, text FROM `{table}` WHERE source = "
      f"'{first}'", '--output', out, '--model_dir', minilm_export,
      '--project', emulators.PROJECT])
  subset = sorted(d['id'] for d in docs if d['source'] == first)
  assert summary['documents_embedded'] == len(subset) > 0
  got = corpora.read_output(out)
  assert sorted(r['id'] for r in got) == subset
  for record in got:
    # A subset is batched with other companions (other row counts, so
    # other oneDNN kernels): equal within the batch-mix tolerance
    # (docs/testing.md:
    # 1e-5), not bit for bit.
    np.testing.assert_allclose(record['embedding'],
                               want[record['id']]['embedding'],
                               atol=1e-5, rtol=0)
