"""Parquet files: PREFIX-SSSSS-of-NNNNN.parquet, typed as declared.

The vector is a fixed-size list of float32, so pyarrow, pandas, DuckDB and
BigQuery external tables read it as an array column. Its size is the
model's dimension, which the job learns from the first record, so the sink
opens its Parquet writer on the first record rather than up front (Beam's
WriteToParquet needs the schema when the graph is built).
"""

from __future__ import annotations

import apache_beam as beam

from transforms import records as records_lib
from transforms.backends import files
from transforms.codecs import parquet as codec


class _Shard:
  """One open shard: the rows not yet written, and its writer (whose
  schema is made on the first flush, when the vector's size is known)."""

  def __init__(self, handle):
    self.writer = codec.TableWriter(handle)
    self.rows: list = []


class _ParquetSink(files.RecordSink):

  mime_type = 'application/x-parquet'

  def open(self, temp_path):
    return _Shard(super().open(temp_path))

  def write_record(self, file_handle, value):
    file_handle.rows.append(value)
    if len(file_handle.rows) >= codec.ROWS_PER_BATCH:
      self._flush(file_handle)

  def _flush(self, shard: _Shard) -> None:
    shard.writer.write(records_lib.to_arrow(self.layout, shard.rows))
    shard.rows = []

  def close(self, file_handle):
    if file_handle.rows or not file_handle.writer.started:
      self._flush(file_handle)
    file_handle.writer.close()


class ParquetBackend(files.FileBackend):
  format = 'parquet'
  suffix = codec.SUFFIX

  def dead_letter_location(self) -> tuple[str, str]:
    return f'{self.uri}_dead_letter', 'parquet'

  def sink(self) -> files.RecordSink:
    return _ParquetSink(self)

  def read(self, names=None) -> beam.PTransform:
    return _ReadParquet(self, names)

  def field_names(self, path: str) -> set:
    return set(codec.read_schema(path).names)

  def scan(self, names=None):
    for path in files.shards(self.uri, self.suffix):
      yield from read_rows(path, list(names) if names else None)

  def load(self):
    import pyarrow as pa
    tables = [codec.read_table(p) for p in files.shards(self.uri, self.suffix)]
    if not tables:
      return records_lib.to_arrow(self.record, [])
    return pa.concat_tables(tables, promote_options='permissive')


def read_rows(path: str, names=None):
  """A shard's records, one row group batch at a time (memory does not
  grow with the shard). Asked-for fields that the shard lacks (a metadata
  field an earlier run did not write) are None."""
  for table, missing in codec.iter_tables(path, names):
    for row in records_lib.from_arrow(table):
      row.update(dict.fromkeys(missing))
      yield row


@beam.ptransform_fn
def _ReadParquet(pbegin, backend: ParquetBackend, names):
  names = list(names) if names else None
  return (pbegin
          | 'Shards' >> beam.Create(files.shards(backend.uri, backend.suffix))
          | 'Reshuffle' >> beam.Reshuffle()
          | 'ReadParquet' >> beam.FlatMap(read_rows, names))
