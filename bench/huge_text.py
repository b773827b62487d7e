"""Peak memory of a run with one huge text among normal documents, against
the same run without it, side by side in one run on one machine.

Each case is one fresh `python -m pipeline.run` with the offline
`minilm-l6` model (as ./run_local.sh runs it), default flags (so the
default --max_document_bytes and --long_documents truncate) and TFRecord
output, on a JSON-lines corpus written to a temporary folder:

  baseline   the first --docs documents of data/stdlib_docstrings.jsonl
  +SIZE      the same documents and one more line whose text is SIZE bytes
             of words (generated block by block, never held whole here)

The peak is the job process's largest resident size (wait4's ru_maxrss;
the default local runner runs the whole job in that one process). The
table gives each case's peak MB, its ratio to the baseline's, seconds and
the summary's counts: every normal document must be embedded, and the
huge one embedded (under the limit) or dead-lettered as
document_too_large (over it). The last line is one JSON object with every
figure.

  .venv/bin/python bench/huge_text.py                   # +200M, +1G
  .venv/bin/python bench/huge_text.py --sizes 22M,200M
  .venv/bin/python bench/huge_text.py --repo /tmp/old --sizes 22M
      # another checkout's code (e.g. an older commit in a git worktree),
      # with this checkout's virtualenv and model cache
  .venv/bin/python bench/huge_text.py --sizes 200M --max_document_bytes 0
      # no limit: the 200 MB text is read whole and embedded (truncated)
  .venv/bin/python bench/huge_text.py --smoke           # 50 docs, +3M
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
SAMPLE = os.path.join(ROOT, 'data', 'stdlib_docstrings.jsonl')
_UNITS = {'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
_WORDS = ('alpha beta gamma delta model vector token corpus night batch '
          'shard record embed query index table river stone light paper '
          'window garden signal market engine winter summer number letter '
          'answer reason little simple common public private').split()


def parse_size(text: str) -> int:
  """'200M' -> bytes (K, M, G are powers of 1024)."""
  text = text.strip().upper()
  if text[-1:] in _UNITS:
    return int(float(text[:-1]) * _UNITS[text[-1]])
  return int(text)


def write_corpus(path: str, docs: int, huge: int, seed: int = 5) -> None:
  """The first `docs` sample documents, then (huge > 0) one document whose
  text is `huge` bytes of words, written in 1 MiB blocks."""
  with open(SAMPLE, encoding='utf-8') as f:
    lines = [next(f) for _ in range(docs)]
  rng = random.Random(seed)
  words = ' '.join(rng.choice(_WORDS) for _ in range(200_000))
  block = (words[:1 << 20].rsplit(' ', 1)[0] + ' ').encode()
  with open(path, 'wb') as out:
    out.writelines(line.encode() for line in lines)
    if huge:
      out.write(b'{"id": "huge", "text": "')
      left = huge
      while left > 0:
        out.write(block[:left])
        left -= len(block)
      out.write(b'"}\n')


def run(argv: list, cwd: str, log: str) -> dict:
  """One fresh job: seconds, peak RSS (MB) and its summary line."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', HF_HUB_OFFLINE='1')
  with open(log + '.out', 'w') as out, open(log + '.err', 'w') as err:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, '-m', 'pipeline.run', *argv],
                            cwd=cwd, env=env, stdout=out, stderr=err)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
  if os.waitstatus_to_exitcode(status) != 0:
    with open(log + '.err', encoding='utf-8', errors='replace') as f:
      raise RuntimeError(f'{argv} failed:\n{f.read()[-4000:]}')
  with open(log + '.out', encoding='utf-8') as f:
    summary = json.loads(f.read().strip().splitlines()[-1])
  return {'seconds': round(seconds, 1),
          'peak_mb': round(usage.ru_maxrss / 1024, 1), 'summary': summary}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--docs', type=int, default=500,
                      help='Normal documents (default: 500).')
  parser.add_argument('--sizes', default='200M,1G',
                      help='Huge texts, one run each (default: 200M,1G).')
  parser.add_argument('--repo', default=ROOT,
                      help='Checkout whose pipeline runs (default: this).')
  parser.add_argument('--smoke', action='store_true',
                      help='50 documents and one +3M case.')
  parser.add_argument(
      '--max_document_bytes', default=None,
      help='Passed to every run (default: the job\'s default); 0 embeds '
      'the huge texts too (truncated), to measure what that costs.')
  parser.add_argument('--model_cache_dir',
                      default=os.path.join(ROOT, '.cache', 'models'))
  args = parser.parse_args(argv)
  docs, sizes = args.docs, [parse_size(s) for s in args.sizes.split(',')]
  if args.smoke:
    docs, sizes = 50, [3 << 20]
  rows = []
  with tempfile.TemporaryDirectory(prefix='huge_text_') as work:
    for huge in [0] + sizes:
      name = f'+{huge >> 20}M' if huge else 'baseline'
      corpus = os.path.join(work, f'{name}.jsonl')
      write_corpus(corpus, docs, huge)
      flags = [] if args.max_document_bytes is None else [
          '--max_document_bytes', args.max_document_bytes]
      result = run(['--model', 'minilm-l6', '--input', corpus,
                    '--output', os.path.join(work, name, 'emb'),
                    '--model_cache_dir', args.model_cache_dir, *flags],
                   args.repo, os.path.join(work, name))
      os.remove(corpus)
      s = result['summary']
      rows.append({'case': name, 'text_bytes': huge,
                   'peak_mb': result['peak_mb'],
                   'seconds': result['seconds'],
                   'read': s['documents_read'],
                   'embedded': s['documents_embedded'],
                   'rejected': s['documents_rejected'],
                   'truncated': s['documents_truncated'],
                   'reconciled': s['reconciled']})
  base = rows[0]['peak_mb']
  limit = ('default' if args.max_document_bytes is None
           else args.max_document_bytes)
  print(f'repo {args.repo}; {docs} documents of {SAMPLE}; minilm-l6; '
        f'--max_document_bytes {limit}')
  print(f'{"case":>10} {"peak MB":>9} {"x base":>7} {"seconds":>8} '
        f'{"read":>6} {"embedded":>9} {"rejected":>9} {"truncated":>10}')
  for row in rows:
    row['peak_ratio'] = round(row['peak_mb'] / base, 2)
    print(f'{row["case"]:>10} {row["peak_mb"]:>9.0f} '
          f'{row["peak_ratio"]:>7.2f} {row["seconds"]:>8.1f} '
          f'{row["read"]:>6} {row["embedded"]:>9} {row["rejected"]:>9} '
          f'{row["truncated"]:>10}')
  print(json.dumps({'repo': args.repo, 'documents': docs,
                    'max_document_bytes': limit, 'runs': rows}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
