"""Leases of BigQuery outputs: one row per output table in a lease table in
its dataset (_text_embed_leases), changed by DML whose condition names the
version read. BigQuery runs mutating DML statements on one table one after
another (a concurrent one that conflicts fails), so each operation is
atomic; the insert is a MERGE with an update clause for that reason (an
INSERT alone may run beside another)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from transforms import bigquery_tables as tables
from transforms.leases import Store, version_of

TABLE = '_text_embed_leases'


class BigQueryStore(Store):
  """side(table, columns, statement, **params) -> (job, rows): the
  output's backend runs one statement on a side table (transforms/backends/
  bigquery.py, side_query), so that this module does not import it."""

  def __init__(self, side: Callable, spec: str, shown: str):
    self._side = side
    # spec: PROJECT:DATASET.TABLE (Beam's form).
    project, dataset, self._output = tables.TableName.of(spec)
    self._table = f'{project}.{dataset}.{TABLE}'
    self._shown = shown
    self.output = shown

  def shown(self) -> str:
    return f'row {self._output!r} of table {self._table}'

  def _query(self, statement: str, **params):
    """The job of one statement (its rows, or its DML counts)."""
    return self._side(self._table, ('output', 'token', 'lease'), statement,
                      **params)

  def create(self, text: str) -> Optional[Any]:
    token = version_of(text)
    job, _ = self._query(
        'MERGE {table} L USING (SELECT @output AS output) S '
        'ON L.output = S.output '
        'WHEN MATCHED AND L.token = @token THEN UPDATE SET lease = @lease '
        'WHEN NOT MATCHED THEN INSERT (output, token, lease) '
        'VALUES (@output, @token, @lease)',
        output=self._output, token=token, lease=text)
    return token if _affected(job) == 1 else None

  def read(self) -> Optional[tuple[str, Any]]:
    _, rows = self._query('SELECT lease, token FROM {table} '
                          'WHERE output = @output', output=self._output)
    return (rows[0]['lease'], rows[0]['token']) if rows else None

  def replace(self, text: str, version: Any) -> Optional[Any]:
    token = version_of(text)
    job, _ = self._query(
        'UPDATE {table} SET token = @token, lease = @lease '
        'WHERE output = @output AND token = @old',
        output=self._output, token=token, lease=text, old=version)
    return token if _affected(job) == 1 else None

  def delete(self, version: Any) -> bool:
    job, _ = self._query('DELETE FROM {table} WHERE output = @output AND '
                         'token = @old', output=self._output, old=version)
    return _affected(job) == 1


def _affected(job) -> int:
  return int(job.num_dml_affected_rows or 0)

