"""Parquet files: PREFIX-SSSSS-of-NNNNN.parquet, typed as declared.

The vector is a fixed-size list of float32, so pyarrow, pandas, DuckDB and
BigQuery external tables read it as an array column. Its size is the
model's dimension, which the job learns from the first record, so the sink
opens its Parquet writer on the first record rather than up front (Beam's
WriteToParquet needs the schema when the graph is built).
"""

from __future__ import annotations

import io

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import records as records_lib
from transforms.backends import files

# Rows per Parquet row group written at a time (and read at a time).
_ROWS_PER_WRITE = 1024


class _Shard:
  """One open shard: its file, the rows not yet written, and the writer
  (made on the first flush, when the vector's size is known)."""

  def __init__(self, handle):
    self.handle = handle
    self.rows: list = []
    self.writer = None


class _ParquetSink(files.RecordSink):

  mime_type = 'application/x-parquet'

  def open(self, temp_path):
    return _Shard(super().open(temp_path))

  def write_record(self, file_handle, value):
    file_handle.rows.append(value)
    if len(file_handle.rows) >= _ROWS_PER_WRITE:
      self._flush(file_handle)

  def _flush(self, shard: _Shard) -> None:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    table = records_lib.to_arrow(self.layout, shard.rows)
    if shard.writer is None:
      shard.writer = pq.ParquetWriter(shard.handle, table.schema)
    shard.writer.write_table(table)
    shard.rows = []

  def close(self, file_handle):
    if file_handle.rows or file_handle.writer is None:
      self._flush(file_handle)
    file_handle.writer.close()
    file_handle.handle.close()


def read_table(path: str, columns=None):
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  return pq.read_table(io.BytesIO(files.read_bytes(path)), columns=columns)


class ParquetBackend(files.FileBackend):
  format = 'parquet'
  suffix = '.parquet'

  def dead_letter_location(self) -> tuple[str, str]:
    return f'{self.uri}_dead_letter', 'parquet'

  def sink(self) -> files.RecordSink:
    return _ParquetSink(self)

  def read(self, names=None) -> beam.PTransform:
    return _ReadParquet(self, names)

  def field_names(self, path: str) -> set:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    with FileSystems.open(path) as f:  # reads the footer only
      return set(pq.read_schema(f).names)

  def scan(self, names=None):
    for path in files.shards(self.uri, self.suffix):
      yield from read_rows(path, list(names) if names else None)

  def load(self):
    import pyarrow as pa  # pylint: disable=import-outside-toplevel
    tables = [read_table(p) for p in files.shards(self.uri, self.suffix)]
    if not tables:
      return records_lib.to_arrow(self.record, [])
    return pa.concat_tables(tables, promote_options='permissive')


def read_rows(path: str, names=None):
  """A shard's records, one row group batch at a time (memory does not
  grow with the shard). Asked-for fields that the shard lacks (a metadata
  field an earlier run did not write) are None."""
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  with FileSystems.open(path) as f:
    shard = pq.ParquetFile(f)
    have = set(shard.schema_arrow.names)
    columns = [n for n in names if n in have] if names else None
    missing = [n for n in names if n not in have] if names else []
    for batch in shard.iter_batches(batch_size=_ROWS_PER_WRITE,
                                    columns=columns):
      for row in records_lib.from_arrow(pa.Table.from_batches([batch])):
        row.update(dict.fromkeys(missing))
        yield row


@beam.ptransform_fn
def _ReadParquet(pbegin, backend: ParquetBackend, names):
  names = list(names) if names else None
  return (pbegin
          | 'Shards' >> beam.Create(files.shards(backend.uri, backend.suffix))
          | 'Reshuffle' >> beam.Reshuffle()
          | 'ReadParquet' >> beam.FlatMap(read_rows, names))
