"""The backends' pure row functions: bigquery.to_row / from_row and
jsonl.to_json / from_json round trips (the exact JSON text of a small
record included), and postgres.split_uri / redact on connection URIs.

Why: these decide what is written to and read back from each output
(--previous reads its own rows back), and a password shown in a message or
log is a leak.
"""

from __future__ import annotations

import datetime
import json

import numpy as np
import pytest
from psycopg.conninfo import conninfo_to_dict

from tests import helpers
from transforms import records
from transforms.backends import bigquery
from transforms.backends import jsonl
from transforms.backends import postgres

pytestmark = pytest.mark.unit

UTC = datetime.timezone.utc
MOMENT = datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)


def _record(**extra):
  record = {
      'id': 'é-1', 'embedding': np.array([0.5, -1.25], np.float32),
      'model': 'm', 'pooling': 'mean', 'num_tokens': 4, 'truncated': True,
      'num_chunks': 1, 'content_hash': 'h', 'model_fingerprint': 'fp',
      'embedded_at': MOMENT,
  }
  record.update(extra)
  return record



# --- BigQuery ---------------------------------------------------------------


def test_to_row_is_json_ready():
  layout = records.EMBEDDINGS.with_metadata(['lang'])
  row = bigquery.to_row(_record(lang='en'), layout)
  assert row == {
      'id': 'é-1', 'embedding': [0.5, -1.25], 'model': 'm',
      'pooling': 'mean', 'num_tokens': 4, 'truncated': True,
      'num_chunks': 1, 'content_hash': 'h', 'model_fingerprint': 'fp',
      'embedded_at': '2026-01-02 03:04:05.000006 UTC', 'lang': 'en'}
  json.dumps(row)  # numpy values would not serialise


def test_bigquery_round_trip_from_text_and_from_datetime():
  layout = records.EMBEDDINGS.with_metadata(['lang'])
  record = _record(embedding=np.array([0.1, 1e-7], np.float32), lang=None)
  row = bigquery.to_row(record, layout)
  helpers.assert_same_record(bigquery.from_row(row, layout), record)
  # Beam's reader gives TIMESTAMP as a datetime, REPEATED as a list.
  row['embedded_at'] = MOMENT
  helpers.assert_same_record(bigquery.from_row(row, layout), record)


def test_bigquery_dead_letters_round_trip():
  letter = {'source': 's', 'raw': None, 'raw_truncated': False,
            'error_type': 'e', 'message': 'm', 'stage': 'read',
            'failed_at': MOMENT}
  row = bigquery.to_row(letter, records.DEAD_LETTERS)
  assert row['failed_at'] == '2026-01-02 03:04:05.000006 UTC'
  helpers.assert_same_record(bigquery.from_row(row, records.DEAD_LETTERS),
                             letter)


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_to_row_names_the_document_with_non_finite_values(bad):
  record = _record(embedding=np.array([1.0, bad], np.float32))
  with pytest.raises(ValueError,
                     match=r"^embedding of 'é-1' has non-finite values$"):
    bigquery.to_row(record, records.EMBEDDINGS)


# --- JSON lines ---------------------------------------------------------------


def test_to_json_exact_text():
  layout = records.DEAD_LETTERS.with_metadata(['lang'])
  letter = {'source': 'ß', 'raw': '"q"', 'raw_truncated': True,
            'error_type': 'e', 'message': None, 'stage': 'read',
            'failed_at': MOMENT, 'lang': 'de'}
  assert jsonl.to_json(letter, layout) == (
      '{"source": "ß", "raw": "\\"q\\"", "raw_truncated": true, '
      '"error_type": "e", "message": null, "stage": "read", '
      '"failed_at": "2026-01-02T03:04:05.000006+00:00", "lang": "de"}')


def test_to_json_of_an_embedding_record_exact_text():
  record = {'id': 'a', 'embedding': np.array([0.5, 2], np.float32),
            'num_tokens': 3}
  assert jsonl.to_json(record, records.EMBEDDINGS) == (
      '{"id": "a", "embedding": [0.5, 2.0], "model": null, '
      '"pooling": null, "num_tokens": 3, "truncated": null, '
      '"num_chunks": null, "content_hash": null, '
      '"model_fingerprint": null, "embedded_at": null}')


def test_jsonl_round_trip_with_metadata():
  layout = records.EMBEDDINGS.with_metadata(['lang', 'tag'])
  record = _record(embedding=np.array([0.1, -3e-38], np.float32),
                   lang='日本', tag=None)
  line = jsonl.to_json(record, layout)
  assert '\n' not in line
  helpers.assert_same_record(jsonl.from_json(line, layout), record)


def test_from_json_keeps_undeclared_fields():
  got = jsonl.from_json('{"id": "x", "other": 1}', records.EMBEDDINGS)
  assert got == {'id': 'x', 'other': 1}


def test_from_json_refuses_a_line_that_is_not_an_object():
  with pytest.raises(ValueError, match='expected a JSON object, got list'):
    jsonl.from_json('[1, 2]', records.EMBEDDINGS)


# --- PostgreSQL URIs ----------------------------------------------------------


@pytest.mark.parametrize('uri,rest,table', [
    ('postgresql://u@h:5432/db?table=emb',
     'postgresql://u@h:5432/db', 'emb'),
    ('postgres://u:pw@h/db?sslmode=require&table=s.emb',
     'postgres://u:pw@h/db?sslmode=require', 's.emb'),
    ('postgresql:///db?host=/var/run/postgresql&table=_t1',
     'postgresql:///db?host=/var/run/postgresql', '_t1'),
    ('postgresql://h/db?table=t&port=5433&connect_timeout=5',
     'postgresql://h/db?port=5433&connect_timeout=5', 't'),
])
def test_split_uri(uri, rest, table):
  assert postgres.split_uri(uri) == (rest, table)


@pytest.mark.parametrize('uri', [
    'postgresql://u:s3cret@h/db',
    'postgresql://u:s3cret@h/db?table=',
    'postgresql://u:s3cret@h/db?table=a&table=b',
    'postgresql://u:s3cret@h/db?table=1abc',
    'postgresql://u:s3cret@h/db?table=a;drop',
    'postgresql://u:s3cret@h/db?table=a.b.c',
    'postgresql://u:s3cret@h/db?table=a-b',
])
def test_split_uri_refuses_a_missing_or_bad_table_without_the_password(uri):
  with pytest.raises(ValueError, match='does not name one table') as e:
    postgres.split_uri(uri)
  message = str(e.value)
  assert 's3cret' not in message
  assert 'postgresql://u:***@h/db' in message
  assert '?table=NAME' in message


@pytest.mark.parametrize('uri,want', [
    ('postgresql://u:pw@h:5432/db?table=t',
     'postgresql://u:***@h:5432/db?table=t'),
    ('postgresql://u:@h/db', 'postgresql://u:***@h/db'),
    ('postgresql://u:p%40ss@h/db', 'postgresql://u:***@h/db'),
    ('postgresql://u:p@ss@h/db', 'postgresql://u:***@h/db'),
    ('postgresql://u@h/db', 'postgresql://u@h/db'),
    ('postgresql:///db?host=/tmp', 'postgresql:///db?host=/tmp'),
])
def test_redact_hides_the_password(uri, want):
  assert postgres.redact(uri) == want


def test_redact_hides_a_password_query_parameter():
  got = postgres.redact('postgresql://u@h/db?password=s3cret&table=t')
  assert 's3cret' not in got


def test_split_uri_keeps_spaces_in_parameters_as_libpq_reads_them():
  rest, _ = postgres.split_uri(
      'postgresql://u@h/db?options=-c%20search_path%3Dx&table=t')
  assert conninfo_to_dict(rest)['options'] == '-c search_path=x'


@pytest.mark.parametrize('uri,want', [
    ('postgresql://u@h:5433/db?sslmode=require&table=t',
     {'user': 'u', 'host': 'h', 'port': '5433', 'dbname': 'db',
      'sslmode': 'require'}),
    ('postgresql://u@h/db?application_name=a%2Fb&table=t',
     {'user': 'u', 'host': 'h', 'dbname': 'db', 'application_name': 'a/b'}),
])
def test_split_uri_leaves_libpq_the_same_parameters(uri, want):
  # libpq's own URI parser (no connection is made).
  rest, _ = postgres.split_uri(uri)
  assert conninfo_to_dict(rest) == want
