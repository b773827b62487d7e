"""Writing embeddings and dead letters to their backends
(transforms/backends/), as records declared in transforms/records.py."""

from __future__ import annotations

from typing import Optional

import apache_beam as beam

from transforms import records
from transforms.backends import Backend


class _ToRecords(beam.PTransform):
  """{'embedded', 'reused'?, 'removed'?} -> the same, embedded documents
  as record dicts."""

  def __init__(self, run: records.RunInfo):
    super().__init__()
    self._run = run

  def expand(self, changes):
    out = dict(changes)
    for name in ('embedded', 'reused'):
      if name in changes:
        out[name] = changes[name] | f'{name}Records' >> beam.Map(
            records.embedding_record, self._run)
    out['records'] = out.pop('embedded')
    return out


class WriteEmbeddings(beam.PTransform):
  """{'embedded': EmbeddedDocuments, 'reused': carried-forward ones,
  'removed': ids gone from the corpus} (the last two with --previous) ->
  the backend. Backends that replace their contents write embedded and
  reused records; one that takes deltas (PostgreSQL with --previous naming
  the same table) writes only what changed."""

  def __init__(self, backend: Backend, run: records.RunInfo,
               previous: Optional[Backend] = None):
    super().__init__()
    self._backend = backend
    self._run = run
    self._previous = previous

  def expand(self, changes):
    return (changes | 'ToRecords' >> _ToRecords(self._run)
            | 'Write' >> self._backend.write_changes(self._previous))


class WriteDeadLetters(beam.PTransform):
  """DeadLetters -> the dead letters' backend."""

  def __init__(self, backend: Backend, failed_at):
    super().__init__()
    self._backend = backend
    self._failed_at = failed_at

  def expand(self, letters):
    return (letters
            | 'ToRecords' >> beam.Map(records.dead_letter_record,
                                      self._failed_at)
            | 'Write' >> self._backend.write())
