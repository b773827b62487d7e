"""transforms/encodings.py (byte-order marks, unmarked UTF-16/32, wide
lines) on bytes built here, and transforms/compressed.py's end check on
real gzip, bzip2, xz, zlib and zstd files written to tmp_path.

Why: a UTF-16 file read as UTF-8 gives vectors that look right but ids and
hashes that match no UTF-8 copy; a compressed file cut short reads as a
complete file with fewer records. Both must be named, never misread. Pure
functions and local file I/O only (no pipeline).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import zlib

import pytest
import zstandard

from transforms import compressed
from transforms import encodings

pytestmark = pytest.mark.unit

# --- encodings ---------------------------------------------------------------


@pytest.mark.parametrize('codec,name,bom', [
    ('utf-8', 'UTF-8', codecs.BOM_UTF8),
    ('utf-16-le', 'UTF-16LE', codecs.BOM_UTF16_LE),
    ('utf-16-be', 'UTF-16BE', codecs.BOM_UTF16_BE),
    ('utf-32-le', 'UTF-32LE', codecs.BOM_UTF32_LE),
    ('utf-32-be', 'UTF-32BE', codecs.BOM_UTF32_BE),
])
def test_detect_by_byte_order_mark(codec, name, bom):
  head = bom + '{"id": 1}\n'.encode(codec)
  found = encodings.detect(head[:encodings.HEAD_BYTES])
  assert (found.codec, found.name, found.bom) == (codec, name, bom)
  assert head[len(found.bom):].decode(found.codec) == '{"id": 1}\n'


def test_utf32le_mark_wins_over_the_utf16le_mark_it_begins_with():
  assert codecs.BOM_UTF32_LE.startswith(codecs.BOM_UTF16_LE)
  assert encodings.detect(codecs.BOM_UTF32_LE + b'a\0\0\0').name == 'UTF-32LE'
  # UTF-16LE text whose first character is U+0000... is not possible in
  # practice; a UTF-16LE mark and 'a' stays UTF-16LE.
  assert encodings.detect(codecs.BOM_UTF16_LE + b'a\0').name == 'UTF-16LE'


@pytest.mark.parametrize('head', [b'', b'plain text', 'caf\u00e9'.encode(),
                                  b'\xfe', b'\xef\xbb'])
def test_no_mark_is_utf8(head):
  assert encodings.detect(head) == encodings.UTF8
  assert encodings.UTF8.bom == b''


@pytest.mark.parametrize('codec,width,invalid', [
    ('utf-8', 1, 'invalid_utf8'), ('utf-16-le', 2, 'invalid_utf16'),
    ('utf-16-be', 2, 'invalid_utf16'), ('utf-32-be', 4, 'invalid_utf32')])
def test_encoding_width_newline_and_error_type(codec, width, invalid):
  encoding = encodings.Encoding(codec, codec.upper())
  assert encoding.width == width
  assert encoding.newline == '\n'.encode(codec) and len(
      encoding.newline) == width
  assert encoding.invalid == invalid


@pytest.mark.parametrize('codec,expected', [
    ('utf-16-le', 'UTF-16LE'), ('utf-16-be', 'UTF-16BE'),
    ('utf-32-le', 'UTF-32LE'), ('utf-32-be', 'UTF-32BE')])
def test_unmarked_wide_text_is_named(codec, expected):
  text = 'id,text\n1,"Hello, world"\n2,"caf\u00e9 und \u00fcber"\n'
  head = text.encode(codec)[:encodings.HEAD_BYTES]
  assert encodings.unmarked(head) == expected


@pytest.mark.parametrize('head', [
    b'id,text\n1,hello\n',  # no NUL at all
    # Wide, but not ASCII: no sign.
    'Ελληνικά κείμενα'.encode('utf-16-le'),
    b'\0',  # too short to tell
    b'ab\0cd\0ef\0gh\0ij\0',  # a few NULs, no pattern
])
def test_other_bytes_are_not_named(head):
  assert encodings.unmarked(head) is None


def test_unmarked_message_says_how_to_convert():
  text = encodings.unmarked_message('gs://b/in.csv', 'UTF-16LE')
  assert text.startswith('gs://b/in.csv looks like UTF-16LE without a '
                         'byte-order mark')
  assert 'iconv -f UTF-16LE -t UTF-8' in text


def _wide(text: str, codec: str, chunk: int):
  encoding = encodings.Encoding(codec, codec.upper())
  return list(encodings.wide_lines(io.BytesIO(text.encode(codec)), encoding,
                                   chunk=chunk))


@pytest.mark.parametrize('codec', ['utf-16-le', 'utf-16-be', 'utf-32-le',
                                   'utf-32-be'])
@pytest.mark.parametrize('chunk', [1, 3, 7, 1 << 16])
def test_wide_lines_round_trip_to_utf8(codec, chunk):
  # U+0A01 then U+0100 is 01 0A 00 01 in UTF-16LE: '0A 00' across two
  # units, which is not a newline.
  lines = ['first', 'caf\u00e9\r', '', '\u0a01\u0100 \U0001f600', 'last']
  text = '\n'.join(lines)
  found = _wide(text, codec, chunk)
  assert [w.line for w in found] == [line.rstrip('\r').encode('utf-8')
                                     for line in lines]
  assert [w.raw_size for w in found] == [
      len((line + '\n').encode(codec)) for line in lines[:-1]] + [
          len(lines[-1].encode(codec))]
  assert [w.utf8_size for w in found] == [
      len((line + '\n').encode('utf-8')) for line in lines[:-1]] + [
          len(lines[-1].encode('utf-8'))]
  assert sum(w.raw_size for w in found) == len(text.encode(codec))


def test_a_line_that_does_not_decode_is_a_bad_line():
  raw = 'ok\n'.encode('utf-16-le') + b'\x00\xd8' + 'x\n'.encode(
      'utf-16-le') + 'after\n'.encode('utf-16-le') + b'z'
  encoding = encodings.Encoding('utf-16-le', 'UTF-16LE')
  found = list(encodings.wide_lines(io.BytesIO(raw), encoding, chunk=4))
  assert found[0].line == b'ok'
  bad = found[1].line
  assert isinstance(bad, encodings.BadLine)
  assert bad.error_type == 'invalid_utf16'
  assert bad.message.startswith('not valid UTF-16LE: illegal ')
  assert bad.raw == '\ufffdx'.encode('utf-8')
  assert found[1].raw_size == 6
  assert found[2].line == b'after'
  # An odd byte at the end of the file.
  assert isinstance(found[3].line, encodings.BadLine)
  assert found[3].raw_size == 1
  assert len(found) == 4


# --- compressed --------------------------------------------------------------

LINES = b''.join(b'{"id": %d, "text": "document number %d"}\n' % (i, i)
                 for i in range(3000))
WRITERS = {
    'gz': gzip.compress,
    'bz2': bz2.compress,
    'xz': lzma.compress,
    'deflate': zlib.compress,
    'zst': lambda data: zstandard.ZstdCompressor().compress(data),
}


def _write(tmp_path, suffix, data):
  path = tmp_path / f'part.jsonl.{suffix}'
  path.write_bytes(data)
  return str(path)


def _read_all(path):
  f = compressed.open_file(path)
  data = f.read()
  return f, data


@pytest.mark.parametrize('suffix', sorted(WRITERS))
def test_a_whole_file_reads_to_its_end(tmp_path, suffix):
  path = _write(tmp_path, suffix, WRITERS[suffix](LINES))
  assert compressed.is_compressed(path)
  f, data = _read_all(path)
  assert data == LINES
  compressed.check_end(f)  # no error
  assert compressed.ends_a_line(f)


@pytest.mark.parametrize('suffix', sorted(WRITERS))
def test_a_truncated_file_raises_truncated_after_reading(tmp_path, suffix):
  whole = WRITERS[suffix](LINES)
  cut = whole[:len(whole) * 2 // 3]
  path = _write(tmp_path, suffix, cut)
  f, data = _read_all(path)
  # The bytes before the cut are all there, and no more.
  assert LINES.startswith(data) and len(data) < len(LINES)
  with pytest.raises(compressed.Truncated) as raised:
    compressed.check_end(f)
  assert raised.value.path == path
  assert isinstance(raised.value, EOFError)
  assert str(raised.value).startswith(
      f'{path} is truncated: its compressed data ends after '
      f'{len(cut):,} bytes, before the end-of-stream marker')
  assert compressed.ends_a_line(f) == data.endswith(b'\n')


def test_concatenated_gzip_members_are_read_through(tmp_path):
  half = len(LINES) // 2
  path = _write(tmp_path, 'gz', gzip.compress(LINES[:half]) +
                gzip.compress(LINES[half:]))
  f, data = _read_all(path)
  assert data == LINES
  compressed.check_end(f)


def test_a_truncated_second_member_is_truncated(tmp_path):
  half = len(LINES) // 2
  second = gzip.compress(LINES[half:])
  path = _write(tmp_path, 'gz', gzip.compress(LINES[:half]) + second[:-20])
  f, data = _read_all(path)
  assert data.startswith(LINES[:half])
  with pytest.raises(compressed.Truncated):
    compressed.check_end(f)


def test_an_empty_compressed_file_is_empty_not_truncated(tmp_path):
  f, data = _read_all(_write(tmp_path, 'gz', b''))
  assert data == b''
  compressed.check_end(f)


def test_seek_back_to_the_start_reads_again(tmp_path):
  path = _write(tmp_path, 'bz2', bz2.compress(LINES))
  f = compressed.open_file(path)
  assert f.read(100) == LINES[:100]
  f.seek(5000)
  assert f.read(10) == LINES[5000:5010]
  f.seek(0)
  assert f.read() == LINES
  compressed.check_end(f)


def test_plain_files_are_not_checked(tmp_path):
  path = tmp_path / 'part.jsonl'
  path.write_bytes(LINES[:-1])
  assert not compressed.is_compressed(str(path))
  f = compressed.open_file(str(path))
  assert f.read() == LINES[:-1]
  compressed.check_end(f)
  assert compressed.ends_a_line(f)  # not known for plain files: True


@pytest.mark.parametrize('path,expected', [
    ('a.gz', True), ('a.jsonl.bz2', True), ('a.xz', True), ('a.lzma', True),
    ('a.zst', True), ('a.zstd', True), ('a.deflate', True),
    ('gs://b/a.csv.gz', True), ('a.jsonl', False), ('a.tgz', False),
    ('a.gz.txt', False), ('a.zip', False)])
def test_is_compressed(path, expected):
  assert compressed.is_compressed(path) == expected
