"""transforms/batching.py's plain functions, beyond tests/test_batching.py:
bucket edges past 512, bucket_length at and beyond the edges, the row and
token limits, planning_budget, computed_rows, split_rows, RowBudgets'
lowering after running out of memory, plan_batches' order, chunk windows'
coverage and rows_for_document at the exact fit.

Why: a batch over its token budget runs the device out of memory, a row
planned twice is embedded twice, a row planned never is lost, and a token
no chunk window covers is silently left out of a long document's vector.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from transforms import batching
from transforms.elements import Document
from transforms.spec import EmbeddingSpec

pytestmark = pytest.mark.unit


def test_bucket_boundaries_past_512_go_by_128():
  b = batching.bucket_boundaries(1024)
  assert b[:16] == list(range(8, 129, 8))
  assert b[16:28] == list(range(160, 513, 32))
  assert b[28:] == [640, 768, 896, 1024]
  assert batching.bucket_boundaries(600)[-2:] == [512, 600]
  assert batching.bucket_boundaries(8) == [8]
  assert batching.bucket_boundaries(10) == [8, 10]


@pytest.mark.parametrize('max_seq_length', [8, 9, 64, 127, 128, 129, 300,
                                            512, 513, 700, 2048])
def test_bucket_boundaries_increase_and_end_at_the_maximum(max_seq_length):
  b = batching.bucket_boundaries(max_seq_length)
  assert b[-1] == max_seq_length
  assert all(x < y for x, y in zip(b, b[1:]))
  assert all(x % 8 == 0 for x in b[:-1])


@pytest.mark.parametrize('length,expected', [
    (0, 8), (1, 8), (8, 8), (9, 16), (128, 128), (129, 160), (500, 512),
    (512, 512), (513, 640), (1024, 1024), (5000, 1024)])
def test_bucket_length_is_the_smallest_bucket_that_holds_it(length,
                                                            expected):
  assert batching.bucket_length(
      length, batching.bucket_boundaries(1024)) == expected


@pytest.mark.parametrize('seq_length,tokens,size,expected', [
    (128, 8192, 256, 64), (8, 8192, 256, 256), (128, 100, 256, 1),
    (100, 1000, 256, 10), (512, 8192, 4, 4), (16, 16, 1, 1)])
def test_batch_limit(seq_length, tokens, size, expected):
  assert batching.batch_limit(seq_length, tokens, size) == expected


def test_planning_budget():
  assert batching.planning_budget('auto', 256, 128) == 256 * 128
  assert batching.planning_budget(4096, 256, 128) == 4096


@pytest.mark.parametrize('n,limit', [(1, 64), (9, 64), (33, 64), (64, 64),
                                     (3, 5)])
def test_computed_rows_fixed_is_always_the_limit(n, limit):
  assert batching.computed_rows(n, limit, fixed=True) == limit
  assert batching.computed_rows(n, limit, fixed=False) == (
      batching.padded_batch_rows(n, limit))


@pytest.mark.parametrize('n,limit', [(0, 3), (1, 3), (9, 3), (10, 3),
                                     (10, 10), (10, 100), (7, 1)])
def test_split_rows_keeps_every_row_in_order(n, limit):
  rows = list(range(n))
  pieces = batching.split_rows(rows, limit)
  assert [r for p in pieces for r in p] == rows
  assert all(1 <= len(p) <= limit for p in pieces)
  assert len(pieces) == -(-n // limit)


def test_split_rows_with_a_limit_of_zero_keeps_the_rows():
  assert [r for p in batching.split_rows([1, 2, 3], 0) for r in p] == [1, 2,
                                                                       3]


def test_row_budgets_start_from_the_initial_budget_in_whole_rows():
  asked = []

  def initial(length):
    asked.append(length)
    return 8192
  budgets = batching.RowBudgets(initial)
  assert budgets.tokens(128) == 8192 and budgets.rows(128) == 64
  assert budgets.tokens(100) == 8100 and budgets.rows(100) == 81
  budgets.rows(128)
  assert asked == [128, 100]  # asked once per length
  # Below one row: still one row.
  assert batching.RowBudgets(lambda length: 50).rows(128) == 1


def test_row_budgets_lowered_in_whole_rows_and_never_raised_again():
  """Beyond tests/test_budgets.py (halving, capping longer buckets): a cap
  that does not divide a length gives whole rows, a later failure at more
  rows than allowed does not raise the budget, and it stops at one row."""
  budgets = batching.RowBudgets(lambda length: 8192)
  assert budgets.lower(128, 64) == 32
  # 4096 tokens at 160 are 25 whole rows.
  assert budgets.rows(160) == 25 and budgets.tokens(160) == 25 * 160
  assert budgets.lower(128, 64) == 32  # a late report of the same failure
  assert budgets.lower(128, 32) == 16
  assert budgets.lower(128, 1) == 1 and budgets.lower(128, 1) == 1
  assert budgets.rows(512) == 1 and budgets.rows(120) == 68


def test_plan_batches_ties_keep_input_order():
  lengths = [10, 3, 10, 3, 100, 10]
  plan = batching.plan_batches(lengths, batching.bucket_boundaries(128),
                               8192, 2)
  assert plan == [(8, [1, 3]), (16, [0, 2]), (16, [5]), (104, [4])]
  assert batching.plan_batches([], [8, 16], 100, 10) == []


@pytest.mark.parametrize('seed', range(4))
def test_plan_batches_every_row_once_in_length_order(seed):
  rng = random.Random(seed)
  lengths = [rng.randint(1, 512) for _ in range(rng.randint(1, 400))]
  boundaries = batching.bucket_boundaries(512)
  tokens, size = rng.choice([(8192, 256), (2048, 16), (300, 1000)])
  plan = batching.plan_batches(lengths, boundaries, tokens, size)
  flat = [i for _, indices in plan for i in indices]
  assert flat == sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
  for seq_length, indices in plan:
    assert max(lengths[i] for i in indices) <= seq_length
    assert len(indices) <= batching.batch_limit(seq_length, tokens, size)
  # A bucket's batches are full but for its last.
  for (a_len, a), (b_len, _) in zip(plan, plan[1:]):
    if a_len == b_len:
      assert len(a) == batching.batch_limit(a_len, tokens, size)


@pytest.mark.parametrize('num_tokens,window,stride', [
    (127, 126, 63), (126, 126, 63), (1000, 126, 63), (1000, 126, 126),
    (1000, 126, 1), (1000, 510, 100), (5, 3, 2), (7, 2, 1)])
def test_chunk_windows_cover_every_token_stride_apart(num_tokens, window,
                                                      stride):
  spans = batching.chunk_windows(num_tokens, window, stride)
  covered = np.zeros(num_tokens, int)
  for start, end in spans:
    assert 0 <= start < end <= num_tokens and end - start <= window
    covered[start:end] += 1
  assert covered.min() >= 1
  assert spans[0][0] == 0 and spans[-1][1] == num_tokens
  starts = [s for s, _ in spans]
  assert all(b - a == stride for a, b in zip(starts[:-2], starts[1:-1]))
  assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))


def test_chunk_windows_of_a_window_and_one():
  assert batching.chunk_windows(127, 126, 63) == [(0, 126), (1, 127)]


def test_a_stride_longer_than_the_window_is_refused():
  """chunk_windows(300, 100, 150) would give (0,100) (150,250) (200,300):
  tokens 100-149 in no window. The spec refuses such a stride at launch,
  and chunk_windows as a last guard."""
  with pytest.raises(ValueError, match='more than the window of 100'):
    batching.chunk_windows(300, 100, 150)
  assert batching.chunk_windows(300, 100, 100)[-1] == (200, 300)
  with pytest.raises(ValueError, match='more than a chunk window'):
    EmbeddingSpec(model='m', max_seq_length=128, long_documents='chunk',
                  chunk_stride=127)
  assert EmbeddingSpec(model='m', max_seq_length=128,
                       long_documents='chunk', chunk_stride=126)


def test_rows_for_document_at_the_exact_fit_is_one_untruncated_row():
  doc = Document('d', 'text', None, 'src')
  ids = np.arange(126, dtype=np.int32)
  for mode in batching.LONG_DOCUMENTS:
    [row] = batching.rows_for_document(doc, ids, None, 2, 128, mode, 63)
    assert (row.length, row.truncated, row.key, row.chunk,
            row.num_chunks) == (128, False, '', 0, 1)
    assert row.ids is ids
  rows = batching.rows_for_document(doc, np.arange(127, dtype=np.int32),
                                    None, 2, 128, 'chunk', 63)
  assert [(r.ids[0], r.ids[-1], r.length) for r in rows] == [(0, 125, 128),
                                                             (1, 126, 128)]


def test_chunk_rows_are_the_documents_windows():
  doc = Document('d', 'text', None, 'src')
  ids = np.arange(1000, 1700, dtype=np.int32)
  rows = batching.rows_for_document(doc, ids, None, 3, 64, 'chunk', 40)
  spans = batching.chunk_windows(700, 61, 40)
  assert len(rows) == len(spans)
  for i, (row, (start, end)) in enumerate(zip(rows, spans)):
    np.testing.assert_array_equal(row.ids, ids[start:end])
    assert row.length == end - start + 3 and row.chunk == i
    assert row.num_chunks == len(spans) and row.ids_b is None
    assert row.doc is doc and row.key == rows[0].key


def test_a_truncated_pair_keeps_both_parts():
  pair = Document('p', 'a', 'b', 'src')
  a, b = np.arange(100, dtype=np.int32), np.arange(50, dtype=np.int32)
  [row] = batching.rows_for_document(pair, a, b, 3, 128, 'truncate', 63)
  assert row.length == 128 and row.truncated
  assert row.ids is a and row.ids_b is b
  [short] = batching.rows_for_document(pair, a[:10], b[:10], 3, 128,
                                       'chunk', 63)
  assert short.length == 23 and not short.truncated
