"""transforms/records.py's pure functions: each Kind's conversions (JSON,
BigQuery, SQL, tf.Example) and its Arrow and SQL types, to_backend /
from_backend round trips of EMBEDDINGS and DEAD_LETTERS with metadata,
storable, pgvector's text form, NonFinite, parse_time / utc, layout_of,
to_arrow / from_arrow in memory, embedding_record / dead_letter_record and
Record.markdown_table.

Why: every backend derives its rows from these declarations, so a wrong
conversion here corrupts every output at once, and today only full
pipeline runs reach them.
"""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pytest

from tests import helpers
from transforms import records
from transforms.elements import MAX_RAW_CHARS, DeadLetter, EmbeddedDocument

pytestmark = pytest.mark.unit

UTC = datetime.timezone.utc
MOMENT = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
# 0.1 is not a float32: its nearest float32 must survive exactly.
VECTOR = np.array([0.1, -2.5, 1e-30, 3.4e38, 0.0], np.float32)


def _record(**extra):
  record = {
      'id': 'doc-1', 'embedding': VECTOR.copy(), 'model': 'minilm-l6',
      'pooling': 'mean', 'num_tokens': 12, 'truncated': False,
      'num_chunks': 1, 'content_hash': 'ab' * 32,
      'model_fingerprint': 'f' * 16, 'embedded_at': MOMENT,
  }
  record.update(extra)
  return record


def _letter(**extra):
  letter = {'source': 'gs://b/in.jsonl:3', 'raw': '{"x": 1}',
            'raw_truncated': False, 'error_type': 'bad_json',
            'message': 'no text', 'stage': 'read', 'failed_at': MOMENT}
  letter.update(extra)
  return letter



# --- time ---------------------------------------------------------------


@pytest.mark.parametrize('text', [
    '2026-01-02 03:04:05.678901 UTC',
    '2026-01-02T03:04:05.678901+00:00',
    '2026-01-02T03:04:05.678901',  # naive: taken as UTC
    '2026-01-02T05:04:05.678901+02:00',
    '  2026-01-02T03:04:05.678901Z  ',
])
def test_parse_time_forms_give_the_same_utc_moment(text):
  got = records.parse_time(text)
  assert got == MOMENT
  assert got.utcoffset() == datetime.timedelta(0)


def test_utc_moves_an_aware_moment_to_utc_keeping_the_instant():
  paris = datetime.timezone(datetime.timedelta(hours=1))
  moment = datetime.datetime(2026, 1, 2, 4, 4, 5, tzinfo=paris)
  got = records.utc(moment)
  assert got.tzinfo == UTC
  assert (got.hour, got.minute) == (3, 4)


def test_timestamp_kind_conversions():
  ts = records.TIMESTAMP
  assert ts.to_json(MOMENT) == '2026-01-02T03:04:05.678901+00:00'
  assert ts.from_json('2026-01-02T03:04:05.678901+00:00') == MOMENT
  assert ts.to_bigquery(MOMENT) == '2026-01-02 03:04:05.678901 UTC'
  assert ts.from_bigquery('2026-01-02 03:04:05.678901 UTC') == MOMENT
  assert ts.from_bigquery(MOMENT.astimezone(
      datetime.timezone(datetime.timedelta(hours=-5)))).tzinfo == UTC
  assert ts.to_sql(MOMENT) is MOMENT
  assert ts.to_example(MOMENT) == b'2026-01-02T03:04:05.678901+00:00'
  assert ts.from_example([b'2026-01-02T03:04:05.678901+00:00']) == MOMENT
  assert ts.from_example([]) is None


# --- scalar kinds ---------------------------------------------------------


@pytest.mark.parametrize('kind,value,example,from_example', [
    (records.STRING, 'héllo', b'h\xc3\xa9llo', 'héllo'),
    (records.INT, 7, 7, 7),
    (records.BOOL, True, 1, True),
    (records.BOOL, False, 0, False),
])
def test_scalar_kinds_to_and_from_example(kind, value, example,
                                          from_example):
  assert kind.to_example(value) == example
  back = kind.from_example([example])
  assert back == from_example and type(back) is type(from_example)
  assert kind.from_example([]) is None
  # JSON, BigQuery and SQL take these values as they are.
  for conversion in ('to_json', 'from_json', 'to_bigquery',
                     'from_bigquery', 'to_sql', 'from_sql'):
    assert getattr(kind, conversion)(value) == value


@pytest.mark.parametrize('kind,arrow,sql,bigquery,example', [
    (records.STRING, pa.string(), 'text', 'STRING', 'bytes_list'),
    (records.INT, pa.int64(), 'bigint', 'INT64', 'int64_list'),
    (records.BOOL, pa.bool_(), 'boolean', 'BOOL', 'int64_list'),
    (records.TIMESTAMP, pa.timestamp('us', tz='UTC'), 'timestamptz',
     'TIMESTAMP', 'bytes_list'),
])
def test_scalar_kind_types(kind, arrow, sql, bigquery, example):
  assert kind.arrow_type() == arrow
  assert kind.arrow_type(384) == arrow
  assert kind.sql_type() == sql
  assert kind.sql_type(384) == sql
  assert (kind.bigquery, kind.example, kind.repeated) == (
      bigquery, example, False)


def test_vector_kind_types():
  v = records.VECTOR
  assert v.arrow_type(3) == pa.list_(pa.float32(), 3)
  assert v.arrow_type() == pa.list_(pa.float32())
  assert v.sql_type(384) == 'vector(384)'
  assert v.sql_type() == 'vector'
  assert (v.bigquery, v.repeated, v.example) == (
      'FLOAT64', True, 'float_list')


def test_arrow_array_of_scalars_keeps_nulls():
  got = records.INT.arrow_array([1, None, 3])
  assert got.type == pa.int64()
  assert got.to_pylist() == [1, None, 3]
  assert got.null_count == 1


def test_arrow_array_of_vectors_is_fixed_size_float32():
  got = records.VECTOR.arrow_array([[1.0, 2.0], np.array([3, 4])], 2)
  assert got.type == pa.list_(pa.float32(), 2)
  assert got.to_pylist() == [[1.0, 2.0], [3.0, 4.0]]
  empty = records.VECTOR.arrow_array([], None)
  assert len(empty) == 0 and empty.type == pa.list_(pa.float32())


# --- vectors ----------------------------------------------------------------


def test_vector_json_and_bigquery_are_exact_python_floats():
  as_json = records.VECTOR.to_json(VECTOR)
  assert all(type(x) is float for x in as_json)
  # float32 0.1 widened, not 0.1: the exact float32 value.
  assert as_json[0] == 0.10000000149011612
  assert records.VECTOR.to_bigquery(VECTOR) == as_json
  back = records.VECTOR.from_json(as_json)
  assert back.dtype == np.float32
  np.testing.assert_array_equal(back, VECTOR)
  np.testing.assert_array_equal(records.VECTOR.from_bigquery(as_json),
                                VECTOR)


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_vector_to_bigquery_refuses_non_finite(bad):
  with pytest.raises(records.NonFinite):
    records.VECTOR.to_bigquery(np.array([1.0, bad], np.float32))
  assert issubclass(records.NonFinite, ValueError)


def test_vector_text_is_pgvector_text():
  assert records.vector_text(np.array([0.5, -1, 2], np.float32)) == (
      '[0.5,-1.0,2.0]')
  assert records.vector_text(np.array([0.1], np.float32)) == (
      '[0.10000000149011612]')
  assert records.vector_text([]) == '[]'


def test_parse_vector_reads_pgvector_text():
  got = records.parse_vector('[1,-2.5,3e-3]')
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, np.array([1, -2.5, 3e-3], np.float32))
  empty = records.parse_vector('[]')
  assert empty.shape == (0,) and empty.dtype == np.float32


def test_vector_text_round_trips_float32_exactly():
  rng = np.random.default_rng(26)
  values = np.concatenate([
      rng.standard_normal(500).astype(np.float32),
      np.array([np.finfo(np.float32).max, np.finfo(np.float32).tiny,
                np.finfo(np.float32).smallest_subnormal, -0.0,
                np.float32(1) / 3], np.float32)])
  back = records.parse_vector(records.vector_text(values))
  assert back.tobytes() == values.tobytes()


def test_vector_sql_conversions():
  assert records.VECTOR.to_sql(np.array([1.5], np.float32)) == '[1.5]'
  np.testing.assert_array_equal(records.VECTOR.from_sql('[1.5,2]'),
                                np.array([1.5, 2], np.float32))
  adapted = np.array([4.0], np.float32)
  assert records.VECTOR.from_sql(adapted) is adapted


# --- storable ---------------------------------------------------------------


@pytest.mark.parametrize('text,want', [
    ('a\0b', 'a\\x00b'),
    ('x\ud800y', 'x\\ud800y'),
    ('\udfff', '\\udfff'),
    ('plain é 😀', 'plain é 😀'),
    ('', ''),
    (None, None),
])
def test_storable_escapes_nul_and_lone_surrogates(text, want):
  got = records.storable(text)
  assert got == want
  if got:
    got.encode('utf-8')  # storable: raises on a lone surrogate
    assert '\0' not in got


# --- to_backend / from_backend ----------------------------------------------


def test_embeddings_json_round_trip_with_metadata():
  layout = records.EMBEDDINGS.with_metadata(['lang', 'title'])
  record = _record(lang='en', title=None)
  row = records.to_backend(record, layout, 'to_json')
  assert list(row) == list(layout.names)
  assert row['embedded_at'] == '2026-01-02T03:04:05.678901+00:00'
  assert row['embedding'] == [float(x) for x in VECTOR]
  assert (row['lang'], row['title']) == ('en', None)
  back = records.from_backend(row, layout, 'from_json')
  helpers.assert_same_record(back, record)


@pytest.mark.parametrize('conversion', ['bigquery', 'sql'])
def test_embeddings_round_trip_other_backends(conversion):
  layout = records.EMBEDDINGS.with_metadata(['lang'])
  record = _record(lang='de')
  row = records.to_backend(record, layout, f'to_{conversion}')
  back = records.from_backend(row, layout, f'from_{conversion}')
  helpers.assert_same_record(back, record)


def test_to_backend_fills_missing_fields_with_none():
  row = records.to_backend({'id': 'x', 'embedding': VECTOR},
                           records.EMBEDDINGS, 'to_bigquery')
  assert row['model'] is None and row['embedded_at'] is None
  assert row['id'] == 'x'


def test_from_backend_keeps_unknown_fields_as_they_are():
  back = records.from_backend({'id': 'x', 'extra': [1, 2]},
                              records.EMBEDDINGS, 'from_json')
  assert back == {'id': 'x', 'extra': [1, 2]}


@pytest.mark.parametrize('conversion', ['json', 'bigquery', 'sql'])
def test_dead_letters_round_trip(conversion):
  layout = records.DEAD_LETTERS.with_metadata(['origin'])
  letter = _letter(origin='nightly')
  row = records.to_backend(letter, layout, f'to_{conversion}')
  back = records.from_backend(row, layout, f'from_{conversion}')
  helpers.assert_same_record(back, letter)


def test_with_metadata_adds_string_fields_and_refuses_clashes():
  layout = records.EMBEDDINGS.with_metadata(['a', 'b'])
  assert layout.names[-2:] == ('a', 'b')
  assert layout.metadata == ('a', 'b')
  assert layout.field('a').kind == records.STRING
  assert not layout.field('a').required
  assert records.EMBEDDINGS.metadata == ()  # the original is unchanged
  with pytest.raises(ValueError, match=r"\['model'\] clash"):
    records.EMBEDDINGS.with_metadata(['model', 'c'])


def test_layout_of_finds_metadata_in_rows_sorted():
  rows = [{'id': 'a', 'zeta': '1'}, {'id': 'b', 'alpha': '2'}, {}]
  layout = records.layout_of(records.EMBEDDINGS, rows)
  assert layout.metadata == ('alpha', 'zeta')
  assert records.layout_of(records.EMBEDDINGS, []).names == (
      records.EMBEDDINGS.names)


def test_record_vector_and_key():
  assert records.EMBEDDINGS.vector == 'embedding'
  assert records.EMBEDDINGS.key == 'id'
  assert records.DEAD_LETTERS.vector is None
  assert records.DEAD_LETTERS.key is None


# --- Arrow --------------------------------------------------------------------


def test_to_arrow_schema_and_values():
  layout = records.EMBEDDINGS.with_metadata(['lang'])
  rows = [_record(lang='en'), _record(id='doc-2', lang=None, model=None)]
  table = records.to_arrow(layout, rows)
  schema = table.schema
  assert schema.names == list(layout.names)
  assert schema.field('embedding').type == pa.list_(pa.float32(), 5)
  assert not schema.field('id').nullable
  assert not schema.field('embedding').nullable
  assert schema.field('model').nullable
  assert schema.field('embedded_at').type == pa.timestamp('us', tz='UTC')
  assert schema.field('truncated').type == pa.bool_()
  assert table.column('lang').to_pylist() == ['en', None]
  assert table.column('model').to_pylist() == ['minilm-l6', None]
  flat = table.column('embedding').combine_chunks().flatten()
  assert flat.to_numpy().tobytes() == np.concatenate([VECTOR,
                                                      VECTOR]).tobytes()


def test_arrow_round_trip():
  layout = records.EMBEDDINGS.with_metadata(['lang'])
  rows = [_record(lang='en'), _record(id='doc-2', lang=None,
                                      truncated=True, num_tokens=0)]
  back = records.from_arrow(records.to_arrow(layout, rows))
  assert len(back) == 2
  for got, want in zip(back, rows):
    helpers.assert_same_record(got, want)


def test_dead_letters_arrow_round_trip():
  rows = [_letter(), _letter(raw=None, message='x\\x00')]
  back = records.from_arrow(records.to_arrow(records.DEAD_LETTERS, rows))
  for got, want in zip(back, rows):
    helpers.assert_same_record(got, want)


def test_to_arrow_of_no_rows_has_a_variable_size_vector():
  table = records.to_arrow(records.EMBEDDINGS, [])
  assert table.num_rows == 0
  assert table.schema.field('embedding').type == pa.list_(pa.float32())
  assert records.from_arrow(table) == []


def test_to_arrow_takes_an_explicit_dimension():
  table = records.to_arrow(records.EMBEDDINGS, [], dim=8)
  assert table.schema.field('embedding').type == pa.list_(pa.float32(), 8)


# --- records from elements ------------------------------------------------


def test_embedding_record_from_an_embedded_document():
  doc = EmbeddedDocument(id='d', embedding=[0.25, 0.5], num_tokens=np.int64(9),
                         truncated=np.bool_(True), content_hash='h',
                         num_chunks=3, metadata=(('lang', 'fr'),))
  run = records.RunInfo(model='m', pooling='cls', fingerprint='fp',
                        started=MOMENT)
  got = records.embedding_record(doc, run)
  helpers.assert_same_record(got, {
      'id': 'd', 'embedding': np.array([0.25, 0.5], np.float32),
      'model': 'm', 'pooling': 'cls', 'num_tokens': 9, 'truncated': True,
      'num_chunks': 3, 'content_hash': 'h', 'model_fingerprint': 'fp',
      'embedded_at': MOMENT, 'lang': 'fr'})


def test_dead_letter_record_is_storable_and_cut():
  raw = '\0' + 'r' * (MAX_RAW_CHARS + 10)
  letter = DeadLetter(source='s\ud800', raw=raw, error_type='too_long',
                      message='m\0', stage='embed')
  got = records.dead_letter_record(letter, MOMENT)
  assert got == {
      'source': 's\\ud800', 'raw': '\\x00' + 'r' * (MAX_RAW_CHARS - 1),
      'raw_truncated': True, 'error_type': 'too_long',
      'message': 'm\\x00', 'stage': 'embed', 'failed_at': MOMENT}


def test_dead_letter_record_of_a_short_raw_is_not_truncated():
  letter = DeadLetter('s', 'r' * MAX_RAW_CHARS, 'e', 'm', 'read')
  got = records.dead_letter_record(letter, MOMENT)
  assert got['raw'] == 'r' * MAX_RAW_CHARS
  assert got['raw_truncated'] is False


# --- the README's table -----------------------------------------------------


def test_markdown_table():
  table = records.EMBEDDINGS.markdown_table().splitlines()
  assert table[0] == ('| field | tf.Example | BigQuery | Parquet | '
                      'PostgreSQL | content |')
  assert table[1] == '|---|---|---|---|---|---|'
  assert len(table) == 2 + len(records.EMBEDDINGS.fields)
  assert table[2] == ('| `id` | bytes_list | STRING | string | text '
                      'PRIMARY KEY | document id (see Ids) |')
  assert table[3].startswith(
      '| `embedding` | float_list | FLOAT64 REPEATED | '
      'fixed_size_list<float32>[DIM] | vector(DIM) | the pooled')
  by_name = {line.split('`')[1]: line for line in table[2:]}
  assert '| int64_list | BOOL | bool | boolean |' in by_name['truncated']
  assert ('| bytes_list | TIMESTAMP | timestamp[us, UTC] | timestamptz |'
          in by_name['embedded_at'])
  dead = records.DEAD_LETTERS.markdown_table()
  assert 'PRIMARY KEY' not in dead
