"""A BERT/RoBERTa Transformer encoder as a TF Hub SavedModel, built from
Hugging Face weights.

Written with plain TF ops on tf.Variables rather than Keras layers so that the
SavedModel has one small, shape-polymorphic graph ([batch, seq_length] of any
size), loads with `hub.load` and `hub.KerasLayer(trainable=True)`, and matches
the Hugging Face forward pass operation for operation (erf GELU, LayerNorm
epsilon from the config, additive attention mask).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from tfmodels import packing

INPUT_KEYS = ('input_word_ids', 'input_mask', 'input_type_ids')
# The packed call's inputs (TransformerEncoder.encode_packed).
PACKED_INPUT_KEYS = ('input_word_ids', 'segment_ids', 'input_type_ids')


@dataclass(frozen=True)
class EncoderConfig:
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_position_embeddings: int
  type_vocab_size: int
  layer_norm_eps: float
  # 'absolute': position ids 0..n-1 (BERT). 'roberta': ids counted from
  # pad_token_id + 1 over non-pad tokens, as Hugging Face's RobertaModel does.
  position_style: str = 'absolute'
  pad_token_id: int = 0
  hidden_act: str = 'gelu'

  @property
  def max_seq_length(self) -> int:
    """Longest input the position table covers (RoBERTa's position ids
    start after pad_token_id, so roberta-large's 514 positions give 512)."""
    if self.position_style == 'roberta':
      return self.max_position_embeddings - self.pad_token_id - 1
    return self.max_position_embeddings

  @classmethod
  def from_hf_config(cls, config: dict) -> 'EncoderConfig':
    model_type = config.get('model_type', 'bert')
    if model_type not in ('bert', 'roberta'):
      raise ValueError(f'Unsupported model_type {model_type!r}: only BERT- '
                       'and RoBERTa-style encoders can be converted.')
    if config.get('position_embedding_type', 'absolute') != 'absolute':
      raise ValueError('Only absolute position embeddings are supported.')
    act = config.get('hidden_act', 'gelu')
    if act not in ('gelu', 'gelu_new', 'gelu_pytorch_tanh', 'relu'):
      raise ValueError(f'Unsupported hidden_act {act!r}')
    return cls(
        vocab_size=config['vocab_size'],
        hidden_size=config['hidden_size'],
        num_layers=config['num_hidden_layers'],
        num_heads=config['num_attention_heads'],
        intermediate_size=config['intermediate_size'],
        max_position_embeddings=config['max_position_embeddings'],
        type_vocab_size=config.get('type_vocab_size', 2),
        layer_norm_eps=config.get('layer_norm_eps', 1e-12),
        position_style='roberta' if model_type == 'roberta' else 'absolute',
        pad_token_id=config.get('pad_token_id', 0) or 0,
        hidden_act=act)


def _activation(name: str):
  if name == 'gelu':
    return lambda x: tf.nn.gelu(x, approximate=False)
  if name in ('gelu_new', 'gelu_pytorch_tanh'):
    return lambda x: tf.nn.gelu(x, approximate=True)
  return tf.nn.relu


def _strip_prefix(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Drops 'bert.'/'roberta.' prefixes of task-head checkpoints."""
  out = {}
  for key, value in weights.items():
    for prefix in ('bert.', 'roberta.', 'model.'):
      if key.startswith(prefix):
        key = key[len(prefix):]
        break
    out[key] = value
  return out


class TransformerEncoder(tf.Module):
  """Holds the variables; `encode` is the forward pass."""

  def __init__(self, config: EncoderConfig, weights: dict[str, np.ndarray],
               pooler_seed: int = 0):
    super().__init__(name='transformer_encoder')
    self.config = config
    w = _strip_prefix(weights)
    self.missing_pooler = 'pooler.dense.weight' not in w

    def var(key, transpose=False, name=None):
      if key not in w:
        raise KeyError(f'Checkpoint lacks weight {key!r}')
      value = np.asarray(w[key], np.float32)
      if transpose:
        value = value.T
      return tf.Variable(value, name=name or key.replace('.', '/'))

    p = 'embeddings.'
    self.word_embeddings = var(p + 'word_embeddings.weight')
    self.position_embeddings = var(p + 'position_embeddings.weight')
    self.type_embeddings = var(p + 'token_type_embeddings.weight')
    self.embedding_ln = (var(p + 'LayerNorm.weight'), var(p + 'LayerNorm.bias'))
    self.layers = []
    for i in range(config.num_layers):
      p = f'encoder.layer.{i}.'
      self.layers.append({
          'q': (var(p + 'attention.self.query.weight', True),
                var(p + 'attention.self.query.bias')),
          'k': (var(p + 'attention.self.key.weight', True),
                var(p + 'attention.self.key.bias')),
          'v': (var(p + 'attention.self.value.weight', True),
                var(p + 'attention.self.value.bias')),
          'o': (var(p + 'attention.output.dense.weight', True),
                var(p + 'attention.output.dense.bias')),
          'ln1': (var(p + 'attention.output.LayerNorm.weight'),
                  var(p + 'attention.output.LayerNorm.bias')),
          'i': (var(p + 'intermediate.dense.weight', True),
                var(p + 'intermediate.dense.bias')),
          'out': (var(p + 'output.dense.weight', True),
                  var(p + 'output.dense.bias')),
          'ln2': (var(p + 'output.LayerNorm.weight'),
                  var(p + 'output.LayerNorm.bias')),
      })
    if self.missing_pooler:
      # Same as Hugging Face does for a checkpoint without pooler weights
      # (roberta-large): a random, untrained pooler. Seeded so exports are
      # reproducible; `pooled_output` of such a model carries no meaning.
      rng = np.random.default_rng(pooler_seed)
      h = config.hidden_size
      self.pooler = (
          tf.Variable(rng.normal(0, 0.02, (h, h)).astype(np.float32),
                      name='pooler/dense/kernel'),
          tf.Variable(np.zeros(h, np.float32), name='pooler/dense/bias'))
    else:
      self.pooler = (var('pooler.dense.weight', True),
                     var('pooler.dense.bias'))
    self._act = _activation(config.hidden_act)

  def _layer_norm(self, x, params):
    gamma, beta = params
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(
        variance + self.config.layer_norm_eps) * gamma + beta

  def _position_ids(self, ids):
    if self.config.position_style == 'roberta':
      pad = self.config.pad_token_id
      not_pad = tf.cast(tf.not_equal(ids, pad), tf.int32)
      return tf.cumsum(not_pad, axis=1) * not_pad + pad
    seq_length = tf.shape(ids)[1]
    return tf.broadcast_to(tf.range(seq_length)[tf.newaxis, :], tf.shape(ids))

  def encode(self, inputs: dict, compute_dtype=tf.float32) -> dict:
    """The forward pass. compute_dtype bfloat16/float16 runs each
    projection (matrix product, bias and, in the feed-forward block, GELU)
    and attention's two products in that type, and keeps their outputs in
    it until the next product; embeddings, the residual stream, LayerNorm
    and softmax stay in float32 (see _transformer)."""
    ids = tf.cast(inputs['input_word_ids'], tf.int32)
    mask = tf.cast(inputs['input_mask'], tf.float32)
    types = tf.cast(inputs['input_type_ids'], tf.int32)
    # Additive mask over keys, [batch, 1, 1, seq].
    bias = (1.0 - mask[:, tf.newaxis, tf.newaxis, :]) * tf.float32.min
    outputs = self._transformer(ids, self._position_ids(ids), types, bias,
                                compute_dtype)
    x = outputs[-1]
    pooled = self._pooler(x[:, 0, :], compute_dtype)
    return {
        'pooled_output': pooled,
        'sequence_output': x,
        'encoder_outputs': outputs[1:],
        'default': pooled,
    }

  def encode_packed(self, inputs: dict, compute_dtype=tf.float32) -> dict:
    """The forward pass over packed rows: several documents per row.

    inputs: int32 [rows, length] `input_word_ids`, `segment_ids` (1..k
    numbers the documents of a row, each a contiguous stretch of tokens with
    its own special tokens; 0 is padding) and `input_type_ids` (as the
    document's unpacked row has them: 0/1 for a BERT pair). Positions
    restart in each segment as they start in an unpacked row (RoBERTa's
    from pad id + 1) and attention stays inside each segment, so every
    segment's outputs are those of its document encoded alone.

    Returns, for S = length (the most documents a row can hold: a shape,
    not a value, so that XLA compiles once per input shape), segment k of
    a row at index k - 1: `mean`, `cls` (the segment's first token) and
    `pooled` (the pooler on it), each [rows, S, hidden] float32;
    `num_tokens` [rows, S] int32 (0 for a segment id absent from its row,
    whose vectors are then meaningless: zeros, and the pooler of zeros);
    `sequence_output` [rows, length, hidden].
    """
    cfg = self.config
    ids = tf.cast(inputs['input_word_ids'], tf.int32)
    segments = tf.cast(inputs['segment_ids'], tf.int32)
    types = tf.cast(inputs['input_type_ids'], tf.int32)
    positions = packing.segment_position_ids(ids, segments, cfg.position_style,
                                             cfg.pad_token_id)
    bias = packing.segment_attention_bias(segments)
    x = self._transformer(ids, positions, types, bias, compute_dtype)[-1]
    pooled = packing.pool_segments(x, segments)
    first = pooled['first']
    shape = tf.shape(first)
    pooler = tf.reshape(
        self._pooler(tf.reshape(first, [-1, cfg.hidden_size]), compute_dtype),
        shape)
    return {'mean': pooled['mean'], 'cls': first, 'pooled': pooler,
            'num_tokens': pooled['num_tokens'], 'sequence_output': x}

  @staticmethod
  def _matmul(a, b, compute_dtype, **kwargs):
    """a @ b in compute_dtype, the result left in it: a value that goes
    on to another product is cast once, not back and forth."""
    return tf.matmul(tf.cast(a, compute_dtype), tf.cast(b, compute_dtype),
                     **kwargs)

  def _dense(self, t, params, compute_dtype, activation=None):
    """t @ kernel + bias (then the activation), all in compute_dtype: one
    oneDNN call (MatMul, BiasAdd and GELU fused by TensorFlow's remapper)
    in every precision. Adding the bias in float32 instead, as export
    formats 2-6 did, cost a cast of the product and stopped that fusion:
    the bf16 packed call ran 1.29x its fp32 on MiniLM and 1.59x on
    roberta-large's shape, against 1.51x and 1.76x now (AVX-512 BF16 CPU;
    docs/performance.md, "Precision")."""
    kernel, b = params
    out = tf.nn.bias_add(self._matmul(t, kernel, compute_dtype),
                         tf.cast(b, compute_dtype))
    return out if activation is None else activation(out)

  def _pooler(self, first_tokens, compute_dtype):
    return tf.cast(tf.tanh(self._dense(first_tokens, self.pooler,
                                       compute_dtype)), tf.float32)

  def _transformer(self, ids, position_ids, types, bias, compute_dtype):
    """Embeddings and every layer: [embeddings, layer 1, ..., layer n] as
    [batch, seq, hidden]. bias is the additive attention mask, broadcast
    to [batch, heads, queries, keys]."""
    cfg = self.config
    batch, seq_length = tf.shape(ids)[0], tf.shape(ids)[1]
    heads, head_size = cfg.num_heads, cfg.hidden_size // cfg.num_heads

    x = (tf.gather(self.word_embeddings, ids) +
         tf.gather(self.position_embeddings, position_ids) +
         tf.gather(self.type_embeddings, types))
    x = self._layer_norm(x, self.embedding_ln)
    embeddings = x
    # Tokens as rows of one 2-D matrix between the attention blocks: every
    # projection is then a plain MatMul + BiasAdd, which TensorFlow's oneDNN
    # kernels run 11-14% faster than the batched [batch, seq, H] x [H, H]
    # product (measured on an AVX2 CPU, docs/performance.md).
    x = tf.reshape(x, [-1, cfg.hidden_size])
    scale = 1.0 / math.sqrt(head_size)

    def matmul(a, b, **kwargs):
      return self._matmul(a, b, compute_dtype, **kwargs)

    def dense(t, params):
      return self._dense(t, params, compute_dtype)

    def split_heads(t):
      t = tf.reshape(t, [batch, seq_length, heads, head_size])
      return tf.transpose(t, [0, 2, 1, 3])

    def unflatten(t):
      return tf.reshape(t, [batch, seq_length, cfg.hidden_size])

    def wide(t):
      return tf.cast(t, tf.float32)

    # In a lower precision (compute_dtype), what a product makes stays in
    # that type until the next product (q, k and v; the context; the
    # feed-forward block's GELU output); the residual stream x, LayerNorm
    # and the attention scores' softmax stay in float32, as mixed
    # precision training keeps them. In float32 every cast is a no-op.
    outputs = [embeddings]
    for layer in self.layers:
      q = split_heads(dense(x, layer['q']))
      k = split_heads(dense(x, layer['k']))
      v = split_heads(dense(x, layer['v']))
      scores = wide(matmul(q, k, transpose_b=True)) * scale + bias
      context = matmul(tf.nn.softmax(scores, axis=-1), v)
      context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]),
                           [-1, cfg.hidden_size])
      x = self._layer_norm(wide(dense(context, layer['o'])) + x,
                           layer['ln1'])
      h = self._dense(x, layer['i'], compute_dtype, self._act)
      x = self._layer_norm(wide(dense(h, layer['out'])) + x, layer['ln2'])
      outputs.append(unflatten(x))
    return outputs


PRECISIONS = {'fp32': tf.float32, 'bf16': tf.bfloat16, 'fp16': tf.float16}


def _encode_in(encoder: TransformerEncoder, dtype, inputs):
  return encoder.encode(inputs, compute_dtype=dtype)


def _encode_packed_in(encoder: TransformerEncoder, dtype, inputs):
  return encoder.encode_packed(inputs, compute_dtype=dtype)


def packed_attribute(precision: str) -> str:
  """The encoder SavedModel's packed call for a precision: `packed` (fp32),
  `packed_bf16`, `packed_fp16` (embedder.packed_function finds them)."""
  return 'packed' if precision == 'fp32' else f'packed_{precision}'


def build_encoder_savedmodel(encoder: TransformerEncoder):
  """Wraps the encoder in the TF Hub reusable-SavedModel object layout."""
  root = tf.train.Checkpoint()
  root.encoder = encoder
  spec = {k: tf.TensorSpec([None, None], tf.int32, name=k) for k in INPUT_KEYS}

  @tf.function
  def call(inputs, training=False):
    # Dropout is not applied when training=True: the export serves
    # inference and fine-tuning without dropout.
    del training
    return encoder.encode(inputs)

  for training in (False, True):
    call.get_concrete_function(spec, training=training)

  @tf.function(input_signature=[spec[k] for k in INPUT_KEYS])
  def serve(input_word_ids, input_mask, input_type_ids):
    out = encoder.encode({'input_word_ids': input_word_ids,
                          'input_mask': input_mask,
                          'input_type_ids': input_type_ids})
    return {'pooled_output': out['pooled_output'],
            'sequence_output': out['sequence_output'],
            'default': out['default']}

  # Lower-precision variants (see TransformerEncoder.encode), beside the
  # standard float32 call: EmbeddingModel(precision=...) picks them.
  for name, dtype in PRECISIONS.items():
    if dtype != tf.float32:
      fn = tf.function(functools.partial(_encode_in, encoder, dtype),
                       input_signature=[spec])
      fn.get_concrete_function()
      setattr(root, f'call_{name}', fn)

  # Packed rows (TransformerEncoder.encode_packed), in every precision;
  # beside, not instead of, the TF Hub interface above.
  packed_spec = {k: tf.TensorSpec([None, None], tf.int32, name=k)
                 for k in PACKED_INPUT_KEYS}
  for name, dtype in PRECISIONS.items():
    fn = tf.function(functools.partial(_encode_packed_in, encoder, dtype),
                     input_signature=[packed_spec])
    fn.get_concrete_function()
    setattr(root, packed_attribute(name), fn)

  root.__call__ = call
  root.serve = serve
  root.variables = list(encoder.variables)
  root.trainable_variables = list(encoder.trainable_variables)
  root.regularization_losses = []
  return root, {'serving_default': serve.get_concrete_function()}
