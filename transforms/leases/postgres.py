"""Leases of PostgreSQL outputs: one row per output table in a lease table
beside it (text_embed_leases, in the output table's schema), changed only by
statements whose WHERE names the token read, so that each operation is
atomic (INSERT ... ON CONFLICT DO NOTHING, UPDATE/DELETE ... WHERE token =
...)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from transforms.leases import Store, version_of

TABLE = 'text_embed_leases'


class PostgresStore(Store):
  """side(table, columns, statement, params) -> (rowcount, rows): the
  output's backend runs one statement on a side table (transforms/backends/
  postgres.py, side_statement), so that this module does not import it."""

  def __init__(self, side: Callable, table: str, shown: str):
    self._side = side
    self._output = table
    schema = table.rsplit('.', 1)[0] + '.' if '.' in table else ''
    self._table = schema + TABLE
    self._shown = shown
    self.output = shown

  def shown(self) -> str:
    return f'row {self._output!r} of table {self._table} in {self._shown}'

  def _run(self, statement: str, params: tuple):
    """(rowcount, first row) of one statement in its own transaction."""
    count, rows = self._side(
        self._table,
        'output text PRIMARY KEY, token text NOT NULL, lease text NOT NULL',
        statement, params)
    return count, (rows[0] if rows else None)

  def create(self, text: str) -> Optional[Any]:
    token = version_of(text)
    count, _ = self._run('INSERT INTO {} (output, token, lease) VALUES '
                         '(%s, %s, %s) ON CONFLICT (output) DO NOTHING',
                         (self._output, token, text))
    return token if count == 1 else None

  def read(self) -> Optional[tuple[str, Any]]:
    _, row = self._run('SELECT lease, token FROM {} WHERE output = %s',
                       (self._output,))
    return (row[0], row[1]) if row else None

  def replace(self, text: str, version: Any) -> Optional[Any]:
    token = version_of(text)
    count, _ = self._run('UPDATE {} SET token = %s, lease = %s WHERE '
                         'output = %s AND token = %s',
                         (token, text, self._output, version))
    return token if count == 1 else None

  def delete(self, version: Any) -> bool:
    count, _ = self._run('DELETE FROM {} WHERE output = %s AND token = %s',
                         (self._output, version))
    return count == 1

