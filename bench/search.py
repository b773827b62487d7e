"""Searching a file output (pipeline/search.py): time and peak memory of
the documented command at two output sizes, side by side in one run.

The exact searcher streams the output a block of records at a time, so its
memory should not grow with the output, and its time should grow with it
linearly. The outputs are made from one real run of the job (minilm-l6,
--normalize, --metadata_fields source,text over the sample corpus's first
documents, whose note, PREFIX.spec.json, the copies keep): each size holds
that run's records again and again, under new ids, their vectors moved a
little at random (and normalised again), in 4 TFRecord shards.

For each size: the command
  python -m pipeline.search --output OUT QUERY... -k 10
in a fresh process, its wall seconds and peak RSS (wait4), best of
--rounds. Then the ratios large/small of records, seconds and peak MB.
The last line is one JSON object with every figure.

  .venv/bin/python bench/search.py
  .venv/bin/python bench/search.py --smoke     # small sizes, one round
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

QUERIES = ('how do I sort a list', 'read a file line by line',
           'compress data with gzip')
SHARDS = 4


def _env() -> dict:
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=ROOT)


def base_output(work: str, docs: int, cache: str) -> str:
  """One real run of the job over the sample corpus's first documents."""
  corpus = os.path.join(work, 'corpus.jsonl')
  with open(os.path.join(ROOT, 'data', 'stdlib_docstrings.jsonl'),
            encoding='utf-8') as f, open(corpus, 'w', encoding='utf-8') as out:
    for _, line in zip(range(docs), f):
      out.write(line)
  prefix = os.path.join(work, 'base', 'emb')
  cmd = [sys.executable, '-m', 'pipeline.run', '--model', 'minilm-l6',
         '--input', corpus, '--output', prefix, '--normalize',
         '--metadata_fields', 'source,text', '--progress_every', '0']
  if cache:
    cmd += ['--model_cache_dir', cache]
  proc = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True,
                        text=True)
  if proc.returncode != 0:
    raise RuntimeError(f'the job failed: {proc.stderr[-2000:]}')
  return prefix


def scaled_output(base: str, prefix: str, size: int, seed: int) -> None:
  """`size` records made from the base run's, in SHARDS shards, with the
  base run's note."""
  import numpy as np
  from pipeline import read
  from transforms import records
  from transforms.backends import tfrecord
  from transforms.codecs import tfrecord as codec
  rows = read.backend(base, metadata=('source', 'text')).scan()
  rows = list(rows)
  layout = records.EMBEDDINGS.with_metadata(('source', 'text'))
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.dirname(prefix), exist_ok=True)
  files = [open(f'{prefix}-{s:05d}-of-{SHARDS:05d}.tfrecord', 'wb')
           for s in range(SHARDS)]
  try:
    for i in range(size):
      row = dict(rows[i % len(rows)])
      vector = np.asarray(row['embedding'], np.float32)
      vector = vector + rng.normal(0, 0.02, vector.shape).astype(np.float32)
      row['embedding'] = (vector / np.linalg.norm(vector)).tolist()
      row['id'] = f'n{i:07d}'
      files[i % SHARDS].write(codec.frame(
          tfrecord.to_example_bytes(row, layout)))
  finally:
    for f in files:
      f.close()
  with open(base + '.spec.json', 'rb') as src, open(
      prefix + '.spec.json', 'wb') as dst:
    dst.write(src.read())


def timed_search(prefix: str, k: int, cache: str) -> dict:
  cmd = [sys.executable, '-m', 'pipeline.search', '--output', prefix,
         *QUERIES, '-k', str(k)]
  if cache:
    cmd += ['--model_cache_dir', cache]
  start = time.perf_counter()
  proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
  out = proc.stdout.read().decode()
  err = proc.stderr.read().decode()
  _, status, usage = os.wait4(proc.pid, 0)
  seconds = time.perf_counter() - start
  if status != 0:
    raise RuntimeError(f'search failed: {err[-2000:]}')
  return {'seconds': round(seconds, 2),
          'peak_mb': round(usage.ru_maxrss / 1024, 1), 'printed': out}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--sizes', default='20000,200000',
                      help='two output sizes, in records')
  parser.add_argument('--docs', type=int, default=400,
                      help='documents of the real run the outputs copy')
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('-k', type=int, default=10)
  parser.add_argument('--model_cache_dir', default='',
                      help='the model cache (default: the job\'s)')
  parser.add_argument('--smoke', action='store_true',
                      help='sizes 1000,4000, 40 documents, one round')
  args = parser.parse_args()
  if args.smoke:
    args.sizes, args.docs, args.rounds = '1000,4000', 40, 1
  sizes = [int(s) for s in args.sizes.split(',')]
  if len(sizes) != 2 or sizes[0] >= sizes[1]:
    parser.error('--sizes takes two sizes, the smaller first')
  random.seed(0)
  with tempfile.TemporaryDirectory(prefix='bench-search-') as work:
    base = base_output(work, args.docs, args.model_cache_dir)
    figures = {}
    for n, size in enumerate(sizes):
      prefix = os.path.join(work, f'n{size}', 'emb')
      scaled_output(base, prefix, size, seed=n)
      runs = [timed_search(prefix, args.k, args.model_cache_dir)
              for _ in range(args.rounds)]
      best = min(runs, key=lambda r: r['seconds'])
      figures[size] = {'records': size, 'seconds': best['seconds'],
                       'peak_mb': max(r['peak_mb'] for r in runs)}
      if n == 0:
        print(best['printed'], end='')
      print(f'{size:>9,} records  {best["seconds"]:7.2f} s  '
            f'peak {figures[size]["peak_mb"]:8.1f} MB', flush=True)
  small, large = (figures[s] for s in sizes)
  ratios = {
      'records_ratio': round(large['records'] / small['records'], 2),
      'seconds_ratio': round(large['seconds'] / small['seconds'], 2),
      'peak_memory_ratio': round(large['peak_mb'] / small['peak_mb'], 3),
  }
  print('  '.join(f'{k} {v}' for k, v in ratios.items()))
  print(json.dumps({'sizes': list(figures.values()), **ratios}))


if __name__ == '__main__':
  main()
