"""Texts in, pooled embeddings out, through any TF Hub BERT-style pair.

Framework-free on purpose (no Beam): the Beam ModelHandler, the benchmarks
and notebooks all call this same object.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from tfmodels import manifest
from tfmodels import pieces
from tfmodels.budget import Device, ModelShape, find_device

POOLINGS = ('mean', 'pooled', 'cls')


@dataclass(frozen=True)
class EmbedOutput:
  embeddings: np.ndarray  # [n, dim] float32
  num_tokens: np.ndarray  # [n] int64, real tokens fed to the encoder
  truncated: np.ndarray  # [n] bool, input did not fit max_seq_length


def pool(sequence_output, pooled_output, mask, pooling: str):
  """Pooling in TF ops: [batch, seq, dim] -> [batch, dim]."""
  import tensorflow as tf
  if pooling == 'mean':
    m = tf.cast(mask, tf.float32)[..., tf.newaxis]
    return (tf.reduce_sum(sequence_output * m, axis=1) /
            tf.maximum(tf.reduce_sum(m, axis=1), 1.0))
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
  import warnings
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
    import tensorflow_hub as hub
  return hub


PRECISIONS = ('fp32', 'bf16', 'fp16')


def _check_precision(precision: str) -> None:
  if precision not in PRECISIONS:
    raise ValueError(f'precision must be one of {PRECISIONS}, got '
                     f'{precision!r}')


def _compiled(fn, jit_compile: bool):
  """fn itself, or with jit_compile fn compiled by XLA (once per input
  shape)."""
  if not jit_compile:
    return fn
  import tensorflow as tf
  return tf.function(lambda inputs: fn(inputs), jit_compile=True)


def _encoder_function(encoder, precision: str, jit_compile: bool):
  """The encoder call to use. Lower precisions exist only in encoders this
  project exported (their call_bf16/call_fp16); any encoder can be run
  through XLA."""
  _check_precision(precision)
  fn = encoder if precision == 'fp32' else getattr(
      encoder, f'call_{precision}', None)
  if fn is None:
    raise ValueError(
        f'precision {precision} needs an encoder exported by this project '
        '(python -m pipeline.export_model, or re-export an older one); this '
        'encoder has only its float32 call')
  return _compiled(fn, jit_compile)


def packed_function(encoder, precision: str = 'fp32',
                    jit_compile: bool = False):
  """The encoder's packed call in a precision: rows holding several
  documents (TransformerEncoder.encode_packed; docs/models.md, "Packed
  rows"). Only encoders exported by this project since export format 6
  have it. Its output shapes follow its input's, so under XLA it compiles
  once per rows x length."""
  _check_precision(precision)
  name = 'packed' if precision == 'fp32' else f'packed_{precision}'
  fn = getattr(encoder, name, None)
  if fn is None:
    raise ValueError(
        'packed rows need an encoder exported by this project since export '
        'format 6 (python -m pipeline.export_model; re-export an older one)')
  return _compiled(fn, jit_compile)


@functools.lru_cache(maxsize=4)
def _load_preprocessor(handle: str):
  """One loaded copy per process and handle: a tokenizing step and an
  encoder (whose bert_pack_inputs packs its inputs) in one process share
  it; the object is read-only."""
  # Registers tf_text's ops, which the preprocessor's graph uses.
  import tensorflow_text  # noqa: F401
  logging.info('Loading preprocessor %s', handle)
  return import_hub().load(handle)


@functools.lru_cache(maxsize=4)
def _load_saved_encoder(handle: str):
  """One loaded copy per process and handle, shared by EmbeddingModels that
  differ only in precision, XLA or pooling (each traces its own functions
  around it)."""
  logging.info('Loading encoder %s', handle)
  return import_hub().load(handle)


def probe_num_special(preprocessor) -> dict[int, int]:
  """How many special tokens bert_pack_inputs adds to one and to two
  segments, learnt from the preprocessor itself so that WordPiece ([CLS] a
  [SEP] b [SEP]) and BPE (<s> a </s></s> b </s>) models are handled alike.
  It traces bert_pack_inputs twice (0.8 s), so this project's exports
  record the answer at export time (export.json, num_special_tokens)."""
  import tensorflow as tf
  empty = tf.constant([''])
  return {n: int(tf.reduce_sum(preprocessor.bert_pack_inputs(
      [preprocessor.tokenize(empty)] * n,
      seq_length=tf.constant(16, tf.int32))['input_mask']))
          for n in (1, 2)}


class Tokenizer:
  """The preprocessor's `tokenize` alone: what a tokenizing step needs.

  Small and CPU-bound, so every worker process loads its own copy instead of
  sending each document's text to the process that holds the encoder.
  num_special: {segments: special tokens} as recorded at export; probed
  (probe_num_special) when not given.
  """

  def __init__(self, preprocessor, num_special: Optional[dict] = None):
    import tensorflow as tf
    self._tf = tf
    self.preprocessor = preprocessor
    self._num_special = dict(num_special or probe_num_special(preprocessor))

  @classmethod
  def load(cls, preprocessor_handle: str) -> 'Tokenizer':
    return _load_tokenizer(preprocessor_handle)

  def num_special(self, num_segments: int) -> int:
    return self._num_special[num_segments]

  def tokenize(self, texts: Sequence[str],
               max_tokens: Optional[int] = None) -> list[np.ndarray]:
    """Token ids of each text (no special tokens), as int32 arrays; with
    max_tokens, only the first max_tokens of each, which are exactly the
    first of the whole text's.

    Texts longer than a piece (tfmodels/pieces.py) are tokenized piece by
    piece, so that the tokenizer's memory (25 to 40 times what it is given)
    follows the piece, not the text; with max_tokens the pieces stop once
    there are enough tokens, so a long text's tail is never tokenized.
    Shorter texts are tokenized together, in one call."""
    first = (pieces.PIECE_CHARS if max_tokens is None
             else pieces.head_chars(max_tokens))
    out: list = [None] * len(texts)
    short = [i for i, text in enumerate(texts) if len(text) <= first]
    for i, ids in zip(short, self._tokenize([texts[i] for i in short])):
      out[i] = ids if max_tokens is None else ids[:max_tokens]
    for i, text in enumerate(texts):
      if out[i] is None:
        out[i] = self._tokenize_long(text, first, max_tokens)
    return out

  def _tokenize_long(self, text: str, first: int,
                     max_tokens: Optional[int]) -> np.ndarray:
    parts, count = [], 0
    for start, end in pieces.spans(text, first):
      ids = self._tokenize([text[start:end]])[0]
      parts.append(ids)
      count += len(ids)
      if max_tokens is not None and count >= max_tokens:
        break
    ids = np.concatenate(parts)
    return ids if max_tokens is None else ids[:max_tokens].copy()

  def _tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
    """One call of the preprocessor's tokenize."""
    tf = self._tf
    if not texts:
      return []
    tokens = self.preprocessor.tokenize(tf.constant(list(texts), tf.string))
    if tokens.ragged_rank > 1:
      tokens = tokens.merge_dims(-2, -1)
    values = tokens.flat_values.numpy().astype(np.int32)
    return np.split(values, tokens.row_splits.numpy()[1:-1])


@functools.lru_cache(maxsize=4)
def _load_tokenizer(handle: str) -> Tokenizer:
  """One per process and handle, shared by a tokenizing step and the
  encoder of the same preprocessor; its special-token counts from the
  export's manifest where it records them, else probed once."""
  return Tokenizer(_load_preprocessor(handle),
                   manifest.recorded_num_special(handle))


class EmbeddingModel:
  """A loaded preprocessor + encoder pair with a pooling rule.

  Two halves, so that a pipeline can tokenize, regroup by length and then
  encode: `tokenize` (texts -> id arrays) and `encode` (id arrays packed at a
  chosen seq_length -> embeddings). `embed` chains them for direct use.
  """

  def __init__(self, preprocessor, encoder, pooling: str = 'mean',
               normalize: bool = False, max_seq_length: int = 128,
               precision: str = 'fp32', jit_compile: bool = False,
               packing: bool = False,
               tokenizer: Optional[Tokenizer] = None):
    import tensorflow as tf
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
    encode_fn = _encoder_function(encoder, precision, jit_compile)
    # Packing, encoder and pooling as one graph, traced once per number of
    # segments with every dimension unknown: called eagerly piece by piece,
    # TensorFlow kept growing per new input shape.
    int_vector = tf.TensorSpec([None], tf.int32)
    length_vector = tf.TensorSpec([None], tf.int64)

    def packed_encode(seq_length, *flat):
      segments = [tf.RaggedTensor.from_row_lengths(flat[i], flat[i + 1])
                  for i in range(0, len(flat), 2)]
      inputs = preprocessor.bert_pack_inputs(segments, seq_length=seq_length)
      outputs = encode_fn(inputs)
      mask = inputs['input_mask']
      return (pool(outputs['sequence_output'], outputs['pooled_output'],
                   mask, pooling),
              tf.reduce_sum(tf.cast(mask, tf.int64), axis=1))

    self._packed_encode = {
        n: tf.function(packed_encode, input_signature=[
            tf.TensorSpec([], tf.int32)] + [int_vector, length_vector] * n)
        for n in (1, 2)}
    self._rows_encode = (
        self._rows_function(packed_function(encoder, precision, jit_compile))
        if packing else None)
    self._tokenizer = tokenizer or Tokenizer(preprocessor)

  @classmethod
  def load(cls, preprocessor_handle: str, encoder_handle: str,
           **kwargs) -> 'EmbeddingModel':
    tokenizer = Tokenizer.load(preprocessor_handle)
    return cls(tokenizer.preprocessor, _load_saved_encoder(encoder_handle),
               tokenizer=tokenizer, **kwargs)

  def num_special(self, num_segments: int) -> int:
    return self._tokenizer.num_special(num_segments)

  def tokenize(self, texts: Sequence[str],
               max_tokens: Optional[int] = None) -> list[np.ndarray]:
    """Token ids of each text (no special tokens), as int32 arrays; see
    Tokenizer.tokenize."""
    return self._tokenizer.tokenize(texts, max_tokens)

  # One model per process: a cache of one (shared by the class) suffices.
  @functools.lru_cache(maxsize=1)  # noqa: B019
  def shape(self) -> ModelShape:
    """Sizes that decide the encoder's memory, from the encoder itself: its
    variables, and one call on 8 tokens for the hidden size and the number of
    layers. The interface does not expose heads and the feed-forward size;
    BERT's ratios (H/64 heads, 4 H) are assumed."""
    tf = self._tf
    ones = tf.ones([1, 8], tf.int32)
    outputs = self.encoder({'input_word_ids': ones, 'input_mask': ones,
                            'input_type_ids': tf.zeros_like(ones)})
    hidden = int(outputs['sequence_output'].shape[-1])
    layers = len(outputs.get('encoder_outputs') or [None])
    parameters = sum(int(v.shape.num_elements())
                     for v in getattr(self.encoder, 'variables', ()))
    return ModelShape(hidden_size=hidden, num_layers=layers,
                      num_heads=max(1, hidden // 64),
                      intermediate_size=4 * hidden, parameters=parameters)

  @functools.lru_cache(maxsize=1)  # noqa: B019
  def device(self) -> Device:
    """Where this process runs the encoder (a GPU and its memory, or the
    CPU): the process that holds the model, also when it is shared."""
    return find_device()

  def encode(self, segments: Sequence[Sequence[np.ndarray]],
             seq_length: int,
             rows: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Packs one or two segments of id arrays (one array per input row) at
    seq_length with the preprocessor's `bert_pack_inputs` (which truncates,
    Hugging Face's way), runs the encoder and pools.

    Returns (embeddings [n, dim] float32, real tokens per row [n]). With
    rows, the encoder computes that many rows, the extra ones empty: callers
    that run many batches keep the distinct shapes few this way (see
    transforms.batching.padded_batch_rows). Padding does not change a row's
    result beyond float rounding: the attention mask hides it and pooling
    ignores it.
    """
    tf = self._tf
    n = len(segments[0])
    rows_to = rows or n
    flat = []
    for segment in segments:
      padded = list(segment) + [np.zeros(0, np.int32)] * max(0, rows_to - n)
      flat += [np.concatenate(padded).astype(np.int32),
               np.array([len(r) for r in padded], np.int64)]
    embeddings, num_tokens = self._packed_encode[len(segments)](
        tf.constant(seq_length, tf.int32), *flat)
    return (embeddings.numpy()[:n].astype(np.float32),
            num_tokens.numpy()[:n])

  def _rows_function(self, packed_fn) -> dict:
    """Documents -> packed rows -> encoder -> each document's pooled
    vector, as one graph. Every document is first laid out exactly as its
    own unpacked row (bert_pack_inputs at max_seq_length, which truncates
    as an unpacked row is truncated), then its real tokens are copied into
    its encoder row after the documents before it.

    Two graphs, {has pairs: function}, each traced on first use: batches
    without pairs (most corpora) skip the pair packer, which would double
    the graph that every process traces and optimises before its first
    batch."""
    tf = self._tf
    preprocessor, pooling = self.preprocessor, self.pooling
    max_seq_length = self.max_seq_length
    ints = tf.TensorSpec([None], tf.int32)
    lengths = tf.TensorSpec([None], tf.int64)

    def ragged(values, row_lengths):
      return tf.RaggedTensor.from_row_lengths(values, row_lengths)

    def dense(values, row_lengths, rows, width):
      return ragged(values, row_lengths).to_tensor(
          default_value=0, shape=tf.stack([rows, width]))

    def encode_rows(row_length, rows, singles, single_lengths, firsts,
                    first_lengths, seconds, second_lengths, order, doc_row,
                    *, pairs: bool):
      unpacked = [
          preprocessor.bert_pack_inputs([ragged(singles, single_lengths)],
                                        seq_length=max_seq_length)]
      if pairs:
        unpacked.append(preprocessor.bert_pack_inputs(
            [ragged(firsts, first_lengths), ragged(seconds, second_lengths)],
            seq_length=max_seq_length))
      # Singles then pairs -> the documents in row order.
      layout = {k: tf.gather(tf.concat([u[k] for u in unpacked], 0), order)
                for k in ('input_word_ids', 'input_mask', 'input_type_ids')}
      real = layout['input_mask'] > 0
      tokens = tf.reduce_sum(tf.cast(real, tf.int64), axis=1)
      # A document's number in its row: 1 + the documents before it there.
      first_of_row = tf.math.unsorted_segment_min(
          tf.range(tf.size(doc_row)), doc_row, rows)
      slot = tf.range(tf.size(doc_row)) - tf.gather(first_of_row, doc_row) + 1
      row_tokens = tf.math.unsorted_segment_sum(tokens, doc_row, rows)
      packed = {
          'input_word_ids': dense(tf.boolean_mask(layout['input_word_ids'],
                                                  real),
                                  row_tokens, rows, row_length),
          'input_type_ids': dense(tf.boolean_mask(layout['input_type_ids'],
                                                  real),
                                  row_tokens, rows, row_length),
          'segment_ids': dense(tf.repeat(slot, tokens), row_tokens, rows,
                               row_length)}
      outputs = packed_fn(packed)
      where = tf.stack([doc_row, slot - 1], axis=1)
      return (tf.gather_nd(outputs[pooling], where),
              tf.cast(tf.gather_nd(outputs['num_tokens'], where), tf.int64))

    signature = [tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32),
                 ints, lengths, ints, lengths, ints, lengths, ints, ints]
    return {pairs: tf.function(functools.partial(encode_rows, pairs=pairs),
                               input_signature=signature)
            for pairs in (False, True)}

  def encode_rows(self, rows: Sequence[Sequence[tuple]], row_length: int,
                  num_rows: Optional[int] = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Packed rows: several documents per encoder row (docs/models.md,
    "Packed rows"); the model must have been built with packing=True.

    rows: per encoder row, its documents, each (ids, ids_b or None) without
    special tokens; each document, with its special tokens and truncated to
    max_seq_length, must fit its row with the documents before it. With
    num_rows, that many rows are computed (the extra ones padding): see
    encode's `rows`.

    Returns (embeddings [documents, dim] float32, real tokens per document
    [documents]), documents in the order given, each equal within float
    rounding to what encode gives it alone.
    """
    if self._rows_encode is None:
      raise ValueError('encode_rows needs EmbeddingModel(packing=True)')
    tf = self._tf
    docs = [(r, doc) for r, row in enumerate(rows) for doc in row]
    singles = [i for i, (_, (_, b)) in enumerate(docs) if b is None]
    pairs = [i for i, (_, (_, b)) in enumerate(docs) if b is not None]

    def flat(arrays):
      arrays = list(arrays)
      return (np.concatenate([np.zeros(0, np.int32)] + arrays).astype(
          np.int32), np.array([len(a) for a in arrays], np.int64))

    order = np.argsort(np.array(singles + pairs, np.int64)).astype(np.int32)
    embeddings, num_tokens = self._rows_encode[bool(pairs)](
        tf.constant(row_length, tf.int32),
        tf.constant(max(num_rows or 0, len(rows)), tf.int32),
        *flat(docs[i][1][0] for i in singles),
        *flat(docs[i][1][0] for i in pairs),
        *flat(docs[i][1][1] for i in pairs),
        tf.constant(order), tf.constant([r for r, _ in docs], tf.int32))
    return embeddings.numpy().astype(np.float32), num_tokens.numpy()

  def finish(self, embeddings: np.ndarray) -> np.ndarray:
    """The last step, after any combining of chunks: L2 normalisation."""
    return l2_normalize(embeddings) if self.normalize else embeddings

  def embed(self, texts: Sequence[str],
            texts_b: Optional[Sequence[str]] = None) -> EmbedOutput:
    """Embeds texts (or text pairs, packed as one input), padded to the
    longest input (capped at max_seq_length)."""
    segments = [self.tokenize(texts)]
    if texts_b is not None:
      if len(texts_b) != len(texts):
        raise ValueError('texts and texts_b differ in length')
      segments.append(self.tokenize(texts_b))
    needed = sum(np.array([len(r) for r in s], np.int64) for s in segments)
    needed = needed + self.num_special(len(segments))
    seq_length = int(min(self.max_seq_length, max(needed.max(initial=0), 1)))
    embeddings, num_tokens = self.encode(segments, seq_length)
    return EmbedOutput(embeddings=self.finish(embeddings),
                       num_tokens=num_tokens,
                       truncated=needed > self.max_seq_length)
