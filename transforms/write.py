"""Writing embeddings (TFRecord of tf.train.Example) and dead letters (JSONL).

Both go through Beam's file sinks, which write to temporary files and rename
them on finalisation: a re-run replaces the output shards instead of
appending, and a failed run leaves no partial shard under the final name.
"""

from __future__ import annotations

import json

import apache_beam as beam

from transforms.elements import DeadLetter, EmbeddedDocument

# Feature names of the output tf.train.Example records (see README).
FEATURES = ('id', 'embedding', 'model', 'pooling', 'num_tokens', 'truncated',
            'content_hash', 'num_chunks')


def to_example_bytes(doc: EmbeddedDocument, model: str, pooling: str) -> bytes:
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
      'num_chunks': i(doc.num_chunks),
  }))
  return example.SerializeToString()


def dead_letter_json(letter: DeadLetter) -> str:
  return json.dumps(letter.to_json_dict(), ensure_ascii=False)


class WriteEmbeddings(beam.PTransform):

  def __init__(self, prefix: str, model: str, pooling: str,
               num_shards: int = 0):
    super().__init__()
    self._prefix = prefix
    self._model = model
    self._pooling = pooling
    self._num_shards = num_shards

  def expand(self, embedded):
    return (embedded
            | 'ToExample' >> beam.Map(to_example_bytes, self._model,
                                      self._pooling)
            | 'WriteTFRecord' >> beam.io.WriteToTFRecord(
                self._prefix, file_name_suffix='.tfrecord',
                num_shards=self._num_shards))


class WriteDeadLetters(beam.PTransform):

  def __init__(self, prefix: str):
    super().__init__()
    self._prefix = prefix

  def expand(self, letters):
    return (letters
            | 'ToJson' >> beam.Map(dead_letter_json)
            | 'WriteJsonl' >> beam.io.WriteToText(
                self._prefix, file_name_suffix='.jsonl'))
