"""Throughput of this pipeline next to its ceiling and its peers, measured in
one run on one machine with the `minilm-l6` model:

  a. bare: the same tokenizer, token-budget batches and encoder calls in a
     plain Python loop (no Beam): the ceiling;
  b. pipeline: this project's job end to end (read JSONL, embed, write
     TFRecord) on the local runner;
  c. mltransform: Beam's MLTransform + TensorflowHubTextEmbeddings on the
     same exported model pair;
  d. fixed128: a plain RunInference with a hand-written handler that pads
     every document to 128 tokens (the preprocessor's default).

  .venv/bin/python bench/throughput.py [--scale 10] [--cases a,b,c,d]

Each case runs in its own process, so its peak RSS is its own. The corpus is
../shared/corpora/stdlib_docstrings.jsonl (or the repository's copy),
replicated with new ids. The pipeline also runs at --scale times the corpus,
to show that memory stays flat. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

SHARED_CORPUS = os.path.join(os.path.dirname(ROOT), 'shared', 'corpora',
                             'stdlib_docstrings.jsonl')
LOCAL_CORPUS = os.path.join(ROOT, 'data', 'stdlib_docstrings.jsonl')
MAX_SEQ_LENGTH = 128


def corpus_path() -> str:
  return SHARED_CORPUS if os.path.exists(SHARED_CORPUS) else LOCAL_CORPUS


def write_corpus(path: str, scale: int) -> int:
  with open(corpus_path(), encoding='utf-8') as f:
    docs = [json.loads(line) for line in f]
  with open(path, 'w', encoding='utf-8') as f:
    for k in range(scale):
      for d in docs:
        f.write(json.dumps({'id': f"{d['id']}#{k}", 'text': d['text']}) +
                '\n')
  return len(docs) * scale


def read_texts(path: str) -> list[str]:
  with open(path, encoding='utf-8') as f:
    return [json.loads(line)['text'] for line in f]


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _padded_to_128(texts, model_dir: str, count: int,
                   seconds: float) -> dict:
  """Figures of a case that pads every text to 128 tokens: its real tokens
  are what a 128-token input holds of each text (specials included),
  counted after the timed run."""
  from tfmodels.embedder import EmbeddingModel  # pylint: disable=import-outside-toplevel
  model = EmbeddingModel.load(os.path.join(model_dir, 'preprocessor'),
                              os.path.join(model_dir, 'encoder'))
  tokens = 0
  for i in range(0, len(texts), 512):
    for ids in model.tokenize(texts[i:i + 512]):
      tokens += min(len(ids) + model.num_special(1), MAX_SEQ_LENGTH)
  return {'documents': count, 'seconds': seconds, 'tokens': tokens,
          'padded_tokens': len(texts) * MAX_SEQ_LENGTH}


# --- the cases, each run in a child process -------------------------------


def _count(element, size_of):
  """Counts output elements with a real size (a Beam counter, since a
  pickled closure cannot append to the parent's list)."""
  from apache_beam.metrics import Metrics  # pylint: disable=import-outside-toplevel
  if size_of(element) > 0:
    Metrics.counter('bench', 'outputs').inc()
  return element


def _run_counted(p) -> int:
  from apache_beam.metrics.metric import MetricsFilter  # pylint: disable=import-outside-toplevel
  result = p.run()
  result.wait_until_finish()
  found = result.metrics().query(
      MetricsFilter().with_namespace('bench').with_name('outputs'))
  return int(sum(c.committed for c in found['counters']))


def case_bare(corpus: str, model_dir: str) -> dict:
  from tfmodels.embedder import EmbeddingModel  # pylint: disable=import-outside-toplevel
  from transforms import batching  # pylint: disable=import-outside-toplevel
  from transforms.elements import Document  # pylint: disable=import-outside-toplevel
  model = EmbeddingModel.load(os.path.join(model_dir, 'preprocessor'),
                              os.path.join(model_dir, 'encoder'),
                              max_seq_length=MAX_SEQ_LENGTH)
  texts = read_texts(corpus)
  # The pipeline's own batcher (--sort_window 4096, --max_batch_tokens 8192,
  # --batch_size 256), called directly: the same batches, without Beam.
  batcher = batching.BucketBatches(MAX_SEQ_LENGTH, 8192, 256, 4096)
  start = time.perf_counter()
  tokens = computed = 0

  def encode(batch):
    nonlocal tokens, computed
    rows_to = batching.padded_batch_rows(len(batch.rows), batch.full_rows)
    _, num_tokens = model.encode([[r.ids for r in batch.rows]],
                                 batch.seq_length, rows_to)
    tokens += int(num_tokens.sum())
    computed += rows_to * batch.seq_length

  batcher.start_bundle()
  for i in range(0, len(texts), 256):  # the pipeline's --batch_size
    part = texts[i:i + 256]
    for j, (text, ids) in enumerate(zip(part, model.tokenize(part))):
      row = batching.rows_for_document(
          Document(str(i + j), text, None, ''), ids, None,
          model.num_special(1), MAX_SEQ_LENGTH, 'truncate', 1)[0]
      for batch in batcher.process(row):
        encode(batch)
  for batch in batcher.finish_bundle():
    encode(batch.value)
  seconds = time.perf_counter() - start
  return {'documents': len(texts), 'seconds': seconds, 'tokens': tokens,
          'padded_tokens': computed}


def case_pipeline_bf16(corpus: str, model_dir: str) -> dict:
  return case_pipeline(corpus, model_dir, ['--precision', 'bf16'])


def case_pipeline(corpus: str, model_dir: str, extra=()) -> dict:
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=import-outside-toplevel
  import apache_beam as beam  # pylint: disable=import-outside-toplevel
  from pipeline import presets  # pylint: disable=import-outside-toplevel
  from pipeline.options import EmbedOptions  # pylint: disable=import-outside-toplevel
  from pipeline.run import DEFAULT_LOCAL_RUNNER, build_pipeline, summarize  # pylint: disable=import-outside-toplevel
  out = tempfile.mkdtemp(prefix='bench-pipeline-')
  options = PipelineOptions(['--input', corpus, '--output', out + '/emb',
                             '--runner', DEFAULT_LOCAL_RUNNER, *extra])
  embed_options = options.view_as(EmbedOptions)
  start = time.perf_counter()
  p = beam.Pipeline(options=options)
  build_pipeline(p, embed_options, presets.from_export_dir(model_dir))
  result = p.run()
  result.wait_until_finish()
  seconds = time.perf_counter() - start
  summary = summarize(result, embed_options, seconds)
  assert summary['reconciled'], summary
  return {'documents': summary['documents_embedded'], 'seconds': seconds,
          'tokens': summary['tokens'],
          'padded_tokens': summary['tokens_computed']}


def case_mltransform(corpus: str, model_dir: str) -> dict:
  import apache_beam as beam  # pylint: disable=import-outside-toplevel
  from apache_beam.ml.transforms.base import MLTransform  # pylint: disable=import-outside-toplevel
  from apache_beam.ml.transforms.embeddings.tensorflow_hub import TensorflowHubTextEmbeddings  # pylint: disable=import-outside-toplevel
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
  import apache_beam as beam  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from apache_beam.ml.inference.base import ModelHandler, RunInference  # pylint: disable=import-outside-toplevel
  from tfmodels.embedder import import_hub  # pylint: disable=import-outside-toplevel

  class Pair:  # RunInference's shared handle needs a weak-referenceable model
    def __init__(self, preprocessor, encoder):
      self.preprocessor, self.encoder = preprocessor, encoder

  class Fixed128(ModelHandler):
    """What one writes by hand: call the preprocessor (128 tokens), the
    encoder, mean-pool."""

    def load_model(self):
      import tensorflow_text  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
      hub = import_hub()
      return Pair(hub.load(os.path.join(model_dir, 'preprocessor')),
                  hub.load(os.path.join(model_dir, 'encoder')))

    def run_inference(self, batch, model, inference_args=None):
      import tensorflow as tf  # pylint: disable=import-outside-toplevel
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


CASES = {'a': ('bare', case_bare), 'b': ('pipeline', case_pipeline),
         'c': ('mltransform', case_mltransform),
         'd': ('fixed128', case_fixed128),
         'e': ('pipeline_bf16', case_pipeline_bf16)}


def run_child(case: str, corpus: str, model_dir: str) -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  if case == 'c':
    # Beam's TF model handler loads SavedModels through Keras 2.
    env['TF_USE_LEGACY_KERAS'] = '1'
  proc = subprocess.run(
      [sys.executable, os.path.abspath(__file__), '--child', case,
       '--corpus', corpus, '--model_dir', model_dir],
      env=env, capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f'case {case} failed:\n{proc.stderr[-4000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def figures(raw: dict) -> dict:
  return {
      'documents': raw['documents'],
      'seconds': round(raw['seconds'], 2),
      'documents_per_second': round(raw['documents'] / raw['seconds'], 2),
      'real_tokens_per_second': round(raw['tokens'] / raw['seconds'], 1),
      'padding_efficiency': round(raw['tokens'] / raw['padded_tokens'], 4),
      'peak_rss_mb': round(raw['peak_rss_mb'], 1),
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--main_scale', type=int, default=2,
                      help='Corpus copies for the side-by-side cases, so that '
                      'start-up (model load: about 2 s) weighs little.')
  parser.add_argument('--scale', type=int, default=10,
                      help='Corpus copies for the memory check of b.')
  parser.add_argument('--cases', default='a,b,c,d,e',
                      help='a bare, b pipeline, c MLTransform, d fixed-128 '
                      'RunInference, e pipeline with --precision bf16.')
  parser.add_argument('--child', default=None, help=argparse.SUPPRESS)
  parser.add_argument('--corpus', default=None, help=argparse.SUPPRESS)
  parser.add_argument('--model_dir', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.child:
    # Every case starts timing with TensorFlow already imported (3 s here),
    # as a long-lived worker would have it.
    import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
    import tensorflow_text  # pylint: disable=import-outside-toplevel,unused-import
    raw = CASES[args.child][1](args.corpus, args.model_dir)
    raw['peak_rss_mb'] = peak_rss_mb()
    print(json.dumps(raw))
    return

  from pipeline import presets  # pylint: disable=import-outside-toplevel
  model_dir = presets.ensure_exported(
      'minilm-l6', os.path.join(ROOT, '.cache', 'models'))
  work = tempfile.mkdtemp(prefix='bench-throughput-')
  corpus = os.path.join(work, f'corpus-{args.main_scale}x.jsonl')
  n = write_corpus(corpus, args.main_scale)
  print(f'corpus: {corpus_path()} x{args.main_scale} ({n} documents), '
        f'model minilm-l6, '
        f'max_seq_length {MAX_SEQ_LENGTH}, {os.cpu_count()} CPUs',
        flush=True)
  results = {}
  for case in args.cases.split(','):
    name = CASES[case][0]
    results[name] = figures(run_child(case, corpus, model_dir))
    print(f'{case}. {name}: {json.dumps(results[name])}', flush=True)
  if 'pipeline' in results and args.scale > 1:
    # Memory: the pipeline's peak RSS at 1x and at scale x the corpus.
    for scale in (1, args.scale):
      name = f'pipeline_{scale}x'
      if scale == args.main_scale:
        results[name] = results['pipeline']
        continue
      path = os.path.join(work, f'corpus-{scale}x.jsonl')
      write_corpus(path, scale)
      results[name] = figures(run_child('b', path, model_dir))
      print(f'b. pipeline at {scale}x: {json.dumps(results[name])}',
            flush=True)
  print()
  print(f'{"case":<16}{"docs/s":>10}{"tokens/s":>12}{"padding eff.":>14}'
        f'{"peak RSS MB":>13}')
  for name, r in results.items():
    print(f'{name:<16}{r["documents_per_second"]:>10.1f}'
          f'{r["real_tokens_per_second"]:>12.0f}'
          f'{r["padding_efficiency"]:>14.3f}{r["peak_rss_mb"]:>13.0f}')

  def ratio(a, b):
    if a in results and b in results:
      return round(results[a]['documents_per_second'] /
                   results[b]['documents_per_second'], 3)
    return None

  summary = {
      'ratio_vs_bare': ratio('pipeline', 'bare'),
      'ratio_vs_mltransform': ratio('pipeline', 'mltransform'),
      'ratio_vs_fixed128': ratio('pipeline', 'fixed128'),
      'ratio_bf16_vs_mltransform': ratio('pipeline_bf16', 'mltransform'),
      'padding_efficiency': results.get('pipeline', {}).get(
          'padding_efficiency'),
      **results,
  }
  big = results.get(f'pipeline_{args.scale}x')
  if big and 'pipeline_1x' in results:
    summary['rss_growth'] = round(
        big['peak_rss_mb'] / results['pipeline_1x']['peak_rss_mb'] - 1, 3)
  print()
  print('b/a (vs bare) {ratio_vs_bare}, b/c (vs MLTransform) '
        '{ratio_vs_mltransform}, b/d (vs fixed 128) {ratio_vs_fixed128}'
        .format(**summary))
  print(json.dumps(summary))


if __name__ == '__main__':
  main()
