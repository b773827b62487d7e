"""docs/running.md's "Input formats", statement by statement: how each file
format's records become documents or dead letters (the sources' parse
functions, no pipeline).

Why: a corpus exported by a spreadsheet or another tool differs from ours
in small ways (a delimiter, a blank line, an id column of numbers); the
documentation says what each one gives, and these tests hold the code to
it.
"""

from __future__ import annotations

import datetime
import io

import pyarrow as pa
import pytest

from transforms import read as read_lib
from transforms.elements import DeadLetter, Document, derived_id
from transforms.sources import parquet as parquet_source
from transforms.sources import tfrecord as tfrecord_source

pytestmark = pytest.mark.unit

FIELDS = read_lib.Fields(metadata_fields=('lang',))


def _csv(data: bytes, fields=FIELDS) -> list:
  return list(read_lib.parse_csv_file('f.csv', io.BytesIO(data), fields))


def _what(parsed) -> tuple:
  """(source, id, text, metadata) of a document, (source, error_type,
  message) of a dead letter."""
  if isinstance(parsed, DeadLetter):
    return parsed.source, parsed.error_type, parsed.message
  assert isinstance(parsed, Document)
  return parsed.source, parsed.id, parsed.text, dict(parsed.metadata)


# --- CSV ----------------------------------------------------------------------


def test_csv_quoted_fields_hold_commas_quotes_and_line_breaks():
  """Rows start where the row's first line is (header: line 1)."""
  got = _csv(b'id,text,lang\r\n'
             b'1,"a, b\nc",en\r\n'
             b'2,"say ""hi""\r\nthen go",fr\r\n'
             b'3,plain,\r\n')
  assert [_what(g) for g in got] == [
      ('f.csv:2', '1', 'a, b\nc', {'lang': 'en'}),
      ('f.csv:4', '2', 'say "hi"\r\nthen go', {'lang': 'fr'}),
      ('f.csv:6', '3', 'plain', {'lang': ''}),
  ]


def test_csv_rows_of_another_width_are_malformed_a_blank_line_too():
  got = _csv(b'id,text,lang\n1,two fields\n\n2,x,en,extra\n3,fine,en\n')
  assert [_what(g) for g in got] == [
      ('f.csv:2', 'malformed_csv', 'expected 3 fields, got 2'),
      ('f.csv:3', 'malformed_csv', 'expected 3 fields, got 0'),
      ('f.csv:4', 'malformed_csv', 'expected 3 fields, got 4'),
      ('f.csv:5', '3', 'fine', {'lang': 'en'}),
  ]


def test_csv_is_comma_delimited_only():
  """A semicolon-delimited file is one column named by its whole header."""
  got = _csv(b'id;text\n1;hello\n2;hello, world\n')
  assert [_what(g) for g in got] == [
      ('f.csv:2', 'missing_text', "field 'text' is missing or null; the "
       "record's fields: id;text"),
      ('f.csv:3', 'malformed_csv', 'expected 1 fields, got 2'),
  ]


def test_csv_values_and_names_are_taken_as_written():
  """No trimming, no type conversion; an empty id is a derived id; of two
  columns with one name the later one counts."""
  got = _csv(b'id,text,lang\n 007 , spaced ,en\n,no id,\n')
  assert [_what(g) for g in got] == [
      ('f.csv:2', ' 007 ', ' spaced ', {'lang': 'en'}),
      ('f.csv:3', derived_id('no id'), 'no id', {'lang': ''}),
  ]
  assert _what(_csv(b'id, text\n1,x\n')[0])[1] == 'missing_text'
  assert _what(_csv(b'id,text,text\n1,a,b\n')[0])[2] == 'b'


def test_csv_header_only_or_empty_gives_nothing():
  assert _csv(b'id,text\n') == [] and _csv(b'') == []


def test_csv_rows_that_are_not_utf8_are_dead_letters():
  """A Latin-1 file: its ASCII rows are read, the others rejected."""
  got = _csv(b'id,text\n1,cafe\n2,caf\xe9\n')
  assert [_what(g) for g in got] == [
      ('f.csv:2', '1', 'cafe', {'lang': None}),
      ('f.csv:3', 'invalid_utf8', 'row is not valid UTF-8'),
  ]


def test_csv_an_unclosed_quote_takes_the_rest_of_the_file():
  got = _csv(b'id,text\n1,"never closed\n2,x\n')
  assert [_what(g) for g in got] == [
      ('f.csv:2', '1', 'never closed\n2,x\n', {'lang': None})]


# --- JSON lines ---------------------------------------------------------------


@pytest.mark.parametrize('line,want', [
    (b'{"id": 12, "text": "t", "lang": 3, "x": [1]}', ('12', 't', '3')),
    (b'{"id": 10000000000000000000000, "text": "t"}',
     ('10000000000000000000000', 't', None)),
    (b'{"id": "a", "text": " t ", "lang": ["x", "y"]}',
     ('a', ' t ', '["x", "y"]')),
    (b'{"id": "", "text": "t"}', (derived_id('t'), 't', None)),
    (b'{"id": null, "text": "t"}', (derived_id('t'), 't', None)),
    (b'{"text": "a", "text": "b"}\r', (derived_id('b'), 'b', None)),
    (b'{"id": 1.5, "text": "t"}', 'bad_id'),
    (b'{"id": true, "text": "t"}', 'bad_id'),
    (b'{"body": {"text": "t"}}', 'missing_text'),
    (b'{"text": null}', 'missing_text'),
    (b'   ', 'malformed_json'),
    (b'"a string"', 'malformed_json'),
    (b'{"id": "a",', 'malformed_json'),
])
def test_jsonl_lines(line, want):
  got = read_lib.parse_json_line(line.rstrip(b'\r'), 'f@0', FIELDS)
  if isinstance(want, str):
    assert isinstance(got, DeadLetter) and got.error_type == want
  else:
    assert (got.id, got.text, dict(got.metadata)['lang']) == want


# --- Text lines ---------------------------------------------------------------


def test_text_lines_are_documents_as_written_with_derived_ids():
  got = read_lib.parse_text_line(b'  a\tline  ', 'f@0')
  assert (got.id, got.text) == (derived_id('  a\tline  '), '  a\tline  ')
  assert got.id.startswith('sha256:') and len(got.id) == 7 + 32
  for blank in (b'', b' \t'):
    assert read_lib.parse_text_line(blank, 'f@0').error_type == 'empty_text'


# --- Parquet and TFRecord -----------------------------------------------------


def test_parquet_columns():
  """Only the named columns are read; ids of strings or integers, text of
  strings or UTF-8 binary; other metadata types as JSON text."""
  table = pa.table({
      'id': pa.array([1, None, 3, 4], pa.int64()),
      'text': pa.array([b'one', b'two', None, b'four'], pa.binary()),
      'lang': pa.array([['a'], None, None, ['b', 'c']]),
      'other': pa.array([[1.5], [2.5], [3.5], [4.5]]),
  })
  got = [_what(g) for g in parquet_source._table_rows(table, 'f.parquet',
                                                       FIELDS)]
  assert got == [
      ('f.parquet', '1', 'one', {'lang': '["a"]'}),
      ('f.parquet', derived_id('two'), 'two', {'lang': None}),
      ('f.parquet', 'missing_text', "field 'text' is missing or null"),
      ('f.parquet', '4', 'four', {'lang': '["b", "c"]'}),
  ]
  floats = pa.table({'id': [1.0], 'text': ['t']})
  assert _what(next(parquet_source._table_rows(floats, 'f.parquet',
                                               FIELDS)))[1] == 'bad_id'
  numbers = pa.table({'id': ['a'], 'text': [5]})
  assert _what(next(parquet_source._table_rows(numbers, 'f.parquet',
                                               FIELDS)))[1:] == (
      'missing_text', "field 'text' must be a string, got int")
  latin1 = pa.table({'id': ['a'], 'text': pa.array([b'caf\xe9'])})
  assert _what(next(parquet_source._table_rows(latin1, 'f.parquet',
                                               FIELDS)))[1] == 'missing_text'
  others = pa.table({
      'id': pa.array(['a']).dictionary_encode(),
      'text': pa.array(['t']).dictionary_encode(),
      'lang': [datetime.datetime(2024, 1, 2, 3, 4, 5)]})
  assert _what(next(parquet_source._table_rows(others, 'f.parquet',
                                               FIELDS))) == (
      'f.parquet', 'a', 't', {'lang': '"2024-01-02 03:04:05"'})


def test_tfrecord_features():
  """tf.Examples as tfx-bsl decodes them (a list per feature): each named
  feature one value, ids bytes or int64, others not read; the dead
  letters' source is the --input pattern."""
  batch = pa.RecordBatch.from_pydict({
      'id': pa.array([[7], [8], [9], None], pa.list_(pa.int64())),
      'text': pa.array([[b'seven'], [b'a', b'b'], [], [b'none']]),
      'lang': pa.array([[0.5], None, None, None], pa.list_(pa.float32())),
      'tags': pa.array([[b'x', b'y'], [], None, None]),
  })
  got = [_what(g) for g in tfrecord_source.record_batch_to_documents(
      batch, 'in/*.tfrecord', FIELDS)]
  assert got == [
      ('in/*.tfrecord', '7', 'seven', {'lang': '0.5'}),
      ('in/*.tfrecord', 'bad_feature', "feature 'text' has 2 values"),
      ('in/*.tfrecord', 'bad_feature', "feature 'text' has 0 values"),
      ('in/*.tfrecord', derived_id('none'), 'none', {'lang': None}),
  ]
  floats = pa.RecordBatch.from_pydict({
      'id': pa.array([[1.5]], pa.list_(pa.float32())),
      'text': pa.array([[b't']])})
  assert _what(next(tfrecord_source.record_batch_to_documents(
      floats, 'p', FIELDS)))[1] == 'bad_id'
  numbers = pa.RecordBatch.from_pydict({
      'text': pa.array([[5]], pa.list_(pa.int64())),
      'lang': pa.array([[0.1]], pa.list_(pa.float32()))})
  assert _what(next(tfrecord_source.record_batch_to_documents(
      numbers, 'p', FIELDS)))[1:] == (
      'missing_text', "field 'text' must be a string, got int")
  text = pa.RecordBatch.from_pydict({
      'text': pa.array([[b't']]),
      'lang': pa.array([[0.1]], pa.list_(pa.float32()))})
  assert _what(next(tfrecord_source.record_batch_to_documents(
      text, 'p', FIELDS)))[3] == {'lang': '0.10000000149011612'}
