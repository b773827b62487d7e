"""transforms/embed.py's pure pieces: combine_chunks (a long document's
chunk embeddings -> one document or one dead letter), _retry_one_by_one
(one bad document must not take its batch down), and tfmodels.embedder's
l2_normalize.

Why: with --long_documents chunk the stored vector is the token-weighted
mean of the chunks' vectors (for mean pooling, the mean over all the
chunks' tokens); checked here against a numpy reference and against the
mean over every token, without running the encoder. Counts go to a
metrics.Tally, as bench/gpu.py uses it.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from tfmodels.embedder import l2_normalize
from transforms import embed
from transforms import metrics
from transforms.elements import (ChunkEmbedding, DeadLetter, Document,
                                 EmbeddedDocument)

pytestmark = pytest.mark.unit

DOC = Document('doc-1', 'a long text', None, 'in.jsonl@0',
               (('lang', 'en'),))


def _chunks(tokens, dim=8, seed=0, key='k'):
  rng = np.random.default_rng(seed)
  return [ChunkEmbedding(key=key, chunk=i, num_chunks=len(tokens),
                         doc=DOC if i == 0 else None,
                         embedding=rng.normal(size=dim).astype(np.float32),
                         num_tokens=n)
          for i, n in enumerate(tokens)]


def test_weighted_mean_by_token_counts():
  chunks = _chunks([126, 126, 40])
  tally = metrics.Tally()
  doc = embed.combine_chunks(chunks, lambda x: x, sink=tally)
  weights = np.array([126, 126, 40], np.float64)
  expected = (np.stack([c.embedding for c in chunks]).astype(np.float64) *
              weights[:, None]).sum(0) / 292
  assert isinstance(doc, EmbeddedDocument)
  np.testing.assert_allclose(doc.embedding, expected, rtol=1e-6)
  assert doc.embedding.dtype == np.float32
  assert (doc.id, doc.num_tokens, doc.truncated, doc.num_chunks) == (
      'doc-1', 292, False, 3)
  assert doc.content_hash == DOC.content_hash
  assert doc.metadata == (('lang', 'en'),)
  assert tally.values == {metrics.DOCUMENTS_EMBEDDED: 1}


def test_equals_the_mean_over_every_token_for_mean_pooling():
  """Each chunk's vector is the mean of its tokens' vectors; the combined
  vector is then the mean over all the chunks' tokens."""
  rng = np.random.default_rng(3)
  per_token = [rng.normal(size=(n, 4)) for n in (5, 9, 2)]
  chunks = [ChunkEmbedding('k', i, 3, DOC if i == 0 else None,
                           t.mean(0).astype(np.float32), len(t))
            for i, t in enumerate(per_token)]
  doc = embed.combine_chunks(chunks, lambda x: x, sink=metrics.Tally())
  np.testing.assert_allclose(doc.embedding,
                             np.concatenate(per_token).mean(0), rtol=1e-5)


def test_order_of_arrival_does_not_matter():
  chunks = _chunks([10, 20, 30, 40, 50], seed=1)
  first = embed.combine_chunks(chunks, l2_normalize, sink=metrics.Tally())
  for seed in range(5):
    shuffled = chunks[:]
    random.Random(seed).shuffle(shuffled)
    again = embed.combine_chunks(shuffled, l2_normalize,
                                 sink=metrics.Tally())
    np.testing.assert_array_equal(again.embedding, first.embedding)
  assert np.linalg.norm(first.embedding) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize('keep', [[0, 2], [1, 2], [0]])
def test_a_missing_chunk_is_an_error(keep):
  chunks = [c for c in _chunks([5, 5, 5], key='key-7') if c.chunk in keep]
  tally = metrics.Tally()
  with pytest.raises(RuntimeError, match='chunks of key-7 went missing'):
    embed.combine_chunks(chunks, lambda x: x, sink=tally)
  assert tally.values == {}


def test_a_repeated_chunk_does_not_hide_a_missing_one():
  a, b, _ = _chunks([5, 5, 5])
  with pytest.raises(RuntimeError):
    embed.combine_chunks([a, b, b], lambda x: x, sink=metrics.Tally())


def test_a_failed_chunk_makes_the_document_a_dead_letter():
  chunks = _chunks([5, 5, 5, 5])
  chunks[2] = chunks[2]._replace(embedding=None, num_tokens=0,
                                 error=('embed_error:ValueError', 'bad row'))
  chunks[3] = chunks[3]._replace(embedding=None, num_tokens=0,
                                 error=('embed_error:KeyError', 'later'))
  tally = metrics.Tally()
  dead = embed.combine_chunks(chunks[::-1], lambda x: x, sink=tally)
  assert dead == DeadLetter(source='in.jsonl@0', raw='a long text',
                            error_type='embed_error:ValueError',
                            message='chunk 2 of 4: bad row', stage='embed')
  assert tally.values == {metrics.DOCUMENTS_FAILED: 1}


def test_a_dead_letters_message_is_cut_at_1000_characters():
  chunks = _chunks([5, 5])
  chunks[0] = chunks[0]._replace(error=('embed_error:X', 'x' * 5000))
  dead = embed.combine_chunks(chunks, lambda x: x, sink=metrics.Tally())
  assert len(dead.message) == 1000
  assert dead.message.startswith('chunk 0 of 2: xxx')


@pytest.mark.parametrize('rows', [
    np.array([[3.0, 4.0], [0.0, 0.0], [1e-20, 0.0]]),
    np.random.default_rng(0).normal(size=(5, 16)),
])
def test_l2_normalize(rows):
  out = l2_normalize(rows)
  norms = np.sqrt((rows ** 2).sum(1))
  for row, got, norm in zip(rows, out, norms):
    if norm >= 1e-12:
      np.testing.assert_allclose(got, row / norm, rtol=1e-12)
      assert np.linalg.norm(got) == pytest.approx(1.0)
    else:  # no division by zero: a tiny vector stays tiny, never NaN
      np.testing.assert_allclose(got, row / 1e-12)
  assert not np.isnan(out).any()


class _Fails:
  """run(items) for _retry_one_by_one: fails any call holding a bad item."""

  def __init__(self, bad=(), error=ValueError):
    self.bad, self.error, self.calls = set(bad), error, []

  def __call__(self, items):
    self.calls.append(list(items))
    if self.bad & set(items):
      raise self.error(f'bad: {sorted(self.bad & set(items))}')
    return [f'ok:{i}' for i in items]


def test_retry_one_by_one_isolates_the_bad_items():
  run, tally = _Fails(bad={2, 4}), metrics.Tally()
  retried = tally.counter(metrics.BATCHES_RETRIED)
  out = embed._retry_one_by_one(
      [1, 2, 3, 4], run, lambda item, exc: f'dead:{item}:{exc}', retried)
  assert out == ['ok:1', 'dead:2:bad: [2]', 'ok:3', 'dead:4:bad: [4]']
  assert run.calls == [[1, 2, 3, 4], [1], [2], [3], [4]]
  assert tally.values == {metrics.BATCHES_RETRIED: 1}


def test_retry_one_by_one_passes_a_good_batch_through_once():
  run, tally = _Fails(), metrics.Tally()
  out = embed._retry_one_by_one(
      ['a', 'b'], run, None, tally.counter(metrics.BATCHES_RETRIED))
  assert out == ['ok:a', 'ok:b'] and run.calls == [['a', 'b']]
  assert tally.values == {}


def test_retry_one_by_one_of_a_single_item_fails_it_without_a_retry():
  run, tally = _Fails(bad={'x'}), metrics.Tally()
  out = embed._retry_one_by_one(
      ['x'], run, lambda item, exc: type(exc).__name__,
      tally.counter(metrics.BATCHES_RETRIED))
  assert out == ['ValueError'] and tally.values == {}


def test_retry_one_by_one_raises_what_passes_accepts():
  run = _Fails(bad={1}, error=MemoryError)
  with pytest.raises(MemoryError):
    embed._retry_one_by_one(
        [0, 1, 2], run, lambda item, exc: 'dead',
        metrics.Tally().counter(metrics.BATCHES_RETRIED),
        passes=lambda exc: isinstance(exc, MemoryError))
  assert run.calls == [[0, 1, 2]]
