"""Embedding Documents with Beam's RunInference and a TF Hub model pair.

Four steps: tokenize (the preprocessor's `tokenize`, batched), regroup the
token rows under a token budget (transforms/batching.py): several documents
packed into each encoder row where the encoder has packed calls, else length
buckets; encode each batch (`bert_pack_inputs` + the encoder, or its packed
call), and combine the chunks of long documents. Tokenizing needs only the
preprocessor, which is small and CPU-bound: every worker process loads its
own. The encoder is loaded once per worker process, or with `large_model`
once per worker, shared by its SDK processes under one model identifier.
Beam's own TensorflowHubTextEmbeddings instead rebuilds its preprocessor on
every batch and pads everything to one length.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading
import time
from typing import Iterable, Optional, Sequence, Union

import apache_beam as beam
import numpy as np
from transforms.inference import ModelHandler, RunInference

from tfmodels.budget import is_out_of_memory, token_budget
from tfmodels.embedder import l2_normalize
from transforms import batching
from transforms import metrics
from transforms import model_files
from transforms import same_text
from transforms.elements import (DEAD_LETTER, ChunkEmbedding, DeadLetter,
                                 Document, EmbeddedDocument, EncoderBatch,
                                 EncoderRow, Results, route)
from transforms.spec import EmbeddingSpec

Result = Union[EmbeddedDocument, ChunkEmbedding, DeadLetter]


@functools.lru_cache(maxsize=4)
def _load_tokenizer(preprocessor: str):
  """One tokenizer per worker process, whatever the bundles."""
  from tfmodels.embedder import Tokenizer
  tokenizer = Tokenizer.load(model_files.loadable(preprocessor))
  logging.info('Tokenizer %s loaded in process %d', preprocessor, os.getpid())
  return tokenizer


@functools.lru_cache(maxsize=4)
def _load_encoder(preprocessor: str, encoder: str, spec: EmbeddingSpec,
                  jit_compile: bool, require_gpu: bool, packing: bool):
  """The encoder (with the preprocessor, whose bert_pack_inputs packs its
  inputs), configured from the spec."""
  from tfmodels.devices import configure_gpus
  from tfmodels.embedder import EmbeddingModel
  configure_gpus(require_gpu)
  model = EmbeddingModel.load(
      model_files.loadable(preprocessor), model_files.loadable(encoder),
      jit_compile=jit_compile, packing=packing, **spec.model_kwargs())
  logging.info('Encoder %s loaded in process %d', encoder, os.getpid())
  return model


def _dead(doc: Document, exc_type: str, message: str) -> DeadLetter:
  raw = doc.text if doc.text_b is None else f'{doc.text}\t{doc.text_b}'
  return DeadLetter(source=doc.source, raw=raw, error_type=exc_type,
                    message=message[:1000], stage='embed')


def _error(exc: Exception) -> tuple[str, str]:
  return f'embed_error:{type(exc).__name__}', str(exc)


def _retry_one_by_one(items: Sequence, run, fail, retried_counter,
                      passes=lambda exc: False):
  """run(items) -> results; if the whole call fails, each item alone, and
  fail(item, exc) for those that still fail: one bad document must not take
  its batch down. Errors that passes(exc) accepts are raised instead (out of
  memory: retrying one by one would be the slowest way to recover)."""
  try:
    return run(items)
  except Exception as exc:
    if passes(exc):
      raise
    if len(items) == 1:
      return [fail(items[0], exc)]
    logging.warning('Batch of %d failed; retrying one by one', len(items),
                    exc_info=True)
    retried_counter.inc()
    return [_retry_one_by_one([item], run, fail, retried_counter,
                              passes)[0]
            for item in items]


_BUDGETS: dict = {}
_BUDGETS_LOCK = threading.Lock()


def _process_budgets(key: str, make) -> batching.RowBudgets:
  """One RowBudgets per process and model: what one batch learns about the
  device's memory holds for every later batch of the worker."""
  with _BUDGETS_LOCK:
    if key not in _BUDGETS:
      _BUDGETS[key] = make()
    return _BUDGETS[key]


class Bucketed:
  """Each EncoderRow alone in an encoder row, padded to its bucket's
  length (batching.BucketBatches): for any encoder with the TF Hub BERT
  interface. Single texts and pairs go in separate calls, because
  bert_pack_inputs packs one kind at a time."""
  packing = False

  @staticmethod
  def groups(units: Sequence[tuple]) -> list[list[tuple]]:
    return [g for g in ([u for u in units if u[0].ids_b is None],
                        [u for u in units if u[0].ids_b is not None]) if g]

  @staticmethod
  def batch_of(batch: EncoderBatch, rows: Sequence[EncoderRow],
               max_seq_length: int) -> EncoderBatch:
    """A batch of these rows (transforms/same_text.py: what is left to
    compute of a batch and its copies), padded to the batch's length or
    the bucket of the longest row."""
    boundaries = batching.bucket_boundaries(max_seq_length)
    length = max(batching.bucket_length(r.length, boundaries) for r in rows)
    return dataclasses.replace(batch, rows=tuple(rows), copies=(),
                               seq_length=max(length, batch.seq_length))

  @staticmethod
  def encode(model, units: Sequence[tuple], seq_length: int,
             rows_to: int) -> tuple[np.ndarray, np.ndarray]:
    segments = [[u[0].ids for u in units]]
    if units[0][0].ids_b is not None:
      segments.append([u[0].ids_b for u in units])
    return model.encode(segments, seq_length, rows_to)


class Packed:
  """Documents packed several to an encoder row (batching.PackedBatches),
  through the encoder's packed call: each gets the vector it gets alone,
  with almost no padding computed. Singles and pairs share rows."""
  packing = True

  @staticmethod
  def groups(units: Sequence[tuple]) -> list[list[tuple]]:
    return [list(units)]

  @staticmethod
  def batch_of(batch: EncoderBatch, rows: Sequence[EncoderRow],
               max_seq_length: int) -> EncoderBatch:
    """A batch of these rows (transforms/same_text.py: what is left to
    compute of a batch and its copies), packed again at the batch's row
    length, or the shortest one that holds the longest row."""
    length = max(batch.seq_length, batching.packed_row_length(
        max(r.length for r in rows), max_seq_length))
    packed = batching.pack_rows([r.length for r in rows], [length])
    return dataclasses.replace(
        batch, rows=tuple(rows[i] for _, unit in packed for i in unit),
        copies=(), seq_length=length,
        row_of=tuple(u for u, (_, unit) in enumerate(packed) for _ in unit))

  @staticmethod
  def encode(model, units: Sequence[tuple], seq_length: int,
             rows_to: int) -> tuple[np.ndarray, np.ndarray]:
    return model.encode_rows([[(r.ids, r.ids_b) for r in u] for u in units],
                             seq_length, rows_to)


# --packing, once it is decided (on or off): how rows reach the encoder.
LAYOUTS = {False: Bucketed, True: Packed}


class TokenizeHandler(ModelHandler):
  """Documents -> their encoder rows (list of EncoderRow) or a DeadLetter.

  Loads only the preprocessor, in every process, and never shares it across
  processes: sending every text to one process would serialise the work."""

  def __init__(self, spec: EmbeddingSpec, preprocessor: str, *,
               batch_size: int):
    super().__init__(min_batch_size=1, max_batch_size=batch_size)
    self._preprocessor = preprocessor
    self._max_seq_length = spec.max_seq_length
    self._long_documents = spec.long_documents
    self._chunk_stride = spec.chunk_stride
    self._failed = metrics.BEAM.counter(metrics.DOCUMENTS_FAILED)
    self._retried = metrics.BEAM.counter(metrics.BATCHES_RETRIED)
    self._chunked = metrics.BEAM.counter(metrics.DOCUMENTS_CHUNKED)

  def load_model(self):
    return _load_tokenizer(self._preprocessor)

  def get_metrics_namespace(self) -> str:
    return 'RunInference'

  def run_inference(self, batch: Sequence[Document], model,
                    inference_args: Optional[dict] = None) -> list:
    return _retry_one_by_one(
        list(batch), functools.partial(self._rows, model=model),
        self._fail, self._retried)

  def _fail(self, doc: Document, exc: Exception) -> DeadLetter:
    self._failed.inc()
    return _dead(doc, *_error(exc))

  def _ids(self, docs: Sequence[Document], model) -> list:
    """The token ids of each document's text. A single text that is
    truncated needs only its first max_seq_length tokens (exactly those of
    the whole text; more than fit, so that `truncated` stays right), so a
    long one is tokenized only as far as they reach. Pairs need every
    token of both parts: how longest-first truncation splits the room
    between them depends on which part is longer."""
    if self._long_documents == 'chunk':
      return model.tokenize([d.text for d in docs])
    head = self._max_seq_length
    ids: list = [None] * len(docs)
    for pairs in (False, True):
      which = [i for i, d in enumerate(docs)
               if (d.text_b is not None) == pairs]
      if which:
        for i, a in zip(which, model.tokenize(
            [docs[i].text for i in which], None if pairs else head)):
          ids[i] = a
    return ids

  def _rows(self, docs: Sequence[Document], model) -> list:
    ids = self._ids(docs, model)
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


class EncodeHandler(ModelHandler):
  """EncoderBatch -> EmbeddedDocument | ChunkEmbedding | DeadLetter per row.

  Batches are planned upstream (BucketBatches or PackedBatches), so
  RunInference takes this handler `.with_no_batching()`: one element is one
  batch. How rows reach the encoder is the layout (Bucketed or Packed),
  chosen once from `packing`; everything else is shared. The handler cuts a
  batch into encoder calls of whole encoder rows (a packed row keeps its
  documents together) that fit the token budget in force for its length:
  max_batch_tokens, or with 'auto' an estimate from the device and the model
  (tfmodels/budget.py). When the device runs out of memory anyway, the call
  is split in halves and the bucket's budget lowered for the rest of the
  process's life; other errors are isolated per document. With jit_compile
  every call of a bucket has the same number of rows (padding rows fill it),
  because XLA compiles once per input shape. Rows of identical texts are
  computed once (transforms/same_text.py): a batch's copies take their
  results from its rows or from a bounded cache of recent results (at most
  same_text_rows). What it counts goes to `sink`:
  Beam's metrics, or a metrics.Tally where the handler runs outside a
  pipeline (bench/gpu.py).
  """

  def __init__(self, spec: EmbeddingSpec, preprocessor: str, encoder: str, *,
               max_batch_tokens: Union[int, str] = 8192,
               batch_size: int = 256, large_model: bool = False,
               jit_compile: bool = False, require_gpu: bool = False,
               accelerator: Optional[str] = None, packing: bool = False,
               sink: metrics.Sink = metrics.BEAM,
               same_text_rows: int = same_text.CACHE_ROWS):
    super().__init__(large_model=large_model)
    self._layout = LAYOUTS[packing]
    self._max_seq_length = spec.max_seq_length
    self._load_args = (preprocessor, encoder, spec, jit_compile, require_gpu,
                       packing)
    self._max_batch_tokens = max_batch_tokens
    self._batch_size = batch_size
    self._precision = spec.precision
    self._jit_compile = jit_compile
    self._accelerator = accelerator
    self._finish = l2_normalize if spec.normalize else (lambda x: x)
    self._sink = sink
    self._documents = sink.counter(metrics.DOCUMENTS_EMBEDDED)
    self._tokens = sink.counter(metrics.TOKENS_EMBEDDED)
    self._computed = sink.counter(metrics.TOKENS_COMPUTED)
    self._truncated = sink.counter(metrics.DOCUMENTS_TRUNCATED)
    self._failed = sink.counter(metrics.DOCUMENTS_FAILED)
    self._batches = sink.counter(metrics.BATCHES)
    self._retried = sink.counter(metrics.BATCHES_RETRIED)
    self._split_oom = sink.counter(metrics.BATCHES_SPLIT_OOM)
    self._encoder_ms = sink.counter(metrics.ENCODER_MILLISECONDS)
    self._same_text = sink.counter(metrics.DOCUMENTS_SAME_TEXT)
    # Recent results by content, for identical texts (transforms/
    # same_text.py); bounded, per handler copy. A benchmark that encodes
    # the same batches twice keeps none (same_text_rows=0).
    self._recent = same_text.Recent(same_text_rows)
    self._first_batch_done = False
    # Which process-wide budgets this handler shares (see _process_budgets).
    self._budgets_key = json.dumps([self.model_identifier(),
                                    max_batch_tokens, batch_size])

  @property
  def finish(self):
    """What every embedding goes through last (normalisation, if the spec
    asks): chunks combined outside the handler get it too."""
    return self._finish

  def model_identifier(self) -> str:
    """The same in every process for the same model and settings, so that
    `large_model` serves one shared copy per worker."""
    key = json.dumps([self._load_args[0], self._load_args[1],
                      self._load_args[2].fingerprint(), *self._load_args[3:]])
    return 'text-embed-encoder-' + hashlib.sha256(key.encode()).hexdigest()[:16]

  def load_model(self):
    return _load_encoder(*self._load_args)

  def get_resource_hints(self) -> dict:
    # Dataflow right fitting: only this step asks for GPU workers.
    return {'accelerator': self._accelerator} if self._accelerator else {}

  def get_metrics_namespace(self) -> str:
    return 'RunInference'

  def get_num_bytes(self, batch: EncoderBatch) -> int:
    return sum(r.ids.nbytes + (0 if r.ids_b is None else r.ids_b.nbytes)
               for r in batch.rows)

  def run_inference(self, batch: EncoderBatch, model,
                    inference_args: Optional[dict] = None) -> list[Result]:
    if not self._first_batch_done:
      # Once per handler copy (a DoFn instance of a run): the summary takes
      # the earliest.
      self._first_batch_done = True
      self._sink.update(metrics.FIRST_BATCH, int(time.time() * 1000))
    return self._encode_batch(batch, model, self._budgets(model))

  def _budgets(self, model) -> batching.RowBudgets:
    return _process_budgets(self._budgets_key,
                            functools.partial(self._new_budgets, model))

  def _new_budgets(self, model) -> batching.RowBudgets:
    if self._max_batch_tokens != 'auto':
      return batching.RowBudgets(lambda length: batching.batch_limit(
          length, self._max_batch_tokens, self._batch_size) * length)
    # Asked of the model, so that a shared copy answers for the process
    # (and device) that holds it.
    device = model.device()
    # The shape matters only on a GPU; on a CPU, probing it would cost an
    # encoder call (0.3 s profiled) for a fixed budget.
    shape = model.shape() if device.is_gpu else None
    logging.info('max_batch_tokens auto: %s on %s', shape, device)
    return batching.RowBudgets(lambda length: token_budget(
        shape=shape, device=device, precision=self._precision,
        seq_length=length, max_rows=self._batch_size,
        packed=self._layout.packing))

  def _encode_batch(self, batch: EncoderBatch, model,
                    budgets: batching.RowBudgets) -> list[Result]:
    """Every row's and every copy's result (transforms/same_text.py): the
    rows that need the encoder go to it; the copies take their results
    from those, or from the cache of recent ones."""
    same = same_text.plan(batch.rows + batch.copies, self._recent)
    by_row: dict[int, Result] = {}
    if same.compute:
      if list(map(id, same.compute)) != list(map(id, batch.rows)):
        # Some rows cached, or copies to compute: planned again.
        batch = self._layout.batch_of(batch, same.compute,
                                      self._max_seq_length)
      self._sink.inc(metrics.BATCHES_PER_BUCKET.member(batch.seq_length))
      by_row = dict(zip(map(id, batch.rows),
                        self._encode_rows(batch, model, budgets)))
    return same.results([by_row[id(row)] for row in same.compute],
                        self._recent, self._copied)

  def _copied(self, result: Result, row: EncoderRow) -> None:
    """Counts a row given another row's result (same_text)."""
    if row.chunk == 0:
      self._same_text.inc()
    if isinstance(result, DeadLetter):
      self._failed.inc()
    elif isinstance(result, EmbeddedDocument):
      self._documents.inc()
      self._truncated.inc(int(row.truncated))

  def _encode_rows(self, batch: EncoderBatch, model,
                   budgets: batching.RowBudgets) -> list[Result]:
    """The encoder's results for every row of the batch, in its order."""
    results: dict[int, Result] = {}
    for group in self._layout.groups(batch.units()):
      encoded = self._encode_fitting(group, model, batch.seq_length, budgets)
      rows = [row for unit in group for row in unit]
      results.update(zip(map(id, rows), encoded))
    return [results[id(row)] for row in batch.rows]

  def _encode_fitting(self, units: Sequence[tuple], model, seq_length: int,
                      budgets: batching.RowBudgets) -> list[Result]:
    """Encoder rows (units: the EncoderRows of one row) in calls of at most
    the bucket's budget; on out of memory, the budget lowered and the rows
    split again (a packed row never: its documents stay together). Results
    come row by row, in each row's order."""
    limit = budgets.rows(seq_length)
    if len(units) > limit:
      return [result for piece in batching.split_rows(units, limit)
              for result in self._encode_fitting(piece, model, seq_length,
                                                 budgets)]
    self._sink.update(metrics.TOKEN_BUDGETS.member(seq_length),
                      limit * seq_length)
    computed = batching.computed_rows(len(units), limit,
                                      fixed=self._jit_compile)
    run = functools.partial(self._encode_units, model=model,
                            seq_length=seq_length, rows_to=computed)

    def fail(unit: tuple, exc: Exception) -> list[Result]:
      # A packed row that fails: each of its documents alone, so that one
      # bad document does not take the others down.
      if len(unit) == 1:
        return [self._fail(unit[0], exc)]
      return [r for results in _retry_one_by_one(
          [(row,) for row in unit], run, fail, self._retried,
          passes=is_out_of_memory) for r in results]

    try:
      per_unit = _retry_one_by_one(units, run, fail, self._retried,
                                   passes=is_out_of_memory)
      return [result for results in per_unit for result in results]
    except Exception as exc:
      if not is_out_of_memory(exc):
        raise
      if computed == 1:
        return self._split_row(units[0], exc, model, budgets)
      self._split_oom.inc()
      lowered = budgets.lower(seq_length, computed)
      logging.warning('Out of memory encoding %d x %d tokens; %d rows per '
                      'call at this length from now on', computed,
                      seq_length, lowered)
      return self._encode_fitting(units, model, seq_length, budgets)

  def _split_row(self, unit: tuple, exc: Exception, model,
                 budgets: batching.RowBudgets) -> list[Result]:
    """One encoder row alone does not fit. A row of one document: that
    document cannot be embedded here. A packed row: its documents in two
    rows, whole, each at the shortest row length that holds it (shorter
    rows take less memory), and so on down to one document."""
    if len(unit) == 1:
      return [self._fail(unit[0], exc)]
    self._split_oom.inc()
    halves = (unit[:len(unit) // 2], unit[len(unit) // 2:])
    logging.warning('Out of memory encoding one packed row of %d documents; '
                    'splitting it in two', len(unit))
    return [result for half in halves for result in self._encode_fitting(
        [half], model, batching.packed_row_length(
            sum(row.length for row in half), self._max_seq_length),
        budgets)]

  def _encode_units(self, units: Sequence[tuple], model, seq_length: int,
                    rows_to: int) -> list[list[Result]]:
    """One encoder call: per unit, its rows' results."""
    # One rows x length shape per call: the summary counts the distinct ones.
    self._sink.inc(metrics.ENCODER_SHAPES.member(rows_to, seq_length))
    self._batches.inc()
    start = time.perf_counter()
    embeddings, num_tokens = self._layout.encode(model, units, seq_length,
                                                 rows_to)
    self._encoder_ms.inc(int(1000 * (time.perf_counter() - start)))
    self._computed.inc(rows_to * seq_length)
    self._tokens.inc(int(num_tokens.sum()))
    # Real tokens per bucket; with the shapes, the bucket's padding.
    self._sink.inc(metrics.TOKENS_PER_BUCKET.member(seq_length),
                   int(num_tokens.sum()))
    rows = [row for unit in units for row in unit]
    out = iter([self._result(row, embedding, int(tokens))
                for row, embedding, tokens in zip(rows, embeddings,
                                                  num_tokens)])
    return [[next(out) for _ in unit] for unit in units]

  def _result(self, row: EncoderRow, embedding: np.ndarray,
              tokens: int) -> Result:
    if row.num_chunks > 1:
      return ChunkEmbedding(
          key=row.key, chunk=row.chunk, num_chunks=row.num_chunks,
          doc=row.doc if row.chunk == 0 else None, embedding=embedding,
          num_tokens=tokens)
    self._documents.inc()
    self._truncated.inc(int(row.truncated))
    return EmbeddedDocument(
        id=row.doc.id, embedding=self._finish(embedding[np.newaxis])[0],
        num_tokens=tokens, truncated=row.truncated,
        content_hash=row.doc.content_hash, metadata=row.doc.metadata)

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
                   sink: metrics.Sink = metrics.BEAM
                   ) -> Union[EmbeddedDocument, DeadLetter]:
  """One document from its chunks: the chunks' pooled embeddings averaged,
  weighted by their token counts (for mean pooling, the mean over all the
  chunks' tokens), then finished (normalised) like any embedding."""
  chunks = sorted(chunks, key=lambda c: c.chunk)
  doc = chunks[0].doc
  if [c.chunk for c in chunks] != list(range(chunks[0].num_chunks)) or (
      doc is None):
    raise RuntimeError(f'chunks of {chunks[0].key} went missing')
  failed = [c for c in chunks if c.error]
  if failed:
    sink.inc(metrics.DOCUMENTS_FAILED)
    error_type, message = failed[0].error
    return _dead(doc, error_type, f'chunk {failed[0].chunk} of '
                 f'{len(chunks)}: {message}')
  weights = np.array([c.num_tokens for c in chunks], np.float64)
  stacked = np.stack([c.embedding for c in chunks]).astype(np.float64)
  embedding = (weights[:, np.newaxis] * stacked).sum(0) / weights.sum()
  sink.inc(metrics.DOCUMENTS_EMBEDDED)
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

  def process(self, keyed):
    _, chunks = keyed
    finish = l2_normalize if self._normalize else (lambda x: x)
    yield route(combine_chunks(chunks, finish))


def _rows_or_dead(result):
  """A tokenized document: its encoder rows, or its dead letter."""
  return result if isinstance(result, list) else [route(result)]


def _route_encoded(result):
  """Whole documents to the main output, chunks to 'chunks', dead letters
  to theirs."""
  if isinstance(result, ChunkEmbedding):
    return beam.pvalue.TaggedOutput('chunks', result)
  return route(result)


class EmbedDocuments(beam.PTransform):
  """Documents -> Results(EmbeddedDocuments, dead letters of each step), as
  the spec decides."""

  def __init__(self, spec: EmbeddingSpec, preprocessor: str, encoder: str, *,
               max_batch_tokens: Union[int, str] = 8192,
               batch_size: int = 256, sort_window: int = 4096,
               large_model: bool = False,
               jit_compile: bool = False, require_gpu: bool = False,
               encoder_accelerator: Optional[str] = None,
               packing: bool = False):
    super().__init__()
    self._tokenize = TokenizeHandler(spec, preprocessor,
                                     batch_size=batch_size)
    self._encode = EncodeHandler(
        spec, preprocessor, encoder, max_batch_tokens=max_batch_tokens,
        batch_size=batch_size, large_model=large_model,
        jit_compile=jit_compile, require_gpu=require_gpu,
        accelerator=encoder_accelerator, packing=packing)
    self._batcher = batching.BATCHERS[packing](
        spec.max_seq_length,
        batching.planning_budget(max_batch_tokens, batch_size,
                                 spec.max_seq_length),
        batch_size, sort_window, fixed_shapes=jit_compile)
    self._normalize = spec.normalize
    self._long_documents = spec.long_documents

  def expand(self, documents):
    tokenized = (documents
                 | 'Tokenize' >> RunInference(self._tokenize)
                 | 'Rows' >> beam.FlatMap(_rows_or_dead).with_outputs(
                     DEAD_LETTER, main='rows'))
    encoded = (tokenized.rows
               | 'BucketBatches' >> beam.ParDo(self._batcher)
               | 'Encode' >> RunInference(
                   self._encode.with_no_batching(),
                   model_identifier=self._encode.model_identifier())
               | 'Route' >> beam.Map(_route_encoded).with_outputs(
                   DEAD_LETTER, 'chunks', main='whole'))
    dead = (tokenized[DEAD_LETTER], encoded[DEAD_LETTER])
    if self._long_documents != 'chunk':
      # No GroupByKey in the default path: the whole graph fuses into one
      # stage and streams, so memory stays flat as the corpus grows (a
      # Flatten behind a GroupByKey makes the local runner buffer every
      # embedding until the group is done).
      return Results(encoded.whole, dead)
    combined = (encoded.chunks
                | 'KeyChunks' >> beam.Map(lambda c: (c.key, c))
                | 'GroupChunks' >> beam.GroupByKey()
                | 'CombineChunks' >> beam.ParDo(
                    _CombineChunks(self._normalize)).with_outputs(
                        DEAD_LETTER, main='documents'))
    return Results((encoded.whole, combined.documents)
                   | 'AllEmbedded' >> beam.Flatten(),
                   dead + (combined[DEAD_LETTER],))
