"""A BigQuery table (--input bq://PROJECT.DATASET.TABLE) or query
(--input_query), read with the Storage Read API: one document per row."""

from __future__ import annotations

from typing import Optional

import apache_beam as beam

from transforms import bigquery_tables as tables
from transforms.sources import base


class BigQuerySource(base.Source):
  format = 'bigquery'

  @classmethod
  def claims(cls, pattern: Optional[str]) -> bool:
    return tables.is_table(pattern)

  @classmethod
  def check(cls, pattern: str) -> None:
    tables.table_spec(pattern)  # a clear error for a malformed name

  def expand(self, pbegin):
    source, fields = self._pattern or 'query', self._fields
    return (pbegin
            | 'ReadBigQuery' >> beam.io.ReadFromBigQuery(
                method=beam.io.ReadFromBigQuery.Method.DIRECT_READ,
                **tables.read_args(self._pattern, self._query))
            | 'ParseRows' >> beam.Map(
                lambda row: base.record_to_document(
                    tables.document_record(row), source, fields)))
