"""The TF Hub preprocessor object layout shared by the WordPiece and BPE
exports: Model Garden's `export_tfhub_lib` interface, i.e. calling the model on
a batch of strings gives encoder inputs at the default seq_length;
`.tokenize` gives [batch, (words), (pieces)] int32 ids;
`.tokenize.get_special_tokens_dict()` and
`.bert_pack_inputs(segments, seq_length=N)` with seq_length overridable
after loading.
"""

from __future__ import annotations

import tensorflow as tf

from tfmodels import packing


def assemble(tokenize, special: dict[str, int], style, default_seq_length):
  """Wires tokenize + pack into the TF Hub preprocessor object layout."""
  root = tf.train.Checkpoint()

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def call(sentences):
    return packing.pack_segments([tokenize(sentences)],
                                 tf.constant(default_seq_length), style)

  @tf.function(autograph=False)
  def pack(inputs, seq_length=default_seq_length):
    return packing.pack_segments(list(inputs), seq_length, style)

  for ragged_rank in (1, 2):
    for num_segments in (1, 2):
      pack.get_concrete_function(
          [tf.RaggedTensorSpec([None] * (ragged_rank + 1), tf.int32)
           for _ in range(num_segments)],
          seq_length=tf.TensorSpec([], tf.int32))

  root.__call__ = call
  root.tokenize = tf.train.Checkpoint()
  root.tokenize.__call__ = tokenize
  root.tokenize.get_special_tokens_dict = tf.train.Checkpoint()
  root.tokenize.get_special_tokens_dict.__call__ = tf.function(
      lambda: {k: tf.constant(v, tf.int32) for k, v in special.items()},
      input_signature=[])
  root.bert_pack_inputs = tf.train.Checkpoint()
  root.bert_pack_inputs.__call__ = pack
  return root
