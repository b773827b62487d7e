"""Readers as plain functions and in a pipeline: where each record came
from, and fields."""

from __future__ import annotations

import gzip
import json
import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests import corpora
from transforms import compressed
from transforms import read as read_lib
from transforms.elements import (DeadLetter, Document, content_hash,
                                 derived_id)

BOM = b'\xef\xbb\xbf'


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
  got = corpora.read_split(str(path), bundle_size)
  assert [line for _, _, line in got] == lines
  for _, offset, line in got:  # the offset points at the line in the file
    assert data[offset:offset + len(line)] == line
    assert offset == 0 or data[offset - 1:offset] == b'\n'
  gz = tmp_path / 'c.txt.gz'
  gz.write_bytes(gzip.compress(data))
  assert [(o, line) for _, o, line in corpora.read_split(
      str(gz), bundle_size)] == [(o, line) for _, o, line in got]


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


# Byte-order marks: editors (Notepad) and spreadsheet exports (Excel's
# "CSV UTF-8") write EF BB BF at the start of a file. A file with one must
# read exactly as the same file without it; a U+FEFF anywhere else is text.


def _line_starts(data: bytes) -> list:
  return [0] + [i + 1 for i, b in enumerate(data)
                if b == ord('\n') and i + 1 < len(data)]


def _write(tmp_path, name: str, data: bytes, gz: bool) -> str:
  path = tmp_path / (name + ('.gz' if gz else ''))
  path.write_bytes(gzip.compress(data) if gz else data)
  return str(path)


def _doc_view(doc, path):
  """What must not change with a BOM, and the location within the file."""
  assert doc.source.startswith(path)
  return (doc.id, doc.text, doc.text_b, doc.content_hash, doc.metadata,
          doc.source[len(path):])


def _dead_view(dead, path):
  assert dead.source.startswith(path)
  return dead.error_type, dead.raw, dead.source[len(path):]


def _assert_reads(files: dict, fields=read_lib.Fields()):
  """Runs ReadDocuments over each path in one Beam pipeline; files maps
  path -> (expected _doc_view tuples, expected _dead_view tuples)."""
  with TestPipeline('FnApiRunner', options=PipelineOptions([])) as p:
    for i, (path, (docs, dead)) in enumerate(files.items()):
      got = p | f'Read{i}' >> read_lib.ReadDocuments(path, fields=fields)
      assert len(got.dead_letters) == 1
      assert_that(got.main | f'Docs{i}' >> beam.Map(_doc_view, path),
                  equal_to(docs), label=f'docs{i}')
      assert_that(got.dead_letters[0]
                  | f'Dead{i}' >> beam.Map(_dead_view, path),
                  equal_to(dead), label=f'dead{i}')


@pytest.mark.parametrize('gz', [False, True])
def test_text_file_with_bom_reads_as_without(tmp_path, gz):
  texts = ['first document', 'a \ufeff in the middle is text',
           '\ufeffat the start of a later line too']
  plain = '\n'.join(texts).encode() + b'\n'
  files = {}
  for name, data in (('plain.txt', plain), ('bom.txt', BOM + plain)):
    starts = _line_starts(data)
    assert starts[0] == 0 and data[starts[1] - 1:starts[1]] == b'\n'
    docs = [(derived_id(t), t, None, content_hash(t), (), f'@{at}')
            for t, at in zip(texts, starts)]
    files[_write(tmp_path, name, data, gz)] = (docs, [])
  _assert_reads(files)


@pytest.mark.parametrize('gz', [False, True])
def test_jsonl_file_with_bom_reads_as_without(tmp_path, gz):
  records = [{'id': 'a', 'text': 'alpha', 'lang': 'en'},
             {'id': 'b', 'text': '\ufeffbeta \ufeff kept', 'lang': 'fr'},
             {'id': 'c', 'text': 'gamma'}]
  broken = '{"id": "broken", "text": '
  # A BOM at the start of a later line is not the file's: it stays, and the
  # line is not JSON.
  later_bom = '\ufeff' + json.dumps({'id': 'd', 'text': 'delta'})
  lines = [json.dumps(r, ensure_ascii=False) for r in records[:2]] + [
      broken, later_bom, json.dumps(records[2])]
  plain = '\n'.join(lines).encode()
  fields = read_lib.Fields(metadata_fields=('lang',))
  files = {}
  for name, data in (('plain.jsonl', plain), ('bom.jsonl', BOM + plain)):
    starts = _line_starts(data)
    docs = [(r['id'], r['text'], None, content_hash(r['text']),
             (('lang', r.get('lang')),), f'@{at}')
            for r, at in zip(records, [starts[0], starts[1], starts[4]])]
    dead = [('malformed_json', broken, f'@{starts[2]}'),
            ('malformed_json', later_bom, f'@{starts[3]}')]
    files[_write(tmp_path, name, data, gz)] = (docs, dead)
  _assert_reads(files, fields)


@pytest.mark.parametrize('gz', [False, True])
def test_csv_file_with_bom_reads_as_without(tmp_path, gz):
  plain = ('id,text,lang\r\n'
           '1,first row,en\r\n'
           '2,"a \ufeff in a quoted, field",fr\r\n'
           '\ufeff3,a later row starting with one,de\r\n').encode()
  want = [('1', 'first row', None, 'en', ':2'),
          ('2', 'a \ufeff in a quoted, field', None, 'fr', ':3'),
          ('\ufeff3', 'a later row starting with one', None, 'de', ':4')]
  docs = [(i, t, b, content_hash(t, b), (('lang', lang),), at)
          for i, t, b, lang, at in want]
  fields = read_lib.Fields(metadata_fields=('lang',))
  _assert_reads({_write(tmp_path, 'plain.csv', plain, gz): (docs, []),
                 _write(tmp_path, 'bom.csv', BOM + plain, gz): (docs, [])},
                fields)


@pytest.mark.parametrize('bundle_size', [1, 2, 3, 4, 5, 100])
def test_lines_source_drops_a_bom_only_at_offset_0(tmp_path, bundle_size):
  data = BOM + b'one\n' + BOM + b'two\nthree'
  path = tmp_path / 'b.txt'
  path.write_bytes(data)
  got = corpora.read_split(str(path), bundle_size)
  assert [(o, line) for _, o, line in got] == [
      (0, b'one'), (7, BOM + b'two'), (14, b'three')]
  for data, want in ((BOM, []), (BOM + b'\n', [(0, b'')]),
                     (BOM + BOM, [(0, BOM)]),
                     (b'\xef\xbb', [(0, b'\xef\xbb')])):
    path.write_bytes(data)  # a BOM-only file is empty, as without the BOM
    assert [(o, line) for _, o, line in corpora.read_split(
        str(path), bundle_size)] == want, data


def _compress(data: bytes, suffix: str) -> bytes:
  import bz2
  import lzma
  import zstandard
  return {'.gz': gzip.compress, '.bz2': bz2.compress, '.xz': lzma.compress,
          '.zst': zstandard.ZstdCompressor().compress}[suffix](data)


@pytest.mark.parametrize('suffix', ['.gz', '.bz2', '.xz', '.zst'])
def test_every_compression_beam_reads_is_read(tmp_path, suffix):
  """JSONL and CSV compressed in each of Beam's formats read like the plain
  files: the same documents at the same (uncompressed) offsets and lines."""
  jsonl = b'{"id": "a", "text": "alpha"}\n{"id": "b"}\n{"id": "c", ' \
          b'"text": "gamma"}\n'
  csv_data = b'id,text\na,alpha\nc,gamma\n'
  files = {}
  for name, data, docs, dead in (
      ('c.jsonl', jsonl,
       [('a', 'alpha', '@0'), ('c', 'gamma', '@41')],
       [('missing_text', '{"id": "b"}', '@29')]),
      ('c.csv', csv_data, [('a', 'alpha', ':2'), ('c', 'gamma', ':3')], [])):
    assert read_lib.detect_format(name + suffix) == name.split('.')[1]
    path = tmp_path / (name + suffix)
    path.write_bytes(_compress(data, suffix))
    files[str(path)] = (
        [(i, t, None, content_hash(t), (), at) for i, t, at in docs], dead)
  _assert_reads(files)
  assert compressed.is_compressed(str(path)) and not compressed.is_compressed(
      'c.jsonl')


def test_each_format_has_one_source_chosen_once():
  """Every --input_format has one source (transforms/sources/), which
  declares the suffixes that detection reads; no suffix names two."""
  from transforms import sources
  seen = {}
  for fmt in read_lib.FORMATS:
    source = sources.source_for(f'corpus.{fmt}', fmt)
    assert source.format == fmt
    for suffix in source.suffixes:
      assert suffix not in seen, (suffix, seen)
      seen[suffix] = fmt
      assert read_lib.detect_format('c' + suffix + '.gz') == fmt
  assert sources.source_for(None, query='SELECT 1').format == 'bigquery'
  assert sources.source_for('bq://p.d.t').format == 'bigquery'
  with pytest.raises(ValueError, match='--input_format'):
    read_lib.detect_format('corpus.dat')


@pytest.mark.parametrize('name', ['c.jsonl.zip', 'corpus.zip', 'c.tar.gz'])
def test_archives_are_refused_by_name(name):
  with pytest.raises(ValueError, match='archives are not read; extract'):
    read_lib.check_compression(name)
