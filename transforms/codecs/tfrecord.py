"""TFRecord files of tf.train.Example: the framing (length, CRC-32C
checksums), Examples written straight to protobuf's wire format, and
Examples read back, one at a time or as tfx-bsl's Arrow record batches."""

from __future__ import annotations

import struct
from typing import Iterable, Optional, Sequence

import google_crc32c
import numpy as np

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


def stream_frames(f) -> Iterable[bytes]:
  """The records of an open TFRecord file, read one at a time."""
  while True:
    header = f.read(12)
    if len(header) < 12:
      return
    yield _data(f, header)


def first_frame(f) -> Optional[bytes]:
  """The first record of an open TFRecord file (None for an empty file)."""
  header = f.read(12)
  return _data(f, header) if header else None


def _data(f, header: bytes) -> bytes:
  """A record's data after its header (length and the length's
  checksum), and past the data's checksum."""
  (length,) = struct.unpack('<Q', header[:8])
  data = f.read(length)
  f.read(4)
  return data

