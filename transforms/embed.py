"""Embedding Documents with Beam's RunInference and a TF Hub model pair.

The ModelHandler loads the preprocessor and encoder once per worker process
(RunInference keeps the loaded model in a process-wide shared handle across
bundles); Beam's own TensorflowHubTextEmbeddings instead rebuilds its
preprocessor on every batch.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from transforms.elements import DeadLetter, Document, EmbeddedDocument

_NAMESPACE = 'embed'
Result = Union[EmbeddedDocument, DeadLetter]


class TFHubEmbeddingHandler(ModelHandler[Document, Result, Any]):
  """RunInference handler: Documents in, EmbeddedDocument | DeadLetter out."""

  def __init__(self, preprocessor: str, encoder: str, pooling: str = 'mean',
               normalize: bool = False, max_seq_length: int = 128,
               min_batch_size: int = 1, max_batch_size: int = 64,
               large_model: bool = False):
    super().__init__()
    self._preprocessor = preprocessor
    self._encoder = encoder
    self._pooling = pooling
    self._normalize = normalize
    self._max_seq_length = max_seq_length
    self._batch_kwargs = {'min_batch_size': min_batch_size,
                          'max_batch_size': max_batch_size}
    self._large_model = large_model
    self._documents = Metrics.counter(_NAMESPACE, 'documents_embedded')
    self._tokens = Metrics.counter(_NAMESPACE, 'tokens_embedded')
    self._truncated = Metrics.counter(_NAMESPACE, 'documents_truncated')
    self._failed = Metrics.counter(_NAMESPACE, 'documents_failed')
    self._batches = Metrics.counter(_NAMESPACE, 'batches')
    self._retried = Metrics.counter(_NAMESPACE, 'batches_retried_one_by_one')

  def load_model(self):
    # pylint: disable=import-outside-toplevel
    from tfmodels.embedder import EmbeddingModel
    return EmbeddingModel.load(
        self._preprocessor, self._encoder, pooling=self._pooling,
        normalize=self._normalize, max_seq_length=self._max_seq_length)

  def run_inference(self, batch: Sequence[Document], model,
                    inference_args: Optional[dict] = None) -> Iterable[Result]:
    self._batches.inc()
    # Pairs and single texts pack differently: embed each group on its own.
    results: dict[int, Result] = {}
    for is_pair in (False, True):
      group = [i for i, d in enumerate(batch) if (d.text_b is not None) == is_pair]
      if group:
        embedded = self._embed_group([batch[i] for i in group], model)
        results.update(zip(group, embedded))
    return [results[i] for i in range(len(batch))]

  def _embed_group(self, docs: Sequence[Document], model) -> list[Result]:
    try:
      return self._embed_all(docs, model)
    except Exception as exc:  # pylint: disable=broad-except
      if len(docs) == 1:
        return [self._dead(docs[0], exc)]
      # One bad document must not take the batch down: retry one by one,
      # dead-letter only those that still fail.
      logging.warning('Batch of %d failed; retrying documents one by one',
                      len(docs), exc_info=True)
      self._retried.inc()
      return [self._embed_group([d], model)[0] for d in docs]

  def _dead(self, doc: Document, exc: Exception) -> DeadLetter:
    self._failed.inc()
    raw = doc.text if doc.text_b is None else f'{doc.text}\t{doc.text_b}'
    return DeadLetter(source=doc.source, raw=raw,
                      error_type=f'embed_error:{type(exc).__name__}',
                      message=str(exc)[:1000], stage='embed')

  def _embed_all(self, docs: Sequence[Document], model) -> list[Result]:
    texts_b = ([d.text_b for d in docs] if docs[0].text_b is not None
               else None)
    out = model.embed([d.text for d in docs], texts_b)
    self._documents.inc(len(docs))
    self._tokens.inc(int(out.num_tokens.sum()))
    self._truncated.inc(int(out.truncated.sum()))
    return [
        EmbeddedDocument(id=d.id, embedding=out.embeddings[i],
                         num_tokens=int(out.num_tokens[i]),
                         truncated=bool(out.truncated[i]),
                         content_hash=d.content_hash)
        for i, d in enumerate(docs)
    ]

  def batch_elements_kwargs(self):
    return self._batch_kwargs

  def share_model_across_processes(self) -> bool:
    return self._large_model

  def get_metrics_namespace(self) -> str:
    return 'RunInference'


class EmbedDocuments(beam.PTransform):
  """Document -> EmbeddedDocument | DeadLetter."""

  def __init__(self, handler: TFHubEmbeddingHandler):
    super().__init__()
    self._handler = handler

  def expand(self, documents):
    return documents | 'RunInference' >> RunInference(self._handler)
