"""The output records, declared once: every backend derives from here.

A field has a name and a kind; a kind says, once, what the field is in each
backend (tf.Example feature list, BigQuery type, Arrow type for Parquet, SQL
type). The TFRecord encoder, the BigQuery schema and rows, the Parquet
schema, the SQL table, the `--previous` readers, `pipeline.read` and the
README's schema table are all built from these declarations, so adding a
field is one line here.

Records travel between the embed steps and the backends as plain dicts of
canonical Python values: str, int, bool, a timezone-aware datetime, or a
float32 numpy vector. Metadata fields (--metadata_fields) are extra
nullable string fields of their own name.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from transforms import bigquery_tables as tables
from transforms.elements import MAX_RAW_CHARS, DeadLetter, EmbeddedDocument


def utc(moment: datetime.datetime) -> datetime.datetime:
  return moment.astimezone(datetime.timezone.utc)


def parse_time(text: str) -> datetime.datetime:
  """ISO 8601 or BigQuery's '... UTC' text form, as a UTC datetime."""
  text = text.strip()
  if text.endswith(' UTC'):
    text = text[:-4] + '+00:00'
  moment = datetime.datetime.fromisoformat(text)
  if moment.tzinfo is None:
    moment = moment.replace(tzinfo=datetime.timezone.utc)
  return utc(moment)


def _same(value):
  return value


def _utf8(text: str) -> bytes:
  return text.encode('utf-8')


def _first_text(values) -> Optional[str]:
  return values[0].decode('utf-8') if values else None


def _first_int(values) -> Optional[int]:
  return int(values[0]) if values else None


def _first_bool(values) -> Optional[bool]:
  return bool(values[0]) if values else None


def _first_time(values) -> Optional[datetime.datetime]:
  return parse_time(values[0].decode('utf-8')) if values else None


def _iso(moment: datetime.datetime) -> str:
  return moment.isoformat()


def _iso_utf8(moment: datetime.datetime) -> bytes:
  return moment.isoformat().encode('utf-8')


def _float32(values) -> np.ndarray:
  return np.asarray(values, np.float32)


def _floats(vector) -> list:
  """Python floats (float32 values widened to float64 print exactly)."""
  return np.asarray(vector, np.float64).tolist()


class NonFinite(ValueError):
  """A vector holds NaN or infinity, which BigQuery cannot store."""


def _finite_floats(vector) -> list:
  values = _floats(vector)
  if not all(math.isfinite(v) for v in values):
    raise NonFinite('has non-finite values')
  return values


def _bigquery_time(value) -> datetime.datetime:
  """TIMESTAMP as Beam's reader (datetime) or a query's JSON (text) gives
  it."""
  return parse_time(value) if isinstance(value, str) else utc(value)


def vector_text(values) -> str:
  """pgvector's text form. float32 values widened to float64 print
  exactly, and the server parses them back to the same float32."""
  return '[' + ','.join(map(repr, _floats(values))) + ']'


def parse_vector(text: str) -> np.ndarray:
  return np.array(text[1:-1].split(','), np.float32) if text != '[]' else (
      np.zeros(0, np.float32))


def _sql_vector(value):
  """pgvector's column as psycopg gives it: text, unless an adapter took
  it."""
  return parse_vector(value) if isinstance(value, str) else value


def _conversion():
  return dataclasses.field(default=_same, repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class Kind:
  """What one kind of value is in each backend. `arrow` and `sql` take the
  vector dimension (ignored by scalar kinds).

  The conversions, declared here once for every backend, take a value that
  is not None: to_X from the canonical Python value (str, int, bool, a
  UTC datetime, a float32 numpy vector) to backend X's form, from_X back.
  tf.Example's are of the one value of the feature's list (to) and of the
  list's values (from, None for an empty list)."""
  name: str
  example: str  # tf.train.Feature list: bytes_list, int64_list, float_list
  bigquery: str
  arrow: str  # a pyarrow type factory name, see arrow_type()
  sql: str
  repeated: bool = False  # BigQuery REPEATED
  to_json: Callable = _conversion()
  from_json: Callable = _conversion()
  to_bigquery: Callable = _conversion()
  from_bigquery: Callable = _conversion()
  to_sql: Callable = _conversion()
  from_sql: Callable = _conversion()
  to_example: Callable = _conversion()
  from_example: Callable = _conversion()

  def arrow_type(self, dim: Optional[int] = None):
    import pyarrow as pa
    if self.arrow == 'vector':
      # Fixed size where the dimension is known; an empty output has none.
      return (pa.list_(pa.float32(), dim) if dim else
              pa.list_(pa.float32()))
    if self.arrow == 'timestamp':
      return pa.timestamp('us', tz='UTC')
    return getattr(pa, self.arrow)()

  def arrow_array(self, values: list, dim: Optional[int] = None):
    """A column of values (None where null) as a pyarrow array of
    arrow_type(dim); vectors as a fixed-size list of float32."""
    import pyarrow as pa
    typ = self.arrow_type(dim)
    if self.arrow != 'vector':
      return pa.array(values, typ)
    flat = (np.concatenate([np.asarray(v, np.float32) for v in values])
            if values else np.zeros(0, np.float32))
    return (pa.FixedSizeListArray.from_arrays(flat, dim) if dim else
            pa.array([], typ))

  def sql_type(self, dim: Optional[int] = None) -> str:
    return self.sql.format(dim=dim) if dim else self.sql.split('(')[0]


STRING = Kind('string', 'bytes_list', 'STRING', 'string', 'text',
              to_example=_utf8, from_example=_first_text)
INT = Kind('int', 'int64_list', 'INT64', 'int64', 'bigint',
           to_example=int, from_example=_first_int)
BOOL = Kind('bool', 'int64_list', 'BOOL', 'bool_', 'boolean',
            to_example=int, from_example=_first_bool)
# In tf.Example (bytes) and JSON as ISO 8601 text, in BigQuery's rows as
# its own text form.
TIMESTAMP = Kind('timestamp', 'bytes_list', 'TIMESTAMP', 'timestamp',
                 'timestamptz', to_json=_iso, from_json=parse_time,
                 to_bigquery=tables.timestamp,
                 from_bigquery=_bigquery_time, from_sql=utc,
                 to_example=_iso_utf8, from_example=_first_time)
# float32 values: exact in BigQuery's FLOAT64 and in pgvector's vector.
VECTOR = Kind('vector', 'float_list', 'FLOAT64', 'vector', 'vector({dim})',
              repeated=True, to_json=_floats, from_json=_float32,
              to_bigquery=_finite_floats, from_bigquery=_float32,
              to_sql=vector_text, from_sql=_sql_vector,
              from_example=_float32)


@dataclasses.dataclass(frozen=True)
class Field:
  name: str
  kind: Kind
  doc: str
  required: bool = False


@dataclasses.dataclass(frozen=True)
class Record:
  """A record layout: its fields, and the field that keys it (if any)."""
  name: str
  fields: tuple
  key: Optional[str] = None
  # Set by with_metadata(): the pass-through fields' names.
  metadata: tuple = ()

  @property
  def names(self) -> tuple:
    return tuple(f.name for f in self.fields)

  def field(self, name: str) -> Field:
    return next(f for f in self.fields if f.name == name)

  @property
  def vector(self) -> Optional[str]:
    """The vector field's name, if the record has one."""
    return next((f.name for f in self.fields if f.kind == VECTOR), None)

  def with_metadata(self, names: Sequence[str]) -> 'Record':
    """Metadata fields become fields of their own name (text), so they must
    not take a declared name."""
    clash = sorted(set(names) & set(self.names))
    if clash:
      raise ValueError(f'--metadata_fields {clash} clash with output '
                       f'fields {sorted(self.names)}')
    extra = tuple(Field(n, STRING, 'metadata (--metadata_fields)')
                  for n in names)
    return dataclasses.replace(self, fields=self.fields + extra,
                               metadata=self.metadata + tuple(names))

  def markdown_table(self) -> str:
    """The README's schema table."""
    lines = ['| field | tf.Example | BigQuery | Parquet | PostgreSQL | '
             'content |', '|---|---|---|---|---|---|']
    for f in self.fields:
      lines.append(
          f'| `{f.name}` | {f.kind.example} | {f.kind.bigquery}'
          f'{" REPEATED" if f.kind.repeated else ""} | '
          f'{_arrow_name(f.kind)} | {f.kind.sql.replace("{dim}", "DIM")}'
          f'{" PRIMARY KEY" if f.name == self.key else ""} | {f.doc} |')
    return '\n'.join(lines)


def _arrow_name(kind: Kind) -> str:
  return {'vector': 'fixed_size_list<float32>[DIM]',
          'timestamp': 'timestamp[us, UTC]', 'bool_': 'bool'}.get(
              kind.arrow, kind.arrow)


EMBEDDINGS = Record('embeddings', key='id', fields=(
    Field('id', STRING, 'document id (see Ids)', required=True),
    Field('embedding', VECTOR, 'the pooled embedding (384 values for '
          'minilm-l6, 1024 for roberta-large)', required=True),
    Field('model', STRING, 'preset name, or `PREPROCESSOR + ENCODER` '
          'handles'),
    Field('pooling', STRING, '`mean`, `pooled` or `cls`'),
    Field('num_tokens', INT, 'tokens fed to the encoder, special tokens '
          'included (all chunks together)'),
    Field('truncated', BOOL, 'the document did not fit `--max_seq_length` '
          '(and was not chunked); 0/1 in tf.Example'),
    Field('num_chunks', INT, 'windows embedded and averaged '
          '(`--long_documents chunk`); 1 otherwise'),
    Field('content_hash', STRING, 'SHA-256 hex of the embedded text (pairs: '
          '`text + NUL + text_b`)'),
    Field('model_fingerprint', STRING, 'hash of what besides the text '
          'decides the embedding (`EmbeddingSpec`): the model\'s content '
          'identity, pooling, `max_seq_length`, normalisation, '
          'long-document and precision settings'),
    Field('embedded_at', TIMESTAMP, 'when the run that embedded it started '
          '(one value per run); ISO 8601 text in tf.Example'),
))

DEAD_LETTERS = Record('dead_letters', fields=(
    Field('source', STRING, 'where the record is (see below)'),
    Field('raw', STRING, f'the input, cut to {MAX_RAW_CHARS:,} characters'),
    Field('raw_truncated', BOOL, '`raw` was cut'),
    Field('error_type', STRING, 'why (table below)', required=True),
    Field('message', STRING, 'the details'),
    Field('stage', STRING, '`read`, `dedup` or `embed`'),
    Field('failed_at', TIMESTAMP, 'when the run started'),
))


class Encoded(NamedTuple):
  """A record already in an output's wire format (a serialized tf.Example
  for TFRecord), copied as it is: carried records that need no
  conversion."""
  data: bytes


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """What every record of one run shares."""
  model: str
  pooling: str
  fingerprint: str
  started: datetime.datetime


def embedding_record(doc: EmbeddedDocument, run: RunInfo) -> dict:
  record = {
      'id': doc.id, 'embedding': np.asarray(doc.embedding, np.float32),
      'model': run.model, 'pooling': run.pooling,
      'num_tokens': int(doc.num_tokens), 'truncated': bool(doc.truncated),
      'num_chunks': int(doc.num_chunks), 'content_hash': doc.content_hash,
      'model_fingerprint': run.fingerprint, 'embedded_at': run.started,
  }
  record.update(doc.metadata)
  return record


def dead_letter_record(letter: DeadLetter,
                       failed_at: datetime.datetime) -> dict:
  """Every field storable by every output, whatever the input held (a
  dead letter is often about text that is not): NUL and lone surrogates
  are shown escaped, as Python shows them (`\\x00`, `\\ud800`)."""
  raw = letter.raw[:MAX_RAW_CHARS]
  return {'source': storable(letter.source), 'raw': storable(raw),
          'raw_truncated': len(letter.raw) > MAX_RAW_CHARS,
          'error_type': letter.error_type,
          'message': storable(letter.message),
          'stage': letter.stage, 'failed_at': failed_at}


def storable(text: Optional[str]) -> Optional[str]:
  """Text every output can store: PostgreSQL's text holds no NUL, and
  nothing encodes a lone surrogate to UTF-8."""
  if not text:
    return text
  return text.encode('utf-8', 'backslashreplace').decode('utf-8').replace(
      '\0', '\\x00')


def to_backend(record: dict, layout: Record, conversion: str) -> dict:
  """The layout's fields of a record dict, in order, each value that is not
  None through its kind's `conversion` (to_json, to_bigquery, to_sql)."""
  out = {}
  for f in layout.fields:
    value = record.get(f.name)
    out[f.name] = (None if value is None else
                   getattr(f.kind, conversion)(value))
  return out


def from_backend(row: dict, layout: Record, conversion: str) -> dict:
  """A row read back as a record dict: each declared field's value that is
  not None through its kind's `conversion` (from_json, from_bigquery,
  from_sql); other fields (metadata) as they are."""
  out = dict(row)
  for f in layout.fields:
    value = out.get(f.name)
    if value is not None:
      out[f.name] = getattr(f.kind, conversion)(value)
  return out


def layout_of(layout: Record, rows: Sequence[dict]) -> Record:
  """The layout with the metadata fields found in rows read back."""
  extra = sorted({k for row in rows for k in row} - set(layout.names))
  return layout.with_metadata(extra)


def to_arrow(record: Record, rows: Sequence[dict], dim: Optional[int] = None):
  """Record dicts as a pyarrow Table of the declared types."""
  import pyarrow as pa
  if dim is None and rows and record.vector:
    dim = len(rows[0][record.vector])
  schema = pa.schema([pa.field(f.name, f.kind.arrow_type(dim),
                               nullable=not f.required)
                      for f in record.fields])
  columns = [f.kind.arrow_array([row.get(f.name) for row in rows], dim)
             for f in record.fields]
  return pa.Table.from_arrays(columns, schema=schema)


def from_arrow(table) -> list[dict]:
  """A pyarrow Table of records as record dicts (vectors as numpy)."""
  rows = table.to_pylist()
  vectors = [f.name for f in table.schema
             if str(f.type).startswith(('fixed_size_list', 'list'))]
  for row in rows:
    for name in vectors:
      if row[name] is not None:
        row[name] = np.asarray(row[name], np.float32)
  return rows
