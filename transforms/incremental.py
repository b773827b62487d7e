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

from transforms import bigquery
from transforms.elements import Document, EmbeddedDocument

_NAMESPACE = 'incremental'


class PreviousRecord(NamedTuple):
  id: str
  content_hash: str
  fingerprint: str
  embedding: np.ndarray
  num_tokens: int
  truncated: bool
  num_chunks: int


def previous_from_example(raw: bytes) -> PreviousRecord:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  f = tf.train.Example.FromString(raw).features.feature

  def text(name):
    values = f[name].bytes_list.value if name in f else []
    return values[0].decode() if values else ''

  def integer(name, default=0):
    values = f[name].int64_list.value if name in f else []
    return int(values[0]) if values else default

  return PreviousRecord(
      id=text('id'), content_hash=text('content_hash'),
      fingerprint=text('model_fingerprint'),
      embedding=np.array(f['embedding'].float_list.value, np.float32),
      num_tokens=integer('num_tokens'), truncated=bool(integer('truncated')),
      num_chunks=integer('num_chunks', 1))


def previous_from_row(row: dict) -> PreviousRecord:
  return PreviousRecord(
      id=row['id'], content_hash=row.get('content_hash') or '',
      fingerprint=row.get('model_fingerprint') or '',
      embedding=np.array(row['embedding'], np.float32),
      num_tokens=int(row.get('num_tokens') or 0),
      truncated=bool(row.get('truncated')),
      num_chunks=int(row.get('num_chunks') or 1))


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
    if record.fingerprint == fingerprint:
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
    for element in out:
      if isinstance(element, EmbeddedDocument):
        self._reused.inc()
        yield beam.pvalue.TaggedOutput('reused', element)
      else:
        self._to_embed.inc()
        yield element


class ReadPrevious(beam.PTransform):
  """The previous run's output: TFRecord prefix or bq:// table."""

  def __init__(self, previous: str):
    super().__init__()
    self._previous = previous

  def expand(self, pbegin):
    if bigquery.is_table(self._previous):
      return (pbegin
              | 'ReadTable' >> beam.io.ReadFromBigQuery(
                  table=bigquery.table_spec(self._previous),
                  method=beam.io.ReadFromBigQuery.Method.DIRECT_READ,
                  selected_fields=['id', 'content_hash', 'model_fingerprint',
                                   'embedding', 'num_tokens', 'truncated',
                                   'num_chunks'])
              | 'Parse' >> beam.Map(previous_from_row))
    return (pbegin
            | 'ReadTFRecord' >> beam.io.ReadFromTFRecord(
                f'{self._previous}-*.tfrecord')
            | 'Parse' >> beam.Map(previous_from_example))


class CarryForward(beam.PTransform):
  """Documents -> (documents to embed, reused EmbeddedDocuments)."""

  def __init__(self, previous: str, fingerprint: str):
    super().__init__()
    self._previous = previous
    self._fingerprint = fingerprint

  def expand(self, documents):
    previous = (documents.pipeline
                | 'ReadPrevious' >> ReadPrevious(self._previous)
                | 'KeyPrevious' >> beam.Map(lambda r: (r.id, r)))
    keyed = documents | 'KeyDocuments' >> beam.Map(lambda d: (d.id, d))
    results = ({'docs': keyed, 'previous': previous}
               | 'ById' >> beam.CoGroupByKey()
               | 'Match' >> beam.ParDo(_CarryForward(self._fingerprint))
               .with_outputs('reused', main='to_embed'))
    return results.to_embed, results.reused
