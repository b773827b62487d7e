"""UTF-16 and UTF-32 inputs: a byte-order mark is honoured (the same
documents, ids, hashes, locations and vectors as the UTF-8 copy), a file
without one is named, and NUL characters are never embedded."""

from __future__ import annotations

import codecs
import datetime
import gzip
import json
import lzma
import os

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from pipeline.graph import build_pipeline
from pipeline.launch import plan_from
from tests import corpora
from tests import helpers
from transforms import encodings
from transforms import read as read_lib
from transforms import records

# (codec, byte-order mark, compression suffix): every mark, compressed too.
MARKED = [('utf-16-le', codecs.BOM_UTF16_LE, ''),
          ('utf-16-be', codecs.BOM_UTF16_BE, '.gz'),
          ('utf-32-le', codecs.BOM_UTF32_LE, '.xz'),
          ('utf-32-be', codecs.BOM_UTF32_BE, '')]


def _encode(text: str, codec: str, bom: bytes, suffix: str) -> bytes:
  data = bom + text.encode(codec)
  return {'': bytes, '.gz': gzip.compress, '.xz': lzma.compress}[suffix](data)


@pytest.mark.parametrize('bundle_size', [1, 3, 50, 10**6])
@pytest.mark.parametrize('codec,bom,suffix', MARKED)
def test_lines_of_a_marked_file_are_its_utf8_copys(tmp_path, codec, bom,
                                                   suffix, bundle_size):
  text = ('first line\r\nzweite Zeile: äöü\n\n日本語のテキスト\n'
          'a clef 𝄞 (a surrogate pair in UTF-16)\n\ufeffa later mark\nlast')
  utf8 = tmp_path / 'utf8.txt'
  utf8.write_bytes(text.encode('utf-8'))
  wide = tmp_path / ('wide.txt' + suffix)
  wide.write_bytes(_encode(text, codec, bom, suffix))
  want = [(o, line)
          for _, o, line in corpora.read_split(str(utf8), bundle_size)]
  assert len(want) == 7
  assert [(o, line) for _, o, line in corpora.read_split(str(wide), bundle_size)
          ] == want


@pytest.mark.parametrize('codec,bom,suffix', MARKED[:2])
def test_a_line_that_does_not_decode_is_a_dead_letter(tmp_path, codec, bom,
                                                      suffix):
  lone = '\ud800'.encode(codec, 'surrogatepass')  # half a surrogate pair
  data = (bom + 'good one\n'.encode(codec) + 'bad '.encode(codec) + lone +
          '\nnext\n'.encode(codec))
  path = tmp_path / ('c.txt' + suffix)
  path.write_bytes(gzip.compress(data) if suffix else data)
  got = [read_lib.parse_text_line(line, read_lib.line_location(f, o))
         for f, o, line in corpora.read_split(str(path), 10**6)]
  assert [type(g).__name__ for g in got] == ['Document', 'DeadLetter',
                                             'Document']
  assert got[1].error_type == 'invalid_utf16'
  assert 'UTF-16' in got[1].message and got[1].raw == 'bad \ufffd'
  assert got[1].source.endswith('@9') and got[2].source.endswith('@17')
  assert got[2].text == 'next'


def _corpus(fmt: str, part: int, scratch) -> str:
  """A UTF-8 corpus text with bad records, non-ASCII and CRLF lines."""
  docs = corpora.sample_docs(6, 6 * part)
  docs[0] = dict(docs[0], text=docs[0]['text'] + ' — naïve café 𝄞')
  if fmt == 'text':
    lines = [d['text'] for d in docs]
    lines[2:2] = ['', '   ']
    lines[4] += '\r'
    return '\n'.join(lines) + '\n'
  path = str(scratch / f'scratch-{part}.{fmt}')
  (corpora.write_jsonl if fmt == 'jsonl' else corpora.write_csv)(path, docs)
  with open(path, encoding='utf-8', newline='') as f:
    text = f.read()
  os.remove(path)
  return text


def _run(pattern: str, out: str, model, *args) -> None:
  options = PipelineOptions(['--input', pattern, '--output', out, *args])
  with TestPipeline(runner='FnApiRunner', options=options) as p:
    build_pipeline(p, plan_from(options, model=model))


def _records(out: str) -> dict:
  return {r['id']: r for r in corpora.read_output(out)}


def _dead(out: str, folder: str) -> list:
  """Dead letters with the folder and compression suffixes left out of
  their locations."""
  return sorted(
      (d['error_type'], d['source'].replace(folder, 'DIR').replace(
          '.gz', '').replace('.xz', ''), d['raw'])
      for d in corpora.read_dead_letters(out + '_dead_letter'))


@pytest.mark.parametrize('fmt,name', [('text', 'c.txt'), ('jsonl', 'c.jsonl'),
                                      ('csv', 'c.csv')])
def test_marked_corpus_embeds_as_its_utf8_copy(tmp_path, fmt, name,
                                               minilm_model):
  """The whole job on the same corpus saved as UTF-8 and, file by file,
  under every mark (two compressed): equal ids, hashes, vectors, dead
  letters and their locations."""
  utf8, wide = tmp_path / 'utf8', tmp_path / 'wide'
  utf8.mkdir()
  wide.mkdir()
  for part, (codec, bom, suffix) in enumerate(MARKED):
    text = _corpus(fmt, part, tmp_path)
    stem = f'{part}-{name}'
    (utf8 / stem).write_bytes(text.encode('utf-8'))
    (wide / (stem + suffix)).write_bytes(_encode(text, codec, bom, suffix))
  for folder in (utf8, wide):
    _run(str(folder / '*'), str(folder / 'out' / 'emb'), minilm_model,
         '--input_format', fmt)
  got, want = (_records(str(wide / 'out' / 'emb')),
               _records(str(utf8 / 'out' / 'emb')))
  assert len(want) == 24
  helpers.assert_same_records(got, want)
  dead_want = _dead(str(utf8 / 'out' / 'emb'), str(utf8))
  assert len(dead_want) == (12 if fmt == 'jsonl' else 8)
  # Same errors, raw text and FILE@OFFSET or FILE:LINE.
  assert _dead(str(wide / 'out' / 'emb'), str(wide)) == dead_want


@pytest.mark.parametrize('fmt,name', [('text', 'c.txt'), ('jsonl', 'c.jsonl'),
                                      ('csv', 'c.csv')])
@pytest.mark.parametrize('codec', ['utf-16-le', 'utf-16-be', 'utf-32-le'])
def test_unmarked_utf16_is_dead_lettered_never_embedded(tmp_path, fmt, name,
                                                        codec, minilm_model):
  text = _corpus(fmt, 0, tmp_path)
  path = tmp_path / name
  path.write_bytes(text.encode(codec))
  _run(str(path), str(tmp_path / 'out' / 'emb'), minilm_model)
  assert corpora.read_output(str(tmp_path / 'out' / 'emb')) == []
  dead = corpora.read_dead_letters(str(tmp_path / 'out' / 'emb_dead_letter'))
  likely = codec.upper().replace('-LE', 'LE').replace('-BE', 'BE')
  assert dead and {d['error_type'] for d in dead} == {'unmarked_encoding'}
  assert {d['message'] for d in dead} == {
      encodings.unmarked_message(str(path), likely)}
  assert str(path) in dead[0]['message'] and likely in dead[0]['message']
  assert not any('\0' in d['raw'] for d in dead)
  # One dead letter per line the file would have as UTF-8 (CSV: after the
  # header), so the counts reconcile with what the user sees.
  lines = text.encode(codec).split(b'\n')
  lines = lines[:-1] if not lines[-1] else lines
  assert len(dead) == len(lines) - (fmt == 'csv')


def test_nul_characters_are_never_embedded(tmp_path, minilm_model):
  path = tmp_path / 'c.jsonl'
  docs = [{'id': 'ok', 'text': 'a fine document', 'b': 'x'},
          {'id': 'nul', 'text': 'text\u0000with a NUL', 'b': 'x'},
          {'id': 'nul-b', 'text': 'fine', 'b': 'pair \u0000'},
          {'id': 'id\u0000', 'text': 'fine too', 'b': 'x'}]
  path.write_text('\n'.join(json.dumps(r) for r in docs) + '\n')
  text = tmp_path / 'c.txt'
  text.write_bytes(b'fine line\nnul\x00 line\n\x00\n')
  csv = tmp_path / 'c.csv'
  csv.write_bytes(b'id,text\n1,fine\n2,"nul\x00 in a field"\n')
  fields = read_lib.Fields(text_b_field='b')
  got = [read_lib.parse_json_line(line, f'{path}@{o}', fields)
         for _, o, line in corpora.read_split(str(path), 10**6)]
  got += [read_lib.parse_text_line(line, f'{text}@{o}')
          for _, o, line in corpora.read_split(str(text), 10**6)]
  with open(csv, 'rb') as f:
    got += list(read_lib.parse_csv_file(str(csv), f, read_lib.Fields()))
  kinds = [getattr(g, 'error_type', 'document') for g in got]
  assert kinds == ['document', 'nul_character', 'nul_character',
                   'nul_character', 'document', 'nul_character',
                   'nul_character', 'document', 'nul_character']
  now = datetime.datetime.now(datetime.timezone.utc)
  assert all('\0' not in records.dead_letter_record(g, now)['raw']
             for g in got if hasattr(g, 'raw'))  # as every output stores it
  assert "field 'text' holds a NUL character (U+0000) at character 4" in (
      got[1].message)
  assert "field 'b'" in got[2].message and "field 'id'" in got[3].message
