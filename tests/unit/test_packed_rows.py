"""tfmodels/packing.py's helpers for packed rows (several documents per row,
the encoder's `packed` call) against numpy references written token by
token: position ids restarting per segment, the block-diagonal attention
mask and per-segment pooling; and a tiny random TransformerEncoder whose
packed outputs equal its unpacked ones.

Why: a packed row must give each document exactly the inputs of its own
unpacked row (positions from 0, or RoBERTa's from pad id + 1 skipping pad
ids; no attention across documents), or its vector depends on its
neighbours. The export-level parity is tests/test_packing_parity.py; these
need no model export.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import tfmodels  # noqa: F401  TensorFlow's process defaults first
from tfmodels import encoder as encoder_lib
from tfmodels import packing

pytestmark = pytest.mark.unit

PAD = {'absolute': 0, 'roberta': 1}


def _positions_reference(ids, segments, style, pad):
  """Token by token: a counter that restarts where the segment id changes."""
  out = np.zeros_like(ids)
  for r in range(ids.shape[0]):
    count = 0
    for t in range(ids.shape[1]):
      if t == 0 or segments[r, t] != segments[r, t - 1]:
        count = 0
      if style == 'absolute':
        out[r, t] = count if segments[r, t] else 0
        count += 1
      else:
        real = ids[r, t] != pad
        count += int(real)
        out[r, t] = (count + pad if real else pad) if segments[r, t] else pad
  return out


def _random_rows(rng, rows=6, length=17, pad=0, shuffle_ids=False):
  """Rows of contiguous segments of random lengths, padding at the end (and
  a run of padding between two segments in one row), random ids including
  the pad id inside segments."""
  ids = rng.integers(0, 6, size=(rows, length)).astype(np.int32)
  segments = np.zeros((rows, length), np.int32)
  for r in range(rows):
    at, k = 0, 0
    while at < length and rng.random() < 0.85:
      n = int(rng.integers(1, 7))
      k += 1
      segments[r, at:at + n] = k
      at += n
      if r == 1 and k == 1:
        at += 2  # padding between two documents
    if shuffle_ids and k:
      order = rng.permutation(k) + 1
      real = segments[r] > 0
      segments[r, real] = order[segments[r, real] - 1]
  ids[segments == 0] = pad
  segments[-1] = 0  # a row of padding only
  return ids, segments


@pytest.mark.parametrize('style', ['absolute', 'roberta'])
@pytest.mark.parametrize('seed', range(4))
def test_position_ids_restart_per_segment(style, seed):
  import tensorflow as tf
  rng = np.random.default_rng(seed)
  pad = PAD[style]
  ids, segments = _random_rows(rng, pad=pad, shuffle_ids=seed % 2 == 1)
  got = packing.segment_position_ids(tf.constant(ids), tf.constant(segments),
                                     style, pad).numpy()
  np.testing.assert_array_equal(
      got, _positions_reference(ids, segments, style, pad))


@pytest.mark.parametrize('style', ['absolute', 'roberta'])
def test_one_segment_gets_the_unpacked_row_positions(style):
  """A row holding one document: its positions are the encoder's own
  unpacked ones on the real tokens (RoBERTa's pad ids inside included)."""
  import tensorflow as tf
  pad = PAD[style]
  config = SimpleNamespace(position_style=style, pad_token_id=pad)
  ids = np.array([[0, 7, pad, 8, pad, 9, 2, pad, pad, pad]], np.int32)
  segments = np.array([[1] * 7 + [0] * 3], np.int32)
  unpacked = encoder_lib.TransformerEncoder._position_ids(
      SimpleNamespace(config=config), tf.constant(ids)).numpy()
  got = packing.segment_position_ids(tf.constant(ids), tf.constant(segments),
                                     style, pad).numpy()
  np.testing.assert_array_equal(got[:, :7], unpacked[:, :7])


def test_segment_cumsum_restarts_at_every_run():
  import tensorflow as tf
  values = np.array([[1, 2, 3, 4, 5, 6], [1, 1, 1, 1, 1, 1]], np.int32)
  segments = np.array([[1, 1, 2, 2, 2, 0], [0, 0, 1, 3, 3, 2]], np.int32)
  got = packing.segment_cumsum(tf.constant(values),
                               tf.constant(segments)).numpy()
  np.testing.assert_array_equal(got, [[1, 3, 3, 7, 12, 6],
                                      [1, 2, 1, 1, 2, 1]])


def test_attention_bias_is_block_diagonal():
  import tensorflow as tf
  rng = np.random.default_rng(7)
  _, segments = _random_rows(rng)
  got = packing.segment_attention_bias(tf.constant(segments)).numpy()
  assert got.shape == (segments.shape[0], 1) + (segments.shape[1],) * 2
  want = np.where((segments[:, :, None] == segments[:, None, :]) &
                  (segments[:, None, :] > 0), 0.0, np.finfo(np.float32).min)
  np.testing.assert_array_equal(got[:, 0], want)


def test_pool_segments_against_numpy():
  import tensorflow as tf
  rng = np.random.default_rng(3)
  _, segments = _random_rows(rng, shuffle_ids=True)
  segments[0, :3] = [2, 2, 2]  # id 1 absent from row 0
  segments[0, 3:] = 0
  sequence = rng.normal(size=segments.shape + (5,)).astype(np.float32)
  got = {k: v.numpy() for k, v in packing.pool_segments(
      tf.constant(sequence), tf.constant(segments)).items()}
  # One slot per token of a row (the most documents it can hold): a shape
  # that XLA knows before it sees the segment ids.
  num = segments.shape[1]
  assert got['mean'].shape == got['first'].shape == (len(segments), num, 5)
  assert segments.max() < num
  for r in range(len(segments)):
    for k in range(1, num + 1):
      where = np.flatnonzero(segments[r] == k)
      assert got['num_tokens'][r, k - 1] == len(where)
      if not len(where):
        assert not got['mean'][r, k - 1].any()
        assert not got['first'][r, k - 1].any()
        continue
      np.testing.assert_allclose(got['mean'][r, k - 1],
                                 sequence[r, where].mean(0), rtol=1e-5,
                                 atol=1e-6)
      np.testing.assert_array_equal(got['first'][r, k - 1],
                                    sequence[r, where[0]])


def test_segment_ids_beyond_the_row_count_as_padding():
  import tensorflow as tf
  segments = np.array([[1, 1, 9, 9, 0]], np.int32)
  sequence = np.arange(15, dtype=np.float32).reshape(1, 5, 3)
  out = packing.pool_segments(tf.constant(sequence), tf.constant(segments))
  np.testing.assert_array_equal(out['num_tokens'].numpy()[0], [2, 0, 0, 0, 0])


def test_empty_batches_keep_their_shapes():
  import tensorflow as tf
  for rows, length in ((0, 5), (2, 0)):
    seg = tf.zeros([rows, length], tf.int32)
    out = packing.pool_segments(tf.zeros([rows, length, 3]), seg)
    assert out['mean'].shape == (rows, length, 3)
    assert packing.segment_position_ids(seg, seg, 'roberta', 1).shape == (
        rows, length)


def _tiny_encoder(style: str, seed: int = 0):
  """A 2-layer random encoder, biases and LayerNorm scales away from 0/1."""
  rng = np.random.default_rng(seed)
  hidden, inner, vocab, positions = 16, 32, 50, 40

  def w(*shape):
    return rng.normal(0, 0.2, shape).astype(np.float32)

  weights = {'embeddings.word_embeddings.weight': w(vocab, hidden),
             'embeddings.position_embeddings.weight': w(positions, hidden),
             'embeddings.token_type_embeddings.weight': w(2, hidden),
             'embeddings.LayerNorm.weight': 1 + w(hidden),
             'embeddings.LayerNorm.bias': w(hidden),
             'pooler.dense.weight': w(hidden, hidden),
             'pooler.dense.bias': w(hidden)}
  for layer in range(2):
    p = f'encoder.layer.{layer}.'
    for name, shape in (('attention.self.query', (hidden, hidden)),
                        ('attention.self.key', (hidden, hidden)),
                        ('attention.self.value', (hidden, hidden)),
                        ('attention.output.dense', (hidden, hidden)),
                        ('intermediate.dense', (inner, hidden)),
                        ('output.dense', (hidden, inner))):
      weights[p + name + '.weight'] = w(*shape)
      weights[p + name + '.bias'] = w(shape[0])
    for name in ('attention.output.LayerNorm', 'output.LayerNorm'):
      weights[p + name + '.weight'] = 1 + w(hidden)
      weights[p + name + '.bias'] = w(hidden)
  config = encoder_lib.EncoderConfig(
      vocab_size=vocab, hidden_size=hidden, num_layers=2, num_heads=2,
      intermediate_size=inner, max_position_embeddings=positions,
      type_vocab_size=2, layer_norm_eps=1e-5, position_style=style,
      pad_token_id=PAD[style])
  return encoder_lib.TransformerEncoder(config, weights)


@pytest.mark.parametrize('style', ['absolute', 'roberta'])
def test_tiny_encoder_packed_equals_unpacked(style):
  pad = PAD[style]
  encoder = _tiny_encoder(style)
  # Pad ids inside a document, a pair (type ids 0/1), a document of only
  # its two special tokens.
  docs = [([2, 5, 6, 3], [0] * 4), ([2, 7, pad, 8, 9, 3], [0, 0, 0, 1, 1, 1]),
          ([2, 3], [0, 0]), ([2, 11, 12, 13, 14, 3], [0] * 6),
          ([2, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 3], [0] * 12)]
  rows = [[0, 1], [2, 3, 0], [4], []]
  length = 12
  ids = np.full((len(rows), length), pad, np.int32)
  segments = np.zeros_like(ids)
  types = np.zeros_like(ids)
  for r, row in enumerate(rows):
    at = 0
    for k, d in enumerate(row):
      tokens, kinds = docs[d]
      ids[r, at:at + len(tokens)] = tokens
      types[r, at:at + len(tokens)] = kinds
      segments[r, at:at + len(tokens)] = k + 1
      at += len(tokens)
  out = encoder.encode_packed({'input_word_ids': ids, 'segment_ids': segments,
                               'input_type_ids': types})
  assert out['mean'].shape == (len(rows), length, 16)  # a slot per token
  for r, row in enumerate(rows):
    for k, d in enumerate(row):
      tokens, kinds = docs[d]
      n = len(tokens)
      alone = encoder.encode({
          'input_word_ids': np.array([tokens + [pad] * 3], np.int32),
          'input_mask': np.array([[1] * n + [0] * 3], np.int32),
          'input_type_ids': np.array([kinds + [0] * 3], np.int32)})
      sequence = alone['sequence_output'][0, :n].numpy()
      assert out['num_tokens'][r, k] == n
      for name, want in (('mean', sequence.mean(0)), ('cls', sequence[0]),
                         ('pooled', alone['pooled_output'][0].numpy())):
        np.testing.assert_allclose(out[name][r, k].numpy(), want, atol=1e-5,
                                   err_msg=f'{name} row {r} segment {k}')
    assert not out['num_tokens'][r, len(row):].numpy().any()


def test_exports_before_the_packed_calls_are_redone_on_first_use(
    tmp_path, monkeypatch):
  """Format 5 added the packed calls and 6 made them compile once under
  XLA: a cached preset of format 5 is exported again (the exporter stubbed
  here), a current one is kept."""
  import json
  import os

  from pipeline import presets
  from tfmodels import export
  assert export.FORMAT == 'tfhub-bert-pair/7'
  calls = []

  def exporter(hf_dir, out):
    calls.append(out)
    with open(os.path.join(out, export.MANIFEST), 'w', encoding='utf-8') as f:
      json.dump({'format': export.FORMAT}, f)

  monkeypatch.setattr(export, 'export_bert_from_hf', exporter)
  out = tmp_path / 'minilm-l6'
  out.mkdir()
  (out / export.MANIFEST).write_text(
      json.dumps({'format': 'tfhub-bert-pair/5'}), encoding='utf-8')
  assert presets.ensure_exported('minilm-l6', str(tmp_path)) == str(out)
  assert calls == [str(out)]
  assert presets.ensure_exported('minilm-l6', str(tmp_path)) == str(out)
  assert calls == [str(out)]
