"""TFRecord files of tf.train.Example: PREFIX-SSSSS-of-NNNNN.tfrecord.

Each field is a one-value feature of its kind's list type (records.Kind.
example); a field whose value is None (a metadata field the document lacks)
is left out of that Example.
"""

from __future__ import annotations

import functools

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import records as records_lib
from transforms.backends import files
from transforms.codecs import tfrecord as codec


@functools.lru_cache(maxsize=16)
def _plan(layout: records_lib.Record) -> tuple:
  """Per field: (name, its map-entry key already encoded, list kind, the
  kind's conversion to the feature's value), worked out once per layout."""
  return tuple((f.name, codec.map_key(f.name), f.kind.example,
                f.kind.to_example) for f in layout.fields)


def to_example_bytes(record: dict, layout: records_lib.Record) -> bytes:
  """A serialized tf.train.Example, written straight to protobuf's wire
  format: building the message field by field with TensorFlow's classes
  cost about 130 us a record (the largest Python cost of the write path,
  profiled), this 45 us. tests/test_write.py checks it against
  TensorFlow's own message."""
  entries = []
  for name, key, kind, convert in _plan(layout):
    value = record.get(name)
    if value is not None:
      entries.append((key, codec.feature_bytes(kind, convert(value))))
  return codec.example_bytes(entries)


def from_example_bytes(raw: bytes, layout: records_lib.Record,
                       names=None) -> dict:
  """An Example as a record dict: declared fields by their kind (absent
  ones None); with `names`, only those; otherwise undeclared bytes features
  too, as metadata text."""
  feature = codec.features(raw)
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
  """A feature's value by its kind (records.Kind.from_example)."""
  if feature is None:
    return None
  return kind.from_example(getattr(feature, kind.example).value)


class TFRecordBackend(files.FileBackend):
  format = 'tfrecord'
  suffix = codec.SUFFIX

  def sink(self) -> files.RecordSink:
    return _TFRecordSink(self)

  def read(self, names=None) -> beam.PTransform:
    return _ReadTFRecord(self, names)

  def read_carried(self, into) -> beam.PTransform:
    if type(into) is not TFRecordBackend or into.record != self.record:
      return super().read_carried(into)
    return _ReadEncoded(self)

  def field_names(self, path: str) -> set:
    with FileSystems.open(path) as f:
      raw = codec.first_frame(f, path)
    if raw is None:
      return set(self.record.names)  # an empty shard: nothing to check
    return {name for name, value in
            from_example_bytes(raw, self.record).items() if value is not None}

  def scan(self, names=None):
    for path in files.shards(self.uri, self.suffix):
      for raw in read_frames(path):
        yield from_example_bytes(raw, self.record, names)


def read_frames(path: str):
  """A shard's serialized Examples, streamed and checked (the codec's
  read_frame): every reader of the job's TFRecord outputs (pipeline.read,
  the report, a nightly run's --previous) goes through it, so a damaged
  shard is one error naming the file and the record's offset."""
  with FileSystems.open(path) as f:
    yield from codec.stream_frames(f, path)


class _TFRecordSink(files.RecordSink):
  """Record dicts -> framed tf.train.Example records."""

  mime_type = 'application/octet-stream'

  def write_record(self, file_handle, value):
    data = value.data if isinstance(value, records_lib.Encoded) else (
        to_example_bytes(value, self.layout))
    file_handle.write(codec.frame(data))


def id_and_encoded(raw: bytes, layout: records_lib.Record):
  """(id, Encoded) of a serialized Example in `layout`: copied as it is
  when it holds only the layout's features (what this job writes), else
  re-encoded with just those (an earlier run's extra metadata fields)."""
  feature = codec.features(raw)
  doc_id = feature['id'].bytes_list.value[0].decode('utf-8')
  if not set(feature.keys()) <= set(layout.names):
    raw = to_example_bytes(from_example_bytes(raw, layout, layout.names),
                           layout)
  return doc_id, records_lib.Encoded(raw)


@beam.ptransform_fn
def _ReadFrames(pbegin, backend: TFRecordBackend):
  """PBegin -> the serialized Examples of the output's shards, a shard
  per element and its records streamed (memory does not grow with the
  shard), checked by the codec. Beam's ReadFromTFRecord checks the
  checksums too, but says only 'Not a valid TFRecord' followed by the
  damaged record in hex (kilobytes for a vector), without the file."""
  return (pbegin
          | 'Shards' >> beam.Create(files.shards(backend.uri, backend.suffix))
          | 'Reshuffle' >> beam.Reshuffle()
          | 'ReadFrames' >> beam.FlatMap(read_frames))


@beam.ptransform_fn
def _ReadEncoded(pbegin, backend: TFRecordBackend):
  return (pbegin
          | 'ReadTFRecord' >> _ReadFrames(backend)
          | 'IdAndEncoded' >> beam.Map(id_and_encoded, backend.record))


@beam.ptransform_fn
def _ReadTFRecord(pbegin, backend: TFRecordBackend, names):
  return (pbegin
          | 'ReadTFRecord' >> _ReadFrames(backend)
          | 'Parse' >> beam.Map(from_example_bytes, backend.record, names))
