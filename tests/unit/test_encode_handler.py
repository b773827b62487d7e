"""transforms/embed.py's handlers without a model. EncodeHandler: a batch
cut into calls that fit the bucket's budget, out-of-memory back-off (halving and
lowering the budget for later calls), one bad document isolated, pairs and
single texts packed apart but returned in row order, and what it counts.

The encoder is a small stand-in with EmbeddingModel.encode's contract
(segments, seq_length, rows_to) -> (embeddings, num_tokens) that runs out
of memory above a token count with TensorFlow's real ResourceExhaustedError;
the handler, RowBudgets and the metrics Tally are the project's own.
tests/test_budgets.py proves the same back-off end to end on a real
SavedModel; this proves the handler's bookkeeping in well under a second.
TokenizeHandler: a document's rows (chunked with the default stride of
half a window), pairs never chunked, and a text the tokenizer fails on
isolated as a dead letter.
"""

from __future__ import annotations

import numpy as np
import pytest

from transforms import batching
from transforms import embed
from transforms import metrics
from transforms.elements import (ChunkEmbedding, DeadLetter, Document,
                                 EmbeddedDocument, EncoderBatch, EncoderRow)
from transforms.spec import EmbeddingSpec

pytestmark = pytest.mark.unit

SPECIAL = 2  # special tokens of a single text in the stand-in


class StandIn:
  """encode() as EmbeddingModel's: one row per input, [n, 3] embeddings
  (first id, ids, segments) and the real tokens of each row."""

  def __init__(self, max_tokens=None, bad_id=None):
    self.max_tokens, self.bad_id, self.calls = max_tokens, bad_id, []

  def encode(self, segments, seq_length, rows_to):
    import tensorflow as tf
    rows = len(segments[0])
    assert rows <= rows_to
    self.calls.append((rows, rows_to, seq_length))
    if self.max_tokens and rows_to * seq_length > self.max_tokens:
      raise tf.errors.ResourceExhaustedError(
          None, None, f'OOM when allocating tensor of {rows_to}x{seq_length}')
    if any(self.bad_id in ids for segment in segments for ids in segment):
      raise ValueError(f'token {self.bad_id} breaks the encoder')
    parts = list(zip(*segments))
    embeddings = np.array([[p[0][0], len(p[0]), len(p)] for p in parts],
                          np.float32)
    tokens = np.array([min(sum(len(ids) for ids in p) + SPECIAL + len(p) - 1,
                           seq_length) for p in parts], np.int64)
    return embeddings, tokens


def _handler(tally, normalize=False, jit_compile=False, max_batch_tokens=4096,
             batch_size=256):
  spec = EmbeddingSpec('stand-in', normalize=normalize)
  return embed.EncodeHandler(spec, 'pre', 'enc',
                             max_batch_tokens=max_batch_tokens,
                             batch_size=batch_size, jit_compile=jit_compile,
                             sink=tally)


def _row(n, first=1, pair=False, chunk=0, num_chunks=1, key=''):
  doc = Document(f'doc-{first}', f'text {first}', 'b' if pair else None,
                 f'src@{first}', (('k', 'v'),))
  ids = np.arange(first, first + n, dtype=np.int32)
  return EncoderRow(doc=doc, key=key, ids=ids,
                    ids_b=np.arange(7, 10, dtype=np.int32) if pair else None,
                    length=n + SPECIAL + (4 if pair else 0), truncated=False,
                    chunk=chunk, num_chunks=num_chunks)


def _budgets(tokens):
  return batching.RowBudgets(lambda length: tokens)


def test_rows_come_back_in_order_with_pairs_packed_apart():
  tally = metrics.Tally()
  rows = [_row(5, 100), _row(5, 200, pair=True), _row(6, 300),
          _row(4, 400, pair=True)]
  model = StandIn()
  out = _handler(tally)._encode_batch(
      EncoderBatch(16, tuple(rows), 256), model, _budgets(4096))
  assert [o.id for o in out] == ['doc-100', 'doc-200', 'doc-300', 'doc-400']
  assert all(isinstance(o, EmbeddedDocument) for o in out)
  # One call for the single texts, one for the pairs.
  assert model.calls == [(2, 2, 16), (2, 2, 16)]
  np.testing.assert_array_equal(out[0].embedding, [100, 5, 1])
  np.testing.assert_array_equal(out[1].embedding, [200, 5, 2])
  assert [o.num_tokens for o in out] == [7, 11, 8, 10]
  assert out[0].content_hash == rows[0].doc.content_hash
  assert out[0].metadata == (('k', 'v'),) and out[0].num_chunks == 1
  assert tally.values[metrics.DOCUMENTS_EMBEDDED] == 4
  assert tally.values[metrics.TOKENS_EMBEDDED] == 36
  assert tally.values[metrics.TOKENS_COMPUTED] == 2 * 2 * 16
  assert tally.values[metrics.BATCHES] == 2
  assert tally.keyed(metrics.BATCHES_PER_BUCKET) == {(16,): 1}
  assert tally.keyed(metrics.ENCODER_SHAPES) == {(2, 16): 2}
  assert tally.keyed(metrics.TOKENS_PER_BUCKET) == {(16,): 36}


def test_normalize_finishes_whole_documents():
  out = _handler(metrics.Tally(), normalize=True)._encode_batch(
      EncoderBatch(8, (_row(3, 4),), 256), StandIn(), _budgets(4096))
  np.testing.assert_allclose(out[0].embedding, np.array([4, 3, 1]) /
                             np.sqrt(26), rtol=1e-6)


def test_a_batch_is_cut_to_the_budget_in_force():
  tally = metrics.Tally()
  rows = tuple(_row(10, i) for i in range(1, 21))
  model = StandIn()
  # 64 tokens at length 16: 4 rows per call.
  out = _handler(tally)._encode_batch(
      EncoderBatch(16, rows, 20), model, _budgets(64))
  assert [o.id for o in out] == [f'doc-{i}' for i in range(1, 21)]
  assert model.calls == [(4, 4, 16)] * 5
  assert tally.values[metrics.BATCHES] == 5
  assert tally.values[metrics.TOKEN_BUDGETS.member(16)] == [64] * 5


def test_out_of_memory_halves_the_call_and_lowers_the_budget():
  tally = metrics.Tally()
  rows = tuple(_row(100, i) for i in range(1, 21))
  model = StandIn(max_tokens=1024)
  budgets = _budgets(4096)  # 32 rows at 128
  out = _handler(tally)._encode_batch(
      EncoderBatch(128, rows, 32), model, budgets)
  assert [o.id for o in out] == [f'doc-{i}' for i in range(1, 21)]
  assert all(isinstance(o, EmbeddedDocument) for o in out)
  # 20 rows fail, 10 fail, then 5 at a time fit; the second half of ten
  # goes straight to the lowered budget.
  assert model.calls == [(20, 20, 128), (10, 10, 128)] + [(5, 5, 128)] * 4
  assert budgets.rows(128) == 5 and budgets.rows(256) == 2
  assert tally.values[metrics.BATCHES_SPLIT_OOM] == 2
  # Encoder calls, the failed ones included (each ran a shape).
  assert tally.values[metrics.BATCHES] == 6
  assert tally.keyed(metrics.ENCODER_SHAPES) == {(20, 128): 1, (10, 128): 1,
                                                 (5, 128): 4}
  assert tally.values[metrics.TOKENS_COMPUTED] == 4 * 5 * 128
  assert metrics.BATCHES_RETRIED not in tally.values
  assert tally.values[metrics.DOCUMENTS_EMBEDDED] == 20


def test_a_row_that_never_fits_is_a_dead_letter_and_its_batch_goes_on():
  tally = metrics.Tally()
  rows = (_row(3, 1), _row(3, 2))
  model = StandIn(max_tokens=100)  # not even one row of 128
  out = _handler(tally)._encode_batch(
      EncoderBatch(128, rows, 32), model, _budgets(4096))
  assert [type(o) for o in out] == [DeadLetter, DeadLetter]
  assert out[0].error_type == 'embed_error:ResourceExhaustedError'
  assert 'OOM when allocating' in out[0].message
  assert (out[0].source, out[0].raw, out[0].stage) == ('src@1', 'text 1',
                                                       'embed')
  assert tally.values[metrics.DOCUMENTS_FAILED] == 2


def test_one_bad_document_is_isolated():
  tally = metrics.Tally()
  rows = (_row(3, 1), _row(3, 50), _row(3, 100))
  out = _handler(tally)._encode_batch(
      EncoderBatch(8, rows, 256), StandIn(bad_id=51), _budgets(4096))
  assert [type(o) for o in out] == [EmbeddedDocument, DeadLetter,
                                    EmbeddedDocument]
  assert out[1].error_type == 'embed_error:ValueError'
  assert out[1].message == 'token 51 breaks the encoder'
  assert tally.values[metrics.BATCHES_RETRIED] == 1
  assert tally.values[metrics.DOCUMENTS_FAILED] == 1
  assert tally.values[metrics.DOCUMENTS_EMBEDDED] == 2


def test_chunks_become_chunk_embeddings_and_a_failed_chunk_waits():
  tally = metrics.Tally()
  rows = (_row(6, 1, chunk=0, num_chunks=2, key='k1'),
          _row(6, 60, chunk=1, num_chunks=2, key='k1'))
  out = _handler(tally)._encode_batch(
      EncoderBatch(8, rows, 256), StandIn(bad_id=61), _budgets(4096))
  assert [type(o) for o in out] == [ChunkEmbedding, ChunkEmbedding]
  assert out[0].doc is rows[0].doc and out[1].doc is None
  assert out[0].num_tokens == 8 and out[0].error is None
  assert out[1].embedding is None and out[1].error == (
      'embed_error:ValueError', 'token 61 breaks the encoder')
  # Decided when the chunks meet (combine_chunks), not here.
  assert metrics.DOCUMENTS_FAILED not in tally.values
  assert metrics.DOCUMENTS_EMBEDDED not in tally.values


def test_jit_compile_calls_always_have_the_full_rows():
  model = StandIn()
  rows = tuple(_row(3, i) for i in range(1, 8))
  _handler(metrics.Tally(), jit_compile=True)._encode_batch(
      EncoderBatch(8, rows, 4), model, _budgets(32))
  assert model.calls == [(4, 4, 8), (3, 4, 8)]
  model = StandIn()
  _handler(metrics.Tally())._encode_batch(
      EncoderBatch(8, rows, 4), model, _budgets(32))
  assert model.calls == [(4, 4, 8), (3, 3, 8)]


class PackedStandIn(StandIn):
  """encode_rows() as EmbeddingModel's: documents row by row, [n, 3]
  embeddings (first id, ids, segments) and each document's real tokens;
  out of memory above a token count, and a bad id breaks its call."""

  def encode_rows(self, rows, row_length, num_rows=None):
    import tensorflow as tf
    rows_to = num_rows or len(rows)
    assert len(rows) <= rows_to
    self.calls.append((tuple(len(r) for r in rows), rows_to, row_length))
    if self.max_tokens and rows_to * row_length > self.max_tokens:
      raise tf.errors.ResourceExhaustedError(
          None, None, f'OOM when allocating tensor of {rows_to}x{row_length}')
    docs = [doc for row in rows for doc in row]
    for row in rows:
      used = sum(len(a) + SPECIAL + (0 if b is None else len(b) + 1)
                 for a, b in row)
      assert used <= row_length, (used, row_length)
    if any(self.bad_id in a for a, _ in docs):
      raise ValueError(f'token {self.bad_id} breaks the encoder')
    embeddings = np.array([[a[0], len(a), 1 if b is None else 2]
                           for a, b in docs], np.float32)
    tokens = np.array([len(a) + SPECIAL + (0 if b is None else len(b) + 1)
                       for a, b in docs], np.int64)
    return embeddings, tokens


def _packed_handler(tally, jit_compile=False, max_seq_length=128):
  spec = EmbeddingSpec('stand-in', max_seq_length=max_seq_length)
  return embed.EncodeHandler(spec, 'pre', 'enc', max_batch_tokens=4096,
                             jit_compile=jit_compile, packing=True,
                             sink=tally)


def _packed_batch(row_length, rows, full_rows=32):
  """rows: per encoder row, its EncoderRows."""
  return EncoderBatch(row_length, tuple(r for row in rows for r in row),
                      full_rows,
                      row_of=tuple(u for u, row in enumerate(rows)
                                   for _ in row))


def test_packed_rows_share_one_call_singles_and_pairs_together():
  tally = metrics.Tally()
  rows = [[_row(5, 100), _row(5, 200, pair=True)], [_row(6, 300)]]
  model = PackedStandIn()
  out = _packed_handler(tally)._encode_batch(
      _packed_batch(32, rows), model, _budgets(4096))
  assert [o.id for o in out] == ['doc-100', 'doc-200', 'doc-300']
  assert model.calls == [((2, 1), 2, 32)]
  np.testing.assert_array_equal(out[1].embedding, [200, 5, 2])
  assert [o.num_tokens for o in out] == [7, 11, 8]
  assert tally.keyed(metrics.ENCODER_SHAPES) == {(2, 32): 1}
  assert tally.values[metrics.TOKENS_COMPUTED] == 2 * 32
  assert tally.values[metrics.TOKENS_EMBEDDED] == 26


def test_packed_out_of_memory_splits_by_whole_rows_then_by_documents():
  tally = metrics.Tally()
  # Four rows of 128, two documents each (60 + 60 tokens with specials).
  rows = [[_row(58, 10 * r), _row(58, 10 * r + 5)] for r in range(1, 5)]
  # Two rows of 128 do not fit, nor does one (150 tokens); a row of 64
  # does.
  model = PackedStandIn(max_tokens=100)
  budgets = _budgets(4096)
  out = _packed_handler(tally)._encode_batch(
      _packed_batch(128, rows), model, budgets)
  # Nothing lost, nothing dead: every document embedded, in order.
  assert [o.id for o in out] == [r.doc.id for row in rows for r in row]
  assert all(isinstance(o, EmbeddedDocument) for o in out)
  # Whole rows first (4, 2, then 1 row of 128), then each row's two
  # documents apart, each in a row of 64.
  assert model.calls[:3] == [((2, 2, 2, 2), 4, 128), ((2, 2), 2, 128),
                             ((2,), 1, 128)]
  assert ((1,), 1, 64) in model.calls
  assert not [c for c in model.calls if c[2] == 128 and c[0] == (1,)]
  assert tally.values[metrics.DOCUMENTS_EMBEDDED] == 8


def test_a_document_that_never_fits_alone_is_a_dead_letter_row_mates_go_on():
  tally = metrics.Tally()
  rows = [[_row(100, 1), _row(20, 500)]]
  # The 102-token document needs a row of 128 (over the limit); its
  # row-mate fits in a row of 32.
  model = PackedStandIn(max_tokens=100)
  out = _packed_handler(tally)._encode_batch(
      _packed_batch(128, rows), model, _budgets(4096))
  assert [type(o) for o in out] == [DeadLetter, EmbeddedDocument]
  assert out[0].error_type == 'embed_error:ResourceExhaustedError'
  assert tally.values[metrics.DOCUMENTS_FAILED] == 1
  assert tally.values[metrics.DOCUMENTS_EMBEDDED] == 1


def test_a_bad_document_in_a_packed_row_is_isolated_from_its_row_mates():
  tally = metrics.Tally()
  rows = [[_row(3, 1), _row(3, 50), _row(3, 100)], [_row(3, 200)]]
  model = PackedStandIn(bad_id=51)
  out = _packed_handler(tally)._encode_batch(
      _packed_batch(16, rows), model, _budgets(4096))
  assert [type(o) for o in out] == [EmbeddedDocument, DeadLetter,
                                    EmbeddedDocument, EmbeddedDocument]
  assert out[1].message == 'token 51 breaks the encoder'
  assert tally.values[metrics.DOCUMENTS_FAILED] == 1
  assert tally.values[metrics.DOCUMENTS_EMBEDDED] == 3


def test_packed_jit_compile_calls_always_have_the_full_rows():
  model = PackedStandIn()
  rows = [[_row(3, i)] for i in range(1, 8)]
  _packed_handler(metrics.Tally(), jit_compile=True)._encode_batch(
      _packed_batch(8, rows, 4), model, _budgets(32))
  assert [c[1:] for c in model.calls] == [(4, 8), (4, 8)]


def test_model_identifier_follows_the_model_and_its_settings():
  def ident(**kwargs):
    spec = EmbeddingSpec(kwargs.pop('model', 'm'),
                         pooling=kwargs.pop('pooling', 'mean'))
    return embed.EncodeHandler(spec, kwargs.pop('pre', 'p'),
                               kwargs.pop('enc', 'e'),
                               **kwargs).model_identifier()
  base = ident()
  assert base.startswith('text-embed-encoder-') and len(base) == 19 + 16
  assert ident(max_batch_tokens=1024, batch_size=8) == base
  others = {ident(model='m2'), ident(pooling='cls'), ident(pre='p2'),
            ident(enc='e2'), ident(jit_compile=True), ident(require_gpu=True)}
  assert base not in others and len(others) == 6


class StandInTokenizer:
  """Tokenizer's contract: one id per word (with max_tokens, the first
  max_tokens); 2 special tokens for a single text, 3 for a pair; fails on
  a text holding 'BOOM'."""

  def __init__(self):
    self.calls = []

  def num_special(self, num_segments):
    return {1: 2, 2: 3}[num_segments]

  def tokenize(self, texts, max_tokens=None):
    self.calls.append(list(texts))
    if any('BOOM' in t for t in texts):
      raise UnicodeError('cannot tokenize BOOM')
    return [np.arange(len(t.split()), dtype=np.int32)[:max_tokens]
            for t in texts]


def _tokenize(docs, long_documents='chunk', chunk_stride=None):
  spec = EmbeddingSpec('m', max_seq_length=16, long_documents=long_documents,
                       chunk_stride=chunk_stride)
  handler = embed.TokenizeHandler(spec, 'pre', batch_size=32)
  tokenizer = StandInTokenizer()
  return handler.run_inference(docs, tokenizer), tokenizer


def test_tokenize_gives_each_document_its_rows():
  words = ' '.join(['w'] * 40)
  docs = [Document('short', 'a b c', None, 's1'),
          Document('long', words, None, 's2'),
          Document('pair', words, 'x y', 's3')]
  out, tokenizer = _tokenize(docs)
  short, long_rows, pair = out
  assert [(r.length, r.truncated, r.num_chunks) for r in short] == [
      (5, False, 1)]
  # Window 14 (16 less 2 special), default stride 7: starts 0, 7, 14, 21
  # and the last window ends at the 40th token.
  assert [(int(r.ids[0]), len(r.ids)) for r in long_rows] == [
      (0, 14), (7, 14), (14, 14), (21, 14), (26, 14)]
  assert {r.num_chunks for r in long_rows} == {5}
  assert [(r.length, r.truncated, len(r.ids_b)) for r in pair] == [
      (16, True, 2)]
  # The second texts of pairs are tokenized in a call of their own.
  assert tokenizer.calls == [[d.text for d in docs], ['x y']]


def test_tokenize_stride_and_truncation_follow_the_spec():
  words = ' '.join(['w'] * 40)
  doc = Document('long', words, None, 's')
  [rows], _ = _tokenize([doc], chunk_stride=13)
  assert [int(r.ids[0]) for r in rows] == [0, 13, 26]
  [rows], tokenizer = _tokenize([doc], long_documents='truncate')
  assert [(r.length, r.truncated, r.num_chunks) for r in rows] == [
      (16, True, 1)]
  # Truncated single texts: their first max_seq_length tokens only.
  assert len(rows[0].ids) == 16 and tokenizer.calls == [[words]]


def test_a_text_the_tokenizer_fails_on_is_a_dead_letter():
  docs = [Document('ok', 'a b', None, 's1'),
          Document('bad', 'x BOOM', 'y', 's2@10'),
          Document('ok2', 'c', None, 's3')]
  out, tokenizer = _tokenize(docs)
  assert [len(out[0]), len(out[2])] == [1, 1]
  assert out[1] == DeadLetter(source='s2@10', raw='x BOOM\ty',
                              error_type='embed_error:UnicodeError',
                              message='cannot tokenize BOOM', stage='embed')
  # The batch, then each document alone.
  assert tokenizer.calls[0] == ['a b', 'x BOOM', 'c']
  assert ['x BOOM'] in tokenizer.calls[1:]
