"""tfmodels/packing.py (truncating and packing one or two segments into
encoder inputs) against Hugging Face `tokenizers` built in memory (a
word-level vocabulary, BERT's and RoBERTa's templates, longest-first
truncation), tfmodels/embedder.pool against numpy, and
tfmodels/budget.is_out_of_memory.

Why: the exported preprocessors promise Hugging Face's token ids, and
uneven pairs are where truncation rules differ (tf_text's trimmer keeps
other tokens); the end-to-end parity tests need a model export, these need
neither model nor vocabulary files. Mean pooling must ignore padding, or
an embedding depends on the batch it was computed in.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import tfmodels  # noqa: F401  TensorFlow's process defaults first
from tfmodels import budget
from tfmodels import packing
from tfmodels.embedder import POOLINGS, pool

pytestmark = pytest.mark.unit

WORDS = 60
BERT = packing.PackingStyle(start_id=2, end_id=3, pad_id=0,
                            separators_between=1, second_segment_type_id=1)
ROBERTA = packing.PackingStyle(start_id=0, end_id=2, pad_id=1,
                               separators_between=2, second_segment_type_id=0)


def _hugging_face(style: packing.PackingStyle, seq_length: int):
  from tokenizers import Tokenizer, models, pre_tokenizers, processors
  start, end, pad = '<start>', '<end>', '<pad>'
  vocab = {'<unk>': 99, start: style.start_id, end: style.end_id,
           pad: style.pad_id, **{f'w{i}': 100 + i for i in range(WORDS)}}
  tokenizer = Tokenizer(models.WordLevel(vocab, unk_token='<unk>'))
  tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  seps = ' '.join([end] * style.separators_between)
  b_type = style.second_segment_type_id
  tokenizer.post_processor = processors.TemplateProcessing(
      single=f'{start} $A {end}',
      pair=f'{start} $A {seps} $B:{b_type} {end}:{b_type}',
      special_tokens=[(start, style.start_id), (end, style.end_id)])
  tokenizer.enable_truncation(max_length=seq_length,
                              strategy='longest_first')
  tokenizer.enable_padding(length=seq_length, pad_id=style.pad_id,
                           pad_token=pad)
  return tokenizer


def _words(n: int, first: int) -> list[int]:
  return [100 + (first + i) % WORDS for i in range(n)]


def _text(ids) -> str:
  return ' '.join(f'w{i - 100}' for i in ids)


@pytest.mark.parametrize('style', [BERT, ROBERTA], ids=['bert', 'roberta'])
@pytest.mark.parametrize('seq_length', [8, 13, 16])
def test_pairs_pack_like_hugging_face_longest_first(style, seq_length):
  import tensorflow as tf
  lengths = [0, 1, 2, 3, 5, 6, 7, 12, 20]
  pairs = list(itertools.product(lengths, lengths))
  a = [_words(n, 0) for n, _ in pairs]
  b = [_words(n, 30) for _, n in pairs]
  packed = packing.pack_segments(
      [tf.ragged.constant(a, tf.int32, row_splits_dtype=tf.int64),
       tf.ragged.constant(b, tf.int32, row_splits_dtype=tf.int64)],
      seq_length, style)
  hf = _hugging_face(style, seq_length)
  for i, (x, y) in enumerate(zip(a, b)):
    want = hf.encode(_text(x), _text(y))
    got = {k: v[i].numpy().tolist() for k, v in packed.items()}
    assert got['input_word_ids'] == want.ids, (len(x), len(y))
    assert got['input_type_ids'] == want.type_ids, (len(x), len(y))
    assert got['input_mask'] == want.attention_mask, (len(x), len(y))


@pytest.mark.parametrize('style', [BERT, ROBERTA], ids=['bert', 'roberta'])
def test_single_texts_pack_like_hugging_face(style):
  import tensorflow as tf
  texts = [_words(n, n) for n in (0, 1, 5, 6, 7, 30)]
  # Token rows, and words of pieces as the preprocessors' tokenize gives.
  for segments in ([tf.ragged.constant(texts, tf.int32,
                                       row_splits_dtype=tf.int64)],
                   [_words_of_pieces(texts)]):
    packed = packing.pack_segments(segments, 8, style)
    hf = _hugging_face(style, 8)
    for i, x in enumerate(texts):
      want = hf.encode(_text(x))
      assert packed['input_word_ids'][i].numpy().tolist() == want.ids
      assert packed['input_mask'][i].numpy().tolist() == want.attention_mask
      assert not packed['input_type_ids'][i].numpy().any()


def _words_of_pieces(texts):
  """[batch, (words), (pieces)]: each text cut into words of two pieces."""
  import tensorflow as tf
  words = [[t[j:j + 2] for j in range(0, len(t), 2)] for t in texts]
  return tf.ragged.constant(words, tf.int32, ragged_rank=2,
                            row_splits_dtype=tf.int64)


def test_pack_segments_takes_one_or_two():
  import tensorflow as tf
  seg = tf.ragged.constant([[5]], tf.int32, row_splits_dtype=tf.int64)
  with pytest.raises(ValueError, match='takes 1 or 2 segments, got 3'):
    packing.pack_segments([seg] * 3, 8, BERT)
  assert (BERT.num_special(1), BERT.num_special(2)) == (2, 3)
  assert (ROBERTA.num_special(1), ROBERTA.num_special(2)) == (2, 4)


@pytest.mark.parametrize('pooling', POOLINGS)
def test_pool_against_numpy(pooling):
  import tensorflow as tf
  rng = np.random.default_rng(0)
  sequence = rng.normal(size=(3, 5, 4)).astype(np.float32)
  pooled = rng.normal(size=(3, 4)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]],
                  np.int32)
  got = pool(tf.constant(sequence), tf.constant(pooled), tf.constant(mask),
             pooling).numpy()
  if pooling == 'mean':
    want = np.stack([sequence[0, :3].mean(0), sequence[1].mean(0),
                     np.zeros(4)])  # no real token: zeros, not NaN
  elif pooling == 'cls':
    want = sequence[:, 0]
  else:
    want = pooled
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mean_pooling_ignores_padding():
  import tensorflow as tf
  rng = np.random.default_rng(1)
  real = rng.normal(size=(1, 3, 4)).astype(np.float32)
  padded = np.concatenate(
      [real, rng.normal(size=(1, 5, 4)).astype(np.float32) * 100], axis=1)
  short = pool(tf.constant(real), None, tf.ones((1, 3), tf.int32), 'mean')
  longer = pool(tf.constant(padded), None,
                tf.constant([[1, 1, 1, 0, 0, 0, 0, 0]]), 'mean')
  np.testing.assert_allclose(short.numpy(), longer.numpy(), rtol=1e-6)


def test_pool_rejects_other_names():
  with pytest.raises(ValueError, match="pooling must be one of .*'max'"):
    pool(None, None, None, 'max')


class ResourceExhaustedError(Exception):
  """Named like TensorFlow's: what a shared model's process re-raises."""


def test_is_out_of_memory():
  import tensorflow as tf
  assert budget.is_out_of_memory(
      tf.errors.ResourceExhaustedError(None, None, 'anything'))
  assert budget.is_out_of_memory(ResourceExhaustedError('x'))
  assert budget.is_out_of_memory(RuntimeError(
      'OOM when allocating tensor with shape[64,128,384]'))
  assert budget.is_out_of_memory(RuntimeError(
      'status: RESOURCE_EXHAUSTED: out of memory'))
  assert not budget.is_out_of_memory(ValueError('shape mismatch'))
  assert not budget.is_out_of_memory(MemoryError('host memory'))
  assert not budget.is_out_of_memory(
      tf.errors.InvalidArgumentError(None, None, 'bad input'))
