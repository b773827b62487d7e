"""Writing embeddings and dead letters to their backends
(transforms/backends/), as records declared in transforms/records.py."""

from __future__ import annotations

from typing import Optional

import apache_beam as beam

from transforms import metrics
from transforms import records
from transforms.backends import Backend


class _ToRecords(beam.PTransform):
  """{'embedded', 'removed'?} -> {'records', 'removed'?}: embedded
  documents as record dicts."""

  def __init__(self, run: records.RunInfo):
    super().__init__()
    self._run = run

  def expand(self, changes):
    out = dict(changes)
    out['records'] = out.pop('embedded') | 'Records' >> beam.Map(
        records.embedding_record, self._run)
    return out


class WriteEmbeddings(beam.PTransform):
  """{'embedded': EmbeddedDocuments, 'removed': ids gone from the corpus
  (with --previous)} -> the backend. An output rewritten whole also takes
  `carried` (PBegin -> the unchanged previous records, streamed); one that
  takes changes (a PostgreSQL or BigQuery table that is also --previous)
  writes only new and changed records and deletes removed ids, and never
  applies `carried`."""

  def __init__(self, backend: Backend, run: records.RunInfo,
               previous: Optional[Backend] = None,
               carried: Optional[beam.PTransform] = None):
    super().__init__()
    self._backend = backend
    self._run = run
    self._previous = previous
    self._carried = carried

  def expand(self, changes):
    return (changes | 'ToRecords' >> _ToRecords(self._run)
            | 'Write' >> self._backend.write_changes(self._previous,
                                                     self._carried))


class WriteDeadLetters(beam.PTransform):
  """DeadLetters -> the dead letters' backend."""

  def __init__(self, backend: Backend, failed_at):
    super().__init__()
    self._backend = backend
    self._failed_at = failed_at

  def expand(self, letters):
    return (letters
            | 'CountByType' >> beam.ParDo(_CountByType())
            | 'ToRecords' >> beam.Map(records.dead_letter_record,
                                      self._failed_at)
            | 'Write' >> self._backend.write())


class _CountByType(beam.DoFn):
  """Counts each dead letter under its error type, where the dead letters
  of every stage meet: the summary names the most frequent type and its
  fix (pipeline/summary.py) without reading the dead letters back."""

  def setup(self):
    self._counters = {}

  def process(self, letter):
    counter = self._counters.get(letter.error_type)
    if counter is None:
      counter = self._counters[letter.error_type] = metrics.BEAM.counter(
          metrics.DEAD_LETTERS_BY_TYPE.member(letter.error_type))
    counter.inc()
    yield letter
