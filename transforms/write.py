"""Writing embeddings (TFRecord of tf.train.Example, or a BigQuery table)
and dead letters (JSONL, or a BigQuery table).

Re-running a job to the same output leaves one copy of each record: Beam's
file sinks write temporary files and rename them on finalisation (a re-run
replaces the shards, and shards of an earlier run that this one did not
write are then deleted; a failed run leaves no partial shard under the final
name), and BigQuery outputs default to WRITE_TRUNCATE load jobs, which
replace the table's contents atomically.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import bigquery
from transforms.elements import DeadLetter, EmbeddedDocument

# Feature names of the output tf.train.Example records (see README).
FEATURES = ('id', 'embedding', 'model', 'pooling', 'num_tokens', 'truncated',
            'content_hash', 'num_chunks', 'model_fingerprint')


def to_example_bytes(doc: EmbeddedDocument, model: str, pooling: str,
                     fingerprint: str = '') -> bytes:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  feature = tf.train.Feature

  def b(value: str):
    return feature(bytes_list=tf.train.BytesList(value=[value.encode()]))

  def i(value: int):
    return feature(int64_list=tf.train.Int64List(value=[int(value)]))

  example = tf.train.Example(features=tf.train.Features(feature={
      'id': b(doc.id),
      'embedding': feature(float_list=tf.train.FloatList(
          value=doc.embedding.tolist())),
      'model': b(model),
      'pooling': b(pooling),
      'num_tokens': i(doc.num_tokens),
      'truncated': i(1 if doc.truncated else 0),
      'content_hash': b(doc.content_hash),
      'model_fingerprint': b(fingerprint),
      'num_chunks': i(doc.num_chunks),
      **{name: b(value) for name, value in doc.metadata
         if value is not None},
  }))
  return example.SerializeToString()


def dead_letter_json(letter: DeadLetter) -> str:
  return json.dumps(letter.to_json_dict(), ensure_ascii=False)


def _normal(path: str) -> str:
  return path if '://' in path else os.path.abspath(path)


def remove_stale_shards(written: Sequence[str], prefix: str,
                        suffix: str) -> int:
  """Deletes shards under `prefix` that this run did not write.

  Beam's file sinks replace shards of the same name, but a re-run that
  writes fewer shards (another --num_shards, or a runner that picks another
  count) would leave an earlier run's extra shards next to the new ones, and
  readers of PREFIX-* would see old records twice. Runs after the sink has
  finalised, so a failed run deletes nothing.
  """
  shard = re.compile(re.escape(_normal(prefix)) + r'-\d+-of-\d+' +
                     re.escape(suffix) + '$')
  keep = {_normal(p) for p in written}
  matched = FileSystems.match([f'{prefix}-*-of-*{suffix}'])[0].metadata_list
  stale = [m.path for m in matched
           if shard.match(_normal(m.path)) and _normal(m.path) not in keep]
  if stale:
    logging.warning('Removing %d shard(s) of an earlier run under %s: %s',
                    len(stale), prefix, stale[:5])
    FileSystems.delete(stale)
    Metrics.counter('write', 'stale_shards_removed').inc(len(stale))
  return len(stale)


def _replace_shards(written, prefix: str, suffix: str):
  return (written
          | 'AllShards' >> beam.combiners.ToList()
          | 'RemoveStaleShards' >> beam.Map(remove_stale_shards, prefix,
                                            suffix))


def check_metadata_fields(names: Sequence[str]) -> None:
  """Metadata fields become features (TFRecord) or columns (BigQuery) of
  their own name, so they must not take a name either output uses."""
  taken = sorted(set(FEATURES) | set(bigquery.COLUMNS))
  clash = sorted(set(names) & set(taken))
  if clash:
    raise ValueError(f'--metadata_fields {clash} clash with output '
                     f'features/columns {taken}')


def _bigquery_sink(table: str, schema: dict, method: str, disposition: str,
                   temp_location: Optional[str]):
  bigquery.check_write(method, disposition)
  return beam.io.WriteToBigQuery(
      bigquery.table_spec(table), schema=schema,
      method=getattr(beam.io.WriteToBigQuery.Method, method),
      create_disposition=beam.io.BigQueryDisposition.CREATE_IF_NEEDED,
      write_disposition=getattr(beam.io.BigQueryDisposition, disposition),
      custom_gcs_temp_location=temp_location,
      # JSON load files: no Avro schema conversion of REPEATED floats.
      temp_file_format='NEWLINE_DELIMITED_JSON')


class WriteEmbeddings(beam.PTransform):
  """To PREFIX-SSSSS-of-NNNNN.tfrecord, or to bq://PROJECT.DATASET.TABLE."""

  def __init__(self, output: str, model: str, pooling: str,
               num_shards: int = 0, metadata_fields: Sequence[str] = (),
               embedded_at: str = '', fingerprint: str = '',
               bq_method: str = 'FILE_LOADS',
               bq_disposition: str = 'WRITE_TRUNCATE',
               bq_temp_location: Optional[str] = None):
    super().__init__()
    self._output = output
    self._model = model
    self._pooling = pooling
    self._num_shards = num_shards
    check_metadata_fields(metadata_fields)
    self._metadata_fields = tuple(metadata_fields)
    self._embedded_at = embedded_at
    self._fingerprint = fingerprint
    self._bq = (bq_method, bq_disposition, bq_temp_location)

  def expand(self, embedded):
    if bigquery.is_table(self._output):
      return (embedded
              | 'ToRow' >> beam.Map(bigquery.embedding_row, self._model,
                                    self._pooling, self._embedded_at,
                                    self._fingerprint)
              | 'WriteBigQuery' >> _bigquery_sink(
                  self._output,
                  bigquery.embedding_schema(self._metadata_fields),
                  *self._bq))
    written = (embedded
               | 'ToExample' >> beam.Map(to_example_bytes, self._model,
                                         self._pooling, self._fingerprint)
               | 'WriteTFRecord' >> beam.io.WriteToTFRecord(
                   self._output, file_name_suffix='.tfrecord',
                   num_shards=self._num_shards))
    return _replace_shards(written, self._output, '.tfrecord')


class WriteDeadLetters(beam.PTransform):
  """To PREFIX-SSSSS-of-NNNNN.jsonl, or to bq://PROJECT.DATASET.TABLE."""

  def __init__(self, prefix: str, failed_at: str = '',
               bq_method: str = 'FILE_LOADS',
               bq_disposition: str = 'WRITE_TRUNCATE',
               bq_temp_location: Optional[str] = None):
    super().__init__()
    self._prefix = prefix
    self._failed_at = failed_at
    self._bq = (bq_method, bq_disposition, bq_temp_location)

  def expand(self, letters):
    if bigquery.is_table(self._prefix):
      return (letters
              | 'ToRow' >> beam.Map(bigquery.dead_letter_row,
                                    self._failed_at)
              | 'WriteBigQuery' >> _bigquery_sink(
                  self._prefix, bigquery.dead_letter_schema(), *self._bq))
    written = (letters
               | 'ToJson' >> beam.Map(dead_letter_json)
               | 'WriteJsonl' >> beam.io.WriteToText(
                   self._prefix, file_name_suffix='.jsonl'))
    return _replace_shards(written, self._prefix, '.jsonl')
