"""Readers as plain functions: where each record came from, and fields."""

from __future__ import annotations

import gzip
import random

import pytest

from transforms import read as read_lib
from transforms.elements import DeadLetter, Document


def _read_split(pattern: str, bundle_size: int) -> list:
  source = read_lib.LinesSource(pattern)
  out = []
  for bundle in source.split(desired_bundle_size=bundle_size):
    tracker = bundle.source.get_range_tracker(bundle.start_position,
                                              bundle.stop_position)
    out.extend(bundle.source.read(tracker))
  return out


@pytest.mark.parametrize('bundle_size', [1, 7, 100, 10**6])
def test_lines_source_gives_each_line_once_with_its_byte_offset(
    tmp_path, bundle_size):
  rng = random.Random(bundle_size)
  lines = [('é' * rng.randint(0, 30)).encode() for _ in range(500)]
  data = b''.join(line + (b'\r\n' if i % 7 == 0 else b'\n')
                  for i, line in enumerate(lines))
  data += b'last line without a newline'
  lines.append(b'last line without a newline')
  path = tmp_path / 'c.txt'
  path.write_bytes(data)
  got = _read_split(str(path), bundle_size)
  assert [line for _, _, line in got] == lines
  for _, offset, line in got:  # the offset points at the line in the file
    assert data[offset:offset + len(line)] == line
    assert offset == 0 or data[offset - 1:offset] == b'\n'
  gz = tmp_path / 'c.txt.gz'
  gz.write_bytes(gzip.compress(data))
  assert [(o, line) for _, o, line in _read_split(str(gz), bundle_size)] == [
      (o, line) for _, o, line in got]


def test_metadata_fields_pass_through_as_text():
  fields = read_lib.Fields('id', 'text', None, ('lang', 'year', 'tags',
                                                'gone'))
  doc = read_lib.record_to_document(
      {'id': 7, 'text': 'hello', 'lang': 'en', 'year': 2024,
       'tags': ['a', 'b']}, 'f@0', fields)
  assert isinstance(doc, Document) and doc.id == '7'
  assert doc.metadata == (('lang', 'en'), ('year', '2024'),
                          ('tags', '["a", "b"]'), ('gone', None))


@pytest.mark.parametrize('line,error', [
    (b'\xff\xfe{"id": 1}', 'invalid_utf8'),
    (b'{"id": "a", "text": ', 'malformed_json'),
    (b'[1, 2]', 'malformed_json'),
    (b'{"id": "a"}', 'missing_text'),
    (b'{"id": "a", "text": 5}', 'missing_text'),
    (b'{"id": "a", "text": " \\t\\n"}', 'empty_text'),
    (b'{"id": [1], "text": "t"}', 'bad_id'),
    (b'', 'malformed_json'),
])
def test_bad_json_lines_become_dead_letters(line, error):
  out = read_lib.parse_json_line(line, 'f.jsonl@12', read_lib.Fields())
  assert isinstance(out, DeadLetter)
  assert (out.error_type, out.source, out.stage) == (error, 'f.jsonl@12',
                                                     'read')
  assert out.message


def test_bigquery_inputs_are_recognised():
  assert read_lib.detect_format('bq://p.d.t') == 'bigquery'
  with pytest.raises(ValueError, match='bq://PROJECT.DATASET.TABLE'):
    read_lib.detect_format('bq://p.t')
  with pytest.raises(ValueError, match='exactly one'):
    read_lib.ReadDocuments(None)
