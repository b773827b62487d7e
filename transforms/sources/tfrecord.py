"""TFRecord files of tf.train.Example: one document per Example, its
features named by --id_field, --text_field, --text_b_field and
--metadata_fields, each holding one value."""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

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


def _files_to_read(pattern: str, skip):
  """The pattern, or, where it matches files to skip, the others by name
  (for readers that take patterns, not a filter)."""
  if not skip:
    return pattern
  found = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
  kept = [path for path in found if path not in skip]
  return pattern if len(kept) == len(found) else kept


def _tfxio_source(pattern):
  """tfx-bsl's TFXIO reader: decodes TFRecords of tf.Example into Arrow
  record batches in C++, much faster than parsing protos in Python. No
  schema is given, so id features may be bytes or int64."""
  from tfx_bsl.public import tfxio
  return tfxio.TFExampleRecord(pattern).BeamSource()


class TFRecordSource(base.Source):
  format = 'tfrecord'
  suffixes = (codec.SUFFIX, '.tfrecords')

  def expand(self, pbegin):
    return (pbegin
            | 'ReadExamples' >> _tfxio_source(
                _files_to_read(self._pattern, self._skip))
            | 'ParseExamples' >> beam.FlatMap(
                record_batch_to_documents, self._pattern, self._fields))
