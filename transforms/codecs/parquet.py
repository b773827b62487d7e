"""Parquet: rows as Arrow tables, read and written a row group at a time."""

from __future__ import annotations

import io
from typing import Iterable, Optional, Sequence

from apache_beam.io.filesystems import FileSystems

SUFFIX = '.parquet'
# Rows per Parquet row group written at a time (and read at a time).
ROWS_PER_BATCH = 1024


def table_rows(table, columns: Sequence[Optional[str]]) -> list:
  """The rows of an Arrow table as dicts of Python values, with only the
  named columns that the table has (None names and repeats ignored)."""
  present = [c for c in dict.fromkeys(columns)
             if c and c in table.column_names]
  return table.select(present).to_pylist()


def read_table(path: str, columns=None):
  """A whole file as one Arrow table (read into memory first)."""
  import pyarrow.parquet as pq
  with FileSystems.open(path) as f:
    data = f.read()
  return pq.read_table(io.BytesIO(data), columns=columns)


def read_schema(path: str):
  """A file's Arrow schema (its footer only is read)."""
  import pyarrow.parquet as pq
  with FileSystems.open(path) as f:
    return pq.read_schema(f)


def iter_tables(path: str, names=None) -> Iterable[tuple]:
  """(Arrow table, names missing from the file) one row group batch at a
  time, memory not growing with the file: with `names`, only those columns
  that the file has."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  with FileSystems.open(path) as f:
    shard = pq.ParquetFile(f)
    have = set(shard.schema_arrow.names)
    columns = [n for n in names if n in have] if names else None
    missing = [n for n in names if n not in have] if names else []
    for batch in shard.iter_batches(batch_size=ROWS_PER_BATCH,
                                    columns=columns):
      yield pa.Table.from_batches([batch]), missing


class TableWriter:
  """Arrow tables into one open file, the Parquet writer made on the first
  table (whose schema, a vector's size included, the file then has)."""

  def __init__(self, handle):
    self.handle = handle
    self._writer = None

  def write(self, table) -> None:
    import pyarrow.parquet as pq
    if self._writer is None:
      self._writer = pq.ParquetWriter(self.handle, table.schema)
    self._writer.write_table(table)

  @property
  def started(self) -> bool:
    return self._writer is not None

  def close(self) -> None:
    self._writer.close()
    self.handle.close()
