"""A BigQuery table: bq://PROJECT.DATASET.TABLE.

Writes go through Beam's WriteToBigQuery (FILE_LOADS by default, whose
WRITE_TRUNCATE load jobs replace the table's contents atomically, so a
re-run leaves one copy); --previous reads the table with DIRECT_READ.
"""

from __future__ import annotations

import math

import apache_beam as beam
import numpy as np

from transforms import bigquery as tables
from transforms import records as records_lib
from transforms.backends import base


def schema(layout: records_lib.Record) -> dict:
  fields = []
  for f in layout.fields:
    mode = ('REPEATED' if f.kind == records_lib.VECTOR else
            'REQUIRED' if f.required else 'NULLABLE')
    fields.append({'name': f.name, 'type': f.kind.bigquery, 'mode': mode})
  return {'fields': fields}


def to_row(record: dict, layout: records_lib.Record) -> dict:
  """A JSON-ready row. numpy floats are not JSON-serialisable, so vectors
  become Python floats (float32 values are exact in FLOAT64); non-finite
  values cannot be stored and fail loudly here."""
  row = {}
  for f in layout.fields:
    value = record.get(f.name)
    if value is not None and f.kind == records_lib.VECTOR:
      value = np.asarray(value, np.float64).tolist()
      if not all(math.isfinite(v) for v in value):
        raise ValueError(f'{f.name} of {record.get("id")!r} has non-finite '
                         'values')
    elif value is not None and f.kind == records_lib.TIMESTAMP:
      value = tables.timestamp(value)
    row[f.name] = value
  return row


def from_row(row: dict, layout: records_lib.Record) -> dict:
  """A row as Beam's and Google's readers give it (TIMESTAMP as datetime,
  REPEATED as a list) as a record dict."""
  record = dict(row)
  for f in layout.fields:
    value = record.get(f.name)
    if value is None:
      continue
    if f.kind == records_lib.VECTOR:
      record[f.name] = np.asarray(value, np.float32)
    elif f.kind == records_lib.TIMESTAMP and isinstance(value, str):
      record[f.name] = records_lib.parse_time(value)
    elif f.kind == records_lib.TIMESTAMP:
      record[f.name] = records_lib.utc(value)
  return record


class BigQueryBackend(base.Backend):
  format = 'bigquery'

  @classmethod
  def claims(cls, uri: str) -> bool:
    return tables.is_table(uri)

  def check(self) -> None:
    tables.table_spec(self.uri)
    s = self.settings
    tables.check_write(s.bq_method, s.bq_disposition)
    if s.bq_method == 'FILE_LOADS' and not (
        s.temp_location or '').startswith('gs://'):
      raise ValueError('BigQuery FILE_LOADS stages files on Cloud Storage: '
                       'pass --temp_location gs://BUCKET/tmp (or '
                       '--bq_write_method STREAMING_INSERTS)')

  def check_readable(self) -> None:
    tables.table_spec(self.uri)

  def dead_letter_location(self) -> tuple[str, str]:
    return f'{self.uri}_dead_letter', self.format

  def write(self) -> beam.PTransform:
    return _WriteTable(self)

  def read(self, names=None) -> beam.PTransform:
    return _ReadTable(self, names)

  def load(self):
    from google.cloud import bigquery  # pylint: disable=import-outside-toplevel
    spec = tables.table_spec(self.uri)
    project = spec.split(':')[0]
    client = bigquery.Client(project=project)
    rows = [from_row(dict(r.items()), self.record) for r in client.query(
        f'SELECT * FROM `{spec.replace(":", ".")}`').result()]
    return records_lib.to_arrow(records_lib.layout_of(self.record, rows),
                                rows)


@beam.ptransform_fn
def _WriteTable(records, backend: BigQueryBackend):
  s = backend.settings
  tables.check_write(s.bq_method, s.bq_disposition)
  return (records
          | 'ToRow' >> beam.Map(to_row, backend.record)
          | 'WriteBigQuery' >> beam.io.WriteToBigQuery(
              tables.table_spec(backend.uri), schema=schema(backend.record),
              method=getattr(beam.io.WriteToBigQuery.Method, s.bq_method),
              create_disposition=(
                  beam.io.BigQueryDisposition.CREATE_IF_NEEDED),
              write_disposition=getattr(beam.io.BigQueryDisposition,
                                        s.bq_disposition),
              custom_gcs_temp_location=s.temp_location,
              # JSON load files: no Avro schema conversion of REPEATED
              # floats.
              temp_file_format='NEWLINE_DELIMITED_JSON'))


@beam.ptransform_fn
def _ReadTable(pbegin, backend: BigQueryBackend, names):
  return (pbegin
          | 'ReadTable' >> beam.io.ReadFromBigQuery(
              table=tables.table_spec(backend.uri),
              method=beam.io.ReadFromBigQuery.Method.DIRECT_READ,
              selected_fields=list(names) if names else None)
          | 'Parse' >> beam.Map(from_row, backend.record))
