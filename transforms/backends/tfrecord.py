"""TFRecord files of tf.train.Example: PREFIX-SSSSS-of-NNNNN.tfrecord.

Each field is a one-value feature of its kind's list type (records.Kind.
example); a field whose value is None (a metadata field the document lacks)
is left out of that Example.
"""

from __future__ import annotations

import struct
from typing import Iterable

import apache_beam as beam
import numpy as np

from transforms import records as records_lib
from transforms.backends import files


def to_example_bytes(record: dict, layout: records_lib.Record) -> bytes:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  features = {}
  for field in layout.fields:
    value = record.get(field.name)
    if value is None:
      continue
    kind = field.kind.example
    if kind == 'float_list':
      features[field.name] = tf.train.Feature(float_list=tf.train.FloatList(
          value=np.asarray(value, np.float32)))
    elif kind == 'int64_list':
      features[field.name] = tf.train.Feature(int64_list=tf.train.Int64List(
          value=[int(value)]))
    else:
      text = value.isoformat() if field.kind == records_lib.TIMESTAMP else (
          value)
      features[field.name] = tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[text.encode('utf-8')]))
  return tf.train.Example(features=tf.train.Features(
      feature=features)).SerializeToString()


def from_example_bytes(raw: bytes, layout: records_lib.Record,
                       names=None) -> dict:
  """An Example as a record dict: declared fields by their kind (absent
  ones None); with `names`, only those; otherwise undeclared bytes features
  too, as metadata text."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  feature = tf.train.Example.FromString(raw).features.feature
  out = {}
  for field in layout.fields:
    if names is not None and field.name not in names:
      continue
    out[field.name] = _value(feature.get(field.name), field.kind)
  if names is None:
    for name in sorted(set(feature) - set(layout.names)):
      out[name] = _value(feature[name], records_lib.STRING)
  return out


def _value(feature, kind: records_lib.Kind):
  if feature is None:
    return None
  if kind.example == 'float_list':
    return np.array(feature.float_list.value, np.float32)
  if kind.example == 'int64_list':
    values = feature.int64_list.value
    if not values:
      return None
    return bool(values[0]) if kind == records_lib.BOOL else int(values[0])
  values = feature.bytes_list.value
  if not values:
    return None
  text = values[0].decode('utf-8')
  return records_lib.parse_time(text) if kind == records_lib.TIMESTAMP else (
      text)


def frames(data: bytes) -> Iterable[bytes]:
  """The records of a TFRecord file (framing: length, crc, data, crc)."""
  at = 0
  while at < len(data):
    (length,) = struct.unpack('<Q', data[at:at + 8])
    yield data[at + 12:at + 12 + length]
    at += 12 + length + 4


class TFRecordBackend(files.FileBackend):
  format = 'tfrecord'
  suffix = '.tfrecord'

  def sink(self) -> beam.PTransform:
    return _TFRecordSink(self)

  def read(self, names=None) -> beam.PTransform:
    return _ReadTFRecord(self, names)

  def load(self):
    rows = [from_example_bytes(raw, self.record)
            for path in files.shards(self.uri, self.suffix)
            for raw in frames(files.read_bytes(path))]
    return records_lib.to_arrow(records_lib.layout_of(self.record, rows),
                                rows)


@beam.ptransform_fn
def _TFRecordSink(records, backend: TFRecordBackend):
  return (records
          | 'ToExample' >> beam.Map(to_example_bytes, backend.record)
          | 'WriteTFRecord' >> beam.io.WriteToTFRecord(
              backend.uri, file_name_suffix=backend.suffix,
              num_shards=backend.settings.num_shards))


@beam.ptransform_fn
def _ReadTFRecord(pbegin, backend: TFRecordBackend, names):
  return (pbegin
          | 'ReadTFRecord' >> beam.io.ReadFromTFRecord(
              f'{backend.uri}-*{backend.suffix}')
          | 'Parse' >> beam.Map(from_example_bytes, backend.record, names))
