"""BigQuery tables as inputs and outputs: table names, schemas and rows.

Plain functions, so that the row format is tested without a BigQuery; the
read and write transforms wire them to Beam's BigQuery IO.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Iterable, Optional, Sequence

import numpy as np

from transforms.elements import MAX_RAW_CHARS, DeadLetter, EmbeddedDocument

SCHEME = 'bq://'
# bq://project.dataset.table; project ids may hold dashes and a domain
# prefix ("example.com:project"), table names most characters but dots.
_TABLE = re.compile(
    r'^bq://(?P<project>(?:[^.:/]+(?:\.[^.:/]+)*:)?[^.:/]+)\.'
    r'(?P<dataset>\w+)\.(?P<table>[^./]+)$')

WRITE_METHODS = ('FILE_LOADS', 'STREAMING_INSERTS')
WRITE_DISPOSITIONS = ('WRITE_TRUNCATE', 'WRITE_APPEND', 'WRITE_EMPTY')

EMBEDDING_FIELDS = (
    ('id', 'STRING', 'REQUIRED'),
    ('embedding', 'FLOAT64', 'REPEATED'),
    ('model', 'STRING', 'NULLABLE'),
    ('pooling', 'STRING', 'NULLABLE'),
    ('num_tokens', 'INT64', 'NULLABLE'),
    ('truncated', 'BOOL', 'NULLABLE'),
    ('num_chunks', 'INT64', 'NULLABLE'),
    ('content_hash', 'STRING', 'NULLABLE'),
    ('model_fingerprint', 'STRING', 'NULLABLE'),
    ('embedded_at', 'TIMESTAMP', 'NULLABLE'),
)
DEAD_LETTER_FIELDS = (
    ('source', 'STRING', 'NULLABLE'),
    ('raw', 'STRING', 'NULLABLE'),
    ('raw_truncated', 'BOOL', 'NULLABLE'),
    ('error_type', 'STRING', 'REQUIRED'),
    ('message', 'STRING', 'NULLABLE'),
    ('stage', 'STRING', 'NULLABLE'),
    ('failed_at', 'TIMESTAMP', 'NULLABLE'),
)


def is_table(uri: Optional[str]) -> bool:
  return bool(uri) and uri.startswith(SCHEME)


def table_spec(uri: str) -> str:
  """bq://project.dataset.table -> project:dataset.table (Beam's form)."""
  m = _TABLE.match(uri)
  if not m:
    raise ValueError(f'{uri!r} is not a BigQuery table; expected '
                     'bq://PROJECT.DATASET.TABLE')
  return f'{m["project"]}:{m["dataset"]}.{m["table"]}'


def _schema(fields: Iterable[tuple[str, str, str]]) -> dict:
  return {'fields': [{'name': n, 'type': t, 'mode': m} for n, t, m in fields]}


def check_write(method: str, disposition: str) -> None:
  """The write options, checked where the job starts and by the sink."""
  if method not in WRITE_METHODS:
    raise ValueError(f'BigQuery write method must be one of {WRITE_METHODS}, '
                     f'got {method!r}')
  if method == 'STREAMING_INSERTS' and disposition == 'WRITE_TRUNCATE':
    raise ValueError('STREAMING_INSERTS can only append: add '
                     '--bq_write_disposition WRITE_APPEND, or use FILE_LOADS '
                     '(the default) so that a re-run replaces the table')


COLUMNS = tuple(name for name, _, _ in EMBEDDING_FIELDS)


def embedding_schema(metadata_fields: Sequence[str] = ()) -> dict:
  """Metadata names are checked against COLUMNS by the writer."""
  return _schema(list(EMBEDDING_FIELDS) +
                 [(name, 'STRING', 'NULLABLE') for name in metadata_fields])


def dead_letter_schema() -> dict:
  return _schema(DEAD_LETTER_FIELDS)


def timestamp(moment: datetime.datetime) -> str:
  """BigQuery's TIMESTAMP text form, in UTC."""
  return moment.astimezone(datetime.timezone.utc).strftime(
      '%Y-%m-%d %H:%M:%S.%f UTC')


def embedding_row(doc: EmbeddedDocument, model: str, pooling: str,
                  embedded_at: str, fingerprint: str = '') -> dict:
  """A JSON-ready row. numpy floats are not JSON-serialisable, so the
  embedding becomes Python floats (float32 values are exact in FLOAT64);
  non-finite values cannot be stored and fail loudly here."""
  values = np.asarray(doc.embedding, dtype=np.float64).tolist()
  if not all(math.isfinite(v) for v in values):
    raise ValueError(f'embedding of {doc.id!r} has non-finite values')
  row = {
      'id': doc.id, 'embedding': values, 'model': model, 'pooling': pooling,
      'num_tokens': int(doc.num_tokens), 'truncated': bool(doc.truncated),
      'num_chunks': int(doc.num_chunks), 'content_hash': doc.content_hash,
      'model_fingerprint': fingerprint,
      'embedded_at': embedded_at,
  }
  row.update(dict(doc.metadata))
  return row


def dead_letter_row(letter: DeadLetter, failed_at: str) -> dict:
  row = letter.to_json_dict()
  row['raw'] = row['raw'][:MAX_RAW_CHARS]
  row['failed_at'] = failed_at
  return row


def document_record(row: dict) -> dict:
  """A BigQuery source row as the plain record the parsers take: BYTES
  arrive as bytes, DATE/TIMESTAMP as objects, which metadata_value turns
  into text."""
  return {k: (v.isoformat() if isinstance(v, (datetime.date,
                                               datetime.datetime)) else v)
          for k, v in row.items()}


def read_args(input_uri: Optional[str], query: Optional[str]) -> dict:
  """Keyword arguments of ReadFromBigQuery for --input bq://... or
  --input_query."""
  if query:
    return {'query': query, 'use_standard_sql': True}
  return {'table': table_spec(input_uri)}
