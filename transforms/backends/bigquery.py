"""A BigQuery table: bq://PROJECT.DATASET.TABLE.

Writes go through Beam's WriteToBigQuery (FILE_LOADS by default, whose
WRITE_TRUNCATE load jobs replace the table's contents atomically, so a
re-run leaves one copy); --previous reads the table with DIRECT_READ.

A nightly run whose --previous is the output table takes only its changes
(_MergeChanges): new and changed rows and the ids to delete are staged as
JSON files, loaded into a staging table by one load job, and applied by
one MERGE statement (upserts and deletes together), so that a failed run
changes nothing and a retry applies the night once. Unchanged rows are not
read, sent or rewritten.
"""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import bigquery_tables as tables
from transforms import failpoints
from transforms import metrics
from transforms import records as records_lib
from transforms.backends import base
from transforms.backends import files as file_backends

# The staging table's extra column: the row is an id to delete.
DELETE = '_delete'
# How long the launch waits for a table's schema.
SCHEMA_SECONDS = 20
# A staging table left by a run killed before its clean-up expires.
STAGING_TTL = datetime.timedelta(days=2)


# The legacy type names the API gives for the standard ones records.py
# declares (the real service answers INTEGER for a field made INT64).
_STANDARD_TYPES = {'INTEGER': 'INT64', 'FLOAT': 'FLOAT64',
                   'BOOLEAN': 'BOOL'}


def _type(field) -> str:
  """A schema field's type as compare_columns compares it: the standard
  name, REPEATED said."""
  name = _STANDARD_TYPES.get(field.field_type, field.field_type)
  return f'{name} REPEATED' if field.mode == 'REPEATED' else name


def _mode(field: records_lib.Field) -> str:
  return ('REPEATED' if field.kind.repeated else
          'REQUIRED' if field.required else 'NULLABLE')


def side_query(table: str, columns: tuple, statement: str, **params):
  """(job, rows) of one statement on a small side table of an output (its
  lease, its notes: `table`, PROJECT.DATASET.NAME, named {table} in the
  statement), created if missing with `columns` (REQUIRED STRING);
  `params` are STRING query parameters."""
  from google.cloud import bigquery
  client = bigquery.Client(project=tables.TableName.of(table).project)
  client.create_table(bigquery.Table(table, schema=[
      bigquery.SchemaField(name, 'STRING', mode='REQUIRED')
      for name in columns]), exists_ok=True)
  config = bigquery.QueryJobConfig(query_parameters=[
      bigquery.ScalarQueryParameter(name, 'STRING', value)
      for name, value in params.items()])
  job = client.query(statement.format(table=f'`{table}`'), job_config=config)
  return job, list(job.result())


def schema(layout: records_lib.Record) -> dict:
  return {'fields': [{'name': f.name, 'type': f.kind.bigquery,
                      'mode': _mode(f)} for f in layout.fields]}


def to_row(record: dict, layout: records_lib.Record) -> dict:
  """A JSON-ready row (records.Kind.to_bigquery). numpy floats are not
  JSON-serialisable, so vectors become Python floats (float32 values are
  exact in FLOAT64); non-finite values cannot be stored and fail loudly
  here."""
  try:
    return records_lib.to_backend(record, layout, 'to_bigquery')
  except records_lib.NonFinite:
    name = layout.vector
    raise ValueError(f'{name} of {record.get("id")!r} has non-finite '
                     'values') from None


def from_row(row: dict, layout: records_lib.Record) -> dict:
  """A row as Beam's and Google's readers give it (TIMESTAMP as datetime,
  REPEATED as a list) as a record dict."""
  return records_lib.from_backend(row, layout, 'from_bigquery')


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
    table = self._table()
    if table is None:
      return
    columns = self._columns(table)
    base.refuse_columns(self.shown(), columns, self._alter)
    base.log_columns(self.shown(), columns, s.probe)
    if s.probe and columns.add:
      self._add_columns(columns.add)

  def _client(self):
    from google.cloud import bigquery
    return bigquery.Client(project=tables.TableName.of(self.uri).project)

  def _table(self):
    """The table (google.cloud.bigquery.Table), or None if missing. Asked
    with a deadline (SCHEMA_SECONDS), not the client's ten minutes of
    retries. A dry run (settings.probe False) builds the job offline: a
    table it cannot read is left to the run's own launch check."""
    from google.api_core import exceptions
    from google.api_core import retry
    name = tables.TableName.of(self.uri).dotted
    try:
      return self._client().get_table(
          name, retry=retry.Retry(deadline=SCHEMA_SECONDS),
          timeout=SCHEMA_SECONDS)
    except exceptions.NotFound:
      return None
    except Exception as e:
      why = str(e).splitlines()[0] if str(e) else repr(e)
      if not self.settings.probe:
        logging.warning('dry run: cannot read the schema of %s (%s); a run '
                        'checks it at launch', self.shown(), why)
        return None
      raise ValueError(f'cannot read the schema of {self.shown()}: '
                       f'{why}') from e

  def _columns(self, table) -> base.Columns:
    expected = {f.name: f.kind.bigquery + (' REPEATED' if f.kind.repeated
                                           else '')
                for f in self.record.fields}
    return base.compare_columns(
        self.record, {f.name: _type(f) for f in table.schema}, expected)

  def _alter(self, name: str, kind: str) -> str:
    target = tables.TableName.of(self.uri).dotted
    if name in self.record.metadata:
      return (f'drop it (ALTER TABLE `{target}` DROP COLUMN {name}) for the '
              f'next run to add it as {kind}')
    return 'drop the table (it is not an output of this job)'

  def _add_columns(self, add) -> None:
    """Missing nullable fields (new --metadata_fields) added by DDL, then
    by a schema update where the table's schema does not list them yet:
    the service does both with either; the emulator keeps its schema apart
    from its storage, and needs both."""
    from google.cloud import bigquery
    client = self._client()
    target = tables.TableName.of(self.uri).dotted
    for name, kind in add:
      try:
        client.query(f'ALTER TABLE `{target}` ADD COLUMN IF NOT EXISTS '
                     f'`{name}` {kind}').result()
        table = client.get_table(target)
        if name not in {f.name for f in table.schema}:
          table.schema = list(table.schema) + [
              bigquery.SchemaField(name, kind, mode='NULLABLE')]
          table = client.update_table(table, ['schema'])
        if name not in {f.name for f in table.schema}:
          raise RuntimeError('the schema update did not add it')
      except Exception as e:
        raise ValueError(
            f'{self.shown()}: cannot add column {name} ({kind}), which this '
            f'job writes (--metadata_fields): '
            f'{str(e).splitlines()[0] if str(e) else e!r}; add it as a '
            f'NULLABLE {kind} field, or leave {name} out of '
            '--metadata_fields') from e
      logging.warning('Added column %s (%s) to %s', name, kind,
                      self.shown())

  def exists(self) -> bool:
    return self._table() is not None

  def missing_parent(self) -> Optional[str]:
    """The dataset (a missing project is a missing dataset too)."""
    from google.api_core import exceptions
    from google.api_core import retry
    dataset = tables.TableName.of(self.uri).dataset_id
    try:
      self._client().get_dataset(
          dataset, retry=retry.Retry(deadline=SCHEMA_SECONDS),
          timeout=SCHEMA_SECONDS)
    except exceptions.NotFound:
      return f'dataset {dataset} does not exist'
    except Exception as e:
      raise ValueError(f'cannot look up dataset {dataset}: '
                       f'{str(e).splitlines()[0] if str(e) else e!r}') from e
    return None

  def check_readable(self) -> None:
    table = self._table()
    if table is None:
      raise ValueError(f'--previous {self.shown()}: the table does not '
                       'exist; leave --previous out for a first run')
    target = tables.TableName.of(self.uri).dotted
    base.refuse_previous(
        self.shown(), self._columns(table),
        lambda n, t: f'ALTER TABLE `{target}` ADD COLUMN {n} {t}')

  def lease_store(self):
    from transforms.leases import bigquery as bq_leases
    return bq_leases.BigQueryStore(side_query, tables.table_spec(self.uri),
                                   self.shown())

  def notes(self):
    from transforms import provenance
    return provenance.BigQueryNotes(side_query, tables.table_spec(self.uri))

  def same_place(self, other) -> bool:
    return isinstance(other, BigQueryBackend) and (
        tables.table_spec(other.uri) == tables.table_spec(self.uri))

  def takes_changes(self, previous) -> bool:
    return self.same_place(previous)

  def check_previous(self, previous) -> None:
    if not self.same_place(previous):
      return
    if self.settings.bq_method != 'FILE_LOADS':
      raise ValueError(
          f'--previous is the --output table {self.uri}: a nightly run '
          'merges its changes into it from files staged under '
          '--temp_location; drop --bq_write_method STREAMING_INSERTS')
    table = self._table()
    if table is None:
      raise ValueError(f'--previous {self.shown()}: the table does not '
                       'exist; leave --previous out for a first run')
    target = tables.TableName.of(self.uri).dotted
    base.refuse_stale(self.shown(), self._columns(table).extra,
                      lambda n: f'ALTER TABLE `{target}` DROP COLUMN {n}')

  def write_changes(self, previous, carried) -> beam.PTransform:
    if self.takes_changes(previous):
      return _MergeChanges(self)
    return super().write_changes(previous, carried)

  def dead_letter_location(self) -> tuple[str, str]:
    return f'{self.uri}_dead_letter', self.format

  def write(self) -> beam.PTransform:
    return _WriteTable(self)

  def read(self, names=None) -> beam.PTransform:
    return _ReadTable(self, names)

  def changes_folder(self) -> Optional[str]:
    """Where nightly runs stage this table's changes: one folder per run,
    TABLE-RUN, under --temp_location."""
    temp = self.settings.temp_location
    if not temp:
      return None
    spec = tables.TableName.of(self.uri).dotted
    return f'{temp.rstrip("/")}/beam-text-embed-changes/{spec}-'

  def temporaries(self) -> list:
    """The staged changes of runs that failed before their merge (the
    merge step removes its own whatever happens)."""
    start = self.changes_folder()
    return file_backends.temp_folders_under(start) if start else []

  def remove_temporaries(self, paths) -> None:
    file_backends.remove_folders(paths)

  def scan(self, names=None):
    from google.cloud import bigquery
    name = tables.TableName.of(self.uri)
    columns = ', '.join(f'`{n}`' for n in names) if names else '*'
    client = bigquery.Client(project=name.project)
    # The result is paged: rows arrive a page at a time.
    for row in client.query(f'SELECT {columns} FROM `{name.dotted}`').result():
      yield from_row(dict(row.items()), self.record)


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


def staging_schema(layout: records_lib.Record) -> list:
  """The staging table: every field nullable (a row to delete has only its
  id), the vector repeated, and the DELETE flag."""
  from google.cloud import bigquery
  fields = [bigquery.SchemaField(
      f.name, f.kind.bigquery,
      mode='REPEATED' if f.kind.repeated else 'NULLABLE')
            for f in layout.fields]
  return fields + [bigquery.SchemaField(DELETE, 'BOOL', mode='REQUIRED')]


def merge_statement(target: str, staging: str,
                    layout: records_lib.Record) -> str:
  """One MERGE: ids flagged DELETE go, other staged rows replace the row of
  their id or are inserted. Staged ids are unique (a table that takes
  changes keeps the first document of an id, see Locations.keyed_by_id)."""
  key = layout.key
  names = layout.names
  updates = ', '.join(f'`{n}` = S.`{n}`' for n in names if n != key)
  columns = ', '.join(f'`{n}`' for n in names)
  values = ', '.join(f'S.`{n}`' for n in names)
  return (f'MERGE `{target}` T USING `{staging}` S ON T.`{key}` = S.`{key}`\n'
          f'WHEN MATCHED AND S.`{DELETE}` THEN DELETE\n'
          f'WHEN MATCHED THEN UPDATE SET {updates}\n'
          f'WHEN NOT MATCHED AND NOT S.`{DELETE}` THEN INSERT ({columns}) '
          f'VALUES ({values})')


def change_line(record: dict, layout: records_lib.Record) -> str:
  return json.dumps(dict(to_row(record, layout), **{DELETE: False}))


def delete_line(doc_id: str, layout: records_lib.Record) -> str:
  return json.dumps({layout.key: doc_id, DELETE: True})


def apply_changes(files: list, backend: BigQueryBackend, run_id: str) -> dict:
  """Loads the staged files into a new staging table (one load job), then
  one MERGE into the table; drops the staging table and the files whatever
  happens. Returns {'upserted': n, 'deleted': n} (also counted as the
  summary's rows_upserted / rows_deleted)."""
  from google.cloud import bigquery
  name = tables.TableName.of(backend.uri)
  project, target = name.project, name.dotted
  staging = f'{target}_changes_{run_id}'
  layout = backend.record
  client = bigquery.Client(project=project)
  table = bigquery.Table(staging, schema=staging_schema(layout))
  table.expires = datetime.datetime.now(datetime.timezone.utc) + STAGING_TTL
  found = [meta for result in FileSystems.match(files)
           for meta in result.metadata_list] if files else []
  try:
    counts = _merge(client, table, found, staging, target, layout)
  except Exception as e:
    raise base.OutputError(
        f'merging the changes into {backend.shown()} failed (nothing was '
        f'applied): {str(e).splitlines()[0] if str(e) else e!r}') from e
  finally:
    client.delete_table(staging, not_found_ok=True)
    if found:
      FileSystems.delete([m.path for m in found])
  done = {'upserted': int(counts['upserted'] or 0),
          'deleted': int(counts['deleted'] or 0)}
  logging.info('Merged %d upserts and %d deletes into %s', done['upserted'],
               done['deleted'], backend.shown())
  metrics.BEAM.inc(metrics.ROWS_WRITTEN.member(layout.name),
                   done['upserted'])
  metrics.BEAM.inc(metrics.ROWS_DELETED.member(layout.name), done['deleted'])
  return done


def _merge(client, table, found, staging: str, target: str,
           layout: records_lib.Record):
  """The load into the staging table and the MERGE: the upsert and delete
  counts (from the staging table, before the MERGE)."""
  from google.cloud import bigquery
  # A retried step finds its own staging table: replaced, not added to.
  client.create_table(table, exists_ok=True)
  sources = [m.path for m in found if m.size_in_bytes]
  if sources:
    client.load_table_from_uri(sources, staging, job_config=(
        bigquery.LoadJobConfig(
            source_format='NEWLINE_DELIMITED_JSON', schema=table.schema,
            write_disposition='WRITE_TRUNCATE'))).result()
  counts = next(iter(client.query(
      f'SELECT COUNTIF(NOT S.`{DELETE}`) AS upserted, '
      f'COUNTIF(S.`{DELETE}` AND T.`{layout.key}` IS NOT NULL) AS deleted '
      f'FROM `{staging}` S LEFT JOIN `{target}` T '
      f'ON S.`{layout.key}` = T.`{layout.key}`').result()))
  failpoints.reached('bigquery:merge')
  client.query(merge_statement(target, staging, layout)).result()
  return counts


class _MergeChanges(beam.PTransform):
  """{'records', 'removed'} -> {'upserted', 'deleted'}: the night's changes
  staged as JSON lines under --temp_location (Beam's text sink: files,
  distributed, finalised), then applied by apply_changes once every file is
  written."""

  def __init__(self, backend: BigQueryBackend):
    super().__init__()
    self._backend = backend

  def expand(self, changes):
    b = self._backend
    run_id = (f'{b.settings.started:%Y%m%dT%H%M%S}_'
              f'{uuid.uuid4().hex[:8]}')
    folder = b.changes_folder() + run_id
    upserts = changes['records'] | 'Upserts' >> beam.Map(change_line,
                                                         b.record)
    deletes = changes['removed'] | 'Deletes' >> beam.Map(delete_line,
                                                         b.record)
    return ((upserts, deletes)
            | 'Changes' >> beam.Flatten()
            | 'Stage' >> beam.io.WriteToText(f'{folder}/changes',
                                             file_name_suffix='.json')
            | 'Staged' >> beam.combiners.ToList()
            | 'Merge' >> beam.Map(apply_changes, b, run_id))
