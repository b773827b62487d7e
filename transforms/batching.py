"""Token-budget batching, as plain functions and two thin DoFns (one per
layout, BATCHERS).

Padding every input to max_seq_length wastes most of the encoder's work on
real corpora (the stdlib docstrings: median 20 words, 99th percentile 339).
Documents are tokenized first; then a bounded window of them is planned.
Packed rows (the default, PackedBatches): documents are packed several to
an encoder row of a few row lengths (pack_rows), and each row length's rows
are cut into batches under max_batch_tokens. Length buckets (--packing
off, BucketBatches): each document is padded to the smallest bucket that
holds it, and each bucket is cut the same way. The window bounds memory:
however large the corpus, at most `window` rows wait here, plus one partial
batch per row length.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import uuid
from typing import Callable, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms import same_text
# The settings' values (LONG_DOCUMENTS, PACKING re-exported).
from transforms.choices import (LONG_DOCUMENTS, PACKED_ROW_LENGTHS,  # noqa: F401
                                PACKING)
from transforms.elements import Document, EncoderBatch, EncoderRow


def bucket_boundaries(max_seq_length: int) -> list[int]:
  """Padded lengths: every 8 tokens up to 128, every 32 up to 512, every 128
  beyond; always ending at max_seq_length. Fine enough to keep padding low,
  coarse enough that the encoder sees few distinct shapes."""
  edges = list(range(8, 129, 8)) + list(range(160, 513, 32)) + list(
      range(640, max(max_seq_length, 640) + 1, 128))
  return [e for e in edges if e < max_seq_length] + [max_seq_length]


def bucket_length(length: int, boundaries: Sequence[int]) -> int:
  return boundaries[min(bisect.bisect_left(boundaries, length),
                        len(boundaries) - 1)]


def batch_limit(seq_length: int, max_batch_tokens: int,
                max_batch_size: int) -> int:
  """Rows of a full batch of this padded length (always at least one)."""
  return max(1, min(max_batch_size, max_batch_tokens // seq_length))


def padded_batch_rows(n: int, limit: int) -> int:
  """Rows the encoder computes for a batch of n (n <= limit) rows: below
  limit/8 the next power of two, else n rounded up to a multiple of
  limit/8. TensorFlow keeps state per distinct input shape it has run
  (about 2-5 MB each for MiniLM, measured), so batches of every possible
  size made memory grow with the corpus; this allows at most 8 + log2(limit
  / 8) sizes per bucket. A large batch wastes at most 1/8 of itself; a
  small one (a nightly run's few changed documents) less than half of
  itself, instead of padding 9 documents to limit/8 rows (0.06 padding
  efficiency before)."""
  step = max(1, limit // 8)
  if n < step:
    return min(step, 1 << max(0, n - 1).bit_length())
  return min(limit, -(-n // step) * step)


def planning_budget(max_batch_tokens, batch_size: int,
                    max_seq_length: int) -> int:
  """The token budget batches are planned with. With 'auto' the budget is
  known only where the encoder runs (with right fitting, another worker):
  batches are then planned by rows alone, and the encode step cuts them to
  its device's budget."""
  if max_batch_tokens == 'auto':
    return batch_size * max_seq_length
  return max_batch_tokens


def computed_rows(n: int, limit: int, *, fixed: bool) -> int:
  """Rows the encoder computes for n rows under a limit of `limit` rows:
  with fixed (XLA, which compiles one program per input shape), always the
  limit, so each bucket has one shape; else padded_batch_rows."""
  return limit if fixed else padded_batch_rows(n, limit)


def split_rows(rows: Sequence, limit: int) -> list[Sequence]:
  """Consecutive pieces of at most `limit` rows (rows are length-sorted, so
  each piece stays as tight as the batch was)."""
  step = max(1, limit)
  return [rows[i:i + step] for i in range(0, len(rows), step)]


class RowBudgets:
  """Padded tokens per encoder call, per length bucket, lowered for good when
  the device runs out of memory.

  One object per process and model, shared by the threads that encode, so
  that one out-of-memory error teaches every later batch. A failure at
  rows x L halves bucket L's budget and caps every longer bucket at the
  same token count (a token of a longer row needs no less memory), so a
  wrong first estimate costs a few failed calls in all, not a few per
  bucket. Budgets are whole rows, at least one.
  """

  def __init__(self, initial: Callable[[int], int]):
    self._initial = initial  # seq_length -> starting token budget
    self._lowered: dict[int, int] = {}
    self._cache: dict[int, int] = {}
    self._lock = threading.Lock()

  def tokens(self, seq_length: int) -> int:
    with self._lock:
      if seq_length not in self._cache:
        caps = [t for length, t in self._lowered.items()
                if length <= seq_length]
        tokens = min([self._initial(seq_length)] + caps)
        self._cache[seq_length] = max(1, tokens // seq_length) * seq_length
      return self._cache[seq_length]

  def rows(self, seq_length: int) -> int:
    return self.tokens(seq_length) // seq_length

  def lower(self, seq_length: int, failed_rows: int) -> int:
    """After running out of memory at failed_rows x seq_length: the rows
    now allowed at that length (half, at least one)."""
    rows = max(1, failed_rows // 2)
    with self._lock:
      self._lowered[seq_length] = min(
          self._lowered.get(seq_length, rows * seq_length),
          rows * seq_length)
      self._cache.clear()
    return self.rows(seq_length)


def plan_batches(lengths: Sequence[int], boundaries: Sequence[int],
                 max_batch_tokens: int,
                 max_batch_size: int) -> list[tuple[int, list[int]]]:
  """Groups row indices into (padded length, indices) batches: rows sorted by
  length (ties in input order), each in its bucket, at most max_batch_size
  rows and max_batch_tokens padded tokens per batch (but always at least one
  row)."""
  order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
  batches = []
  current, current_len = [], None
  for i in order:
    padded = bucket_length(lengths[i], boundaries)
    limit = batch_limit(padded, max_batch_tokens, max_batch_size)
    if current and (padded != current_len or len(current) >= limit):
      batches.append((current_len, current))
      current = []
    current.append(i)
    current_len = padded
  if current:
    batches.append((current_len, current))
  return batches


def packed_row_lengths(max_seq_length: int) -> list[int]:
  return [r for r in PACKED_ROW_LENGTHS if r < max_seq_length] + [
      max_seq_length]


def packed_row_length(tokens: int, max_seq_length: int) -> int:
  """The shortest packed row length that holds this many tokens."""
  return bucket_length(tokens, packed_row_lengths(max_seq_length))


def pack_rows(lengths: Sequence[int],
              row_lengths: Sequence[int]) -> list[tuple[int, list[int]]]:
  """Documents (their lengths, each at most the longest row length) packed
  several to a row: (row length, indices) per row.

  Best fit, longest first: each document goes to the open row it leaves
  least room in, else opens a row of the shortest row length that holds it.
  Documents are never split. A row ends at the shortest row length that
  holds what it got. Rows come out grouped by length, shortest first, each
  group in the order its rows were opened, and each row's documents in the
  order they went in; ties in length keep input order, so the plan is
  deterministic.
  """
  order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
  rows: list[list[int]] = []
  used: list[int] = []
  # (room left, row) of rows that may still take a document, sorted.
  room: list[tuple[int, int]] = []
  smallest = min(lengths, default=0)
  for i in order:
    n = lengths[i]
    k = bisect.bisect_left(room, (n, -1))
    if k < len(room):
      left, r = room.pop(k)
    else:
      r, left = len(rows), bucket_length(n, row_lengths)
      rows.append([])
      used.append(0)
    rows[r].append(i)
    used[r] += n
    if left - n >= smallest:
      bisect.insort(room, (left - n, r))
  packed = [(bucket_length(u, row_lengths), r) for u, r in zip(used, rows)]
  return sorted(packed, key=lambda p: p[0])


def merge_tails(packed: Sequence[tuple[int, list[int]]],
                lengths: Sequence[int], row_lengths: Sequence[int],
                full_rows: Callable[[int], int]
                ) -> list[tuple[int, list[int]]]:
  """pack_rows' rows with each row length's last, partial batch moved up:
  its rows are packed whole (best fit, fullest first) into rows of the next
  row length, and so on up to the longest, so that at most one batch in all
  is partial. For XLA, where every batch is computed at its full row count:
  a partial batch per row length cost 0.74-0.78 padding efficiency in the
  short row lengths of the sample corpus (0.912 overall, measured). Without
  XLA a partial batch is padded little (padded_batch_rows), and a token
  costs more in a longer row, so tails stay where they are."""
  groups: dict[int, list[list[int]]] = {}
  for row_length, indices in packed:
    groups.setdefault(row_length, []).append(indices)
  out, carried = [], []
  for k, row_length in enumerate(row_lengths):
    rows = groups.get(row_length, [])
    if carried:
      used = [sum(lengths[i] for i in row) for row in carried]
      for _, merged in pack_rows(used, [row_length]):
        rows.append([i for r in merged for i in carried[r]])
    tail = len(rows) % full_rows(row_length)
    last = k == len(row_lengths) - 1
    carried = rows[len(rows) - tail:] if tail and not last else []
    out += [(row_length, row) for row in rows[:len(rows) - len(carried)]]
  return out


def chunk_windows(num_tokens: int, window: int,
                  stride: int) -> list[tuple[int, int]]:
  """Overlapping [start, end) windows of at most `window` tokens, `stride`
  apart, the last one ending at the document's end. A stride longer than
  the window would leave tokens in no window."""
  if stride > window:
    raise ValueError(f'a chunk stride of {stride} tokens is more than the '
                     f'window of {window}: tokens between windows would not '
                     'be embedded')
  if num_tokens <= window:
    return [(0, num_tokens)]
  starts = list(range(0, num_tokens - window, stride)) + [num_tokens - window]
  return [(s, s + window) for s in starts]


def rows_for_document(doc: Document, ids: np.ndarray,
                      ids_b: Optional[np.ndarray], num_special: int,
                      max_seq_length: int, long_documents: str,
                      chunk_stride: int) -> list[EncoderRow]:
  """The encoder rows of one tokenized document: one row (truncated if
  needed), or with long_documents='chunk' one row per window of a long
  single text. Pairs are always truncated: their two parts cannot be
  windowed without changing what the pair means."""
  needed = len(ids) + (0 if ids_b is None else len(ids_b)) + num_special
  if needed <= max_seq_length or long_documents == 'truncate' or (
      ids_b is not None):
    return [EncoderRow(doc=doc, key='', ids=ids, ids_b=ids_b,
                       length=min(needed, max_seq_length),
                       truncated=needed > max_seq_length, chunk=0,
                       num_chunks=1)]
  window = max_seq_length - num_special
  spans = chunk_windows(len(ids), window, chunk_stride)
  # Chunks meet again by this key; ids may repeat in a corpus, so it is not
  # derived from the document.
  key = uuid.uuid4().hex
  return [EncoderRow(doc=doc, key=key, ids=ids[start:end], ids_b=None,
                     length=end - start + num_special, truncated=False,
                     chunk=i, num_chunks=len(spans))
          for i, (start, end) in enumerate(spans)]


class _WindowBatches(beam.DoFn):
  """EncoderRow -> EncoderBatch, through a bounded window per bundle.

  Each time `window` new rows have arrived, the full batches among the rows
  held are emitted; what would make a partial batch waits for the next
  window to fill it. Partial batches are emitted only when the bundle ends,
  so their row counts (each a distinct input shape, with state that
  TensorFlow keeps per shape) do not multiply with the corpus size. Rows
  held stay below `window` plus one full batch per length. Subclasses
  plan: _plan(rows, final) -> (batches, rows to hold).
  """

  def __init__(self, max_seq_length: int, max_batch_tokens: int,
               max_batch_size: int, window: int, *,
               fixed_shapes: bool = False):
    super().__init__()
    # Every call computes its length's full row count (XLA).
    self._fixed_shapes = fixed_shapes
    self._max_seq_length = max_seq_length
    self._max_batch_tokens = max_batch_tokens
    self._max_batch_size = max_batch_size
    self._window = window
    self._rows: list[EncoderRow] = []
    self._new_rows = 0
    # Identical texts (transforms/same_text.py): keys sent to the encoder
    # (kept across bundles, as the encode step's cache is), and copies of
    # them waiting for a batch of copies.
    self._sent = same_text.Sent()
    self._late: list[EncoderRow] = []

  def start_bundle(self):
    self._rows = []
    self._new_rows = 0
    self._late = []

  def process(self, row: EncoderRow) -> Iterable[EncoderBatch]:
    if same_text.key_of(row) in self._sent:
      self._late.append(row)
      if len(self._late) >= self._max_batch_size:
        yield self._copies()
      return
    self._rows.append(row)
    self._new_rows += 1
    if self._new_rows >= self._window:
      yield from self._flush(final=False)

  def finish_bundle(self):
    for batch in self._flush(final=True):
      yield WindowedValue(batch, GlobalWindow().max_timestamp(),
                          [GlobalWindow()])

  def _flush(self, final: bool) -> list[EncoderBatch]:
    """The window planned: batches of distinct rows, each with the copies
    of its rows; rows of partial batches and their copies held."""
    first, others = same_text.group(self._rows)
    batches, held = self._plan(first, final)
    if sum(len(others[same_text.key_of(r)]) for r in held) > self._window:
      # Copies of rows held must not pile up: send those rows now.
      more, held = self._plan(held, final=True)
      batches += more
    out = []
    for batch in batches:
      keys = [same_text.key_of(r) for r in batch.rows]
      for key in keys:
        self._sent.add(key)
      out.append(dataclasses.replace(batch, copies=tuple(
          copy for key in keys for copy in others[key])))
    self._rows = [r for row in held
                  for r in (row, *others[same_text.key_of(row)])]
    self._new_rows = 0
    if final and self._late:
      out.append(self._copies())
    return out

  def _copies(self) -> EncoderBatch:
    """A batch of copies only: rows whose keys were sent before."""
    late, self._late = self._late, []
    return EncoderBatch(seq_length=0, rows=(), full_rows=0,
                        copies=tuple(late))

  def plan(self, rows: Sequence[EncoderRow]) -> list[EncoderBatch]:
    """Every row in batches, as a bundle's last flush plans them: what
    this batcher emits for rows that fit one window (bench/gpu.py)."""
    return self._plan(list(rows), final=True)[0]

  def _full_rows(self, seq_length: int) -> int:
    return batch_limit(seq_length, self._max_batch_tokens,
                       self._max_batch_size)

  def _plan(self, rows: list[EncoderRow], final: bool
            ) -> tuple[list[EncoderBatch], list[EncoderRow]]:
    raise NotImplementedError


class BucketBatches(_WindowBatches):
  """Rows sorted by length, each padded to its bucket's length
  (bucket_boundaries), batches cut under the token budget."""

  def _plan(self, rows, final):
    batches, held = [], []
    for seq_length, indices in plan_batches(
        [r.length for r in rows], bucket_boundaries(self._max_seq_length),
        self._max_batch_tokens, self._max_batch_size):
      full_rows = self._full_rows(seq_length)
      if not final and len(indices) < full_rows:
        held.extend(rows[i] for i in indices)
        continue
      batches.append(EncoderBatch(seq_length=seq_length,
                                  rows=tuple(rows[i] for i in indices),
                                  full_rows=full_rows))
    return batches, held


class PackedBatches(_WindowBatches):
  """Documents packed several to a row (pack_rows) of a few row lengths
  (packed_row_lengths), batches of whole rows cut under the token budget;
  for encoders with the packed call (docs/models.md, "Packed rows")."""

  def _plan(self, rows, final):
    batches, held = [], []
    lengths = [r.length for r in rows]
    row_lengths = packed_row_lengths(self._max_seq_length)
    packed = pack_rows(lengths, row_lengths)
    if final and self._fixed_shapes:
      packed = merge_tails(packed, lengths, row_lengths, self._full_rows)
    by_length: dict[int, list[list[int]]] = {}
    for row_length, indices in packed:
      by_length.setdefault(row_length, []).append(indices)
    for row_length, packed in by_length.items():
      full_rows = self._full_rows(row_length)
      for batch in split_rows(packed, full_rows):
        if not final and len(batch) < full_rows:
          held.extend(rows[i] for unit in batch for i in unit)
          continue
        batches.append(EncoderBatch(
            seq_length=row_length,
            rows=tuple(rows[i] for unit in batch for i in unit),
            full_rows=full_rows,
            row_of=tuple(u for u, unit in enumerate(batch) for _ in unit)))
    return batches, held


BATCHERS = {False: BucketBatches, True: PackedBatches}
