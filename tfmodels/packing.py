"""Packing token segments into fixed-width encoder inputs, in TensorFlow ops.

Lives inside exported preprocessor SavedModels, so it must be pure TF (no
Python per element). Truncation follows Hugging Face `tokenizers`'
longest-first rule exactly, because tf_text's RoundRobinTrimmer keeps
different tokens for uneven pairs and the exported models promise parity with
the Hugging Face tokenizers.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf


@dataclass(frozen=True)
class PackingStyle:
  """Where the special tokens go.

  BERT: `[CLS] A [SEP] B [SEP]`, type ids 0 for the first part, 1 for B.
  RoBERTa: `<s> A </s></s> B </s>`, type ids all 0.
  """
  start_id: int
  end_id: int
  pad_id: int
  # Separator tokens between segment A and B (BERT: 1, RoBERTa: 2).
  separators_between: int
  second_segment_type_id: int

  def num_special(self, num_segments: int) -> int:
    if num_segments == 1:
      return 2
    return 2 + self.separators_between


def _as_token_rows(segment: tf.RaggedTensor) -> tf.RaggedTensor:
  """[batch, (words), (pieces)] or [batch, (tokens)] -> [batch, (tokens)]."""
  if segment.ragged_rank > 1:
    segment = segment.merge_dims(-2, -1)
  return tf.cast(segment, tf.int32).with_row_splits_dtype(tf.int64)


def longest_first_lengths(len_a: tf.Tensor, len_b: tf.Tensor,
                          budget: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Kept lengths of two segments under Hugging Face's longest-first rule.

  Mirrors `tokenizers`' `truncate_encodings` (LongestFirst): only the longer
  input is cut while that suffices; otherwise both get half the budget, the
  odd token going to the segment that was longer (to B on ties).
  """
  len_a = tf.cast(len_a, tf.int32)
  len_b = tf.cast(len_b, tf.int32)
  budget = tf.cast(budget, tf.int32)
  swap = len_a > len_b
  short = tf.minimum(len_a, len_b)
  new_long = tf.where(short > budget, short,
                      tf.maximum(short, budget - short))
  both = short + new_long > budget
  half = budget // 2
  new_short = tf.where(both, half, short)
  new_long = tf.where(both, half + budget % 2, new_long)
  keep_a = tf.where(swap, new_long, new_short)
  keep_b = tf.where(swap, new_short, new_long)
  fits = len_a + len_b <= budget
  keep_a = tf.where(fits, len_a, tf.minimum(len_a, keep_a))
  keep_b = tf.where(fits, len_b, tf.minimum(len_b, keep_b))
  return keep_a, keep_b


def _pad_rows(rows: tf.RaggedTensor, seq_length: tf.Tensor,
              pad_value: int) -> tf.Tensor:
  dense = rows.to_tensor(default_value=pad_value)
  width = tf.shape(dense)[1]
  dense = tf.pad(dense, [[0, 0], [0, tf.maximum(seq_length - width, 0)]],
                 constant_values=pad_value)
  return dense[:, :seq_length]


def pack_segments(segments, seq_length, style: PackingStyle) -> dict:
  """Truncates and packs one or two segments into encoder inputs.

  Args:
    segments: list of 1 or 2 int RaggedTensors, [batch, (tokens)] or
      [batch, (words), (pieces)].
    seq_length: scalar int32 tensor or int, the output width.
    style: special-token layout.

  Returns:
    dict of int32 [batch, seq_length] tensors `input_word_ids`, `input_mask`,
    `input_type_ids`.
  """
  if not 1 <= len(segments) <= 2:
    raise ValueError(f'bert_pack_inputs takes 1 or 2 segments, '
                     f'got {len(segments)}')
  seq_length = tf.cast(seq_length, tf.int32)
  rows = [_as_token_rows(s) for s in segments]
  batch = rows[0].nrows()
  budget = tf.maximum(seq_length - style.num_special(len(rows)), 0)

  def column(value, dtype=tf.int32):
    return tf.RaggedTensor.from_row_lengths(
        tf.fill([batch], tf.constant(value, dtype)),
        tf.ones([batch], tf.int64))

  def same_shape(r, value):
    return tf.ragged.map_flat_values(
        lambda v: tf.fill(tf.shape(v), tf.constant(value, tf.int32)), r)

  start = column(style.start_id)
  end = column(style.end_id)
  if len(rows) == 1:
    a = rows[0][:, :budget]
    ids = tf.concat([start, a, end], axis=1)
    types = tf.zeros_like(ids)
  else:
    keep_a, keep_b = longest_first_lengths(
        rows[0].row_lengths(), rows[1].row_lengths(), budget)
    a = tf.ragged.boolean_mask(rows[0], _prefix_mask(rows[0], keep_a))
    b = tf.ragged.boolean_mask(rows[1], _prefix_mask(rows[1], keep_b))
    seps = tf.concat([end] * style.separators_between, axis=1)
    first = tf.concat([start, a, seps], axis=1)
    second = tf.concat([b, end], axis=1)
    ids = tf.concat([first, second], axis=1)
    types = tf.concat(
        [same_shape(first, 0),
         same_shape(second, style.second_segment_type_id)], axis=1)
  mask = same_shape(ids, 1)
  return {
      'input_word_ids': _pad_rows(ids, seq_length, style.pad_id),
      'input_mask': _pad_rows(mask, seq_length, 0),
      'input_type_ids': _pad_rows(types, seq_length, 0),
  }


def _prefix_mask(rows: tf.RaggedTensor, keep: tf.Tensor) -> tf.RaggedTensor:
  positions = tf.ragged.range(rows.row_lengths(), row_splits_dtype=tf.int64)
  keep = tf.cast(keep, tf.int64)
  return positions < tf.expand_dims(keep, 1)


# Several documents per row ("packed rows"), for the encoder's `packed` call:
# a row of `segment_ids` numbers each token's document, 1..k, 0 for padding.
# A document's tokens must be contiguous in its row; documents in a row may
# be numbered in any order, and padding may sit anywhere.


def _run_starts(segment_ids: tf.Tensor) -> tf.Tensor:
  """[rows * length] flat index of the first token of each token's run (a
  maximal stretch of equal segment ids within a row).

  Built from segment sums rather than tf.where, so that the shapes stay
  those of the input (XLA-compatible)."""
  shape = tf.shape(segment_ids)
  rows, length = shape[0], shape[1]
  changes = tf.not_equal(segment_ids[:, 1:], segment_ids[:, :-1])
  is_start = tf.concat([tf.ones([rows, tf.minimum(length, 1)], tf.bool),
                        changes], axis=1)
  # Runs numbered within a row (0..length-1), then across rows.
  run = tf.cumsum(tf.cast(is_start, tf.int32), axis=1) - 1
  run = tf.reshape(run + tf.range(rows)[:, tf.newaxis] * length, [-1])
  index = tf.range(rows * length)
  first = tf.math.unsorted_segment_min(index, run, rows * length)
  return tf.gather(first, run)


def segment_cumsum(values: tf.Tensor, segment_ids: tf.Tensor) -> tf.Tensor:
  """Inclusive running sum of int values [rows, length] that restarts at the
  first token of every segment (and of every run of padding)."""
  values = tf.cast(values, tf.int32)
  total = tf.reshape(tf.cumsum(values, axis=1, exclusive=True), [-1])
  before = tf.reshape(tf.gather(total, _run_starts(segment_ids)),
                      tf.shape(values))
  return tf.cumsum(values, axis=1) - before


def segment_position_ids(ids: tf.Tensor, segment_ids: tf.Tensor,
                         position_style: str, pad_id: int) -> tf.Tensor:
  """Position ids [rows, length] that restart in every segment exactly as
  they start in an unpacked row holding that segment alone.

  'absolute' (BERT): 0, 1, 2... from the segment's first token.
  'roberta': Hugging Face's RobertaModel counts non-pad tokens from
  pad_id + 1 and gives pad tokens pad_id; here the count restarts in each
  segment. Padding (segment id 0) gets 0, or pad_id for 'roberta'.
  """
  ids = tf.cast(ids, tf.int32)
  segment_ids = tf.cast(segment_ids, tf.int32)
  real = segment_ids > 0
  if position_style == 'roberta':
    not_pad = tf.cast(tf.not_equal(ids, pad_id), tf.int32)
    positions = segment_cumsum(not_pad, segment_ids) * not_pad + pad_id
    return tf.where(real, positions, pad_id)
  if position_style != 'absolute':
    raise ValueError(f'unknown position_style {position_style!r}')
  positions = segment_cumsum(tf.ones_like(ids), segment_ids) - 1
  return tf.where(real, positions, 0)


def segment_attention_bias(segment_ids: tf.Tensor) -> tf.Tensor:
  """Additive attention mask [rows, 1, length, length], block-diagonal: 0
  where query and key are in the same segment, float32's lowest elsewhere
  and on every key that is padding (as the unpacked mask is on padding)."""
  segment_ids = tf.cast(segment_ids, tf.int32)
  keys = segment_ids[:, tf.newaxis, :]
  same = tf.logical_and(tf.equal(segment_ids[:, :, tf.newaxis], keys),
                        keys > 0)
  bias = tf.where(same, tf.constant(0.0), tf.constant(tf.float32.min))
  return bias[:, tf.newaxis, :, :]


def pool_segments(sequence: tf.Tensor, segment_ids: tf.Tensor) -> dict:
  """Per-segment mean and first token of sequence [rows, length, hidden].

  Returns dict with, for S = length (the most documents a row can hold; a
  number from the input's shape, not its values, so that XLA compiles once
  per input shape, not once per arrangement of documents):
    'mean': [rows, S, hidden] float32, the average over the segment's
      tokens (zeros for a segment id absent from its row);
    'first': [rows, S, hidden], the segment's first token (zeros if absent);
    'num_tokens': [rows, S] int32, tokens of each segment (0 if absent).
  Segment k of a row is at index k - 1.
  """
  segment_ids = tf.cast(segment_ids, tf.int32)
  shape = tf.shape(sequence)
  rows, length, hidden = shape[0], shape[1], shape[2]
  num = length
  # Ids outside 1..length (no valid row has them) count as padding rather
  # than spill into the next row's slots.
  segment_ids = tf.where((segment_ids > 0) & (segment_ids <= num),
                         segment_ids, 0)
  # Slot 0 of each row takes its padding and is dropped at the end.
  slots = rows * (num + 1)
  slot = tf.reshape(segment_ids + tf.range(rows)[:, tf.newaxis] * (num + 1),
                    [-1])
  tokens = tf.reshape(sequence, [-1, hidden])
  sums = tf.math.unsorted_segment_sum(tokens, slot, slots)
  counts = tf.math.unsorted_segment_sum(tf.ones_like(slot), slot, slots)
  first = tf.math.unsorted_segment_min(tf.range(rows * length), slot, slots)
  # An absent segment takes a row of zeros appended after the tokens.
  with_zeros = tf.concat([tokens, tf.zeros([1, hidden], tokens.dtype)], 0)
  first = tf.gather(with_zeros, tf.where(counts > 0, first, rows * length))
  mean = sums / tf.cast(tf.maximum(counts, 1), sums.dtype)[:, tf.newaxis]

  def per_segment(t, *inner):
    return tf.reshape(t, tf.stack([rows, num + 1, *inner]))[:, 1:]

  return {'mean': per_segment(mean, hidden),
          'first': per_segment(first, hidden),
          'num_tokens': per_segment(counts)}
