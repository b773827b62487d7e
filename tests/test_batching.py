"""Token-budget batching and chunking, as plain functions."""

from __future__ import annotations

import random

import numpy as np
import pytest

from transforms import batching
from transforms.elements import Document


def test_bucket_boundaries_end_at_max_seq_length():
  assert batching.bucket_boundaries(128)[:3] == [8, 16, 24]
  assert batching.bucket_boundaries(128)[-1] == 128
  assert batching.bucket_boundaries(100)[-2:] == [96, 100]
  b512 = batching.bucket_boundaries(512)
  assert b512[-3:] == [448, 480, 512] and b512 == sorted(set(b512))
  assert batching.bucket_length(9, b512) == 16
  assert batching.bucket_length(129, b512) == 160


@pytest.mark.parametrize('max_batch_tokens,max_batch_size',
                         [(8192, 256), (1000, 7), (64, 1000), (1, 5)])
def test_plan_batches_respects_budget_and_buckets(max_batch_tokens,
                                                  max_batch_size):
  rng = random.Random(max_batch_tokens)
  lengths = [rng.choice([3, 9, 30, 31, 64, 65, 127, 128])
             for _ in range(500)]
  boundaries = batching.bucket_boundaries(128)
  plan = batching.plan_batches(lengths, boundaries, max_batch_tokens,
                               max_batch_size)
  seen = [i for _, indices in plan for i in indices]
  assert sorted(seen) == list(range(500))  # every row exactly once
  for seq_length, indices in plan:
    assert all(batching.bucket_length(lengths[i], boundaries) == seq_length
               for i in indices)
    assert len(indices) <= max_batch_size
    limit = batching.batch_limit(seq_length, max_batch_tokens,
                                 max_batch_size)
    rows = batching.padded_batch_rows(len(indices), limit)
    assert len(indices) <= rows <= limit
    assert rows - len(indices) <= max(1, limit // 8) - 1
    # A small batch is padded by less than itself.
    assert rows < 2 * len(indices) or len(indices) >= limit // 8
    # The budget holds, except that a batch always takes one row.
    assert len(indices) == 1 or len(indices) * seq_length <= max_batch_tokens
  # Sorted by length: padded lengths never decrease.
  assert [s for s, _ in plan] == sorted(s for s, _ in plan)


def test_padded_batch_rows_allow_few_shapes():
  sizes = {batching.padded_batch_rows(n, 256) for n in range(1, 257)}
  # Powers of two below an eighth, then multiples of an eighth.
  assert sizes == {1, 2, 4, 8, 16, 32, 64, 96, 128, 160, 192, 224, 256}
  assert batching.padded_batch_rows(5, 7) == 5  # limit < 8: no padding
  assert batching.padded_batch_rows(1, 64) == 1
  assert batching.padded_batch_rows(9, 256) == 16  # a nightly delta
  assert batching.padded_batch_rows(33, 256) == 64


def test_chunk_windows_cover_the_document_with_overlap():
  assert batching.chunk_windows(10, 126, 63) == [(0, 10)]
  spans = batching.chunk_windows(300, 126, 63)
  assert spans[0] == (0, 126) and spans[-1][1] == 300
  assert all(e - s == 126 for s, e in spans)
  assert all(b[0] - a[0] <= 63 for a, b in zip(spans, spans[1:]))
  covered = set()
  for s, e in spans:
    covered.update(range(s, e))
  assert covered == set(range(300))


def test_rows_for_document_truncate_chunk_and_pairs():
  doc = Document('d', 'text', None, 'src')
  ids = np.arange(300, dtype=np.int32)
  [row] = batching.rows_for_document(doc, ids, None, 2, 128, 'truncate', 63)
  assert row.truncated and row.length == 128 and row.num_chunks == 1
  rows = batching.rows_for_document(doc, ids, None, 2, 128, 'chunk', 63)
  assert len(rows) == 4 and {r.num_chunks for r in rows} == {4}
  assert len({r.key for r in rows}) == 1 and rows[0].key
  assert all(r.length == 128 and not r.truncated for r in rows)
  np.testing.assert_array_equal(rows[-1].ids, ids[-126:])
  # Two documents with the same id still get separate chunk keys.
  again = batching.rows_for_document(doc, ids, None, 2, 128, 'chunk', 63)
  assert again[0].key != rows[0].key
  pair = Document('p', 'a', 'b', 'src')
  [row] = batching.rows_for_document(pair, ids, ids[:10], 3, 128, 'chunk', 63)
  assert row.truncated and row.num_chunks == 1
  short = batching.rows_for_document(doc, ids[:20], None, 2, 128, 'chunk', 63)
  assert len(short) == 1 and short[0].length == 22 and not short[0].truncated


@pytest.mark.parametrize('window', [1, 100, 1000])
def test_bucket_batches_hold_partial_batches_until_bundle_end(window):
  """Partial batches leave only at the end of a bundle (at most one per
  bucket), so the number of distinct batch shapes does not grow with the
  corpus; rows held stay below window + one full batch per bucket."""
  rng = random.Random(window)
  boundaries = batching.bucket_boundaries(128)
  dofn = batching.BucketBatches(128, 2048, 64, window)
  held_bound = window + sum(
      batching.batch_limit(b, 2048, 64) - 1 for b in boundaries)
  # Distinct texts: rows of one text are planned once (same_text.py).
  rows = [batching.EncoderRow(Document(f'd{i}', f'text {i}', None, 'src'),
                              '', np.zeros(n, np.int32), None, n + 2,
                              False, 0, 1)
          for i, n in enumerate(rng.randint(1, 126) for _ in range(3000))]
  dofn.start_bundle()
  during = []
  for row in rows:
    during.extend(dofn.process(row))
    assert len(dofn._rows) <= held_bound
  final = [wv.value for wv in dofn.finish_bundle()]
  seen = [id(r) for b in during + final for r in b.rows]
  assert sorted(seen) == sorted(id(r) for r in rows)  # each row once
  for b in during + final:
    assert {batching.bucket_length(r.length, boundaries)
            for r in b.rows} == {b.seq_length}
    assert b.full_rows == batching.batch_limit(b.seq_length, 2048, 64)
  assert all(len(b.rows) == b.full_rows for b in during)
  partial = [b.seq_length for b in final if len(b.rows) < b.full_rows]
  assert len(partial) == len(set(partial))
