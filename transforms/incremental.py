"""Scheduled re-embedding: decide on light records, then carry unchanged
records forward without shuffling their vectors.

A nightly run must cost in proportion to what changed, not to the corpus,
so the work is split in three (docs/incremental.md says why and what was
measured):

1. Decide. The previous output's light fields (id, content hash, model
   fingerprint and the metadata fields, about 100 bytes a record) meet each
   document's (id, content hash, metadata digest) in one CoGroupByKey. Per
   id: reuse, embed or removed. No text and no vector is in this shuffle.
2. Select. The corpus is read a second time; documents whose id is in the
   small set of ids to embed (a side input) go to the encoder, the others
   stream past. No text is held or shuffled while the decision is made.
3. Carry. Outputs that are rewritten whole (files, and tables that are not
   the --previous one) ask for the unchanged records: the previous output
   is read a second time, record by record, and filtered by the small set
   of ids that are not carried (changed and removed). Their vectors never
   pass through a GroupByKey. Outputs that take changes (PostgreSQL and
   BigQuery tables that are also --previous) never ask, so unchanged
   vectors are not read at all.
"""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple, Optional, Sequence

import apache_beam as beam

from transforms import metrics
from transforms.backends import Backend
from transforms.dedup import resolve_duplicates
from transforms.elements import Document

# The previous record's fields the decision reads (with the metadata
# fields); the rest, the vector above all, is read only to carry records.
LIGHT_FIELDS = ('id', 'content_hash', 'model_fingerprint')

REUSE, EMBED, REMOVED = 'reuse', 'embed', 'removed'


class Seen(NamedTuple):
  """A previous record as the decision sees it."""
  content_hash: str
  model_fingerprint: str
  metadata: str  # metadata_digest of its metadata fields


class Current(NamedTuple):
  """A document as the decision sees it."""
  content_hash: str
  metadata: str


def metadata_digest(values: Sequence[Optional[str]]) -> str:
  """A short digest of the metadata values in the layout's order: a record
  whose metadata changed must be written again, and comparing digests keeps
  long values out of the shuffle."""
  if not values:
    return ''
  return hashlib.blake2b(json.dumps(list(values)).encode('ascii'),
                         digest_size=12).hexdigest()


def seen(record: dict, metadata: Sequence[str]) -> tuple[str, Seen]:
  return record['id'], Seen(
      record.get('content_hash') or '', record.get('model_fingerprint') or '',
      metadata_digest([record.get(n) for n in metadata]))


def current(doc: Document) -> tuple[str, Current]:
  return doc.id, Current(doc.content_hash,
                         metadata_digest([v for _, v in doc.metadata]))


def decide(docs: Sequence[Current], previous: Sequence[Seen],
           fingerprint: str) -> str:
  """What happens to one id: REUSE its one previous record (same content
  hash, metadata and model fingerprint), EMBED its documents, or REMOVED
  (previous records, no document). An id held more than once on either
  side is embedded again: which copy would match which is not worth a
  rule, and such ids are rare (see --on_duplicate_id)."""
  if not docs:
    return REMOVED
  if len(docs) == 1 and len(previous) == 1:
    doc, record = docs[0], previous[0]
    if (record.model_fingerprint == fingerprint and
        record.content_hash == doc.content_hash and
        record.metadata == doc.metadata):
      return REUSE
  return EMBED


class _Decide(beam.DoFn):
  """(id, {'docs': [Current], 'previous': [Seen]}) -> ids to embed; ids
  whose previous records are not carried ('dropped'); ids gone
  ('removed')."""

  def __init__(self, fingerprint: str):
    super().__init__()
    self._fingerprint = fingerprint
    self._reused = metrics.BEAM.counter(metrics.DOCUMENTS_REUSED)
    self._to_embed = metrics.BEAM.counter(metrics.DOCUMENTS_TO_EMBED)
    self._removed = metrics.BEAM.counter(metrics.DOCUMENTS_REMOVED)

  def process(self, keyed):
    doc_id, grouped = keyed
    docs, previous = list(grouped['docs']), list(grouped['previous'])
    verdict = decide(docs, previous, self._fingerprint)
    if verdict == REUSE:
      self._reused.inc()
      return
    if previous:
      yield beam.pvalue.TaggedOutput('dropped', doc_id)
    if verdict == REMOVED:
      self._removed.inc()
      yield beam.pvalue.TaggedOutput('removed', doc_id)
    else:
      self._to_embed.inc(len(docs))
      yield doc_id


class Changes(NamedTuple):
  """What CarryForward decided: documents for the encoder, the ids whose
  previous records are not carried (changed and removed), the ids gone."""
  to_embed: beam.PCollection
  dropped: beam.PCollection
  removed: beam.PCollection


def _ids(pcoll, label: str):
  """A small set of ids as a side input (a dict view: O(1) lookups)."""
  return beam.pvalue.AsDict(pcoll | label >> beam.Map(lambda i: (i, None)))


def _first(keyed) -> Document:
  """The document of an id that the first pass kept (see dedup)."""
  doc_id, docs = keyed
  return resolve_duplicates(doc_id, docs, 'first')[0]


class CarryForward(beam.PTransform):
  """Documents (the first pass, after duplicate ids were handled) -> Changes.

  Decides on light records, then selects the documents to embed from a
  second read of the corpus (`reread`: PBegin -> Results of Documents,
  uncounted), so that no document text is held or shuffled while the
  decision is made. With a duplicate-id policy other than keep, the
  selected documents of an id are reduced to the one the first pass kept
  (a GroupByKey of the selected documents only)."""

  def __init__(self, previous: Backend, fingerprint: str,
               reread: beam.PTransform, on_duplicate_id: str = 'keep'):
    super().__init__()
    self._previous = previous
    self._fingerprint = fingerprint
    self._reread = reread
    self._policy = on_duplicate_id

  def expand(self, documents):
    metadata = self._previous.record.metadata
    pipeline = documents.pipeline
    previous = (pipeline
                | 'ReadLight' >> self._previous.read(
                    LIGHT_FIELDS + tuple(metadata))
                | 'Light' >> beam.Map(seen, metadata))
    light = documents | 'LightDocuments' >> beam.Map(current)
    decided = ({'docs': light, 'previous': previous}
               | 'ById' >> beam.CoGroupByKey()
               | 'Decide' >> beam.ParDo(_Decide(self._fingerprint))
               .with_outputs('dropped', 'removed', main='embed'))
    to_embed = ((pipeline | 'ReadAgain' >> self._reread).main
                | 'Select' >> beam.Filter(
                    lambda doc, ids: doc.id in ids,
                    _ids(decided.embed, 'EmbedIds')))
    if self._policy != 'keep':
      to_embed = (to_embed
                  | 'KeyById' >> beam.Map(lambda d: (d.id, d))
                  | 'GroupById' >> beam.GroupByKey()
                  | 'FirstOfId' >> beam.Map(_first))
    return Changes(to_embed, decided.dropped, decided.removed)


class CarriedRecords(beam.PTransform):
  """PBegin -> the previous output's records that this run keeps, ready for
  `into`'s writer, streamed: every previous record whose id is not in
  `dropped`. A carried record is copied as it was written (its embedded_at
  says when its vector was computed); TFRecord into TFRecord is copied
  byte for byte."""

  def __init__(self, previous: Backend, dropped: beam.PCollection,
               into: Backend):
    super().__init__()
    self._previous = previous
    self._dropped = dropped
    self._into = into

  def expand(self, pbegin):
    return (pbegin
            | 'ReadPrevious' >> self._previous.read_carried(self._into)
            | 'Unchanged' >> beam.ParDo(
                _Unchanged(), _ids(self._dropped, 'DroppedIds')))


class _Unchanged(beam.DoFn):
  """(id, previous record) -> the record, unless its id was dropped
  (counted: the summary's records_carried, which must equal
  documents_reused for outputs rewritten whole)."""

  def __init__(self):
    super().__init__()
    self._carried = metrics.BEAM.counter(metrics.RECORDS_CARRIED)

  def process(self, keyed, dropped):
    doc_id, record = keyed
    if doc_id not in dropped:
      self._carried.inc()
      yield record
