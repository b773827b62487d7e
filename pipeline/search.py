"""Nearest neighbours of a query in an output of the job.

    python -m pipeline.search --output out/run_local/embeddings \\
        "how do I sort a list" -k 5

    from pipeline import search
    hits = search.search('out/run_local/embeddings', 'sort a list', k=5)

The query is embedded as the output's documents were (pipeline/query.py),
then ranked where the vectors are, by one searcher chosen once per output:

- files (TFRecord, Parquet): exact, every record scored, streamed a block
  of records at a time, so memory holds one block and the k best, whatever
  the output's size;
- PostgreSQL: pgvector's `ORDER BY embedding <=> query LIMIT k`, which an
  HNSW index (`--pg_index hnsw`) serves;
- BigQuery: `VECTOR_SEARCH` (search_sql() is the statement), which a
  vector index serves.

`exact=True` (`--exact`) scores every record of a table here instead, as
for files. Every hit's model_fingerprint is checked against the query's:
a record embedded otherwise cannot be ranked against it.
"""

from __future__ import annotations

import abc
import argparse
import heapq
import json
import sys
from typing import NamedTuple, Optional, Sequence, Union

METRICS = ('cosine', 'dot')
# Records scored at once by the exact searcher: memory holds one block.
BLOCK_ROWS = 4096
# Characters of a text shown per hit.
SHOWN_CHARS = 80


class Hit(NamedTuple):
  id: str
  score: float
  # The metadata fields the output carries (--metadata_fields).
  metadata: dict


class Searcher(abc.ABC):
  """Ranks one output's records against query vectors."""

  def __init__(self, backend, *, fingerprint: str, metadata: Sequence[str]):
    self.backend = backend
    self.fingerprint = fingerprint
    self.metadata = tuple(metadata)

  @abc.abstractmethod
  def top(self, queries, k: int, metric: str) -> list[list[Hit]]:
    """The k best hits of each query vector (float32 [queries, dim])."""

  def _checked(self, fingerprint: str, doc_id: str) -> None:
    if fingerprint != self.fingerprint:
      raise ValueError(
          f'{self.backend.shown()} holds record {doc_id!r} of fingerprint '
          f'{fingerprint}, not {self.fingerprint} like its first record: its '
          'vectors were not all made alike, and cannot be ranked together '
          '(re-run the job without --previous to re-embed them all)')


def _scores(vectors, queries, metric: str):
  """[queries, rows] similarities: cosine, or the dot product."""
  import numpy as np
  scores = queries @ vectors.T
  if metric == 'cosine':
    norms = np.linalg.norm(vectors, axis=1)
    scores = scores / (np.linalg.norm(queries, axis=1)[:, None] *
                       np.where(norms == 0, 1, norms)[None, :])
  return scores


class Exact(Searcher):
  """Every record scored here, a block at a time."""

  def top(self, queries, k, metric):
    import numpy as np
    best: list[list] = [[] for _ in range(len(queries))]
    names = ['id', 'embedding', 'model_fingerprint', *self.metadata]
    block: list[dict] = []
    seen = 0

    def score(block):
      vectors = np.asarray([r['embedding'] for r in block], np.float32)
      scores = _scores(vectors, queries, metric)
      for q, row in enumerate(scores):
        for i in np.argsort(-row)[:k]:
          item = (float(row[i]), -(seen + i), block[i])
          if len(best[q]) < k:
            heapq.heappush(best[q], item)
          elif item[:2] > best[q][0][:2]:
            heapq.heapreplace(best[q], item)

    for record in self.backend.scan(names):
      self._checked(record['model_fingerprint'], record['id'])
      block.append(record)
      if len(block) == BLOCK_ROWS:
        score(block)
        seen += len(block)
        block = []
    if block:
      score(block)
    return [[self._hit(r, s) for s, _, r in sorted(found, reverse=True)]
            for found in best]

  def _hit(self, record: dict, score: float) -> Hit:
    return Hit(record['id'], score,
               {name: record.get(name) for name in self.metadata})


class Pgvector(Searcher):
  """pgvector's distance operators, in the database."""

  OPERATORS = {'cosine': '<=>', 'dot': '<#>'}

  def top(self, queries, k, metric):
    from psycopg import sql
    from transforms.backends.postgres import connect
    backend = self.backend
    operator = self.OPERATORS[metric]
    columns = [sql.Identifier(n)
               for n in ('id', 'model_fingerprint', *self.metadata)]
    statement = sql.SQL(
        'SELECT {columns}, embedding {op} %s::vector AS distance FROM {table} '
        'ORDER BY embedding {op} %s::vector LIMIT %s').format(
            columns=sql.SQL(', ').join(columns), op=sql.SQL(operator),
            table=sql.Identifier(*backend.table.split('.')))
    out = []
    with connect(backend.conninfo, backend.shown()) as conn:
      for query in queries:
        literal = '[' + ','.join(repr(float(v)) for v in query) + ']'
        rows = conn.execute(statement, (literal, literal, k)).fetchall()
        hits = []
        for doc_id, fingerprint, *rest in rows:
          self._checked(fingerprint, doc_id)
          distance = rest[-1]
          # <=> is 1 - cosine; <#> the negative inner product.
          score = 1 - distance if metric == 'cosine' else -distance
          hits.append(Hit(doc_id, float(score),
                          dict(zip(self.metadata, rest[:-1]))))
        out.append(hits)
    return out


def search_sql(table: str, metadata: Sequence[str] = ()) -> str:
  """BigQuery's VECTOR_SEARCH of one query vector (the parameter @query,
  ARRAY<FLOAT64>) in `table` (PROJECT.DATASET.TABLE), its k best (@k) by
  cosine distance: the statement `--output bq://...` runs."""
  columns = ''.join(f', base.`{n}` AS `{n}`'
                    for n in ('model_fingerprint', *metadata))
  return (f'SELECT base.id AS id{columns}, distance\n'
          f'FROM VECTOR_SEARCH(TABLE `{table}`, \'embedding\',\n'
          '  (SELECT @query AS embedding), top_k => @k,\n'
          "  distance_type => 'COSINE')\n"
          'ORDER BY distance')


class VectorSearch(Searcher):
  """BigQuery's VECTOR_SEARCH, in the warehouse."""

  def top(self, queries, k, metric):
    if metric != 'cosine':
      raise ValueError('BigQuery outputs are searched by cosine distance '
                       '(VECTOR_SEARCH); for --metric dot add --exact')
    from google.cloud import bigquery
    from transforms import bigquery_tables as tables
    name = tables.TableName.of(self.backend.uri)
    client = bigquery.Client(project=name.project)
    statement = search_sql(name.dotted, self.metadata)
    out = []
    for query in queries:
      config = bigquery.QueryJobConfig(query_parameters=[
          bigquery.ArrayQueryParameter('query', 'FLOAT64',
                                       [float(v) for v in query]),
          bigquery.ScalarQueryParameter('k', 'INT64', k)])
      hits = []
      for row in self._rows(client, statement, config):
        self._checked(row['model_fingerprint'], row['id'])
        hits.append(Hit(row['id'], 1 - float(row['distance']),
                        {n: row[n] for n in self.metadata}))
      out.append(hits)
    return out


  def _rows(self, client, statement: str, config) -> list:
    from google.api_core import exceptions
    try:
      return list(client.query(statement, job_config=config).result())
    except exceptions.GoogleAPICallError as e:
      why = str(e).splitlines()[0]
      raise RuntimeError(f'VECTOR_SEARCH on {self.backend.shown()} failed: '
                         f'{why}; --exact scores every record here '
                         'instead') from e


# The searcher of each backend that searches where its vectors are; any
# other output is scored here (Exact).
IN_PLACE = {'postgres': Pgvector, 'bigquery': VectorSearch}


class Index:
  """An output and its query embedder, loaded once, for many searches."""

  def __init__(self, output: str, *, output_format: str = 'auto',
               exact: bool = False, embedder=None, **flags):
    from pipeline import query as query_lib
    from pipeline import read
    self.embedder = embedder or query_lib.for_output(
        output, output_format=output_format, **flags)
    note = self.embedder.provenance
    backend = read.backend(output, output_format,
                           metadata=note.metadata_fields)
    kind = Exact if exact else IN_PLACE.get(backend.format, Exact)
    self.searcher = kind(backend, fingerprint=self.embedder.fingerprint,
                         metadata=note.metadata_fields)
    # The metadata field that holds the embedded text, if the output
    # carries it.
    self.text_field = (note.text_field if note.text_field in
                       note.metadata_fields else None)

  def search(self, queries: Union[str, Sequence[str]], *, k: int = 10,
             metric: str = 'cosine') -> list[list[Hit]]:
    """The k best hits of each query (one query: a list of one list)."""
    if metric not in METRICS:
      raise ValueError(f'metric must be one of {METRICS}, not {metric!r}')
    if k < 1:
      raise ValueError(f'k must be at least 1, not {k}')
    if isinstance(queries, str):
      queries = [queries]
    vectors = self.embedder.encode(list(queries))
    return self.searcher.top(vectors, k, metric)


def search(output: str, queries: Union[str, Sequence[str]], *, k: int = 10,
           metric: str = 'cosine', exact: bool = False,
           **flags) -> list[list[Hit]]:
  """The k best hits of each query in an output (file prefix, bq:// or
  postgresql:// table); `flags` as for pipeline.query.for_output."""
  return Index(output, exact=exact, **flags).search(queries, k=k,
                                                    metric=metric)


def _shown(hit: Hit, text_field: Optional[str]) -> str:
  fields = '  '.join(f'{k}={v}' for k, v in hit.metadata.items()
                     if k != text_field and v is not None)
  line = f'{hit.score:8.4f}  {hit.id}'
  if fields:
    line += f'  {fields}'
  text = hit.metadata.get(text_field) if text_field else None
  if text:
    text = ' '.join(text.split())
    line += '  ' + json.dumps(text[:SHOWN_CHARS] + (
        '...' if len(text) > SHOWN_CHARS else ''), ensure_ascii=False)
  return line


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m pipeline.search',
      description='Print the records of an output of pipeline.run nearest '
      'to each query: score, id, metadata fields, and the start of the text '
      'where the output carries it (--metadata_fields with the text field). '
      'The query is embedded as the output\'s records were (the model and '
      'settings the output recorded).')
  p.add_argument('queries', nargs='+', metavar='QUERY',
                 help='text to search for (several: one search each)')
  p.add_argument('--output', required=True,
                 help='the --output of a run: file prefix, bq:// or '
                 'postgresql:// table')
  p.add_argument('-k', type=int, default=10,
                 help='hits per query (default 10)')
  p.add_argument('--metric', default='cosine', choices=METRICS,
                 help='cosine similarity (default), or the dot product '
                 '(equal for outputs of --normalize runs)')
  p.add_argument('--exact', action='store_true',
                 help='tables: score every record here rather than with '
                 'pgvector or VECTOR_SEARCH (files are always exact)')
  p.add_argument('--json', action='store_true',
                 help='one JSON object per hit instead of the table')
  p.add_argument('--output_format', default='auto',
                 choices=('auto', 'tfrecord', 'parquet'))
  where = p.add_argument_group(
      'where the model is, if not where the run had it (checked: it must '
      'be the model that embedded the output)')
  for flag in ('model', 'model_dir', 'model_cache_dir'):
    where.add_argument(f'--{flag}', default=None)
  return p


def main(argv=None) -> int:
  args = parser().parse_args(argv)
  for i, text in enumerate(args.queries):
    if not text.strip():
      print(f'pipeline.search: error: query {i + 1} is empty',
            file=sys.stderr)
      return 2
  from pipeline import console
  console.configure(verbose=False)
  try:
    index = Index(args.output, output_format=args.output_format,
                  exact=args.exact, model=args.model,
                  model_dir=args.model_dir,
                  model_cache_dir=args.model_cache_dir)
    found = index.search(args.queries, k=args.k, metric=args.metric)
  except (ValueError, RuntimeError, OSError) as e:
    print(f'pipeline.search: error: {e}', file=sys.stderr)
    return 2
  for text, hits in zip(args.queries, found):
    if args.json:
      for rank, hit in enumerate(hits, 1):
        print(json.dumps({'query': text, 'rank': rank, 'id': hit.id,
                          'score': round(hit.score, 6), **hit.metadata},
                         ensure_ascii=False))
      continue
    print(f'query: {text}')
    for rank, hit in enumerate(hits, 1):
      print(f'{rank:3d} {_shown(hit, index.text_field)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
