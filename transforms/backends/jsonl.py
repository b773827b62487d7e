"""JSON lines: PREFIX-SSSSS-of-NNNNN.jsonl, the dead letters' default.

One object per record with the declared fields; timestamps as ISO 8601
text, vectors as arrays of numbers.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import records as records_lib
from transforms.backends import files
from transforms.codecs import jsonl as codec


def to_json(record: dict, layout: records_lib.Record) -> str:
  return codec.encode_object(records_lib.to_backend(record, layout,
                                                    'to_json'))


def from_json(line: str, layout: records_lib.Record) -> dict:
  return records_lib.from_backend(codec.decode_object(line), layout,
                                  'from_json')


class JsonlBackend(files.FileBackend):
  format = 'jsonl'
  suffix = codec.SUFFIX

  def sink(self) -> files.RecordSink:
    return _JsonlSink(self)

  def read(self, names=None) -> beam.PTransform:
    return (beam.io.ReadFromText(f'{self.uri}-*{self.suffix}')
            | beam.Map(from_json, self.record))

  def scan(self, names=None):
    for path in files.shards(self.uri, self.suffix):
      with FileSystems.open(path) as f:
        for line in f:
          if line.strip():
            record = from_json(line.decode('utf-8'), self.record)
            yield ({n: record.get(n) for n in names} if names else record)


class _JsonlSink(files.RecordSink):
  """Record dicts -> one JSON object per line."""

  mime_type = 'application/x-ndjson'

  def write_record(self, file_handle, value):
    file_handle.write(to_json(value, self.layout).encode('utf-8') + b'\n')
