"""Identical texts encoded once per run.

Real corpora repeat themselves: boilerplate, templates, near-empty pages,
re-posted documents. A document's vector depends only on what it embeds
(text and text_b, which its content hash covers) and on the run's spec,
which is the same for every document of a run; so two encoder rows with
the same content hash and chunk index are the same computation. Nightly
runs already reuse vectors across runs by content (transforms/
incremental.py); this is the same within a run.

Two steps share the work, and nothing is shuffled:
- The batcher (transforms/batching.py) plans batches of distinct rows
  only: a row whose key another row of its window has rides along as a
  copy in that row's batch (EncoderBatch.copies), and a row whose key it
  sent to the encoder recently (Sent, bounded) goes out as a copy in a
  batch of copies. So the encoder's rows, and the tokens it computes, are
  the distinct texts'.
- The encode step (EncodeHandler) gives each copy the result of its key:
  from its batch, or from a bounded cache of recent results (Recent).
  A copy whose result is in neither (another worker computed it, or the
  cache let it go) is computed: a copy is never lost, only computed again.
A failure is copied only within its batch (the same input fails the same
way); the cache keeps successes only. Both bounds are counted in rows
(CACHE_ROWS), so memory does not grow with the corpus.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Optional, Sequence, Union

from transforms.elements import (ChunkEmbedding, DeadLetter, EmbeddedDocument,
                                 EncoderRow)

Result = Union[EmbeddedDocument, ChunkEmbedding, DeadLetter]

# Recent keys a batcher remembers sending, and results an encode step
# keeps: 8,192 vectors are 12 MB at 384 dimensions, 32 MB at 1,024.
CACHE_ROWS = 8192


def key_of(row: EncoderRow) -> tuple[str, int]:
  """What decides a row's encoder output within a run."""
  return row.doc.content_hash, row.chunk


class Recent:
  """Results of recent rows by key, least recently used first out, at most
  max_rows of them."""

  def __init__(self, max_rows: int = CACHE_ROWS):
    self._max_rows = max_rows
    self._results: collections.OrderedDict = collections.OrderedDict()

  def __len__(self) -> int:
    return len(self._results)

  def get(self, key) -> Optional[Result]:
    found = self._results.get(key)
    if found is not None:
      self._results.move_to_end(key)
    return found

  def put(self, key, result: Result) -> None:
    if isinstance(result, DeadLetter) or self._max_rows < 1:
      return
    self._results[key] = result
    self._results.move_to_end(key)
    while len(self._results) > self._max_rows:
      self._results.popitem(last=False)


class Sent:
  """The keys a batcher sent to the encoder most recently, at most
  max_rows of them (the encode step's Recent holds as many results)."""

  def __init__(self, max_rows: int = CACHE_ROWS):
    self._max_rows = max_rows
    self._keys: collections.OrderedDict = collections.OrderedDict()

  def __contains__(self, key) -> bool:
    return key in self._keys

  def add(self, key) -> None:
    self._keys[key] = None
    self._keys.move_to_end(key)
    while len(self._keys) > self._max_rows:
      self._keys.popitem(last=False)


def group(rows: Sequence[EncoderRow]) -> tuple[list, dict]:
  """(the first row of each key in order, {key: the other rows})."""
  first: list = []
  others: dict = {}
  for row in rows:
    key = key_of(row)
    if key in others:
      others[key].append(row)
    else:
      others[key] = []
      first.append(row)
  return first, others


def copy_for(result: Result, row: EncoderRow) -> Result:
  """The result an identical row gets: the same vector (or failure) under
  the row's own document."""
  doc = row.doc
  if isinstance(result, EmbeddedDocument):
    return result._replace(id=doc.id, metadata=doc.metadata)
  if isinstance(result, ChunkEmbedding):
    return result._replace(key=row.key, doc=doc if row.chunk == 0 else None)
  raw = doc.text if doc.text_b is None else f'{doc.text}\t{doc.text_b}'
  return result._replace(source=doc.source, raw=raw)


@dataclasses.dataclass
class Reuse:
  """Which rows of a batch the encoder computes, and where every other row
  takes its result from."""
  rows: Sequence[EncoderRow]
  compute: list  # rows to compute, in batch order
  # Per row of `rows`: an index into compute, or a cached result.
  sources: list

  @property
  def copies(self) -> int:
    return len(self.rows) - len(self.compute)

  def results(self, computed: Sequence[Result], recent: Recent,
              copied: Callable[[Result, EncoderRow], None]) -> list[Result]:
    """Every row's result, in batch order, from the computed ones (in
    compute's order); copies are passed to copied(result, row) to be
    counted. Computed results go into the cache."""
    for row, result in zip(self.compute, computed):
      recent.put(key_of(row), result)
    out = []
    for row, source in zip(self.rows, self.sources):
      if isinstance(source, int):
        result = computed[source]
        if self.compute[source] is row:  # computed for this very row
          out.append(result)
          continue
      else:
        result = source
      copy = copy_for(result, row)
      copied(copy, row)
      out.append(copy)
    return out


def plan(rows: Sequence[EncoderRow], recent: Recent) -> Reuse:
  """The first row of each key not in the cache is computed; the rest copy
  it, or the cache."""
  compute: list = []
  first: dict = {}
  sources: list = []
  for row in rows:
    key = key_of(row)
    if key in first:
      sources.append(first[key])
      continue
    cached = recent.get(key)
    if cached is not None:
      sources.append(cached)
      continue
    first[key] = len(compute)
    sources.append(len(compute))
    compute.append(row)
  return Reuse(rows=rows, compute=compute, sources=sources)
