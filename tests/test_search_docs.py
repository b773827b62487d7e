"""docs/search.md, run as written: embed the sample corpus, search it with
the command and from Python, on files and on PostgreSQL; the BigQuery
statement checked against the one the command builds.

The working folder holds only `.venv` (linked: the project is installed
into it), the model cache and `data/stdlib_docstrings.jsonl`. The swaps,
each named: that file is the sample corpus's first 100 documents plus
three bad records (the whole corpus takes a minute to embed here);
PostgreSQL at DB_HOST:5432 is a local server with pgvector on a socket
(tests/postgres.py); BigQuery's VECTOR_SEARCH is not run (the emulator
lacks it: tests/test_query.py runs the rest of that path).
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re

import numpy as np
import pytest

from pipeline import read
from pipeline import search
from tests import corpora
from tests import helpers
from tests import postgres
from tests import readme

pytestmark = pytest.mark.services

ROOT = corpora.ROOT
SEARCH_MD = os.path.join(readme.DOCS, 'search.md')
N = 100


def _blocks(kind: str) -> list[str]:
  with open(SEARCH_MD, encoding='utf-8') as f:
    return re.findall(rf'```{kind}\n(.*?)```', f.read(), flags=re.S)


@pytest.fixture(scope='module')
def work(tmp_path_factory, minilm_export):
  work = tmp_path_factory.mktemp('search_docs')
  env = readme.scratch_folder(work, minilm_export)
  (work / 'data').mkdir()
  corpus = corpora.write_jsonl(str(work / 'data' / 'stdlib_docstrings.jsonl'),
                               corpora.sample_docs(N))
  return work, env, corpus


_run = readme.run


@pytest.fixture(scope='module')
def embedded(work):
  work, env, corpus = work
  proc = _run(readme.command('pipeline.run', 'out/search/docs'), work, env)
  summary = helpers.command_summary(proc)
  assert summary['documents_embedded'] == N
  assert summary['documents_rejected'] == len(corpus.bad_types)
  return str(work / 'out' / 'search' / 'docs')


@functools.lru_cache(maxsize=1)
def _reference_model(minilm_hf_dir: str):
  from sentence_transformers import SentenceTransformer
  return SentenceTransformer(minilm_hf_dir, device='cpu')


def _reference_top(output: str, text: str, minilm_hf_dir: str) -> str:
  """The nearest id by sentence-transformers' vector of the query."""
  q = _reference_model(minilm_hf_dir).encode([text])[0]
  ids, vectors, _ = read.load(output)
  return ids[int(np.argmax(vectors @ (q / np.linalg.norm(q))))]


def test_search_command(work, embedded, minilm_hf_dir):
  work, env, corpus = work
  argv = readme.command('pipeline.search', 'out/search/docs')
  proc = _run(argv, work, env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  queries = [a for a in argv if ' ' in a]
  assert [line for line in lines if line.startswith('query: ')] == [
      f'query: {q}' for q in queries]
  hits = [line for line in lines if not line.startswith('query: ')]
  assert len(hits) == 3 * len(queries)
  for n, text in enumerate(queries):
    first = hits[3 * n].split()
    assert first[0] == '1'
    assert first[2] == _reference_top(embedded, text, minilm_hf_dir)
    # The start of the document's text, as the corpus has it.
    shown = json.loads(hits[3 * n][hits[3 * n].index('"'):])
    assert ' '.join(corpus.texts[first[2]].split()).startswith(
        shown.removesuffix('...'))


def test_python_lines(work, embedded):
  work, env, _ = work
  block = next(b for b in _blocks('python') if 'query.for_output(\'out/' in b)
  proc = _run(['.venv/bin/python', '-c', block], work, env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[0].startswith('(2, 384) True ')
  ids, _, table = read.load(embedded)
  sources = dict(zip(ids, table.column('source').to_pylist()))
  hits = [line.split() for line in lines[1:]]
  assert len(hits) == 3
  assert all(sources[doc_id] == source for _, doc_id, source in hits)
  scores = [float(score) for score, _, _ in hits]
  assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= 1


def test_query_commands(work, embedded):
  """The output's query vector and the one from the flags are the same,
  and score the stored vectors as the search does."""
  work, env, _ = work
  lines = []
  for argv in (readme.command('pipeline.query', '--output'),
               readme.command('pipeline.query', '--normalize')):
    proc = _run(argv, work, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = proc.stdout.strip().splitlines()
    lines.append(json.loads(line))
  (text,) = {line['text'] for line in lines}
  assert text == 'how do I sort a list'
  ids, vectors, table = read.load(embedded)
  (fingerprint,) = set(table.column('model_fingerprint').to_pylist())
  assert [line['model_fingerprint'] for line in lines] == [fingerprint] * 2
  np.testing.assert_allclose(lines[0]['embedding'], lines[1]['embedding'],
                             atol=1e-6)
  # The query's vector against the stored ones: the cosines the search
  # ranks by (the vectors are unit length).
  scores = vectors @ np.asarray(lines[0]['embedding'])
  hits = search.search(embedded, text, k=3)[0]
  np.testing.assert_allclose([h.score for h in hits],
                             np.sort(scores)[::-1][:3], atol=1e-5)


@pytest.fixture(scope='module')
def server():
  with postgres.running() as s:
    yield s


def _pg(argv, server):
  return [server.uri('docs') if a.startswith('postgresql://') else a
          for a in argv]


def test_postgres_lines(work, embedded, server):
  work, env, _ = work
  proc = _run(_pg(readme.command('pipeline.run', '--pg_index', 'hnsw',
                                 'data/stdlib_docstrings.jsonl'), server),
              work, env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = _run(_pg(readme.command('pipeline.search', 'postgresql://'),
                  server), work, env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[0] == 'query: how do I sort a list' and len(lines) == 4
  want = search.search(embedded, 'how do I sort a list', k=3)[0]
  assert [line.split()[2] for line in lines[1:]] == [h.id for h in want]
  # The documented index statement and pgvector query.
  (index,) = [b for b in _blocks('sql') if 'USING hnsw' in b]
  python = next(b for b in _blocks('python') if 'psycopg' in b)
  database = f'postgresql://postgres@/postgres?host={server.socket_dir}'
  python = python.replace(
      "'postgresql://embed@DB_HOST:5432/vectors?table=docs'",
      repr(server.uri('docs'))).replace(
          "'postgresql://embed@DB_HOST:5432/vectors'", repr(database))
  with server.connect() as conn:
    conn.execute('DROP INDEX docs_hnsw')
    conn.execute(index)
    conn.execute('SET enable_seqscan = off')
    plan = conn.execute('EXPLAIN SELECT id FROM docs ORDER BY embedding <=> '
                        '(SELECT embedding FROM docs LIMIT 1) LIMIT 3'
                        ).fetchall()
  assert 'docs_hnsw' in str(plan)
  proc = _run(['.venv/bin/python', '-c', python], work, env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = ast.literal_eval(proc.stdout.strip())  # a list of tuples
  assert [r[0] for r in rows] == [h.id for h in want]
  np.testing.assert_allclose([r[2] for r in rows], [h.score for h in want],
                             atol=1e-5)


def test_bigquery_statement_is_the_one_the_command_runs():
  (statement,) = [b for b in _blocks('sql') if 'VECTOR_SEARCH' in b]
  assert statement.strip() == search.search_sql(
      'MY_PROJECT.embeddings.docs', ('source', 'text'))
