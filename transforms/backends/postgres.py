"""A PostgreSQL table with pgvector:
postgresql://USER@HOST:PORT/DATABASE?table=TABLE.

The URI is any libpq connection URI (a socket folder as `?host=/path`
included) plus a `table` parameter; the password comes from libpq's usual
sources (PGPASSWORD, ~/.pgpass) and is never shown. The sink creates the
table if it is missing (`embedding vector(DIM)` and the declared columns,
`id` the primary key) and writes rows in batched upserts (INSERT ... ON
CONFLICT (id) DO UPDATE), so re-running a job is idempotent.

A full run stamps every row it writes with its start time and, once every
write has finished, deletes the rows of earlier runs: the table then holds
exactly this run's records, as a TFRecord output would. A nightly run whose
--previous names the same table writes only the delta: the upserts of new
and changed documents and the deletes of removed ones; unchanged rows are
not touched. A run that fails part-way leaves rows that the next run
replaces or removes, so a re-run leaves one copy either way.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from typing import Optional, Sequence

import apache_beam as beam

from transforms import records as records_lib
from transforms import failpoints
from transforms import metrics
from transforms.backends import base
from transforms.choices import PG_INDEXES as INDEXES

SCHEMES = ('postgresql://', 'postgres://')
_TABLE = re.compile(r'^(?:[A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*$')
# Rows per INSERT transaction and ids per DELETE.
BATCH_ROWS = 500


def split_uri(uri: str) -> tuple[str, str]:
  """postgresql://...?table=T&... -> (libpq URI without table, T)."""
  parts = urllib.parse.urlsplit(uri)
  query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
  tables = [v for k, v in query if k == 'table']
  if len(tables) != 1 or not _TABLE.match(tables[0]):
    raise ValueError(
        f'{redact(uri)} does not name one table: add ?table=NAME (letters, '
        'digits and _, optionally SCHEMA.NAME), e.g. postgresql://USER@HOST:'
        'PORT/DATABASE?table=embeddings')
  # %XX for what needs quoting (libpq decodes only that, not '+'), and the
  # authority kept even when empty (postgresql:///db, a Unix socket).
  rest = urllib.parse.urlencode([(k, v) for k, v in query if k != 'table'],
                                safe='/:', quote_via=urllib.parse.quote)
  return _unsplit(parts._replace(query=rest)), tables[0]


def _unsplit(parts) -> str:
  """urlunsplit, keeping '//' before an empty authority."""
  text = f'{parts.scheme}://{parts.netloc}{parts.path}'
  return text + (f'?{parts.query}' if parts.query else '') + (
      f'#{parts.fragment}' if parts.fragment else '')


def redact(uri: str) -> str:
  """The URI without a password (in its user info or a ?password=
  parameter, both of which libpq takes), for messages and logs."""
  parts = urllib.parse.urlsplit(uri)
  if parts.password is not None:
    parts = parts._replace(netloc=parts.netloc.replace(
        f':{parts.password}@', ':***@', 1))
  query = re.sub(r'(^|&)password=[^&]*', r'\1password=***', parts.query)
  if query == urllib.parse.urlsplit(uri).query and parts.password is None:
    return uri
  return _unsplit(parts._replace(query=query))


def connect(conninfo: str, what: str):
  import psycopg
  try:
    return psycopg.connect(conninfo, connect_timeout=10)
  except psycopg.Error as e:
    raise RuntimeError(f'cannot connect to PostgreSQL {redact(what)}: '
                       f'{str(e).strip()}') from e


def side_statement(conninfo: str, what: str, table: str, columns: str,
                   statement: str, params: tuple = ()) -> tuple[int, list]:
  """(rowcount, rows) of one statement on a small side table of an output
  (its lease, its notes: `table`, SCHEMA.NAME or NAME, named {} in the
  statement), in its own transaction; the table is created with `columns`
  if missing, under an advisory lock, because concurrent CREATE TABLE IF
  NOT EXISTS statements can collide."""
  from psycopg import sql
  ident = sql.Identifier(*table.split('.'))
  with connect(conninfo, what) as conn:
    with conn.transaction():
      conn.execute('SELECT pg_advisory_xact_lock(hashtext(%s))', (table,))
      conn.execute(sql.SQL('CREATE TABLE IF NOT EXISTS {} (' + columns + ')'
                           ).format(ident))
      cursor = conn.execute(sql.SQL(statement).format(ident), params)
      return cursor.rowcount, (cursor.fetchall() if cursor.description
                               else [])


def stamp_field(layout: records_lib.Record) -> str:
  """The field a full run stamps every row with (its start time)."""
  return next(f.name for f in layout.fields
              if f.kind == records_lib.TIMESTAMP)


class _Table:
  """SQL for one table of one record layout."""

  def __init__(self, name: str, layout: records_lib.Record):
    from psycopg import sql
    self.sql = sql
    self.layout = layout
    self.name = name
    self.ident = sql.Identifier(*name.split('.'))
    # The quoted name, for to_regclass (which folds unquoted names to
    # lower case, as CREATE TABLE with a quoted identifier does not).
    self.regname = '.'.join('"' + part + '"' for part in name.split('.'))
    self.columns = sql.SQL(', ').join(sql.Identifier(n)
                                      for n in layout.names)
    self.stamp = stamp_field(layout)

  def create(self, dim: Optional[int]):
    sql = self.sql
    columns = []
    for f in self.layout.fields:
      column = sql.SQL('{} {}').format(sql.Identifier(f.name),
                                       sql.SQL(f.kind.sql_type(dim)))
      if f.name == self.layout.key:
        column = sql.SQL('{} PRIMARY KEY').format(column)
      elif f.required:
        column = sql.SQL('{} NOT NULL').format(column)
      columns.append(column)
    return sql.SQL('CREATE TABLE IF NOT EXISTS {} ({})').format(
        self.ident, sql.SQL(', ').join(columns))

  def insert(self, extra: Sequence[str] = ()):
    """The upsert; `extra`: columns the layout lacks (metadata fields of an
    earlier run), set to NULL so that no row keeps an old value beside a
    new vector (a new row gets NULL there anyway)."""
    sql = self.sql
    names = self.layout.names
    statement = sql.SQL('INSERT INTO {} ({}) VALUES ({})').format(
        self.ident, self.columns,
        sql.SQL(', ').join(sql.Placeholder() for _ in names))
    if not self.layout.key:
      return statement
    updates = sql.SQL(', ').join(
        [sql.SQL('{0} = EXCLUDED.{0}').format(sql.Identifier(n))
         for n in names if n != self.layout.key] +
        [sql.SQL('{} = NULL').format(sql.Identifier(n)) for n in extra])
    return sql.SQL('{} ON CONFLICT ({}) DO UPDATE SET {}').format(
        statement, sql.Identifier(self.layout.key), updates)

  def params(self, record: dict) -> tuple:
    return tuple(records_lib.to_backend(record, self.layout,
                                        'to_sql').values())

  def record(self, row: Sequence, names: Sequence[str]) -> dict:
    return records_lib.from_backend(dict(zip(names, row)), self.layout,
                                    'from_sql')

  def dimension(self, conn) -> Optional[int]:
    """The vector column's declared size, or None (no table, no size)."""
    row = conn.execute(
        'SELECT a.atttypmod FROM pg_attribute a WHERE a.attrelid = '
        'to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped',
        (self.regname, self.layout.vector)).fetchone()
    return row[0] if row and row[0] > 0 else None

  def exists(self, conn) -> bool:
    return conn.execute('SELECT to_regclass(%s) IS NOT NULL',
                        (self.regname,)).fetchone()[0]

  def inspect(self, conn) -> Optional[base.Columns]:
    """The table's columns against the layout (None: no table), types
    named as the server names them (format_type, without a size)."""
    found = dict(conn.execute(
        'SELECT attname, format_type(atttypid, NULL) FROM pg_attribute '
        'WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT '
        'attisdropped ORDER BY attnum', (self.regname,)).fetchall())
    if not found:
      return None
    kinds = [f.kind.sql_type() for f in self.layout.fields]
    # The server's own name for each type the job writes ('timestamptz'
    # is 'timestamp with time zone'); 'vector' only where pgvector is.
    named = [n or k for k, n in conn.execute(
        'SELECT k, format_type(to_regtype(k), NULL) FROM unnest(%s::text[]) '
        'WITH ORDINALITY AS t(k, i) ORDER BY i', (kinds,)).fetchall()]
    return base.compare_columns(self.layout, found,
                                dict(zip(self.layout.names, named)))

  def alter(self, name: str, kind: str, how: str = 'TYPE') -> str:
    """An ALTER TABLE statement for messages: TYPE or ADD COLUMN."""
    if how == 'ADD':
      return f'ALTER TABLE {self.name} ADD COLUMN {name} {kind}'
    return f'ALTER TABLE {self.name} ALTER COLUMN {name} TYPE {kind}'


class PostgresBackend(base.Backend):
  format = 'postgres'
  keyed_by_id = True

  def __init__(self, uri, record, settings=base.WriteSettings()):
    super().__init__(uri, record, settings)
    self.conninfo, self.table = split_uri(uri)

  @classmethod
  def claims(cls, uri: str) -> bool:
    return uri.startswith(SCHEMES)

  def shown(self) -> str:
    return redact(self.uri)

  def check(self) -> None:
    if self.settings.pg_index not in (None, *INDEXES):
      raise ValueError(f'--pg_index must be one of {INDEXES}')
    with connect(self.conninfo, self.uri) as conn:
      found = conn.execute("SELECT count(*) FROM pg_available_extensions "
                           "WHERE name = 'vector'").fetchone()[0]
      if not found:
        raise ValueError(f'PostgreSQL {self.shown()} has no pgvector '
                         'extension (CREATE EXTENSION vector needs it '
                         'installed on the server)')
      table = _Table(self.table, self.record)
      columns = table.inspect(conn)
      if columns is None:
        return
      base.refuse_columns(self.shown(), columns, table.alter)
      base.log_columns(self.shown(), columns, self.settings.probe)
      if self.settings.probe:
        for name, kind in columns.add:
          add_column(conn, table, name, kind, self.shown())

  def exists(self) -> bool:
    with connect(self.conninfo, self.uri) as conn:
      return _Table(self.table, self.record).exists(conn)

  def missing_parent(self) -> Optional[str]:
    """The schema: SCHEMA of SCHEMA.NAME, or for a bare NAME one of the
    search path (where CREATE TABLE puts it). A missing database fails
    the connection, which names it."""
    schema = self.table.rpartition('.')[0]
    there = ('EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)'
             if schema else 'current_schema() IS NOT NULL')
    with connect(self.conninfo, self.uri) as conn:
      found, database = conn.execute(
          f'SELECT {there}, current_database()',
          (schema,) if schema else ()).fetchone()
    if found:
      return None
    return (f'schema {schema} does not exist in database {database}'
            if schema else f'no schema of the search path exists in '
            f'database {database}')

  def check_readable(self) -> None:
    with connect(self.conninfo, self.uri) as conn:
      table = _Table(self.table, self.record)
      columns = table.inspect(conn)
      if columns is None:
        raise ValueError(f'--previous {self.shown()}: table {self.table} '
                         'does not exist; leave --previous out for a first '
                         'run')
      base.refuse_previous(self.shown(), columns,
                           lambda n, t: table.alter(n, t, 'ADD'))

  def check_previous(self, previous) -> None:
    """A nightly run into its --previous table: the table is there, and
    has no column the run does not write (rows it leaves alone would keep
    their values there)."""
    if not self.takes_changes(previous):
      return
    with connect(self.conninfo, self.uri) as conn:
      table = _Table(self.table, self.record)
      columns = table.inspect(conn)
    if columns is None:
      raise ValueError(f'--previous {self.shown()}: table {self.table} does '
                       'not exist; leave --previous out for a first run')
    base.refuse_stale(self.shown(), columns.extra,
                      lambda n: f'ALTER TABLE {self.table} DROP COLUMN {n}')

  def dead_letter_location(self) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(self.uri)
    query = [(k, f'{v}_dead_letter' if k == 'table' else v)
             for k, v in urllib.parse.parse_qsl(parts.query,
                                                keep_blank_values=True)]
    return urllib.parse.urlunsplit(parts._replace(
        query=urllib.parse.urlencode(query, safe='/:'))), self.format

  def write(self) -> beam.PTransform:
    return _WriteRows(self, delta=False)

  def takes_changes(self, previous) -> bool:
    return self.same_place(previous)

  def write_changes(self, previous, carried) -> beam.PTransform:
    delta = self.takes_changes(previous)
    return _WriteRows(self, delta=delta, carried=None if delta else carried)

  def lease_store(self):
    from transforms.leases import postgres as pg_leases
    return pg_leases.PostgresStore(self._side_statement, self.table,
                                   self.shown())

  def notes(self):
    from transforms import provenance
    return provenance.PostgresNotes(self._side_statement, self.table,
                                    self.shown())

  def _side_statement(self, table: str, columns: str, statement: str,
                      params: tuple = ()) -> tuple[int, list]:
    """One statement on a side table of this output (its lease, its
    notes), which those are handed rather than import this module."""
    return side_statement(self.conninfo, self.shown(), table, columns,
                          statement, params)

  def same_place(self, other) -> bool:
    return isinstance(other, PostgresBackend) and (
        split_uri(other.uri) == split_uri(self.uri))

  def read(self, names=None) -> beam.PTransform:
    return (beam.Create([None])
            | beam.FlatMap(lambda _: self.scan(names)))

  def scan(self, names=None):
    """Every row, streamed through a server-side cursor."""
    table = _Table(self.table, self.record)
    sql = table.sql
    names = list(names or [])
    with connect(self.conninfo, self.uri) as conn:
      if not table.exists(conn):
        raise ValueError(f'{self.shown()}: table {self.table} does not '
                         'exist')
      if not names:
        names = [r[0] for r in conn.execute(
            'SELECT attname FROM pg_attribute WHERE attrelid = '
            'to_regclass(%s) AND attnum > 0 AND NOT attisdropped '
            'ORDER BY attnum', (table.regname,))]
      query = sql.SQL('SELECT {} FROM {}').format(
          sql.SQL(', ').join(sql.Identifier(n) for n in names), table.ident)
      with conn.cursor(name='read_rows') as cursor:
        cursor.execute(query)
        for row in cursor:
          yield table.record(row, names)


class _Writer(beam.DoFn):
  """Batches of records -> rows written; batches of ids -> rows deleted.
  One connection per DoFn instance; one transaction per batch."""

  def __init__(self, backend: PostgresBackend):
    super().__init__()
    self._backend = backend
    self._conn = None
    self._upsert = None
    self._written = metrics.BEAM.counter(
        metrics.ROWS_WRITTEN.member(backend.record.name))
    self._deleted = metrics.BEAM.counter(
        metrics.ROWS_DELETED.member(backend.record.name))

  def setup(self):
    b = self._backend
    self._table = _Table(b.table, b.record)
    self._conn = connect(b.conninfo, b.uri)

  def process(self, batch, action: str):
    import psycopg
    try:
      with self._conn.transaction():
        if action == 'delete':
          count = self._delete(batch)
        else:
          count = self._insert(batch)
    except psycopg.OperationalError as e:
      raise RuntimeError(
          f'PostgreSQL write to {self._backend.shown()} failed: '
          f'{str(e).strip()}; a re-run leaves one copy') from e
    failpoints.reached('postgres:batch')
    yield count

  def _insert(self, batch) -> int:
    if self._upsert is None:
      dim = len(batch[0][self._table.layout.vector]) if (
          self._table.layout.vector) else None
      ensure_table(self._conn, self._table, dim)
      # The upsert, with NULL for the columns this job does not write
      # (logged at launch, see base.log_columns).
      self._upsert = self._table.insert(
          self._table.inspect(self._conn).extra)
    with self._conn.cursor() as cursor:
      cursor.executemany(self._upsert,
                         [self._table.params(r) for r in batch])
    self._written.inc(len(batch))
    return len(batch)

  def _delete(self, ids) -> int:
    sql = self._table.sql
    if not self._table.exists(self._conn):
      return 0
    cursor = self._conn.execute(
        sql.SQL('DELETE FROM {} WHERE {} = ANY(%s)').format(
            self._table.ident, sql.Identifier(self._table.layout.key)),
        (list(ids),))
    self._deleted.inc(cursor.rowcount)
    return cursor.rowcount

  def teardown(self):
    if self._conn is not None:
      self._conn.close()


def add_column(conn, table: _Table, name: str, kind: str,
               shown: str) -> None:
  """A field the table lacks (a new --metadata_fields field), added at
  launch, nullable: earlier rows get NULL, and a nightly run re-embeds
  those whose value is not (transforms/incremental.py)."""
  import psycopg
  sql = table.sql
  try:
    with conn.transaction():
      conn.execute(sql.SQL('ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}')
                   .format(table.ident, sql.Identifier(name), sql.SQL(kind)))
  except psycopg.Error as e:
    raise ValueError(
        f'{shown}: cannot add column {name} ({kind}), which this job writes '
        f'(--metadata_fields): {str(e).strip().splitlines()[0]}; add it '
        f'({table.alter(name, kind, "ADD")}) or leave {name} out of '
        '--metadata_fields') from e
  logging.warning('Added column %s (%s) to %s', name, kind, shown)


def ensure_table(conn, table: _Table, dim: Optional[int]) -> None:
  """Creates the extension and the table if missing, one worker at a time
  (an advisory lock: concurrent CREATE ... IF NOT EXISTS can collide), and
  checks an existing table's vector size."""
  conn.execute('SELECT pg_advisory_xact_lock(hashtext(%s))', (table.name,))
  conn.execute('CREATE EXTENSION IF NOT EXISTS vector')
  existing = table.dimension(conn) if table.layout.vector else None
  if existing and dim and existing != dim:
    raise ValueError(f'table {table.name} holds {existing}-d vectors; this '
                     f'model makes {dim}-d ones: write to another table')
  conn.execute(table.create(dim))


def finish(written: int, backend: PostgresBackend, delta: bool) -> int:
  """After every write: a full run deletes the rows of earlier runs (by
  their stamp); then the optional index. Returns rows deleted."""
  table = _Table(backend.table, backend.record)
  sql = table.sql
  deleted = 0
  with connect(backend.conninfo, backend.uri) as conn:
    with conn.transaction():
      if not table.exists(conn):
        if table.layout.vector:
          return 0  # no rows at all: the vector size is unknown
        ensure_table(conn, table, None)
      if not delta:
        deleted = conn.execute(
            sql.SQL('DELETE FROM {} WHERE {} IS DISTINCT FROM %s').format(
                table.ident, sql.Identifier(table.stamp)),
            (backend.settings.started,)).rowcount
    if backend.settings.pg_index == 'hnsw' and table.layout.vector:
      conn.execute(sql.SQL(
          'CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw ({} '
          'vector_cosine_ops)').format(
              sql.Identifier(f'{table.name.split(".")[-1]}_hnsw'),
              table.ident, sql.Identifier(table.layout.vector)))
      conn.commit()
  if deleted:
    logging.info('Deleted %d rows of earlier runs from %s', deleted,
                 backend.shown())
    metrics.BEAM.inc(metrics.ROWS_DELETED.member(backend.record.name),
                     deleted)
  del written
  return deleted


class _WriteRows(beam.PTransform):
  """Record dicts, or {'records', 'removed'?} -> rows written. A full run
  writes the carried records too, stamped as this run's."""

  def __init__(self, backend: PostgresBackend, delta: bool,
               carried: Optional[beam.PTransform] = None):
    super().__init__()
    self._backend = backend
    self._delta = delta
    self._carried = carried

  def expand(self, changes):
    if not isinstance(changes, dict):
      changes = {'records': changes}
    records = changes['records']
    if self._carried is not None:
      stamp = stamp_field(self._backend.record)
      carried = (records.pipeline
                 | 'Carried' >> self._carried
                 | 'Restamp' >> beam.Map(
                     lambda r, started: dict(r, **{stamp: started}),
                     self._backend.settings.started))
      records = [records, carried] | 'WithCarried' >> beam.Flatten()
    batch = dict(min_batch_size=1, max_batch_size=BATCH_ROWS)
    writer = _Writer(self._backend)
    counts = [records
              | 'Batch' >> beam.BatchElements(**batch)
              | 'Upsert' >> beam.ParDo(writer, 'insert')]
    if self._delta and 'removed' in changes:
      counts.append(changes['removed']
                    | 'BatchIds' >> beam.BatchElements(**batch)
                    | 'Delete' >> beam.ParDo(writer, 'delete'))
    return (counts
            | 'AllCounts' >> beam.Flatten()
            | 'Total' >> beam.CombineGlobally(sum)
            | 'Finish' >> beam.Map(finish, self._backend, self._delta))
