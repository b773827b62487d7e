"""Small corpora in every input format, built from the real sample corpus,
with known bad records mixed in."""

from __future__ import annotations

import csv
import json
import os
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, 'data', 'stdlib_docstrings.jsonl')


class Corpus(NamedTuple):
  pattern: str
  good_ids: list  # ids expected in the output (None: derived from text)
  texts: dict  # id -> text for good records
  bad_types: list  # expected dead-letter error types, sorted


def sample_docs(n: int, start: int = 0) -> list[dict]:
  with open(SAMPLE, encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  return rows[start:start + n]


def write_jsonl(path: str, docs: list[dict], bad: bool = True) -> Corpus:
  lines = [json.dumps(d) for d in docs]
  bad_types = []
  if bad:
    lines.insert(3, '{"id": "broken", "text": ')
    lines.insert(5, json.dumps({'id': 'empty', 'text': '   '}))
    lines.insert(7, json.dumps({'id': 'notext'}))
    bad_types = ['empty_text', 'malformed_json', 'missing_text']
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  return Corpus(path, [d['id'] for d in docs],
                {d['id']: d['text'] for d in docs}, sorted(bad_types))


def write_text(path: str, docs: list[dict]) -> Corpus:
  from transforms.elements import derived_id
  lines = [d['text'] for d in docs]
  lines.insert(2, '')
  with open(path, 'wb') as f:
    f.write('\n'.join(lines).encode('utf-8') + b'\n\xff\xfe broken utf-8\n')
  return Corpus(path, [derived_id(d['text']) for d in docs],
                {derived_id(d['text']): d['text'] for d in docs},
                ['empty_text', 'invalid_utf8'])


def write_csv(path: str, docs: list[dict]) -> Corpus:
  with open(path, 'w', encoding='utf-8', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['id', 'source', 'text'])
    for i, d in enumerate(docs):
      text = d['text'] + ('\nwith a second line' if i == 1 else '')
      writer.writerow([d['id'], d['source'], text])
    f.write('too,many,fields,here\n')
    writer.writerow(['blank', 'x', ''])
  texts = {d['id']: d['text'] for d in docs}
  texts[docs[1]['id']] += '\nwith a second line'
  return Corpus(path, [d['id'] for d in docs], texts,
                ['empty_text', 'malformed_csv'])


def write_parquet(path: str, docs: list[dict]) -> Corpus:
  import pyarrow as pa
  import pyarrow.parquet as pq
  ids = [d['id'] for d in docs] + ['null-text']
  texts = [d['text'] for d in docs] + [None]
  pq.write_table(pa.table({'id': ids, 'text': texts,
                           'source': ['x'] * len(ids)}), path)
  return Corpus(path, [d['id'] for d in docs],
                {d['id']: d['text'] for d in docs}, ['missing_text'])


def write_tfrecord(path: str, docs: list[dict]) -> Corpus:
  import tensorflow as tf

  def bytes_feature(value: str):
    return tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[value.encode('utf-8')]))

  # A feature no flag names, with several values, is not read.
  tags = tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'a', b'b']))
  with tf.io.TFRecordWriter(path) as writer:
    for d in docs:
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          'id': bytes_feature(d['id']), 'text': bytes_feature(d['text']),
          'tags': tags,
      })).SerializeToString())
    writer.write(tf.train.Example(features=tf.train.Features(feature={
        'id': bytes_feature('no-text')})).SerializeToString())
  return Corpus(path, [d['id'] for d in docs],
                {d['id']: d['text'] for d in docs}, ['missing_text'])


WRITERS = {'text': ('corpus.txt', write_text),
           'jsonl': ('corpus.jsonl', write_jsonl),
           'csv': ('corpus.csv', write_csv),
           'parquet': ('corpus.parquet', write_parquet),
           'tfrecord': ('corpus.tfrecord', write_tfrecord)}


def read_output(prefix: str, output_format: str = 'auto') -> list[dict]:
  """The pipeline's records (local or gs://, any backend) through
  pipeline.read: the declared fields but the run's timestamp, metadata
  fields under 'metadata', embeddings as lists."""
  from pipeline import read
  from transforms.records import EMBEDDINGS
  out = []
  for row in read.load(prefix, output_format).table.to_pylist():
    record = {k: v for k, v in row.items()
              if k in EMBEDDINGS.names and k != 'embedded_at'}
    record['metadata'] = {k: v for k, v in row.items()
                          if k not in EMBEDDINGS.names and v is not None}
    out.append(record)
  return out


def read_dead_letters(prefix: str) -> list[dict]:
  from pipeline import read
  return read.load(prefix, dead_letters=True).table.to_pylist()


def assert_equal_to_direct_call(records: list[dict], texts: dict,
                                model) -> None:
  """The pipeline's records hold the numbers a direct EmbeddingModel call
  gives for the same texts (batching may differ)."""
  import numpy as np
  by_id = {r['id']: r for r in records}
  ids = sorted(by_id)
  direct = model.embed([texts[i] for i in ids])
  np.testing.assert_allclose(
      np.array([by_id[i]['embedding'] for i in ids]), direct.embeddings,
      atol=2e-5)
  assert [by_id[i]['num_tokens'] for i in ids] == direct.num_tokens.tolist()


def read_split(pattern: str, bundle_size: int) -> list:
  """(path, offset, line) from transforms.read.LinesSource, split into
  ranges of bundle_size bytes and each range read as a worker would."""
  from transforms import read as read_lib
  source = read_lib.LinesSource(pattern)
  out = []
  for bundle in source.split(desired_bundle_size=bundle_size):
    tracker = bundle.source.get_range_tracker(bundle.start_position,
                                              bundle.stop_position)
    out.extend(bundle.source.read(tracker))
  return out
