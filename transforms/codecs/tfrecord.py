"""TFRecord files of tf.train.Example: the framing (length, CRC-32C
checksums), Examples written straight to protobuf's wire format, and
Examples read back, one at a time or as tfx-bsl's Arrow record batches."""

from __future__ import annotations

import struct
from typing import Iterable, Optional, Sequence

import google_crc32c
import numpy as np

from transforms.codecs import DamagedFile

SUFFIX = '.tfrecord'
# tf.train.Feature's list kinds, by their field in the Feature's oneof.
BYTES, FLOATS, INTS = 'bytes_list', 'float_list', 'int64_list'
_ONEOF = {BYTES: 1, FLOATS: 2, INTS: 3}


def _varint(value: int) -> bytes:
  value &= (1 << 64) - 1  # int64 two's complement, as protobuf writes it
  out = bytearray()
  while value > 0x7F:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
  return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def feature_bytes(kind: str, value) -> bytes:
  """A tf.train.Feature holding one value (bytes, an int, or one float
  vector): the list message (field 1 of BytesList / FloatList / Int64List,
  numbers packed) inside the Feature's oneof (bytes_list 1, float_list 2,
  int64_list 3)."""
  if kind == FLOATS:
    payload = np.asarray(value, '<f4').tobytes()
  elif kind == INTS:
    payload = _varint(int(value))
  else:
    payload = value
  return length_delimited(_ONEOF[kind], length_delimited(1, payload))


def map_key(name: str) -> bytes:
  """A feature name as its Features.feature map entry's key."""
  return length_delimited(1, name.encode('utf-8'))


def example_bytes(entries: Iterable[tuple]) -> bytes:
  """A serialized tf.train.Example of (map_key(name), feature_bytes(...))
  pairs. Features.feature is a map<string, Feature>: entries of key 1,
  value 2."""
  return length_delimited(1, b''.join(
      length_delimited(1, key + length_delimited(2, feature))
      for key, feature in entries))


def features(raw: bytes):
  """A serialized Example's feature map (name -> tf.train.Feature)."""
  import tensorflow as tf
  return tf.train.Example.FromString(raw).features.feature


def batch_rows(batch, names: Optional[Sequence[Optional[str]]] = None
               ) -> Iterable[tuple]:
  """(record, problems) per Example of a tfx-bsl Arrow record batch, whose
  features are lists: a feature's one value, or a problem where it holds
  more or fewer (absent features are left out). With `names`, only those
  features (None names ignored): a feature no flag names, such as a list
  of tags, is not read, as a Parquet source reads only its named columns."""
  wanted = batch.schema.names if names is None else [
      name for name in dict.fromkeys(names)
      if name and name in batch.schema.names]
  columns = {name: batch.column(name).to_pylist() for name in wanted}
  for i in range(batch.num_rows):
    record, problems = {}, []
    for name, values in columns.items():
      value = values[i]
      if value is None:
        continue
      if len(value) != 1:
        problems.append(f'feature {name!r} has {len(value)} values')
        continue
      record[name] = value[0]
    yield record, problems


def _masked_crc(data: bytes) -> int:
  """TFRecord's checksum: CRC-32C, rotated and offset ("masked")."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
  """One TFRecord: length, its checksum, the data, its checksum."""
  length = struct.pack('<Q', len(data))
  return (length + struct.pack('<I', _masked_crc(length)) + data +
          struct.pack('<I', _masked_crc(data)))


def stream_frames(f, path: str = '') -> Iterable[bytes]:
  """The records of an open TFRecord file, read one at a time and each
  checked (read_frame); `path` names the file in the error."""
  offset = 0
  while True:
    data = read_frame(f, offset, path)
    if data is None:
      return
    yield data
    offset += len(data) + OVERHEAD


def first_frame(f, path: str = '') -> Optional[bytes]:
  """The first record of an open TFRecord file (None for an empty file),
  checked (read_frame)."""
  return read_frame(f, 0, path)


# A frame's bytes around its data: the length (8), the length's checksum
# (4) and the data's checksum (4).
OVERHEAD = 16
_FIELDS = (('the length', 8), ("the length's checksum", 4))


def read_frame(f, offset: int, path: str = '') -> Optional[bytes]:
  """The data of the record that starts at `offset` of an open TFRecord
  file (at its read position), None at the file's end.

  Checks what TFRecord's framing can tell, as Beam's tfrecordio and
  TensorFlow's reader do: the length's and the data's masked CRC-32C, and
  a file cut anywhere inside a record. Without them a flipped byte of a
  stored vector reads back as another vector, and a cut shard as a shorter
  complete one. The length's checksum is checked before the data is read,
  so a damaged length never asks for gigabytes. A cut exactly between two
  records cannot be told from a shorter file (the format has no count).

  Raises:
    DamagedFile: naming `path`, the record's byte offset and what is
      wrong, never the record's bytes.
  """
  header = f.read(12)
  if not header:
    return None
  if len(header) < 12:
    start = 0
    for field, size in _FIELDS:
      if len(header) < start + size:
        raise _damaged(path, offset, f'cut inside {field}: '
                       f'{len(header) - start} of {size} bytes')
      start += size
  length_bytes, (length_crc,) = header[:8], struct.unpack('<I', header[8:])
  if _masked_crc(length_bytes) != length_crc:
    raise _damaged(path, offset, "the length's checksum does not match")
  (length,) = struct.unpack('<Q', length_bytes)
  data = f.read(length)
  if len(data) < length:
    raise _damaged(path, offset,
                   f'cut inside the data: {len(data)} of {length} bytes')
  crc = f.read(4)
  if len(crc) < 4:
    raise _damaged(path, offset,
                   f"cut inside the data's checksum: {len(crc)} of 4 bytes")
  if _masked_crc(data) != struct.unpack('<I', crc)[0]:
    raise _damaged(path, offset, "the data's checksum does not match")
  return data


def _damaged(path: str, offset: int, problem: str) -> DamagedFile:
  return DamagedFile(path, f'the TFRecord record at byte {offset}', problem)
