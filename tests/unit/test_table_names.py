"""BigQuery table names split once (bigquery_tables.TableName), in every
form the job meets them: the flags' bq:// URI, Beam's PROJECT:DATASET.TABLE
and the dotted form of SQL. Domain-scoped projects ("example.com:proj")
hold a ':' and dots of their own, which a split at the first ':' or '.'
got wrong: the lease and the notes of such an output went to a table of
another project."""

from __future__ import annotations

import pytest

from transforms import provenance
from transforms.bigquery_tables import TableName, table_spec
from transforms.leases import bigquery as bq_leases

pytestmark = pytest.mark.unit

DOMAIN = TableName('example.com:proj', 'ds', 'docs')


@pytest.mark.parametrize('name', [
    'bq://example.com:proj.ds.docs', 'example.com:proj:ds.docs',
    'example.com:proj.ds.docs'])
def test_a_domain_scoped_table_in_every_form(name):
  found = TableName.of(name)
  assert found == DOMAIN
  assert found.spec == 'example.com:proj:ds.docs'
  assert found.dotted == 'example.com:proj.ds.docs'
  assert found.dataset_id == 'example.com:proj.ds'


@pytest.mark.parametrize('name', [
    'bq://my-proj.ds_1.docs-2', 'my-proj:ds_1.docs-2', 'my-proj.ds_1.docs-2'])
def test_a_plain_table_in_every_form(name):
  assert TableName.of(name) == TableName('my-proj', 'ds_1', 'docs-2')


def test_the_forms_round_trip():
  assert TableName.of(DOMAIN.spec) == TableName.of(DOMAIN.dotted) == DOMAIN
  assert table_spec('bq://example.com:proj.ds.docs') == DOMAIN.spec


def test_a_malformed_uri_is_refused():
  with pytest.raises(ValueError, match='not a BigQuery table'):
    TableName.of('bq://ds.docs')


def test_the_lease_and_the_notes_stay_in_the_outputs_dataset():
  def side(*args, **kwargs):
    raise AssertionError('no statement runs here')

  store = bq_leases.BigQueryStore(side, DOMAIN.spec, 'bq://...')
  assert store.shown() == (
      "row 'docs' of table example.com:proj.ds._text_embed_leases")
  notes = provenance.BigQueryNotes(side, DOMAIN.spec)
  assert notes.shown() == 'table example.com:proj.ds._text_embed_specs'
