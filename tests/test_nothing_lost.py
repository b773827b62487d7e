"""Nothing lost or hidden when an input is damaged: truncated compressed
files and matched files that cannot be read are named, counted and never
silently dropped."""

from __future__ import annotations

import bz2
import json
import lzma
import os
import zlib

import pytest
import zstandard

from pipeline import run
from tests import corpora
from tests import helpers
from transforms import compressed
from transforms import read as read_lib


def _lines(n: int) -> list[bytes]:
  return [json.dumps({'id': f'd{i}', 'text': f'document number {i} of {n}'}
                     ).encode() + b'\n' for i in range(n)]


def _flushed(kind: str, lines, keep: int) -> tuple[bytes, bytes]:
  """(the whole compressed file, its first bytes up to a flush point right
  after `keep` lines): the cut a copy that stopped there leaves, where
  every record before it decompresses whole."""
  head, tail = b''.join(lines[:keep]), b''.join(lines[keep:])
  if kind in ('gz', 'deflate'):
    c = zlib.compressobj(wbits=(zlib.MAX_WBITS | 16) if kind == 'gz'
                         else zlib.MAX_WBITS)
    cut = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    return cut + c.compress(tail) + c.flush(), cut
  if kind == 'zst':
    c = zstandard.ZstdCompressor().compressobj()
    cut = c.compress(head) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    return cut + c.compress(tail) + c.flush(), cut
  # bzip2 and xz have no flush point that ends records; cut mid-stream.
  whole = (bz2.compress if kind == 'bz2' else lzma.compress)(head + tail)
  return whole, whole[:len(whole) * 7 // 10]


KINDS = ['gz', 'deflate', 'bz2', 'xz', 'zst']


@pytest.mark.parametrize('kind', KINDS)
def test_a_truncated_stream_is_a_dead_letter_naming_the_file(tmp_path, kind):
  lines = _lines(300)
  whole, cut = _flushed(kind, lines, 210)
  for name, data in (('whole', whole), ('cut', cut)):
    path = tmp_path / f'{name}.jsonl.{kind}'
    path.write_bytes(data)
    got = [read_lib.parse_json_line(line, f'{f}@{o}', read_lib.Fields())
           for f, o, line in corpora.read_split(str(path), 10**6)]
    letters = [g for g in got if hasattr(g, 'error_type')]
    docs = [g for g in got if not hasattr(g, 'error_type')]
    if name == 'whole':  # concatenated and whole files read as before
      assert len(docs) == 300 and not letters
      continue
    assert letters[-1].error_type == 'truncated_file'
    assert str(path) in letters[-1].message
    assert 'truncated' in letters[-1].message
    # Every record before the cut is kept: all 210 at a flush point;
    # mid-stream, the ones decompressed before the cut (a half line at
    # the cut is a malformed_json dead letter).
    assert [d.id for d in docs] == [f'd{i}' for i in range(len(docs))]
    if kind in ('gz', 'deflate', 'zst'):
      assert len(docs) == 210 and len(letters) == 1


def test_a_truncated_csv_is_a_dead_letter_too(tmp_path):
  rows = [b'id,text\n'] + [f'{i},row {i}\n'.encode() for i in range(300)]
  whole, cut = _flushed('gz', rows, 211)
  path = tmp_path / 'c.csv.gz'
  path.write_bytes(cut)
  with compressed.open_file(str(path)) as f:
    got = list(read_lib.parse_csv_file(str(path), f, read_lib.Fields()))
  assert [g.error_type for g in got[-1:]] == ['truncated_file']
  assert len(got) == 211 and got[-1].source == f'{path}:212'
  path.write_bytes(whole)
  with compressed.open_file(str(path)) as f:
    assert len(list(read_lib.parse_csv_file(str(path), f,
                                            read_lib.Fields()))) == 300


def test_a_truncated_input_is_counted_and_said(tmp_path, capsys,
                                               minilm_export):
  """The run keeps the records before the cut, says which file is cut,
  counts it as rejected, and --max_rejected 0 fails the night."""
  _, cut = _flushed('gz', _lines(300), 210)
  (tmp_path / 'in').mkdir()
  (tmp_path / 'in' / 'cut.jsonl.gz').write_bytes(cut)
  argv = ['--input', str(tmp_path / 'in' / '*.jsonl.gz'), '--output',
          str(tmp_path / 'out' / 'emb'), '--model_dir', minilm_export,
          '--progress_every', '0']
  assert run.main(argv) == 0
  out, err = capsys.readouterr()
  summary = helpers.summary_of(out)
  assert (summary['documents_read'], summary['documents_embedded'],
          summary['documents_rejected'], summary['files_truncated']) == (
              211, 210, 1, 1)
  warned = [line for line in err.splitlines()
            if line.startswith('warning:') and 'is truncated' in line]
  assert len(warned) == 1 and 'cut.jsonl.gz is truncated' in warned[0], err
  assert run.main(argv + ['--max_rejected', '0']) == 1
  assert 'more than --max_rejected 0' in capsys.readouterr().err


def test_matched_files_that_cannot_be_read_are_named(tmp_path, capsys,
                                                     minilm_export):
  folder = tmp_path / 'in'
  folder.mkdir()
  corpora.write_jsonl(str(folder / 'good.jsonl'), corpora.sample_docs(5),
                      bad=False)
  os.symlink(folder / 'gone.jsonl', folder / 'dangling.jsonl')
  unreadable = folder / 'locked.jsonl'
  unreadable.write_text('{"id": "x", "text": "y"}\n')
  argv = ['--input', str(folder / '*.jsonl'), '--output',
          str(tmp_path / 'out' / 'emb'), '--model_dir', minilm_export,
          '--progress_every', '0']
  os.chmod(unreadable, 0)
  if os.access(unreadable, os.R_OK):  # root reads whatever the mode
    os.chmod(unreadable, 0o644)
    unreadable.unlink()
  assert run.main(argv) == 0
  err = capsys.readouterr().err
  warned = [line for line in err.splitlines() if line.startswith('warning:')]
  assert any(str(folder / 'dangling.jsonl') in w and 'cannot be read' in w
             for w in warned), err
  assert 'dangling link' in err
