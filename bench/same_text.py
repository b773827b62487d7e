"""Identical texts in one run (transforms/same_text.py): what the encoder
computes for a corpus with duplicates against the same corpus without
them, side by side in one run on one machine.

Cases, each the documented job (`python -m pipeline.run`, minilm-l6,
TFRecord output) in a fresh process:

  one_text   N records (2,000) of one text, each its own id
  distinct   N records of N different texts (the sample corpus's first N)
  dup30      the sample corpus (2,653 documents) plus 30% exact copies of
             its documents (other ids), shuffled in
  nodup      the same documents, the copies' texts made distinct (a
             suffix), so that both corpora hold as many documents of the
             same lengths
  dup30_Kx   dup30 built from K distinct copies of the corpus (--scale):
             its peak memory against dup30's shows whether the same-text
             cache grows with the corpus

For each: documents, documents_same_text, tokens_computed, encoder seconds,
wall seconds and peak RSS (wait4). Then the ratios:

  one_text_vs_distinct_encoder / _tokens_computed
  dup30_vs_nodup_encoder / _tokens_computed
  dup30_memory_growth   peak MB of dup30_Kx / dup30

The last line is one JSON object with every figure.

  .venv/bin/python bench/same_text.py
  .venv/bin/python bench/same_text.py --smoke     # small sizes, one round
  .venv/bin/python bench/same_text.py --root ../old-checkout  # another tree
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

from bench.throughput import corpus_path


def _docs() -> list:
  with open(corpus_path(), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def write(path: str, docs: list) -> str:
  with open(path, 'w', encoding='utf-8') as f:
    for d in docs:
      f.write(json.dumps({'id': d['id'], 'text': d['text']}) + '\n')
  return path


def corpora(folder: str, *, n: int, fraction: float, share: float,
            scale: int, seed: int = 7) -> dict:
  """The cases' corpora: {case: path}."""
  base = _docs()
  base = base[:max(1, int(round(len(base) * fraction)))]
  out = {
      'one_text': write(os.path.join(folder, 'one_text.jsonl'), [
          {'id': f'one-{i}', 'text': base[0]['text']} for i in range(n)]),
      'distinct': write(os.path.join(folder, 'distinct.jsonl'), [
          {'id': f'distinct-{i}', 'text': base[i % len(base)]['text'] + (
              f' ({i // len(base)})' if i >= len(base) else '')}
          for i in range(n)]),
  }

  def with_copies(docs: list, copied: bool) -> list:
    rng = random.Random(seed)
    picked = rng.sample(docs, int(round(len(docs) * share)))
    extra = [{'id': f'{d["id"]}-copy',
              'text': d['text'] if copied else d['text'] + ' (copy)'}
             for d in picked]
    mixed = docs + extra
    rng.shuffle(mixed)
    return mixed

  out['dup30'] = write(os.path.join(folder, 'dup30.jsonl'),
                       with_copies(base, True))
  out['nodup'] = write(os.path.join(folder, 'nodup.jsonl'),
                       with_copies(base, False))
  if scale > 1:
    scaled = [{'id': f'{d["id"]}#{k}',
               'text': d['text'] + (f' ({k})' if k else '')}
              for k in range(scale) for d in base]
    out[f'dup30_{scale}x'] = write(
        os.path.join(folder, f'dup30_{scale}x.jsonl'),
        with_copies(scaled, True))
  return out


def run_case(root: str, corpus: str, extra: list) -> dict:
  """One job in a fresh process: its summary, wall time and peak RSS."""
  out_dir = tempfile.mkdtemp(prefix='bench-same-text-')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', HF_HUB_OFFLINE='1',
             TRANSFORMERS_OFFLINE='1')
  argv = [sys.executable, '-m', 'pipeline.run', '--model', 'minilm-l6',
          '--input', corpus, '--output', os.path.join(out_dir, 'emb'),
          '--progress_every', '0', *extra]
  start = time.perf_counter()
  with open(os.path.join(out_dir, 'stderr'), 'w') as err:
    proc = subprocess.Popen(argv, cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=err, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
  wall = time.perf_counter() - start
  if os.waitstatus_to_exitcode(status) != 0:
    with open(os.path.join(out_dir, 'stderr'), encoding='utf-8') as f:
      raise RuntimeError(f'{corpus} failed:\n{f.read()[-3000:]}')
  summary = json.loads(out.strip().splitlines()[-1])
  assert summary['reconciled'], summary
  return {'documents': summary['documents_embedded'],
          'same_text': summary.get('documents_same_text'),
          'tokens': summary['tokens'],
          'tokens_computed': summary['tokens_computed'],
          'encoder_s': summary['encoder_seconds'],
          'wall_s': round(wall, 2),
          'peak_rss_mb': round(usage.ru_maxrss / 1024)}


def _ratio(a, b):
  return round(a / b, 3) if a is not None and b else None


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--n', type=int, default=2000,
                 help='records of one_text and distinct')
  p.add_argument('--fraction', type=float, default=1.0,
                 help='part of the sample corpus that dup30 and nodup use')
  p.add_argument('--share', type=float, default=0.3,
                 help='copies added, as a share of the corpus')
  p.add_argument('--scale', type=int, default=5,
                 help='distinct corpus copies of dup30_Kx (0: no such case)')
  p.add_argument('--root', default=ROOT,
                 help='the checkout whose pipeline runs (another tree, to '
                 'compare with)')
  p.add_argument('--model_cache_dir', default=None,
                 help='passed to the job (another tree converts its own)')
  p.add_argument('--smoke', action='store_true',
                 help='small sizes: n 120, 5%% of the corpus, no scaled case')
  args = p.parse_args(argv)
  if args.smoke:
    args.n, args.fraction, args.scale = 120, 0.05, 0
  extra = (['--model_cache_dir', args.model_cache_dir]
           if args.model_cache_dir else [])
  with open('/proc/cpuinfo', encoding='ascii', errors='replace') as f:
    model = next((line.split(':', 1)[1].strip() for line in f
                  if line.startswith('model name')), 'unknown')
  print(f'cpu: {model}, {os.cpu_count()} CPUs; tree: {args.root}')
  folder = tempfile.mkdtemp(prefix='bench-same-text-corpora-')
  paths = corpora(folder, n=args.n, fraction=args.fraction,
                  share=args.share, scale=args.scale)
  results = {}
  print(f'{"case":<12} {"docs":>7} {"same":>6} {"tokens":>8} '
        f'{"computed":>9} {"encoder s":>9} {"wall s":>7} {"RSS MB":>7}')
  for case, path in paths.items():
    r = results[case] = run_case(args.root, path, extra)
    print(f'{case:<12} {r["documents"]:>7} {str(r["same_text"]):>6} '
          f'{r["tokens"]:>8} {r["tokens_computed"]:>9} '
          f'{r["encoder_s"]:>9.2f} {r["wall_s"]:>7.1f} '
          f'{r["peak_rss_mb"]:>7}', flush=True)
  one, distinct = results['one_text'], results['distinct']
  dup, nodup = results['dup30'], results['nodup']
  ratios = {
      'one_text_vs_distinct_encoder': _ratio(one['encoder_s'],
                                             distinct['encoder_s']),
      'one_text_vs_distinct_tokens_computed': _ratio(
          one['tokens_computed'], distinct['tokens_computed']),
      'dup30_vs_nodup_encoder': _ratio(dup['encoder_s'], nodup['encoder_s']),
      'dup30_vs_nodup_tokens_computed': _ratio(dup['tokens_computed'],
                                               nodup['tokens_computed']),
  }
  scaled = results.get(f'dup30_{args.scale}x')
  if scaled:
    ratios['dup30_memory_growth'] = _ratio(scaled['peak_rss_mb'],
                                           dup['peak_rss_mb'])
  for name, value in ratios.items():
    print(f'{name}: {value}')
  print(json.dumps({'cases': results, 'ratios': ratios}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
