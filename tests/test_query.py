"""Queries embedded as the output's documents were (pipeline/query.py), and
searched (pipeline/search.py), on every output kind.

Each output is a real run of the job over a corpus with bad records: a
TFRecord output of the minilm-l6 preset, a Parquet output of a RoBERTa
export (normalised, long documents chunked), a PostgreSQL table (pgserver)
and a BigQuery table (the emulator). Re-embedding the corpus's texts
through the output's query embedder gives the stored vectors within 1e-5.
Rankings are checked against sentence-transformers' own embedding of the
query (the independent reference), scored with numpy.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil

import numpy as np
import pytest

from pipeline import query
from pipeline import read
from pipeline import run
from pipeline import search
from tests import corpora
from tests import emulators
from tests import helpers
from tests import postgres

pytestmark = pytest.mark.services

N = 40


def _run(capsys, argv) -> dict:
  return helpers.run_job(capsys, argv + ['--progress_every', '0'])


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('query')
  return corpora.write_jsonl(str(tmp / 'corpus.jsonl'), corpora.sample_docs(N))


@pytest.fixture(scope='module')
def cache(tmp_path_factory, minilm_export):
  """A model cache holding the minilm-l6 preset (the session's export)."""
  folder = tmp_path_factory.mktemp('cache')
  os.symlink(minilm_export, folder / 'minilm-l6')
  return str(folder)


def _assert_reembedded(output: str, corpus, **flags) -> float:
  """Every stored vector equals its text embedded as a query (1e-5)."""
  ids, vectors, _ = read.load(output)
  assert sorted(ids) == sorted(corpus.good_ids)
  embedder = query.for_output(output, **flags)
  again = embedder.encode([corpus.texts[i] for i in ids])
  difference = float(np.abs(again - vectors).max())
  assert difference < 1e-5, difference
  # Shown with -s: the figure the closing notes quote.
  print(f'{output}: {len(ids)} vectors, max |query - stored| '
        f'{difference:.2e}')
  return difference


def test_parquet_output_of_a_roberta_export_chunked_and_normalised(
    tmp_path, capsys, corpus, roberta_export):
  out = str(tmp_path / 'emb')
  summary = _run(capsys, [
      '--input', corpus.pattern, '--output', out, '--output_format',
      'parquet', '--model_dir', roberta_export, '--normalize',
      '--long_documents', 'chunk', '--max_seq_length', '24'])
  assert summary['documents_chunked'] > 0
  _assert_reembedded(out, corpus)
  embedder = query.for_output(out)
  assert embedder.spec.normalize and embedder.spec.long_documents == 'chunk'
  one = embedder.encode('a question about the standard library')
  assert one.shape == (embedder.encode(['x']).shape[1],)
  assert abs(float(np.linalg.norm(one)) - 1) < 1e-5


@pytest.fixture(scope='module')
def minilm_output(tmp_path_factory, corpus, cache):
  """A TFRecord output of the minilm-l6 preset (with dead letters), built
  once for the search and refusal tests."""
  out = str(tmp_path_factory.mktemp('searched') / 'emb')
  assert run.main(['--input', corpus.pattern, '--output', out,
                   '--model', 'minilm-l6', '--model_cache_dir', cache,
                   '--metadata_fields', 'source,text',
                   '--progress_every', '0']) == 0
  return out


def test_tfrecord_output_of_the_preset(minilm_output, corpus):
  _assert_reembedded(minilm_output, corpus)
  # The preset's export is found again where the run had it (the cache
  # it was given), without naming it.
  note = query.for_output(minilm_output).provenance
  assert note.model_name == 'minilm-l6' and note.model_dir is None
  assert note.metadata_fields == ('source', 'text')


@functools.lru_cache(maxsize=1)
def _reference_model(minilm_hf_dir: str):
  from sentence_transformers import SentenceTransformer
  return SentenceTransformer(minilm_hf_dir, device='cpu')


def _reference_ranking(output, text, minilm_hf_dir, k):
  """sentence-transformers' vector of the query, scored by numpy against
  the stored vectors: ids and cosines, best first."""
  q = _reference_model(minilm_hf_dir).encode([text])[0]
  ids, vectors, _ = read.load(output)
  scores = vectors @ q / (np.linalg.norm(vectors, axis=1) *
                          np.linalg.norm(q))
  order = np.argsort(-scores)
  return [ids[i] for i in order[:k + 1]], [float(scores[i])
                                           for i in order[:k + 1]]


QUERIES = ('how to compress data', 'abstract base classes',
           'parse command line arguments')


def test_file_search_ranks_as_the_reference(minilm_output, minilm_hf_dir,
                                            capsys):
  k = 5
  for text in QUERIES:
    assert search.main(['--output', minilm_output, text, '-k', str(k),
                        '--json']) == 0
    hits = [json.loads(line) for line in
            capsys.readouterr().out.strip().splitlines()]
    want_ids, want_scores = _reference_ranking(minilm_output, text,
                                               minilm_hf_dir, k)
    assert [h['rank'] for h in hits] == list(range(1, k + 1))
    assert [h['query'] for h in hits] == [text] * k
    for hit, want_id, want in zip(hits, want_ids, want_scores):
      # Ties closer than the two models' rounding may swap.
      assert hit['id'] == want_id or abs(hit['score'] - want) < 1e-4
      assert abs(hit['score'] - want) < 1e-4
    # The metadata fields come along, the text among them.
    table = read.load(minilm_output).table
    by_id = {r['id']: r for r in table.to_pylist()}
    assert all(h['source'] == by_id[h['id']]['source'] and
               h['text'] == by_id[h['id']]['text'] for h in hits)


def test_search_table_shows_the_start_of_the_text(minilm_output, capsys):
  assert search.main(['--output', minilm_output, 'compress data', '-k',
                      '2']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0] == 'query: compress data'
  assert len(lines) == 3
  for line in lines[1:]:
    rank, score, doc_id, *rest = line.split()
    assert rank in ('1', '2') and 0 < float(score) <= 1
    assert any(part.startswith('source=') for part in rest)
    assert line.rstrip().endswith('"')  # the text, quoted


def test_scores_are_streamed_block_by_block(minilm_output, monkeypatch):
  """Blocks of 7 records give the same hits as one block: the k best are
  kept across blocks."""
  index = search.Index(minilm_output)
  whole = index.search(list(QUERIES), k=6)
  monkeypatch.setattr(search, 'BLOCK_ROWS', 7)
  blocks = index.search(list(QUERIES), k=6)
  assert [[h.id for h in hits] for hits in blocks] == [
      [h.id for h in hits] for hits in whole]
  np.testing.assert_allclose([[h.score for h in hits] for hits in blocks],
                             [[h.score for h in hits] for hits in whole],
                             atol=1e-6)
  # The dot product ranks the unnormalised vectors otherwise.
  dots = index.search(list(QUERIES), k=6, metric='dot')
  assert [[h.score for h in hits] for hits in dots] != [
      [h.score for h in hits] for hits in whole]


def test_bad_input_is_one_line(minilm_output, tmp_path, capsys):
  cases = [
      (['--output', minilm_output, '  '], 'query 1 is empty'),
      (['--output', str(tmp_path / 'nothing'), 'q'], 'nothing'),
      (['--output', minilm_output, 'q', '-k', '0'], 'k must be at least 1'),
  ]
  for argv, want in cases:
    assert search.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('pipeline.search: error:')
    assert want in err[0], err


def test_model_mismatch_and_missing_model_are_refused(
    minilm_output, tmp_path, capsys, corpus, minilm_export, roberta_export):
  with pytest.raises(ValueError, match='is another .its content differs'):
    query.for_output(minilm_output, model_dir=roberta_export)
  assert search.main(['--output', minilm_output, 'q', '--model_dir',
                      roberta_export]) == 2
  err = capsys.readouterr().err
  assert 'pass --model_dir FOLDER holding the model the run used' in err
  # The run's model folder gone.
  folder = str(tmp_path / 'model')
  shutil.copytree(minilm_export, folder)
  out = str(tmp_path / 'emb')
  _run(capsys, ['--input', corpus.pattern, '--output', out, '--model_dir',
                folder])
  shutil.rmtree(folder)
  with pytest.raises(ValueError, match=f'cannot be loaded from --model_dir '
                     f'{folder}'):
    query.for_output(out)
  # ... and found elsewhere: the same content.
  query.for_output(out, model_dir=minilm_export)


def test_an_output_without_a_note_takes_the_settings(minilm_output, tmp_path,
                                                     minilm_export, corpus):
  out = str(tmp_path / 'old')
  for path in glob.glob(minilm_output + '-*.tfrecord'):
    shutil.copy(path, str(tmp_path / os.path.basename(path).replace(
        'emb', 'old', 1)))
  with pytest.raises(ValueError, match='does not record how its vectors'):
    query.for_output(out)
  with pytest.raises(ValueError, match='these settings make vectors of '
                     'fingerprint'):
    query.for_output(out, model_dir=minilm_export, normalize=True)
  _assert_reembedded(out, corpus, model_dir=minilm_export)
  # Settings that contradict a note are refused.
  with pytest.raises(ValueError, match='was embedded with normalize=False'):
    query.for_output(minilm_output, normalize=True)


def test_settings_without_an_output(minilm_output, minilm_export, corpus):
  embedder = query.from_settings(model_dir=minilm_export)
  ids, vectors, _ = read.load(minilm_output)
  again = embedder.encode([corpus.texts[i] for i in ids])
  assert float(np.abs(again - vectors).max()) < 1e-5
  normalised = query.from_settings(model_dir=minilm_export, normalize=True)
  assert abs(float(np.linalg.norm(normalised.encode('x'))) - 1) < 1e-5
  with pytest.raises(TypeError, match='unknown setting'):
    query.from_settings(model_dir=minilm_export, pooling_mode='mean')


# PostgreSQL (pgserver) and BigQuery (the emulator).


@pytest.fixture(scope='module')
def server():
  with postgres.running() as s:
    yield s


def test_postgres_output_and_pgvector_search(server, capsys, corpus,
                                             minilm_export, minilm_output):
  uri = server.uri('searched')
  _run(capsys, ['--input', corpus.pattern, '--output', uri, '--model_dir',
                minilm_export, '--metadata_fields', 'source,text',
                '--pg_index', 'hnsw'])
  _assert_reembedded(uri, corpus)
  note = query.for_output(uri).provenance
  with server.connect() as conn:
    stored = conn.execute('SELECT note FROM text_embed_specs').fetchall()
  assert [json.loads(n)['fingerprint'] for (n,) in stored] == [
      note.fingerprint]
  index = search.Index(uri)
  assert isinstance(index.searcher, search.Pgvector)
  exact = search.Index(uri, exact=True)
  files = search.Index(minilm_output)
  for metric in search.METRICS:
    got = index.search(list(QUERIES), k=5, metric=metric)
    for want in (exact.search(list(QUERIES), k=5, metric=metric),
                 files.search(list(QUERIES), k=5, metric=metric)):
      assert [[h.id for h in hits] for hits in got] == [
          [h.id for h in hits] for hits in want]
      np.testing.assert_allclose(
          [[h.score for h in hits] for hits in got],
          [[h.score for h in hits] for hits in want], atol=1e-5)
  # The documented query, with the HNSW index: the planner uses it.
  with server.connect() as conn:
    conn.execute('SET enable_seqscan = off')
    plan = '\n'.join(r[0] for r in conn.execute(
        'EXPLAIN SELECT id FROM searched ORDER BY embedding <=> '
        '(SELECT embedding FROM searched LIMIT 1) LIMIT 5').fetchall())
  assert 'searched_hnsw' in plan, plan


@pytest.fixture(scope='module')
def bq():
  with emulators.running(bigquery=True, datasets=['search']) as (_, client):
    yield client


def test_bigquery_output_query_and_search(bq, capsys, corpus, minilm_export,
                                          minilm_output):
  table = f'{emulators.PROJECT}.search.emb'
  uri = f'bq://{table}'
  _run(capsys, ['--input', corpus.pattern, '--output', uri, '--model_dir',
                minilm_export, '--metadata_fields', 'source', '--project',
                emulators.PROJECT, '--temp_location', 'gs://bucket/tmp'])
  _assert_reembedded(uri, corpus)
  notes = list(bq.query(
      f'SELECT fingerprint FROM `{emulators.PROJECT}.search.'
      '_text_embed_specs`').result())
  assert len(notes) == 1
  # VECTOR_SEARCH is what a real table is searched with: the emulator
  # lacks it (an error naming it), so the ranking is checked with --exact,
  # and the statement's text from the table's schema.
  index = search.Index(uri)
  assert isinstance(index.searcher, search.VectorSearch)
  with pytest.raises(RuntimeError, match='VECTOR_SEARCH on .* failed: '
                     '.*; --exact scores every record here') as failed:
    index.search('compress data', k=3)
  print('emulator:', failed.value)
  statement = search.search_sql(table, ('source',))
  assert f'VECTOR_SEARCH(TABLE `{table}`, \'embedding\'' in statement
  assert 'base.`source` AS `source`' in statement
  assert "distance_type => 'COSINE'" in statement
  got = search.Index(uri, exact=True).search(list(QUERIES), k=5)
  want = search.Index(minilm_output).search(list(QUERIES), k=5)
  assert [[h.id for h in hits] for hits in got] == [
      [h.id for h in hits] for hits in want]


def test_query_command(minilm_output, minilm_export, corpus, capsys):
  ids, vectors, _ = read.load(minilm_output)
  text = corpus.texts[ids[0]]
  printed = []
  for flags in (['--output', minilm_output], ['--model_dir', minilm_export],
                ['--model_dir', minilm_export, '--normalize']):
    assert query.main([text, *flags]) == 0
    printed.append(json.loads(capsys.readouterr().out))
  stored, from_flags, normalised = printed
  np.testing.assert_allclose(stored['embedding'], vectors[0], atol=1e-5)
  np.testing.assert_allclose(from_flags['embedding'], vectors[0], atol=1e-5)
  assert stored['model_fingerprint'] == from_flags['model_fingerprint']
  assert normalised['model_fingerprint'] != stored['model_fingerprint']
  assert abs(np.linalg.norm(normalised['embedding']) - 1) < 1e-5
  # A flag of the job that a query does not take; a contradicting one.
  with pytest.raises(SystemExit):
    query.main([text, '--input', 'x'])
  assert query.main([text, '--output', minilm_output, '--normalize']) == 2
  assert 'was embedded with normalize=False' in capsys.readouterr().err
