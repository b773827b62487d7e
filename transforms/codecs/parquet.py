"""Parquet: rows as Arrow tables, read and written a row group at a time."""

from __future__ import annotations

import contextlib
import io
import os
import struct
from typing import Iterable, Optional, Sequence

from apache_beam.io.filesystems import FileSystems

from transforms.codecs import DamagedFile

SUFFIX = '.parquet'
MAGIC = b'PAR1'
# Rows per Parquet row group written at a time (and read at a time).
ROWS_PER_BATCH = 1024


def table_rows(table, columns: Sequence[Optional[str]]) -> list:
  """The rows of an Arrow table as dicts of Python values, with only the
  named columns that the table has (None names and repeats ignored)."""
  present = [c for c in dict.fromkeys(columns)
             if c and c in table.column_names]
  return table.select(present).to_pylist()


def read_table(path: str, columns=None):
  """A whole file as one Arrow table (read into memory first), its footer
  checked (parquet_file)."""
  import pyarrow.parquet as pq
  with FileSystems.open(path) as f:
    data = io.BytesIO(f.read())
  parquet_file(data, path)
  data.seek(0)
  with _reading(path):
    return pq.read_table(data, columns=columns)


def read_schema(path: str):
  """A file's Arrow schema (its footer only is read, and checked)."""
  with FileSystems.open(path) as f:
    return parquet_file(f, path).schema_arrow


def iter_tables(path: str, names=None) -> Iterable[tuple]:
  """(Arrow table, names missing from the file) one row group batch at a
  time, memory not growing with the file: with `names`, only those columns
  that the file has. The footer is checked (parquet_file)."""
  import pyarrow as pa
  with FileSystems.open(path) as f:
    shard = parquet_file(f, path)
    have = set(shard.schema_arrow.names)
    columns = [n for n in names if n in have] if names else None
    missing = [n for n in names if n not in have] if names else []
    batches = shard.iter_batches(batch_size=ROWS_PER_BATCH, columns=columns)
    while True:
      with _reading(path):
        batch = next(batches, None)
      if batch is None:
        return
      yield pa.Table.from_batches([batch]), missing


def parquet_file(f, path: str = ''):
  """A pyarrow ParquetFile of an open file, its end checked first: the
  magic bytes PAR1 at both ends and a footer length that fits the file,
  then the footer itself (Thrift) as pyarrow decodes it, and its row count
  against its row groups'. Every reader of Parquet in the job goes through
  here, so that a cut or damaged footer is one error naming the file
  (DamagedFile), not a pyarrow message without it. The footer has no
  checksum: a changed byte that still decodes (a value, a name) cannot be
  told from a file written so."""
  import pyarrow.parquet as pq
  size = f.seek(0, os.SEEK_END)
  if size < 2 * len(MAGIC) + 4:
    raise _damaged(path, f'it holds {size} bytes, fewer than any Parquet '
                   'file (cut)')
  f.seek(size - 8)
  (footer, magic) = struct.unpack('<I4s', f.read(8))
  if magic != MAGIC:
    raise _damaged(path, "it does not end with Parquet's magic bytes PAR1 "
                   '(cut, or its last bytes changed)')
  if footer > size - 12:
    raise _damaged(path, f'its footer length ({footer} bytes) is more than '
                   f'the file holds ({size - 12} bytes before it)')
  f.seek(0)
  if f.read(len(MAGIC)) != MAGIC:
    raise _damaged(path, "it does not start with Parquet's magic bytes PAR1")
  f.seek(0)
  with _reading(path, 'its footer cannot be read'):
    shard = pq.ParquetFile(f)
  meta = shard.metadata
  rows = sum(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
  if rows != meta.num_rows:
    raise _damaged(path, f'its footer counts {meta.num_rows} rows, its row '
                   f'groups {rows}')
  return shard


@contextlib.contextmanager
def _reading(path: str, what: str = 'it cannot be read'):
  """pyarrow's errors while decoding a file (OSError, ArrowException) as a
  DamagedFile naming it: pyarrow's own message names no file."""
  import pyarrow as pa
  try:
    yield
  except (OSError, pa.ArrowException) as e:
    if isinstance(e, OSError) and e.errno is not None:
      raise  # the disk's or the network's, not the file's bytes
    detail = str(e).strip().splitlines()[0] if str(e).strip() else (
        type(e).__name__)
    raise _damaged(path, f'{what} ({detail})') from e


def _damaged(path: str, problem: str) -> DamagedFile:
  return DamagedFile(path, 'the Parquet file', problem)


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
