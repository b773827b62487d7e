"""Packed rows (several documents per row, the encoder's `packed` call)
against the TF Hub interface on each document alone, for this project's
BERT (minilm-l6) and RoBERTa (a small random model, see conftest.py)
exports: mean, cls and pooled embeddings agree within 1e-5 in float32.

Cases: rows holding one document, rows holding many of different lengths
(with padding at the end, and a row of padding only), special tokens at
segment boundaries and written inside texts (RoBERTa's <pad> inside a text
shifts its position ids), pairs as one segment (BERT's type ids 0/1), the
chunks of long documents (transforms.batching.chunk_windows), the sample
corpus; Hugging Face's own models as an independent reference; the
lower-precision packed calls against their unpacked counterparts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest
import tensorflow as tf

from tests import hf_reference
from tests import textgen
from tfmodels import embedder
from tfmodels import export
from tfmodels.embedder import POOLINGS

TOLERANCE = 1e-5


@dataclass
class Pair:
  kind: str
  folder: str
  hf_dir: str
  preprocessor: object
  encoder: object
  pad: int


@pytest.fixture(scope='module', params=['bert', 'roberta'])
def pair(request) -> Pair:
  kind = request.param
  if kind == 'bert':
    folder = request.getfixturevalue('minilm_export')
    hf_dir = request.getfixturevalue('minilm_hf_dir')
  else:
    folder = request.getfixturevalue('roberta_export')
    hf_dir = request.getfixturevalue('roberta_hf_dir')
  preprocessor = embedder.Tokenizer.load(
      os.path.join(folder, export.PREPROCESSOR_DIR)).preprocessor
  encoder = embedder.import_hub().load(
      os.path.join(folder, export.ENCODER_DIR))
  pad = int(preprocessor.tokenize.get_special_tokens_dict()['padding_id'])
  return Pair(kind, folder, hf_dir, preprocessor, encoder, pad)


@dataclass
class Doc:
  ids: np.ndarray  # int32, special tokens included, no padding
  types: np.ndarray


def _docs(pair: Pair, texts, texts_b=None, seq_length: int = 128):
  """Each text (or pair) as its unpacked row would hold it: packed by the
  preprocessor's bert_pack_inputs at seq_length (truncating), padding
  removed."""
  segments = [pair.preprocessor.tokenize(tf.constant(texts))]
  if texts_b is not None:
    segments.append(pair.preprocessor.tokenize(tf.constant(texts_b)))
  return _docs_of_segments(pair, segments, seq_length)


def _docs_of_segments(pair: Pair, segments, seq_length: int):
  inputs = pair.preprocessor.bert_pack_inputs(
      segments, seq_length=tf.constant(seq_length, tf.int32))
  mask = inputs['input_mask'].numpy().astype(bool)
  ids = inputs['input_word_ids'].numpy()
  types = inputs['input_type_ids'].numpy()
  return [Doc(ids[i][mask[i]], types[i][mask[i]]) for i in range(len(ids))]


def _alone(pair: Pair, doc: Doc, precision: str = 'fp32') -> dict:
  """The TF Hub interface on one document, unpadded: pooling -> vector."""
  fn = embedder._encoder_function(pair.encoder, precision, False)
  ids = tf.constant(doc.ids[np.newaxis], tf.int32)
  out = fn({'input_word_ids': ids, 'input_mask': tf.ones_like(ids),
            'input_type_ids': tf.constant(doc.types[np.newaxis], tf.int32)})
  return {p: embedder.pool(out['sequence_output'], out['pooled_output'],
                           tf.ones_like(ids), p)[0].numpy()
          for p in POOLINGS}


def first_fit(lengths, length: int) -> list[list[int]]:
  """Documents into rows of `length` tokens, each into the first row with
  room (in the given order)."""
  rows, room = [], []
  for i, n in enumerate(lengths):
    if n > length:
      raise ValueError(f'document {i} has {n} tokens, rows {length}')
    for r, free in enumerate(room):
      if n <= free:
        rows[r].append(i)
        room[r] -= n
        break
    else:
      rows.append([i])
      room.append(length - n)
  return rows


def _pack(pair: Pair, docs, rows, length: int) -> dict:
  ids = np.full((len(rows), length), pair.pad, np.int32)
  segments = np.zeros((len(rows), length), np.int32)
  types = np.zeros((len(rows), length), np.int32)
  for r, row in enumerate(rows):
    at = 0
    for k, d in enumerate(row):
      n = len(docs[d].ids)
      ids[r, at:at + n] = docs[d].ids
      types[r, at:at + n] = docs[d].types
      segments[r, at:at + n] = k + 1
      at += n
    assert at <= length
  return {'input_word_ids': tf.constant(ids),
          'segment_ids': tf.constant(segments),
          'input_type_ids': tf.constant(types)}


def _packed(pair: Pair, docs, rows, length: int, precision: str = 'fp32'):
  """{pooling: [len(docs), hidden]} from the packed call, in docs' order."""
  out = embedder.packed_function(pair.encoder, precision)(
      _pack(pair, docs, rows, length))
  num_tokens = out['num_tokens'].numpy()
  got = {p: [None] * len(docs) for p in POOLINGS}
  for r, row in enumerate(rows):
    for k, d in enumerate(row):
      assert num_tokens[r, k] == len(docs[d].ids)
      for p in POOLINGS:
        got[p][d] = out[p][r, k].numpy()
    # Segment ids a row does not use count no tokens.
    assert not num_tokens[r, len(row):].any()
  return {p: np.stack(v) for p, v in got.items()}


def assert_packed_equals_alone(pair: Pair, docs, rows, length: int,
                               case: str, precision: str = 'fp32',
                               tolerance: float = TOLERANCE) -> dict:
  packed = _packed(pair, docs, rows, length, precision)
  alone = [_alone(pair, d, precision) for d in docs]
  diffs = {p: float(np.abs(packed[p] - np.stack([a[p] for a in alone])).max())
           for p in POOLINGS}
  print(f'{pair.kind} {case} ({precision}): {len(docs)} documents in '
        f'{len(rows)} rows of {length}; max abs diff '
        + ', '.join(f'{p} {d:.2e}' for p, d in diffs.items()))
  for p, d in diffs.items():
    assert d <= tolerance, (case, p, d)
  return diffs


def test_the_export_has_packed_calls(pair):
  assert export.read_manifest(pair.folder)['format'] == export.FORMAT
  for precision in embedder.PRECISIONS:
    assert callable(embedder.packed_function(pair.encoder, precision))
  with pytest.raises(ValueError, match='since export format 6'):
    embedder.packed_function(object())


def test_one_document_per_row(pair):
  texts = textgen.varied_sentences()[:12]
  docs = _docs(pair, texts)
  length = max(len(d.ids) for d in docs)
  # Padding after each but the longest, which fills its row.
  assert_packed_equals_alone(pair, docs, [[i] for i in range(len(docs))],
                             length, 'one per row')


def test_many_documents_per_row(pair):
  texts = textgen.varied_sentences()
  docs = _docs(pair, texts, seq_length=60)
  rows = first_fit([len(d.ids) for d in docs], 64)
  assert max(len(r) for r in rows) >= 3
  # And a row of padding only.
  assert_packed_equals_alone(pair, docs, rows + [[]], 64, 'many per row')


def test_special_tokens_inside_and_at_boundaries(pair):
  texts = textgen.SPECIAL_TEXTS[pair.kind]
  docs = _docs(pair, texts)
  special = pair.preprocessor.tokenize.get_special_tokens_dict()
  inner = np.concatenate([d.ids[1:-1] for d in docs])
  # The texts' special tokens became those tokens (RoBERTa: pad ids inside
  # documents, which its position ids skip).
  assert int(special['end_of_segment_id']) in inner
  assert pair.pad in inner
  # All in one row, one after another: every boundary is end, start.
  rows = [list(range(len(docs)))]
  length = sum(len(d.ids) for d in docs) + 3
  assert_packed_equals_alone(pair, docs, rows, length, 'special tokens')
  # And each alone in its row.
  assert_packed_equals_alone(pair, docs, [[i] for i in range(len(docs))],
                             max(len(d.ids) for d in docs), 'special alone')


def test_pairs_as_one_segment(pair):
  sentences = textgen.varied_sentences()
  a, b = sentences[:8], sentences[8:16]
  docs = _docs(pair, a, b, seq_length=48)  # uneven pairs, truncated
  if pair.kind == 'bert':
    assert all(set(d.types) == {0, 1} for d in docs)
  singles = _docs(pair, sentences[16:24], seq_length=48)
  docs = [d for both in zip(docs, singles) for d in both]
  rows = first_fit([len(d.ids) for d in docs], 96)
  assert_packed_equals_alone(pair, docs, rows, 96, 'pairs')


def test_chunks_of_long_documents(pair):
  from transforms.batching import chunk_windows
  texts = sorted(hf_reference.corpus_texts(), key=len)[-3:]
  max_seq_length, stride = 64, 40
  docs = []
  for tokens in embedder.Tokenizer(pair.preprocessor).tokenize(texts):
    spans = chunk_windows(len(tokens), max_seq_length - 2, stride)
    assert len(spans) > 3
    chunks = [tokens[s:e] for s, e in spans]
    docs += _docs_of_segments(pair, [tf.RaggedTensor.from_row_lengths(
        np.concatenate(chunks), [len(c) for c in chunks])], max_seq_length)
  # Full-length chunks, two per row, and the short last ones between.
  rows = first_fit([len(d.ids) for d in docs], 2 * max_seq_length)
  assert_packed_equals_alone(pair, docs, rows, 2 * max_seq_length,
                             'chunks')


def test_sample_corpus(pair):
  texts = hf_reference.corpus_texts()[:80]
  docs = _docs(pair, texts, seq_length=128)
  rows = first_fit([len(d.ids) for d in docs], 256)
  assert len(rows) < len(docs) / 2
  assert_packed_equals_alone(pair, docs, rows, 256, 'sample corpus')


def test_hugging_face_reference(pair):
  """The packed call against Hugging Face's model on each document alone,
  an independent reference (measured: 1.7e-6 at most)."""
  import torch
  from transformers import AutoModel
  texts = textgen.SPECIAL_TEXTS[pair.kind] + textgen.varied_sentences()[:10]
  docs = _docs(pair, texts)
  rows = first_fit([len(d.ids) for d in docs], 128)
  packed = _packed(pair, docs, rows, 128)
  model = AutoModel.from_pretrained(pair.hf_dir).eval()
  worst = dict.fromkeys(POOLINGS, 0.0)
  for i, doc in enumerate(docs):
    with torch.no_grad():
      out = model(input_ids=torch.tensor(doc.ids[np.newaxis], dtype=torch.long),
                  token_type_ids=torch.tensor(doc.types[np.newaxis],
                                              dtype=torch.long))
    sequence = out.last_hidden_state[0].numpy()
    ref = {'mean': sequence.mean(0), 'cls': sequence[0],
           'pooled': out.pooler_output[0].numpy()}
    for p in POOLINGS:
      worst[p] = max(worst[p], float(np.abs(packed[p][i] - ref[p]).max()))
  print(f'{pair.kind} packed vs Hugging Face: max abs diff',
        {p: f'{d:.2e}' for p, d in worst.items()})
  if not export.read_manifest(pair.folder)['pooler_trained']:
    del worst['pooled']  # both models' poolers are random, and differ
  for p, d in worst.items():
    assert d <= TOLERANCE, (p, d)


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_lower_precisions(pair, precision):
  """packed_bf16/fp16 against call_bf16/fp16 alone: the same computation in
  other shapes, so within the lower precision's rounding."""
  texts = textgen.varied_sentences()
  docs = _docs(pair, texts, seq_length=60)
  rows = first_fit([len(d.ids) for d in docs], 64)
  # Measured on minilm-l6 (AMX CPU): 1e-2 (bf16), 1.3e-3 (fp16).
  tolerance = {'bf16': 4e-2, 'fp16': 5e-3}[precision]
  diffs = assert_packed_equals_alone(pair, docs, rows, 64, 'many per row',
                                     precision, tolerance)
  # It ran in that precision: not float32's results.
  fp32 = _packed(pair, docs, rows, 64)
  low = _packed(pair, docs, rows, 64, precision)
  assert np.abs(fp32['mean'] - low['mean']).max() > 1e-6, diffs


# bf16 and fp16 against float32, per document (cosine of the mean-pooled
# vectors): docs/performance.md, "Precision". Measured on this project's
# exports (AVX-512 BF16 CPU, export format 7): bf16 min 0.99995 (BERT,
# minilm-l6) and 0.9999996 (RoBERTa, the tests' small random one).
MIN_COSINE = {'bf16': 0.999, 'fp16': 0.9999}


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_lower_precision_close_to_fp32(pair, precision):
  texts = hf_reference.corpus_texts()[:80] + textgen.varied_sentences()
  docs = _docs(pair, texts, seq_length=128)
  rows = first_fit([len(d.ids) for d in docs], 256)
  fp32 = _packed(pair, docs, rows, 256)['mean']
  low = _packed(pair, docs, rows, 256, precision)['mean']
  cosines = (fp32 * low).sum(1) / (np.linalg.norm(fp32, axis=1) *
                                   np.linalg.norm(low, axis=1))
  print(pair.kind, precision, 'min cosine to fp32', cosines.min(),
        'documents', len(cosines))
  assert len(cosines) == len(docs)
  assert cosines.min() >= MIN_COSINE[precision]
