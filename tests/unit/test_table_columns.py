"""base.compare_columns: how a table's columns meet the records a job
writes, which both table backends act on at launch (add, NULL, refuse).

Why: a wrong answer either leaves an earlier run's metadata beside new
vectors, or fails a run after everything was embedded
(tests/test_table_schema.py runs the backends on a real PostgreSQL and
the BigQuery emulator).
"""

from __future__ import annotations

import pytest

from transforms import records
from transforms.backends import base

pytestmark = pytest.mark.unit

LAYOUT = records.EMBEDDINGS.with_metadata(['a', 'b'])
TYPES = {f.name: f.kind.bigquery for f in LAYOUT.fields}


def test_the_same_columns_need_nothing():
  assert base.compare_columns(LAYOUT, dict(TYPES), TYPES) == base.Columns(
      (), (), (), ())


def test_added_removed_renamed_and_retyped_fields():
  found = {n: t for n, t in TYPES.items() if n not in ('b', 'model')}
  found.update(a='INT64', c='STRING')  # a retyped; c an earlier field
  got = base.compare_columns(LAYOUT, found, TYPES)
  assert got.add == (('model', 'STRING'), ('b', 'STRING'))
  assert got.extra == ('c',)
  assert got.mistyped == (('a', 'INT64', 'STRING'),)
  assert got.missing == ()


def test_a_table_without_a_required_field_is_not_this_jobs():
  found = {n: t for n, t in TYPES.items() if n != 'embedding'}
  columns = base.compare_columns(LAYOUT, found, TYPES)
  assert columns.missing == ('embedding',)
  with pytest.raises(ValueError, match='^T is not an output of this job: '
                     'it has no column embedding; write to another table$'):
    base.refuse_columns('T', columns, lambda n, t: '')


def test_a_nightly_run_refuses_columns_it_does_not_write():
  base.refuse_stale('T', (), lambda n: '')
  with pytest.raises(ValueError, match=r'column\(s\) c, d this job does not '
                     r'write.*--metadata_fields with c, d, drop the column '
                     r'\(DROP c; DROP d\), or run a full run'):
    base.refuse_stale('T', ('c', 'd'), lambda n: f'DROP {n}')
