"""Scheduled re-embedding: carry unchanged documents' embeddings forward.

A document whose id, content hash and model fingerprint (transforms/spec.py)
match a record of the previous run's output keeps that record's embedding
and skips the encoder; new and changed documents are embedded; previous
records whose id is gone from the corpus are dropped (and counted).
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Union

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from transforms.backends import Backend
from transforms.elements import Document, EmbeddedDocument

_NAMESPACE = 'incremental'


class PreviousRecord(NamedTuple):
  """What a run needs of a previous record; fields named as in
  records.EMBEDDINGS, whose readers select only these."""
  id: str
  content_hash: str
  model_fingerprint: str
  embedding: np.ndarray
  num_tokens: int
  truncated: bool
  num_chunks: int

  @classmethod
  def from_record(cls, record: dict) -> 'PreviousRecord':
    return cls(
        id=record['id'], content_hash=record.get('content_hash') or '',
        model_fingerprint=record.get('model_fingerprint') or '',
        embedding=np.asarray(record['embedding'], np.float32),
        num_tokens=int(record.get('num_tokens') or 0),
        truncated=bool(record.get('truncated')),
        num_chunks=int(record.get('num_chunks') or 1))


def carry_forward(docs: Iterable[Document],
                  previous: Iterable[PreviousRecord], fingerprint: str
                  ) -> tuple[list[Union[Document, EmbeddedDocument]], int]:
  """For one id: each document either reuses a previous record with its
  content hash and this fingerprint (an EmbeddedDocument) or needs the
  encoder (the Document itself). Also returns 1 when the id is gone from
  the corpus (previous records, no documents), else 0."""
  docs, previous = list(docs), list(previous)
  if not docs:
    return [], 1 if previous else 0
  usable = {}
  for record in previous:
    if record.model_fingerprint == fingerprint:
      usable.setdefault(record.content_hash, record)
  out = []
  for doc in docs:
    record = usable.get(doc.content_hash)
    if record is None:
      out.append(doc)
    else:
      out.append(EmbeddedDocument(
          id=doc.id, embedding=record.embedding, num_tokens=record.num_tokens,
          truncated=record.truncated, content_hash=doc.content_hash,
          num_chunks=record.num_chunks, metadata=doc.metadata))
  return out, 0


class _CarryForward(beam.DoFn):

  def __init__(self, fingerprint: str):
    super().__init__()
    self._fingerprint = fingerprint
    self._reused = Metrics.counter(_NAMESPACE, 'documents_reused')
    self._to_embed = Metrics.counter(_NAMESPACE, 'documents_to_embed')
    self._removed = Metrics.counter(_NAMESPACE, 'documents_removed')

  def process(self, keyed):
    _, grouped = keyed
    out, removed = carry_forward(grouped['docs'], grouped['previous'],
                                 self._fingerprint)
    if removed:
      self._removed.inc()
      yield beam.pvalue.TaggedOutput('removed', keyed[0])
    for element in out:
      if isinstance(element, EmbeddedDocument):
        self._reused.inc()
        yield beam.pvalue.TaggedOutput('reused', element)
      else:
        self._to_embed.inc()
        yield element


class CarryForward(beam.PTransform):
  """Documents -> (documents to embed, reused EmbeddedDocuments, ids of
  previous records gone from the corpus)."""

  def __init__(self, previous: Backend, fingerprint: str):
    super().__init__()
    self._previous = previous
    self._fingerprint = fingerprint

  def expand(self, documents):
    previous = (documents.pipeline
                | 'ReadPrevious' >> self._previous.read(PreviousRecord._fields)
                | 'KeyPrevious' >> beam.Map(
                    lambda r: (r['id'], PreviousRecord.from_record(r))))
    keyed = documents | 'KeyDocuments' >> beam.Map(lambda d: (d.id, d))
    results = ({'docs': keyed, 'previous': previous}
               | 'ById' >> beam.CoGroupByKey()
               | 'Match' >> beam.ParDo(_CarryForward(self._fingerprint))
               .with_outputs('reused', 'removed', main='to_embed'))
    return results.to_embed, results.reused, results.removed
