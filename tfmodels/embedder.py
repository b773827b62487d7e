"""Texts in, pooled embeddings out, through any TF Hub BERT-style pair.

Framework-free on purpose (no Beam): the Beam ModelHandler, the benchmarks
and notebooks all call this same object.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

POOLINGS = ('mean', 'pooled', 'cls')


@dataclass(frozen=True)
class EmbedOutput:
  embeddings: np.ndarray  # [n, dim] float32
  num_tokens: np.ndarray  # [n] int64, real tokens fed to the encoder
  truncated: np.ndarray  # [n] bool, input did not fit max_seq_length


def pool(sequence_output: np.ndarray, pooled_output: np.ndarray,
         mask: np.ndarray, pooling: str) -> np.ndarray:
  if pooling == 'mean':
    m = mask[..., np.newaxis].astype(np.float32)
    return (sequence_output * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
  if pooling == 'cls':
    return sequence_output[:, 0, :]
  if pooling == 'pooled':
    return pooled_output
  raise ValueError(f'pooling must be one of {POOLINGS}, got {pooling!r}')


def l2_normalize(x: np.ndarray) -> np.ndarray:
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.maximum(norm, 1e-12)


def import_hub():
  """tensorflow_hub, without its pkg_resources deprecation warning (0.16
  imports pkg_resources, hence setuptools<81)."""
  # pylint: disable=import-outside-toplevel
  import warnings
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
    import tensorflow_hub as hub
  return hub


class EmbeddingModel:
  """A loaded preprocessor + encoder pair with a pooling rule."""

  def __init__(self, preprocessor, encoder, pooling: str = 'mean',
               normalize: bool = False, max_seq_length: int = 128):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if pooling not in POOLINGS:
      raise ValueError(f'pooling must be one of {POOLINGS}, got {pooling!r}')
    if max_seq_length < 8:
      raise ValueError(f'max_seq_length must be at least 8, got '
                       f'{max_seq_length}')
    self._tf = tf
    self.preprocessor = preprocessor
    self.encoder = encoder
    self.pooling = pooling
    self.normalize = normalize
    self.max_seq_length = max_seq_length
    # How many special tokens packing adds, learnt from the preprocessor
    # itself so that WordPiece ([CLS] a [SEP] b [SEP]) and BPE
    # (<s> a </s></s> b </s>) models are handled alike.
    empty = tf.constant([''])
    self._num_special = {
        n: int(tf.reduce_sum(preprocessor.bert_pack_inputs(
            [preprocessor.tokenize(empty)] * n,
            seq_length=tf.constant(16, tf.int32))['input_mask']))
        for n in (1, 2)}

  @classmethod
  def load(cls, preprocessor_handle: str, encoder_handle: str,
           **kwargs) -> 'EmbeddingModel':
    # Registers tf_text's ops, which the preprocessor's graph uses.
    import tensorflow_text  # pylint: disable=import-outside-toplevel,unused-import
    hub = import_hub()
    logging.info('Loading preprocessor %s and encoder %s',
                 preprocessor_handle, encoder_handle)
    return cls(hub.load(preprocessor_handle), hub.load(encoder_handle),
               **kwargs)

  def _tokenize(self, texts: Sequence[str]):
    tf = self._tf
    tokens = self.preprocessor.tokenize(tf.constant(list(texts), tf.string))
    if tokens.ragged_rank > 1:
      tokens = tokens.merge_dims(-2, -1)
    return tokens

  def embed(self, texts: Sequence[str],
            texts_b: Optional[Sequence[str]] = None) -> EmbedOutput:
    """Embeds texts (or text pairs, packed as one input).

    Pads each call to its longest input (capped at max_seq_length) rather
    than always to max_seq_length: padding costs encoder time and, with the
    attention mask, does not change the result.
    """
    tf = self._tf
    segments = [self._tokenize(texts)]
    if texts_b is not None:
      if len(texts_b) != len(texts):
        raise ValueError('texts and texts_b differ in length')
      segments.append(self._tokenize(texts_b))
    needed = sum(s.row_lengths().numpy() for s in segments)
    needed = needed + self._num_special[len(segments)]
    seq_length = int(min(self.max_seq_length, max(needed.max(initial=0), 1)))
    inputs = self.preprocessor.bert_pack_inputs(
        segments, seq_length=tf.constant(seq_length, tf.int32))
    outputs = self.encoder(inputs)
    mask = inputs['input_mask'].numpy()
    embeddings = pool(outputs['sequence_output'].numpy(),
                      outputs['pooled_output'].numpy(), mask, self.pooling)
    if self.normalize:
      embeddings = l2_normalize(embeddings)
    return EmbedOutput(
        embeddings=embeddings.astype(np.float32),
        num_tokens=mask.sum(axis=1).astype(np.int64),
        truncated=needed > self.max_seq_length)
