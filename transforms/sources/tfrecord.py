"""TFRecord files of tf.train.Example: one document per Example, its
features named by --id_field, --text_field, --text_b_field and
--metadata_fields, each holding one value."""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
from apache_beam.io import fileio

from transforms import compressed
from transforms.codecs import tfrecord as codec
from transforms.sources import base


def record_batch_to_documents(batch, source: str,
                              fields: base.Fields) -> Iterable[base.Parsed]:
  """tfx-bsl decodes tf.Examples into Arrow record batches whose features
  are lists; each feature the flags name must hold exactly one value (the
  others are not read)."""
  wanted = (fields.id_field, fields.text_field, fields.text_b_field,
            *fields.metadata_fields)
  for record, problems in codec.batch_rows(batch, wanted):
    if problems:
      yield base.dead(source, repr(record), 'bad_feature',
                      '; '.join(problems))
      continue
    yield base.record_to_document(record, source, fields)


def read_examples(path: str) -> Iterable[bytes]:
  """A file's serialized Examples, streamed, each checked by the codec
  (read_frame): a damaged record stops the run with one error naming the
  file and the record's byte offset. Beam's reader (under tfx-bsl's
  TFExampleRecord) checks the same, but its error carries the record in
  hex, kilobytes, without the file. The format cannot resume after a
  damaged header, so the records after it are not guessed at. A compressed
  file is read to its end marker (transforms/compressed.py)."""
  with compressed.open_file(path) as f:
    yield from codec.stream_frames(f, path)
    compressed.check_end(f)


def _decoded_batches():
  """tfx-bsl's TFXIO decoder of serialized tf.Examples into Arrow record
  batches, in C++, much faster than parsing protos in Python. No schema is
  given, so id features may be bytes or int64."""
  from tfx_bsl.public import tfxio
  return tfxio.TFExampleBeamRecord(physical_format='tfrecord').BeamSource()


class TFRecordSource(base.Source):
  format = 'tfrecord'
  suffixes = (codec.SUFFIX, '.tfrecords')

  def expand(self, pbegin):
    return (pbegin
            | 'TFRecordFiles' >> beam.Create([self._pattern])
            | 'Match' >> fileio.MatchAll()
            | 'NotOwn' >> beam.FlatMap(
                lambda m, skip: [] if m.path in skip else [m.path],
                self._skip)
            | 'Reshuffle' >> beam.Reshuffle()
            | 'ReadExamples' >> beam.FlatMap(read_examples)
            | 'DecodeExamples' >> _decoded_batches()
            | 'ParseExamples' >> beam.FlatMap(
                record_batch_to_documents, self._pattern, self._fields))
