"""Output helpers as plain functions."""

from __future__ import annotations

import os

from transforms.backends import files as write


def test_remove_stale_shards_keeps_this_runs_and_other_outputs(tmp_path):
  prefix = str(tmp_path / 'emb')
  names = ['emb-00000-of-00003.tfrecord', 'emb-00001-of-00003.tfrecord',
           'emb-00002-of-00003.tfrecord', 'emb-00000-of-00002.tfrecord',
           'emb-00001-of-00002.tfrecord', 'emb-v2-00000-of-00001.tfrecord',
           'emb_dead_letter-00000-of-00001.jsonl', 'emb-00000-of-00009.txt']
  for name in names:
    (tmp_path / name).write_bytes(b'x')
  written = [os.path.relpath(str(tmp_path / n)) for n in names[3:5]]
  assert write.remove_stale_shards(written, prefix, '.tfrecord') == 3
  assert sorted(os.listdir(tmp_path)) == sorted(names[3:])
  assert write.remove_stale_shards(written, prefix, '.tfrecord') == 0


def _tf_example(record: dict, layout) -> bytes:
  """The same record built with TensorFlow's own message classes."""
  import numpy as np
  import tensorflow as tf
  features = {}
  for field in layout.fields:
    value = record.get(field.name)
    if value is None:
      continue
    if field.kind.example == 'float_list':
      features[field.name] = tf.train.Feature(float_list=tf.train.FloatList(
          value=np.asarray(value, np.float32)))
    elif field.kind.example == 'int64_list':
      features[field.name] = tf.train.Feature(int64_list=tf.train.Int64List(
          value=[int(value)]))
    else:
      text = value.isoformat() if hasattr(value, 'isoformat') else value
      features[field.name] = tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[text.encode('utf-8')]))
  return tf.train.Example(features=tf.train.Features(feature=features))


def test_example_bytes_equal_tensorflows_message():
  import datetime
  import numpy as np
  import tensorflow as tf
  from transforms import records
  from transforms.backends import tfrecord
  from transforms.codecs import tfrecord as codec
  layout = records.EMBEDDINGS.with_metadata(['source', 'empty'])
  rng = np.random.default_rng(0)
  for dim, num_tokens, text in ((384, 300, 'plain'), (1, 0, ''),
                                (1024, 2**40, 'ünïcode ✓ \x00 tab\t')):
    record = {f.name: None for f in layout.fields}
    record.update(
        id=f'doc-{text}', embedding=rng.normal(size=dim).astype(np.float32),
        num_tokens=num_tokens, truncated=bool(num_tokens % 2),
        num_chunks=1, content_hash='ab' * 32, model='minilm-l6',
        model_fingerprint='f' * 32, pooling='mean', source=text,
        embedded_at=datetime.datetime(2026, 12, 2, 8, 0, 1, 5,
                                      tzinfo=datetime.timezone.utc))
    record = {k: v for k, v in record.items() if k in layout.names}
    ours = tf.train.Example.FromString(
        tfrecord.to_example_bytes(record, layout))
    assert ours == _tf_example(record, layout), record['id']
    # And it reads back through the job's own reader.
    back = tfrecord.from_example_bytes(ours.SerializeToString(), layout)
    assert back['id'] == record['id'] and back['empty'] is None
    np.testing.assert_array_equal(back['embedding'], record['embedding'])
  # Negative integers take protobuf's ten-byte form.
  assert codec._varint(-1) == b'\xff' * 9 + b'\x01'
