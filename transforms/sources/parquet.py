"""Parquet files: one document per row, its columns named by --id_field,
--text_field, --text_b_field and --metadata_fields (the other columns are
not read)."""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from transforms.codecs import parquet as codec
from transforms.sources import base


def _table_rows(table, source: str,
                fields: base.Fields) -> Iterable[base.Parsed]:
  wanted = (fields.id_field, fields.text_field, fields.text_b_field,
            *fields.metadata_fields)
  for row in codec.table_rows(table, wanted):
    yield base.record_to_document(row, source, fields)


def checked(path: str) -> str:
  """The path, once its footer is checked by the codec (parquet_file): a
  cut or damaged file is one error naming it, where Beam's reader, which
  reads the rows (split by row groups), gives pyarrow's message. Only the
  footer is read here."""
  with FileSystems.open(path) as f:
    codec.parquet_file(f, path)
  return path


class ParquetSource(base.Source):
  format = 'parquet'
  suffixes = (codec.SUFFIX,)

  def expand(self, pbegin):
    fields = self._fields
    return (pbegin
            | 'ParquetFiles' >> beam.Create([self._pattern])
            | 'Match' >> fileio.MatchAll()
            | 'NotOwn' >> beam.FlatMap(
                lambda m, skip: [] if m.path in skip else [m.path],
                self._skip)
            | 'CheckFooter' >> beam.Map(checked)
            | 'ReadParquet' >> beam.io.ReadAllFromParquetBatched(
                with_filename=True)
            | 'ParseParquet' >> beam.FlatMapTuple(
                lambda path, table: _table_rows(table, path, fields)))
