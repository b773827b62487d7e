"""The job's embedding step in this process, without a pipeline.

A query must get the vector the job would give the same text, or search
ranks badly without a word. So this runs the job's own parts, in the job's
order: TokenizeHandler (tokens, truncation, chunk windows), the batcher of
the job's layout (length buckets or packed rows), EncodeHandler (pooling,
normalisation, precision) and combine_chunks (long documents) — not a
second implementation of them. Models load once, when it is made.
"""

from __future__ import annotations

from typing import Sequence, Union

from transforms import batching
from transforms import metrics
from transforms.elements import ChunkEmbedding
from transforms.elements import DeadLetter
from transforms.elements import Document
from transforms.elements import EmbeddedDocument
from transforms.embed import EncodeHandler
from transforms.embed import TokenizeHandler
from transforms.embed import combine_chunks
from transforms.spec import EmbeddingSpec

Embedded = Union[EmbeddedDocument, DeadLetter]


class DirectEmbedder:
  """Documents -> EmbeddedDocument or DeadLetter each, in their order."""

  def __init__(self, spec: EmbeddingSpec, preprocessor: str, encoder: str, *,
               packing: bool = False, max_batch_tokens: int = 8192,
               batch_size: int = 256):
    self.spec = spec
    self.tally = metrics.Tally()
    self._tokenize = TokenizeHandler(spec, preprocessor,
                                     batch_size=batch_size)
    # No cache of recent texts: every call embeds what it is given.
    self._encode = EncodeHandler(
        spec, preprocessor, encoder, max_batch_tokens=max_batch_tokens,
        batch_size=batch_size, packing=packing, sink=self.tally,
        same_text_rows=0)
    self._limits = (spec.max_seq_length, batching.planning_budget(
        max_batch_tokens, batch_size, spec.max_seq_length), batch_size)
    self._packing = packing
    self._tokenizer = self._tokenize.load_model()
    self._model = self._encode.load_model()

  def embed(self, documents: Sequence[Document]) -> list[Embedded]:
    # Each document known by its place: its id and source say which.
    placed = [d._replace(id=str(i), source=str(i))
              for i, d in enumerate(documents)]
    by_place: dict[str, Embedded] = {}
    rows = []
    for doc, result in zip(placed, self._tokenize.run_inference(
        placed, self._tokenizer)):
      if isinstance(result, DeadLetter):
        by_place[doc.source] = result
      else:
        rows.extend(result)
    # A fresh batcher per call: it remembers the texts it has sent.
    batcher = batching.BATCHERS[self._packing](*self._limits, window=1)
    chunks: dict[str, list[ChunkEmbedding]] = {}
    for batch in batcher.plan(rows):
      for result in self._encode.run_inference(batch, self._model):
        if isinstance(result, ChunkEmbedding):
          chunks.setdefault(result.key, []).append(result)
        else:
          by_place[_place(result)] = result
    for pieces in chunks.values():
      combined = combine_chunks(pieces, self._encode.finish, self.tally)
      by_place[_place(combined)] = combined
    return [_restored(by_place[str(i)], doc)
            for i, doc in enumerate(documents)]


def _place(result: Embedded) -> str:
  return result.id if isinstance(result, EmbeddedDocument) else (
      result.source)


def _restored(result: Embedded, doc: Document) -> Embedded:
  """A result under its document's own id or source again."""
  if isinstance(result, EmbeddedDocument):
    return result._replace(id=doc.id)
  return result._replace(source=doc.source)
