"""Embedding Documents with Beam's RunInference and a TF Hub model pair.

Four steps: tokenize (the preprocessor's `tokenize`, batched), regroup the
token rows into length buckets under a token budget (transforms/batching.py),
encode each bucket batch packed at its own length (`bert_pack_inputs` +
encoder), and combine the chunks of long documents. The model pair is loaded
once per worker process and shared by both RunInference steps; Beam's own
TensorflowHubTextEmbeddings instead rebuilds its preprocessor on every batch
and pads everything to one length.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Iterable, Optional, Sequence, Union

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from transforms import batching
from transforms.elements import (ChunkEmbedding, DeadLetter, Document,
                                 EmbeddedDocument, EncoderBatch, EncoderRow)

_NAMESPACE = 'embed'
Result = Union[EmbeddedDocument, ChunkEmbedding, DeadLetter]


@functools.lru_cache(maxsize=4)
def _load_model(preprocessor: str, encoder: str, require_gpu: bool = False,
                **kwargs):
  """One model per worker process for both RunInference steps."""
  # pylint: disable=import-outside-toplevel
  from tfmodels.devices import configure_gpus
  from tfmodels.embedder import EmbeddingModel
  configure_gpus(require_gpu)
  return EmbeddingModel.load(preprocessor, encoder, **kwargs)


class _Handler(ModelHandler):
  """What both steps share: the model, its loading and sharing."""

  def __init__(self, model_config: dict, large_model: bool):
    super().__init__()
    self._model_config = model_config
    self._large_model = large_model

  def load_model(self):
    return _load_model(**self._model_config)

  def share_model_across_processes(self) -> bool:
    return self._large_model

  def get_metrics_namespace(self) -> str:
    return 'RunInference'


def _dead(doc: Document, exc_type: str, message: str) -> DeadLetter:
  raw = doc.text if doc.text_b is None else f'{doc.text}\t{doc.text_b}'
  return DeadLetter(source=doc.source, raw=raw, error_type=exc_type,
                    message=message[:1000], stage='embed')


def _error(exc: Exception) -> tuple[str, str]:
  return f'embed_error:{type(exc).__name__}', str(exc)


def _retry_one_by_one(items: Sequence, run, fail, retried_counter):
  """run(items) -> results; if the whole call fails, each item alone, and
  fail(item, exc) for those that still fail: one bad document must not take
  its batch down."""
  try:
    return run(items)
  except Exception as exc:  # pylint: disable=broad-except
    if len(items) == 1:
      return [fail(items[0], exc)]
    logging.warning('Batch of %d failed; retrying one by one', len(items),
                    exc_info=True)
    retried_counter.inc()
    return [_retry_one_by_one([item], run, fail, retried_counter)[0]
            for item in items]


class TokenizeHandler(_Handler):
  """Documents -> their encoder rows (list of EncoderRow) or a DeadLetter."""

  def __init__(self, model_config: dict, large_model: bool,
               long_documents: str, chunk_stride: Optional[int],
               batch_size: int):
    super().__init__(model_config, large_model)
    self._max_seq_length = model_config['max_seq_length']
    self._long_documents = long_documents
    self._chunk_stride = chunk_stride
    self._batch_size = batch_size
    self._failed = Metrics.counter(_NAMESPACE, 'documents_failed')
    self._retried = Metrics.counter(_NAMESPACE, 'batches_retried_one_by_one')
    self._chunked = Metrics.counter(_NAMESPACE, 'documents_chunked')

  def batch_elements_kwargs(self):
    return {'min_batch_size': 1, 'max_batch_size': self._batch_size}

  def run_inference(self, batch: Sequence[Document], model,
                    inference_args: Optional[dict] = None) -> list:
    return _retry_one_by_one(
        list(batch), functools.partial(self._rows, model=model),
        self._fail, self._retried)

  def _fail(self, doc: Document, exc: Exception) -> DeadLetter:
    self._failed.inc()
    return _dead(doc, *_error(exc))

  def _rows(self, docs: Sequence[Document], model) -> list:
    ids = model.tokenize([d.text for d in docs])
    ids_b: list = [None] * len(docs)
    pairs = [i for i, d in enumerate(docs) if d.text_b is not None]
    if pairs:
      for i, b in zip(pairs, model.tokenize([docs[i].text_b for i in pairs])):
        ids_b[i] = b
    window = self._max_seq_length - model.num_special(1)
    stride = self._chunk_stride or max(1, window // 2)
    out = []
    for doc, a, b in zip(docs, ids, ids_b):
      rows = batching.rows_for_document(
          doc, a, b, model.num_special(1 if b is None else 2),
          self._max_seq_length, self._long_documents, stride)
      if len(rows) > 1:
        self._chunked.inc()
      out.append(rows)
    return out


class EncodeHandler(_Handler):
  """EncoderBatch -> list of EmbeddedDocument | ChunkEmbedding | DeadLetter
  (one RunInference element per planned batch)."""

  def __init__(self, model_config: dict, large_model: bool):
    super().__init__(model_config, large_model)
    counter = functools.partial(Metrics.counter, _NAMESPACE)
    self._documents = counter('documents_embedded')
    self._tokens = counter('tokens_embedded')
    self._computed = counter('tokens_computed')
    self._truncated = counter('documents_truncated')
    self._failed = counter('documents_failed')
    self._batches = counter('batches')
    self._retried = counter('batches_retried_one_by_one')
    self._encoder_ms = counter('encoder_milliseconds')

  def batch_elements_kwargs(self):
    # Batches are planned upstream; RunInference must not merge them.
    return {'min_batch_size': 1, 'max_batch_size': 1}

  def run_inference(self, batch: Sequence[EncoderBatch], model,
                    inference_args: Optional[dict] = None) -> list:
    return [self._encode_batch(b, model) for b in batch]

  def _encode_batch(self, batch: EncoderBatch, model) -> list[Result]:
    Metrics.counter(_NAMESPACE, f'batches_len_{batch.seq_length:03d}').inc()
    self._batches.inc()
    # Pairs and single texts pack differently: each group on its own.
    results: dict[int, Result] = {}
    for is_pair in (False, True):
      group = [i for i, r in enumerate(batch.rows)
               if (r.ids_b is not None) == is_pair]
      if group:
        encoded = _retry_one_by_one(
            [batch.rows[i] for i in group],
            functools.partial(self._encode_rows, model=model,
                              seq_length=batch.seq_length,
                              full_rows=batch.full_rows),
            self._fail, self._retried)
        results.update(zip(group, encoded))
    return [results[i] for i in range(len(batch.rows))]

  def _encode_rows(self, rows: Sequence[EncoderRow], model, seq_length: int,
                   full_rows: int) -> list[Result]:
    segments = [[r.ids for r in rows]]
    if rows[0].ids_b is not None:
      segments.append([r.ids_b for r in rows])
    start = time.perf_counter()
    rows_to = batching.padded_batch_rows(len(rows), full_rows)
    embeddings, num_tokens = model.encode(segments, seq_length, rows_to)
    self._encoder_ms.inc(int(1000 * (time.perf_counter() - start)))
    self._computed.inc(rows_to * seq_length)
    self._tokens.inc(int(num_tokens.sum()))
    out = []
    for row, embedding, tokens in zip(rows, embeddings, num_tokens):
      if row.num_chunks > 1:
        out.append(ChunkEmbedding(
            key=row.key, chunk=row.chunk, num_chunks=row.num_chunks,
            doc=row.doc if row.chunk == 0 else None, embedding=embedding,
            num_tokens=int(tokens)))
        continue
      self._documents.inc()
      self._truncated.inc(int(row.truncated))
      out.append(EmbeddedDocument(
          id=row.doc.id, embedding=model.finish(embedding[np.newaxis])[0],
          num_tokens=int(tokens), truncated=row.truncated,
          content_hash=row.doc.content_hash, metadata=row.doc.metadata))
    return out

  def _fail(self, row: EncoderRow, exc: Exception) -> Result:
    if row.num_chunks > 1:
      # One dead letter per document, decided when its chunks meet.
      return ChunkEmbedding(
          key=row.key, chunk=row.chunk, num_chunks=row.num_chunks,
          doc=row.doc if row.chunk == 0 else None, embedding=None,
          num_tokens=0, error=_error(exc))
    self._failed.inc()
    return _dead(row.doc, *_error(exc))


def combine_chunks(chunks: Iterable[ChunkEmbedding], finish,
                   counters: Optional[dict] = None
                   ) -> Union[EmbeddedDocument, DeadLetter]:
  """One document from its chunks: the chunks' pooled embeddings averaged,
  weighted by their token counts (for mean pooling, the mean over all the
  chunks' tokens), then finished (normalised) like any embedding."""
  chunks = sorted(chunks, key=lambda c: c.chunk)
  doc = chunks[0].doc
  if len(chunks) != chunks[0].num_chunks or doc is None:
    raise RuntimeError(f'chunks of {chunks[0].key} went missing')
  failed = [c for c in chunks if c.error]
  if failed:
    if counters:
      counters['failed'].inc()
    error_type, message = failed[0].error
    return _dead(doc, error_type, f'chunk {failed[0].chunk} of '
                 f'{len(chunks)}: {message}')
  weights = np.array([c.num_tokens for c in chunks], np.float64)
  stacked = np.stack([c.embedding for c in chunks]).astype(np.float64)
  embedding = (weights[:, np.newaxis] * stacked).sum(0) / weights.sum()
  if counters:
    counters['documents'].inc()
  return EmbeddedDocument(
      id=doc.id, embedding=finish(embedding[np.newaxis].astype(np.float32))[0],
      num_tokens=int(weights.sum()), truncated=False,
      content_hash=doc.content_hash, num_chunks=len(chunks),
      metadata=doc.metadata)


class _CombineChunks(beam.DoFn):
  """Needs the model only for its finishing step (normalisation)."""

  def __init__(self, normalize: bool):
    super().__init__()
    self._normalize = normalize
    self._counters = {
        'documents': Metrics.counter(_NAMESPACE, 'documents_embedded'),
        'failed': Metrics.counter(_NAMESPACE, 'documents_failed')}

  def process(self, keyed):
    # pylint: disable=import-outside-toplevel
    from tfmodels.embedder import l2_normalize
    _, chunks = keyed
    finish = l2_normalize if self._normalize else (lambda x: x)
    yield combine_chunks(chunks, finish, self._counters)


class EmbedDocuments(beam.PTransform):
  """Document -> EmbeddedDocument | DeadLetter."""

  def __init__(self, preprocessor: str, encoder: str, pooling: str = 'mean',
               normalize: bool = False, max_seq_length: int = 128,
               max_batch_tokens: int = 8192, batch_size: int = 256,
               sort_window: int = 4096, long_documents: str = 'truncate',
               chunk_stride: Optional[int] = None, large_model: bool = False,
               precision: str = 'fp32', jit_compile: bool = False,
               require_gpu: bool = False):
    super().__init__()
    if long_documents not in batching.LONG_DOCUMENTS:
      raise ValueError(f'long_documents must be one of '
                       f'{batching.LONG_DOCUMENTS}, got {long_documents!r}')
    model_config = dict(preprocessor=preprocessor, encoder=encoder,
                        pooling=pooling, normalize=normalize,
                        max_seq_length=max_seq_length, precision=precision,
                        jit_compile=jit_compile, require_gpu=require_gpu)
    self._tokenize = TokenizeHandler(model_config, large_model,
                                     long_documents, chunk_stride, batch_size)
    self._encode = EncodeHandler(model_config, large_model)
    self._batcher = batching.BucketBatches(max_seq_length, max_batch_tokens,
                                           batch_size, sort_window)
    self._normalize = normalize
    self._long_documents = long_documents

  def expand(self, documents):
    tokenized = (documents
                 | 'Tokenize' >> RunInference(self._tokenize)
                 | 'Rows' >> beam.FlatMap(
                     lambda r: r if isinstance(r, list) else [r]))
    rows, tokenize_failed = tokenized | 'SplitTokenized' >> beam.Partition(
        lambda e, _: 1 if isinstance(e, DeadLetter) else 0, 2)
    encoded = (rows
               | 'BucketBatches' >> beam.ParDo(self._batcher)
               | 'Encode' >> RunInference(self._encode)
               | 'Results' >> beam.FlatMap(lambda results: results))
    if self._long_documents != 'chunk':
      # No GroupByKey in the default path: the whole graph fuses into one
      # stage and streams, so memory stays flat as the corpus grows (a
      # Flatten behind a GroupByKey makes the local runner buffer every
      # embedding until the group is done).
      return ((encoded, tokenize_failed)
              | 'AllResults' >> beam.Flatten())
    whole, chunks = encoded | 'SplitChunks' >> beam.Partition(
        lambda e, _: 1 if isinstance(e, ChunkEmbedding) else 0, 2)
    combined = (chunks
                | 'KeyChunks' >> beam.Map(lambda c: (c.key, c))
                | 'GroupChunks' >> beam.GroupByKey()
                | 'CombineChunks' >> beam.ParDo(
                    _CombineChunks(self._normalize)))
    return ((whole, combined, tokenize_failed)
            | 'AllResults' >> beam.Flatten())
