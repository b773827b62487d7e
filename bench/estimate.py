"""The plan's cost line (pipeline/estimate.py) against the counts runs
report, side by side in one run on one machine.

On the repository's sample corpus (what ./run_local.sh embeds, by
default) it
1. estimates the plan (the line a Dataflow launch prints), then runs the
   job locally and reads its summary: documents read and tokens;
2. the same estimate for the corpus compressed with gzip (documents from
   the decompressed sample's bytes per record, scaled by the gzip ratio the
   sample saw);
3. the corpus 20 times over, shuffled into 10 files (the sample then
   reads a small part of it): documents counted here, tokens 20 times the
   first run's (the same documents; a run would reuse repeated texts'
   vectors, so this is what they need, not what a run would encode);
4. makes a second day, the corpus with --changed of the texts changed,
   estimates the nightly plan against the first run's output
   (`--previous`), then runs the nightly job: documents embedded, of those
   read.

Each estimate is timed (the tokenizer's load included; the plan's own
checks, which the launch makes anyway, are not). The last line is one JSON
object with every figure.

  .venv/bin/python bench/estimate.py
  .venv/bin/python bench/estimate.py --corpus data/stdlib_docstrings.jsonl \
      --changed 0.1 --max_seq_length 128
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.nightly import run


def estimate(argv: list):
  """(figures, line, seconds) of a plan made in this process."""
  from pipeline import estimate as estimate_lib
  from pipeline.launch import plan_from_argv
  plan = plan_from_argv(argv)
  figures = estimate_lib.of_plan(plan)
  embed = plan.embed
  line = estimate_lib.line(figures, max_seq_length=embed.max_seq_length,
                           long_documents=embed.long_documents,
                           nightly=plan.where.previous is not None)
  return figures, line, figures.seconds


def second_day(corpus: str, path: str, share: float, seed: int = 11) -> int:
  """The corpus with `share` of its documents' texts changed: how many."""
  with open(corpus, encoding='utf-8') as f:
    docs = [json.loads(line) for line in f if line.strip()]
  rng = random.Random(seed)
  changed = set(rng.sample(range(len(docs)), round(share * len(docs))))
  with open(path, 'w', encoding='utf-8') as f:
    for i, doc in enumerate(docs):
      if i in changed:
        doc = dict(doc, text=doc['text'] + ' Revised tonight.')
      f.write(json.dumps(doc) + '\n')
  return len(changed)


def spread_copies(corpus: str, folder: str, copies: int, files: int,
                  seed: int = 5) -> int:
  """The corpus's lines `copies` times, shuffled into `files` files:
  how many lines."""
  with open(corpus, encoding='utf-8') as f:
    docs = [line for line in f if line.strip()]
  rng = random.Random(seed)
  every = [line for _ in range(copies) for line in docs]
  rng.shuffle(every)
  os.makedirs(folder)
  for i in range(files):
    with open(os.path.join(folder, f'part-{i:02d}.jsonl'), 'w',
              encoding='utf-8') as f:
      f.writelines(every[i::files])
  return len(every)


def _error(estimated, actual) -> str:
  if estimated is None or not actual:
    return 'n/a'
  return f'{100 * (estimated - actual) / actual:+.1f}%'


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--corpus', default=os.path.join(
      ROOT, 'data', 'stdlib_docstrings.jsonl'))
  parser.add_argument('--changed', type=float, default=0.1,
                      help='share of texts changed on the second day')
  parser.add_argument('--max_seq_length', type=int, default=128)
  parser.add_argument('--model_cache_dir',
                      default=os.path.join(ROOT, '.cache', 'models'))
  parser.add_argument('--keep', action='store_true')
  args = parser.parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  work = tempfile.mkdtemp(prefix='bench-estimate-')
  flags = ['--model', 'minilm-l6', '--model_cache_dir', args.model_cache_dir,
           '--max_seq_length', str(args.max_seq_length),
           '--metadata_fields', 'source']
  rows = {}
  try:
    full_out = os.path.join(work, 'full', 'emb')
    est, line, seconds = estimate(['--input', args.corpus, '--output',
                                   full_out, *flags])
    print(line, f'[{seconds:.1f} s]', file=sys.stderr)
    full = run(['--input', args.corpus, '--output', full_out, *flags],
               os.path.join(work, 'full'))['summary']
    rows['corpus'] = {
        'documents': (est.documents, full['documents_read']),
        'tokens': (est.tokens, full['tokens']),
        'long_share': (est.long_share, round(
            full['documents_truncated'] / full['documents_read'], 4)),
        'seconds': round(seconds, 2), 'line': line}

    packed = os.path.join(work, 'corpus.jsonl.gz')
    with open(args.corpus, 'rb') as f, gzip.open(packed, 'wb') as g:
      shutil.copyfileobj(f, g)
    est, line, seconds = estimate(['--input', packed, '--output',
                                   os.path.join(work, 'gz', 'emb'), *flags])
    print(line, f'[{seconds:.1f} s]', file=sys.stderr)
    rows['corpus.gz'] = {
        'documents': (est.documents, full['documents_read']),
        'tokens': (est.tokens, full['tokens']),
        'seconds': round(seconds, 2), 'line': line}

    many = os.path.join(work, 'many')
    count = spread_copies(args.corpus, many, copies=20, files=10)
    est, line, seconds = estimate(['--input', os.path.join(many, '*.jsonl'),
                                   '--output', os.path.join(work, 'm', 'e'),
                                   *flags])
    print(line, f'[{seconds:.1f} s]', file=sys.stderr)
    rows['corpus x20'] = {
        'documents': (est.documents, count),
        'tokens': (est.tokens, 20 * full['tokens']),
        'seconds': round(seconds, 2), 'line': line}

    day2 = os.path.join(work, 'day2.jsonl')
    changed = second_day(args.corpus, day2, args.changed)
    nightly_flags = ['--input', day2, '--output',
                     os.path.join(work, 'nightly', 'emb'), '--previous',
                     full_out, *flags]
    est, line, seconds = estimate(nightly_flags)
    print(line, f'[{seconds:.1f} s]', file=sys.stderr)
    night = run(nightly_flags, os.path.join(work, 'nightly'))['summary']
    share = night['documents_embedded'] / night['documents_read']
    rows['nightly'] = {
        'documents': (est.documents, night['documents_read']),
        'changed_share': (est.changed_share, round(share, 4)),
        'tokens_to_embed': (est.changed_tokens, night['tokens']),
        'changed_made': changed,
        'seconds': round(seconds, 2), 'line': line}
  finally:
    if args.keep:
      print(f'kept: {work}', file=sys.stderr)
    else:
      shutil.rmtree(work, ignore_errors=True)

  print(f'{"case":<12}{"figure":<15}{"estimated":>14}{"actual":>12}'
        f'{"error":>9}')
  for case, row in rows.items():
    for figure in ('documents', 'tokens', 'long_share', 'changed_share',
                   'tokens_to_embed'):
      if figure not in row:
        continue
      estimated, actual = row[figure]
      share = figure.endswith('_share')
      shown = (f'{estimated:,.3f}' if share
               else f'{estimated:,.0f}') if estimated is not None else 'n/a'
      print(f'{case:<12}{figure:<15}{shown:>14}{actual:>12,}'
            f'{_error(estimated, actual):>9}')
    print(f'{case:<12}{"seconds":<15}{row["seconds"]:>14}')
  print(json.dumps(rows))
  return 0


if __name__ == '__main__':
  sys.exit(main())
