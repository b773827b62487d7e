"""The codecs' checked readers: TFRecord's read_frame (and stream_frames,
first_frame) and Parquet's parquet_file, on files cut inside and
bit-flipped in each of their fields.

Why: a reader that checks neither the length nor the checksums of a
TFRecord returns another record for a flipped byte and a shorter file for
a cut one, and pyarrow's errors on a damaged footer name no file. Each
case must be one DamagedFile naming the file, the record's byte offset and
what is wrong; undamaged files must read exactly as before.
"""

from __future__ import annotations

import io
import struct

import google_crc32c
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.codecs import DamagedFile
from transforms.codecs import parquet
from transforms.codecs import tfrecord

pytestmark = pytest.mark.unit

ADVICE = DamagedFile.ADVICE
RECORDS = [b'first record', bytes(range(256)) * 3, b'', b'last']
# The second record's frame starts after the first one's.
SECOND = len(RECORDS[0]) + tfrecord.OVERHEAD
N = len(RECORDS[1])


def _file() -> bytes:
  return b''.join(tfrecord.frame(r) for r in RECORDS)


def _flip(data: bytes, position: int, bit: int = 0) -> bytes:
  out = bytearray(data)
  out[position] ^= 1 << bit
  return bytes(out)


def _read(data: bytes, path: str = 'gs://b/emb-00000-of-00002.tfrecord'):
  return list(tfrecord.stream_frames(io.BytesIO(data), path))


def test_undamaged_frames_read_as_written():
  assert _read(_file()) == RECORDS
  assert _read(b'') == []
  assert tfrecord.first_frame(io.BytesIO(_file())) == RECORDS[0]
  assert tfrecord.first_frame(io.BytesIO(b'')) is None


# (where in the second record, cut there or one bit flipped, what is said)
CASES = [
    (5, 'cut', 'cut inside the length: 5 of 8 bytes'),
    (10, 'cut', "cut inside the length's checksum: 2 of 4 bytes"),
    (12 + 37, 'cut', f'cut inside the data: 37 of {N} bytes'),
    (12 + N, 'cut', "cut inside the data's checksum: 0 of 4 bytes"),
    (12 + N + 3, 'cut', "cut inside the data's checksum: 3 of 4 bytes"),
    (0, 'flip', "the length's checksum does not match"),
    (7, 'flip', "the length's checksum does not match"),
    (9, 'flip', "the length's checksum does not match"),
    (12, 'flip', "the data's checksum does not match"),
    (12 + N - 1, 'flip', "the data's checksum does not match"),
    (12 + N + 1, 'flip', "the data's checksum does not match"),
]


@pytest.mark.parametrize('where,how,what', CASES)
def test_each_damaged_field_is_named_with_file_and_offset(where, how, what):
  data = _file()
  at = SECOND + where
  damaged = data[:at] if how == 'cut' else _flip(data, at, 6)
  with pytest.raises(DamagedFile) as caught:
    _read(damaged, 'out/emb-00000-of-00001.tfrecord')
  assert str(caught.value) == (
      f'out/emb-00000-of-00001.tfrecord: the TFRecord record at byte '
      f'{SECOND} is damaged: {what}; {ADVICE}')
  assert isinstance(caught.value, ValueError)
  assert (caught.value.path, caught.value.problem) == (
      'out/emb-00000-of-00001.tfrecord', what)


def test_a_damaged_first_record_and_a_huge_flipped_length():
  data = _file()
  with pytest.raises(DamagedFile, match='at byte 0 is damaged: the length'):
    tfrecord.first_frame(io.BytesIO(_flip(data, 7, 7)), 'f.tfrecord')
  with pytest.raises(DamagedFile, match=r'^a file: the TFRecord record at '):
    tfrecord.first_frame(io.BytesIO(data[:3]))
  # A valid frame whose data is shorter than its length says (the length
  # and its checksum rewritten together): the data is asked for, not read
  # past the end.
  length = struct.pack('<Q', 1 << 40)
  crc = google_crc32c.value(length)  # masked as TFRecord's format says
  masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
  fake = length + struct.pack('<I', masked) + b'abc'
  with pytest.raises(DamagedFile,
                     match=f'cut inside the data: 3 of {1 << 40} bytes'):
    _read(fake)


def test_records_before_the_damage_are_read_first():
  """The reader streams: the records before the damaged one reach the
  caller, then the error (a caller that must not act on a partial file,
  such as a nightly run, fails as a whole)."""
  got = []
  with pytest.raises(DamagedFile):
    for record in tfrecord.stream_frames(io.BytesIO(_file()[:SECOND + 20])):
      got.append(record)
  assert got == RECORDS[:1]


# --- Parquet ---------------------------------------------------------------


def _parquet() -> bytes:
  out = io.BytesIO()
  pq.write_table(pa.table({'id': ['a', 'b', 'c'], 'n': [1, 2, 3]}), out)
  return out.getvalue()


def _footer(data: bytes) -> tuple[int, int]:
  (length,) = struct.unpack('<I', data[-8:-4])
  return len(data) - 8 - length, length


def _opened(data: bytes, path: str = 'out/emb-00000-of-00001.parquet'):
  return parquet.parquet_file(io.BytesIO(data), path)


def test_an_undamaged_parquet_file_reads_as_written(tmp_path):
  data = _parquet()
  assert _opened(data).read().to_pylist() == pq.read_table(
      io.BytesIO(data)).to_pylist()
  path = str(tmp_path / 'x.parquet')
  with open(path, 'wb') as f:
    f.write(data)
  assert parquet.read_table(path).equals(pq.read_table(path))
  assert parquet.read_schema(path) == pq.read_schema(path)
  tables = [t for t, _ in parquet.iter_tables(path, ['id', 'gone'])]
  assert tables[0].to_pylist() == [{'id': 'a'}, {'id': 'b'}, {'id': 'c'}]


def _magic(data):
  return ("it does not end with Parquet's magic bytes PAR1 (cut, or its "
          'last bytes changed)')


PARQUET_CASES = {
    'cut in the footer': (lambda d: d[:sum(_footer(d)) - 9], _magic),
    'cut in the footer length': (lambda d: d[:-6], _magic),
    'cut in the magic bytes': (lambda d: d[:-1], _magic),
    'flip in the footer length': (
        lambda d: _flip(d, len(d) - 5, 2),
        lambda d: (f'its footer length ({_footer(d)[1] + (4 << 24)} bytes) '
                   f'is more than the file holds ({len(d) - 12} bytes '
                   'before it)')),
    'flip in the magic bytes': (lambda d: _flip(d, len(d) - 1, 0), _magic),
    'flip in the first magic bytes': (
        lambda d: _flip(d, 0, 0),
        lambda d: "it does not start with Parquet's magic bytes PAR1"),
    'flip in the footer': (
        lambda d: _flip(d, _footer(d)[0], 5),
        lambda d: ("its footer cannot be read (Couldn't deserialize thrift: "
                   'TProtocolException: Invalid data)')),
    'too short': (lambda d: d[:11], lambda d: (
        'it holds 11 bytes, fewer than any Parquet file (cut)')),
}


@pytest.mark.parametrize('name', list(PARQUET_CASES),
                         ids=[n.replace(' ', '_') for n in PARQUET_CASES])
def test_a_damaged_parquet_footer_names_the_file(name, tmp_path):
  damage, what = PARQUET_CASES[name]
  data = _parquet()
  path = str(tmp_path / 'emb-00000-of-00001.parquet')
  with open(path, 'wb') as f:
    f.write(damage(data))
  message = (f'{path}: the Parquet file is damaged: {what(data)}; '
             f'{ADVICE}')
  for read in (parquet.read_table, parquet.read_schema,
               lambda p: list(parquet.iter_tables(p))):
    with pytest.raises(DamagedFile) as caught:
      read(path)
    assert str(caught.value) == message
