"""BigQuery tables as inputs and outputs: table names, write options,
timestamps and source rows (the output's schema and rows are derived from
transforms/records.py in transforms/backends/bigquery.py)."""

from __future__ import annotations

import datetime
import re
from typing import NamedTuple, Optional

SCHEME = 'bq://'
# bq://project.dataset.table; project ids may hold dashes and a domain
# prefix ("example.com:project"), table names most characters but dots.
_TABLE = re.compile(
    r'^bq://(?P<project>(?:[^.:/]+(?:\.[^.:/]+)*:)?[^.:/]+)\.'
    r'(?P<dataset>\w+)\.(?P<table>[^./]+)$')

WRITE_METHODS = ('FILE_LOADS', 'STREAMING_INSERTS')
WRITE_DISPOSITIONS = ('WRITE_TRUNCATE', 'WRITE_APPEND', 'WRITE_EMPTY')


def is_table(uri: Optional[str]) -> bool:
  return bool(uri) and uri.startswith(SCHEME)


class TableName(NamedTuple):
  """A table's project, dataset and name, split once. Why not split a
  name where it is used: a project may be domain-scoped
  ("example.com:proj"), so the first ':' or '.' of a name is not where
  its project ends."""
  project: str
  dataset: str
  table: str

  @classmethod
  def of(cls, name: str) -> 'TableName':
    """From bq://PROJECT.DATASET.TABLE, Beam's PROJECT:DATASET.TABLE or
    the dotted PROJECT.DATASET.TABLE (datasets and tables hold no dots)."""
    if name.startswith(SCHEME):
      m = _TABLE.match(name)
      if not m:
        raise ValueError(f'{name!r} is not a BigQuery table; expected '
                         'bq://PROJECT.DATASET.TABLE')
      return cls(m['project'], m['dataset'], m['table'])
    head, _, rest = name.rpartition(':')
    if head and '.' not in head.rpartition(':')[2] and rest.count('.') == 1:
      return cls(head, *rest.split('.'))  # Beam's form
    project, dataset, table = name.rsplit('.', 2)
    return cls(project, dataset, table)

  @property
  def spec(self) -> str:
    """Beam's form, PROJECT:DATASET.TABLE."""
    return f'{self.project}:{self.dataset}.{self.table}'

  @property
  def dotted(self) -> str:
    """PROJECT.DATASET.TABLE, as SQL and BigQuery's client take it."""
    return f'{self.project}.{self.dataset}.{self.table}'

  @property
  def dataset_id(self) -> str:
    return f'{self.project}.{self.dataset}'


def table_spec(uri: str) -> str:
  """bq://project.dataset.table -> project:dataset.table (Beam's form)."""
  return TableName.of(uri).spec


def check_write(method: str, disposition: str) -> None:
  """The write options, checked where the job starts and by the sink."""
  if method not in WRITE_METHODS:
    raise ValueError(f'BigQuery write method must be one of {WRITE_METHODS}, '
                     f'got {method!r}')
  if method == 'STREAMING_INSERTS' and disposition == 'WRITE_TRUNCATE':
    raise ValueError('STREAMING_INSERTS can only append: add '
                     '--bq_write_disposition WRITE_APPEND, or use FILE_LOADS '
                     '(the default) so that a re-run replaces the table')


def timestamp(moment: datetime.datetime) -> str:
  """BigQuery's TIMESTAMP text form, in UTC."""
  return moment.astimezone(datetime.timezone.utc).strftime(
      '%Y-%m-%d %H:%M:%S.%f UTC')


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
