"""transforms/codecs/: JSON lines' decode_object / encode_object,
TFRecord's hand-written protobuf (example_bytes, feature_bytes, map_key,
features) checked against tf.train.Example's own parser, its masked
CRC-32C and framing against TensorFlow's TFRecordWriter, batch_rows, and
Parquet's table_rows, TableWriter, read_table and iter_tables on a file in
tmp_path, read back by pyarrow itself.

Why: the Examples are written to protobuf's wire format by hand, so a wrong
tag or varint makes files TensorFlow cannot read; a wrong checksum makes
every reader reject the file.
"""

from __future__ import annotations

import io
import struct

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from transforms import records
from transforms.codecs import jsonl
from transforms.codecs import parquet
from transforms.codecs import tfrecord

pytestmark = pytest.mark.unit


# --- JSON lines ---------------------------------------------------------------


def test_decode_object():
  assert jsonl.decode_object(' {"a": [1, 2.5], "b": null, "c": "é"} ') == {
      'a': [1, 2.5], 'b': None, 'c': 'é'}


@pytest.mark.parametrize('line,kind', [
    ('[1]', 'list'), ('"x"', 'str'), ('3', 'int'), ('null', 'NoneType'),
    ('true', 'bool'),
])
def test_decode_object_refuses_other_json_values(line, kind):
  with pytest.raises(ValueError, match=f'expected a JSON object, got {kind}'):
    jsonl.decode_object(line)


def test_decode_object_refuses_malformed_json():
  with pytest.raises(ValueError):
    jsonl.decode_object('{"a": ')


def test_encode_object_keeps_text_unescaped():
  assert jsonl.encode_object({'a': 'é😀', 'b': [1, None], 'c': True}) == (
      '{"a": "é😀", "b": [1, null], "c": true}')
  assert jsonl.encode_object({'n': 'a\nb'}) == '{"n": "a\\nb"}'


# --- TFRecord: Examples ---------------------------------------------------


@pytest.mark.parametrize('value', [0, 1, 127, 128, 300, 2**62, -1, -2**63])
def test_int_feature_parses_to_the_same_int64(value):
  raw = tfrecord.example_bytes([
      (tfrecord.map_key('n'), tfrecord.feature_bytes(tfrecord.INTS, value))])
  feature = tf.train.Example.FromString(raw).features.feature['n']
  assert list(feature.int64_list.value) == [value]


def test_float_feature_parses_to_the_same_float32_values():
  vector = np.array([0.1, -2.5, np.finfo(np.float32).max, 0.0], np.float32)
  raw = tfrecord.example_bytes([
      (tfrecord.map_key('v'),
       tfrecord.feature_bytes(tfrecord.FLOATS, vector))])
  values = tf.train.Example.FromString(raw).features.feature['v']
  got = np.array(values.float_list.value, np.float32)
  assert got.tobytes() == vector.tobytes()


def test_bytes_feature_and_utf8_name():
  raw = tfrecord.example_bytes([
      (tfrecord.map_key('naïve'),
       tfrecord.feature_bytes(tfrecord.BYTES, b'\x00\xffx' * 100))])
  feature = tf.train.Example.FromString(raw).features.feature['naïve']
  assert list(feature.bytes_list.value) == [b'\x00\xffx' * 100]


def test_feature_bytes_is_a_serialized_tf_train_feature():
  raw = tfrecord.feature_bytes(tfrecord.INTS, 5)
  assert tf.train.Feature.FromString(raw) == tf.train.Feature(
      int64_list=tf.train.Int64List(value=[5]))
  # Packed, as protobuf itself writes repeated numbers.
  assert raw == tf.train.Feature(
      int64_list=tf.train.Int64List(value=[5])).SerializeToString()


def test_a_record_as_an_example_parses_to_the_same_values():
  layout = records.EMBEDDINGS
  moment = records.parse_time('2026-01-02T03:04:05+00:00')
  record = {'id': 'd', 'embedding': np.array([0.25, -1], np.float32),
            'model': 'm', 'pooling': 'mean', 'num_tokens': 9,
            'truncated': True, 'num_chunks': 2, 'content_hash': 'h',
            'model_fingerprint': 'fp', 'embedded_at': moment}
  raw = tfrecord.example_bytes(
      (tfrecord.map_key(f.name),
       tfrecord.feature_bytes(f.kind.example, f.kind.to_example(
           record[f.name])))
      for f in layout.fields)
  want = tf.train.Example()
  feature = want.features.feature
  feature['id'].bytes_list.value.append(b'd')
  feature['embedding'].float_list.value.extend([0.25, -1.0])
  feature['model'].bytes_list.value.append(b'm')
  feature['pooling'].bytes_list.value.append(b'mean')
  feature['num_tokens'].int64_list.value.append(9)
  feature['truncated'].int64_list.value.append(1)
  feature['num_chunks'].int64_list.value.append(2)
  feature['content_hash'].bytes_list.value.append(b'h')
  feature['model_fingerprint'].bytes_list.value.append(b'fp')
  feature['embedded_at'].bytes_list.value.append(
      b'2026-01-02T03:04:05+00:00')
  assert tf.train.Example.FromString(raw) == want
  # And back through each kind's from_example.
  parsed = tfrecord.features(raw)
  back = {f.name: f.kind.from_example(
      getattr(parsed[f.name], f.kind.example).value) for f in layout.fields}
  assert back['embedded_at'] == moment
  assert back['truncated'] is True
  assert back['embedding'].tobytes() == record['embedding'].tobytes()
  assert {k: v for k, v in back.items() if k != 'embedding'} == {
      k: v for k, v in record.items() if k != 'embedding'}


def test_features_reads_an_example_tensorflow_wrote():
  example = tf.train.Example()
  example.features.feature['a'].int64_list.value.append(3)
  example.features.feature['b'].bytes_list.value.append(b'x')
  got = tfrecord.features(example.SerializeToString())
  assert set(got) == {'a', 'b'}
  assert list(got['a'].int64_list.value) == [3]
  assert list(got['b'].bytes_list.value) == [b'x']


def test_empty_example():
  assert tf.train.Example.FromString(tfrecord.example_bytes([])) == (
      tf.train.Example(features=tf.train.Features()))


# --- TFRecord: framing ------------------------------------------------------


def _spec_mask(crc: int) -> int:
  """The TFRecord format's masked_crc: rotate right by 15, add a constant."""
  rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
  return (rotated + 0xA282EAD8) & 0xFFFFFFFF


def test_masked_crc_of_the_crc32c_check_value():
  # CRC-32C's published check value, of b'123456789', is 0xE3069283.
  assert google_crc32c.value(b'123456789') == 0xE3069283
  assert tfrecord._masked_crc(b'123456789') == 0xC78AB0E5
  assert _spec_mask(0xE3069283) == 0xC78AB0E5


@pytest.mark.parametrize('data', [b'', b'a', b'\xff' * 1000,
                                  bytes(range(256))])
def test_masked_crc_matches_the_spec(data):
  assert tfrecord._masked_crc(data) == _spec_mask(google_crc32c.value(data))


def test_frame_is_what_tensorflow_writes(tmp_path):
  records_in = [b'', b'first', b'x' * 70000]
  path = str(tmp_path / 'tf.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    for data in records_in:
      writer.write(data)
  with open(path, 'rb') as f:
    written = f.read()
  assert b''.join(tfrecord.frame(d) for d in records_in) == written


def test_stream_frames_reads_what_tensorflow_wrote(tmp_path):
  path = str(tmp_path / 'tf.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    for data in (b'one', b'', b'three'):
      writer.write(data)
  with open(path, 'rb') as f:
    assert list(tfrecord.stream_frames(f)) == [b'one', b'', b'three']
  with open(path, 'rb') as f:
    assert tfrecord.first_frame(f) == b'one'
  assert tfrecord.first_frame(io.BytesIO(b'')) is None


def test_frame_layout():
  framed = tfrecord.frame(b'abc')
  assert len(framed) == 8 + 4 + 3 + 4
  assert struct.unpack('<Q', framed[:8]) == (3,)
  assert framed[12:15] == b'abc'
  assert struct.unpack('<I', framed[15:]) == (
      _spec_mask(google_crc32c.value(b'abc')),)


def test_batch_rows_takes_single_values_and_reports_the_others():
  batch = pa.RecordBatch.from_pydict({
      'id': [[b'a'], [b'b'], None],
      'n': [[1], [1, 2], []],
  })
  assert list(tfrecord.batch_rows(batch)) == [
      ({'id': b'a', 'n': 1}, []),
      ({'id': b'b'}, ["feature 'n' has 2 values"]),
      ({}, ["feature 'n' has 0 values"]),
  ]


def test_batch_rows_reads_only_the_named_features():
  """A feature no flag names (tags with several values) rejects nothing."""
  batch = pa.RecordBatch.from_pydict({
      'id': [[b'a'], [b'b']], 'text': [[b'x'], []],
      'tags': [[b't1', b't2'], [b't3']],
  })
  assert list(tfrecord.batch_rows(batch, ['id', None, 'text', 'id',
                                          'gone'])) == [
      ({'id': b'a', 'text': b'x'}, []),
      ({'id': b'b'}, ["feature 'text' has 0 values"]),
  ]


# --- Parquet ------------------------------------------------------------------


def test_table_rows_selects_present_columns_once():
  table = pa.table({'a': [1, 2], 'b': ['x', None], 'c': [True, False]})
  assert parquet.table_rows(table, ['b', None, 'a', 'b', 'zz']) == [
      {'b': 'x', 'a': 1}, {'b': None, 'a': 2}]
  assert parquet.table_rows(table, []) == [{}, {}]


def _table(start: int, n: int):
  return pa.table({
      'id': pa.array([f'd{i}' for i in range(start, start + n)]),
      'v': pa.FixedSizeListArray.from_arrays(
          np.arange(start * 2, (start + n) * 2, dtype=np.float32), 2),
  })


def test_table_writer_writes_a_file_pyarrow_reads(tmp_path):
  path = tmp_path / 'out.parquet'
  writer = parquet.TableWriter(open(path, 'wb'))
  assert not writer.started
  writer.write(_table(0, 3))
  assert writer.started
  writer.write(_table(3, 2))
  writer.close()
  table = pq.read_table(path)
  assert table.schema.field('v').type == pa.list_(pa.float32(), 2)
  assert table.column('id').to_pylist() == [f'd{i}' for i in range(5)]
  assert table.column('v').to_pylist() == [
      [2.0 * i, 2.0 * i + 1] for i in range(5)]
  assert pq.ParquetFile(path).metadata.num_row_groups == 2


def test_read_table_reads_a_file_pyarrow_wrote(tmp_path):
  path = str(tmp_path / 'in.parquet')
  pq.write_table(_table(0, 4), path)
  assert parquet.read_table(path).equals(_table(0, 4))
  only = parquet.read_table(path, columns=['id'])
  assert only.column_names == ['id']


def test_iter_tables_batches_and_reports_missing_columns(tmp_path,
                                                         monkeypatch):
  monkeypatch.setattr(parquet, 'ROWS_PER_BATCH', 4)
  path = str(tmp_path / 'in.parquet')
  pq.write_table(_table(0, 10), path)
  got = list(parquet.iter_tables(path, ['id', 'gone']))
  assert [t.num_rows for t, _ in got] == [4, 4, 2]
  assert all(missing == ['gone'] for _, missing in got)
  assert all(t.column_names == ['id'] for t, _ in got)
  ids = [i for t, _ in got for i in t.column('id').to_pylist()]
  assert ids == [f'd{i}' for i in range(10)]
  whole = list(parquet.iter_tables(path))
  assert [m for _, m in whole] == [[], [], []]
  assert pa.concat_tables([t for t, _ in whole]).equals(_table(0, 10))


def test_records_through_parquet_round_trip(tmp_path):
  layout = records.EMBEDDINGS.with_metadata(['lang'])
  moment = records.parse_time('2026-01-02T03:04:05.123456+00:00')
  rows = [{'id': 'a', 'embedding': np.array([0.1, 2], np.float32),
           'num_tokens': 3, 'truncated': False, 'embedded_at': moment,
           'lang': 'en'}]
  path = tmp_path / 'r.parquet'
  writer = parquet.TableWriter(open(path, 'wb'))
  writer.write(records.to_arrow(layout, rows))
  writer.close()
  back = records.from_arrow(parquet.read_table(str(path)))
  assert back[0]['embedding'].tobytes() == rows[0]['embedding'].tobytes()
  assert back[0]['embedded_at'] == moment
  assert back[0]['lang'] == 'en' and back[0]['model'] is None
  assert back[0]['truncated'] is False and back[0]['num_tokens'] == 3
