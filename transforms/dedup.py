"""Documents that share an id: kept, reduced to one, or a failed run.

Output records are keyed by id downstream (BigQuery rows, --previous runs),
so a corpus with repeated ids is worth knowing about even when every copy is
kept: the count is reported under every policy.
"""

from __future__ import annotations

import re
from typing import Iterable, Union

import apache_beam as beam

from transforms import metrics
from transforms.choices import ON_DUPLICATE_ID
from transforms.elements import (DEAD_LETTER, DeadLetter, Document, Results,
                                 route)

_POSITION = re.compile(r'^(.*?)(?:[@:](\d+))?$', re.DOTALL)


class DuplicateIdError(ValueError):
  pass


def source_order(source: str) -> tuple:
  """Sort key for sources: file, then the byte offset or line as a number
  (so that 'f@9' comes before 'f@10')."""
  m = _POSITION.match(source)
  return (m.group(1), int(m.group(2)) if m.group(2) else -1)


def resolve_duplicates(doc_id: str, docs: Iterable[Document],
                       policy: str) -> list[Union[Document, DeadLetter]]:
  """The documents of one id under `policy`: `first` keeps the earliest by
  source location (the same one whatever order the runner delivers them
  in) and dead-letters the others; `error` raises on more than one."""
  docs = sorted(docs, key=lambda d: (source_order(d.source), d.text,
                                     d.text_b or ''))
  if len(docs) == 1 or policy == 'keep':
    return docs
  if policy == 'error':
    where = ', '.join(d.source for d in docs[:5])
    raise DuplicateIdError(
        f'id {doc_id!r} occurs {len(docs)} times ({where}); use '
        '--on_duplicate_id first to keep the first, or keep to embed all')
  first = docs[0]
  return [first] + [
      DeadLetter(source=d.source, raw=d.text, error_type='duplicate_id',
                 message=f'id {doc_id!r} already taken by {first.source}',
                 stage='dedup') for d in docs[1:]]


class _CountRepeats(beam.DoFn):
  """(id, number of documents) -> nothing; counts ids held more than once."""

  def __init__(self):
    super().__init__()
    self._ids = metrics.BEAM.counter(metrics.DUPLICATE_IDS)
    self._extra = metrics.BEAM.counter(metrics.DUPLICATE_DOCUMENTS)

  def count(self, n: int) -> None:
    if n > 1:
      self._ids.inc()
      self._extra.inc(n - 1)

  def process(self, keyed):
    self.count(keyed[1])


class _Resolve(_CountRepeats):
  """(id, documents) -> the documents kept, and dead letters."""

  def __init__(self, policy: str):
    super().__init__()
    self._policy = policy
    self._dead = metrics.BEAM.counter(metrics.DEDUP_DEAD_LETTERED)

  def process(self, keyed):
    doc_id, docs = keyed
    docs = list(docs)
    self.count(len(docs))
    for out in resolve_duplicates(doc_id, docs, self._policy):
      if isinstance(out, DeadLetter):
        self._dead.inc()
      yield route(out)


class HandleDuplicateIds(beam.PTransform):
  """Documents -> Results(documents kept, (duplicates dead-lettered,))."""

  def __init__(self, policy: str = 'keep'):
    super().__init__()
    if policy not in ON_DUPLICATE_ID:
      raise ValueError(f'on_duplicate_id must be one of {ON_DUPLICATE_ID}, '
                       f'got {policy!r}')
    self._policy = policy

  def expand(self, docs):
    if self._policy == 'keep':
      # Only ids are grouped: the documents stream on untouched.
      _ = (docs
           | 'Ids' >> beam.Map(lambda d: (d.id, 1))
           | 'CountIds' >> beam.CombinePerKey(sum)
           | 'CountRepeats' >> beam.ParDo(_CountRepeats()))
      return Results(docs)
    resolved = (docs
                | 'KeyById' >> beam.Map(lambda d: (d.id, d))
                | 'GroupById' >> beam.GroupByKey()
                | 'Resolve' >> beam.ParDo(_Resolve(self._policy))
                .with_outputs(DEAD_LETTER, main='documents'))
    return Results(resolved.documents, (resolved[DEAD_LETTER],))
