"""Cost of a nightly re-embedding against a full run, at two corpus sizes,
side by side in one run on one machine.

For each size (20,000 and 100,000 short synthetic documents by default) it
runs the documented commands, each in a fresh process, with the offline
`minilm-l6` model and TFRecord output:

  full     `python -m pipeline.run --input DAY1 --output FULL`
  nightly  `python -m pipeline.run --input DAY2 --output NIGHTLY
            --previous FULL`, where DAY2 is DAY1 with 0.5% of the texts
            changed and 0.1% of the documents removed.

Each run is timed from start to exit as the parent sees it, and its peak
memory is the whole process tree's: the largest sum of the resident sizes
of the process and its descendants, sampled every 50 ms from /proc (and at
least the largest single process's peak, from wait4). The table gives each
run's seconds, peak MB and counts; then the ratios that show whether a
nightly run costs in proportion to the change:

  nightly_time_share   nightly seconds / full seconds, at the largest size
  nightly_memory_growth  nightly peak MB at the largest size / at the
                       smallest size
  full_memory_growth   the same for full runs

The last line is one JSON object with every figure.

  .venv/bin/python bench/nightly.py                 # 20,000 and 100,000
  .venv/bin/python bench/nightly.py --sizes 2000,10000
  .venv/bin/python bench/nightly.py --smoke         # 300 and 1,500
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHANGED = 0.005
REMOVED = 0.001
_WORDS = ('alpha beta gamma delta model vector token corpus night batch '
          'shard record embed query index table river stone light paper '
          'window garden signal market engine winter summer number letter '
          'answer reason little simple common public private').split()


def sentence(rng: random.Random) -> str:
  return ' '.join(rng.choice(_WORDS) for _ in range(rng.randint(8, 24))) + '.'


def write_days(folder: str, size: int, seed: int = 7) -> tuple[str, str,
                                                                dict]:
  """DAY1 (`size` documents) and DAY2 (0.5% of the texts changed, 0.1% of
  the documents removed) as JSONL; returns their paths and the counts a
  nightly run must report."""
  rng = random.Random(seed)
  docs = [{'id': f'doc-{i:07d}', 'text': sentence(rng)} for i in range(size)]
  order = list(range(size))
  rng.shuffle(order)
  changed = set(order[:max(1, round(size * CHANGED))])
  removed = set(order[len(changed):len(changed) +
                      max(1, round(size * REMOVED))])
  day1 = os.path.join(folder, 'day1.jsonl')
  day2 = os.path.join(folder, 'day2.jsonl')
  with open(day1, 'w', encoding='utf-8') as f1, open(
      day2, 'w', encoding='utf-8') as f2:
    for i, doc in enumerate(docs):
      f1.write(json.dumps(doc) + '\n')
      if i in removed:
        continue
      if i in changed:
        doc = dict(doc, text=doc['text'] + ' Revised tonight.')
      f2.write(json.dumps(doc) + '\n')
  return day1, day2, {'changed': len(changed), 'removed': len(removed),
                      'read': size - len(removed)}


def _tree_rss(pid: int) -> int:
  """Resident bytes of `pid` and every descendant (Linux /proc)."""
  children: dict = {}
  rss: dict = {}
  for entry in os.listdir('/proc'):
    if not entry.isdigit():
      continue
    try:
      with open(f'/proc/{entry}/stat', encoding='ascii') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
      continue
    children.setdefault(int(fields[1]), []).append(int(entry))
    rss[int(entry)] = int(fields[21]) * os.sysconf('SC_PAGE_SIZE')
  total, todo = 0, [pid]
  while todo:
    p = todo.pop()
    total += rss.get(p, 0)
    todo.extend(children.get(p, ()))
  return total


def run(argv: list, log: str) -> dict:
  """One fresh `python -m pipeline.run`: wall seconds, peak tree RSS (MB)
  and its summary (the last line it printed)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', HF_HUB_OFFLINE='1')
  with open(log + '.out', 'w') as out, open(log + '.err', 'w') as err:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, '-m', 'pipeline.run', *argv],
                            cwd=ROOT, env=env, stdout=out, stderr=err)
    peak = [0]
    done = threading.Event()

    def sample():
      while not done.wait(0.05):
        peak[0] = max(peak[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
  if os.waitstatus_to_exitcode(status) != 0:
    with open(log + '.err', encoding='utf-8', errors='replace') as f:
      raise RuntimeError(f'{argv} failed:\n{f.read()[-4000:]}')
  with open(log + '.out', encoding='utf-8') as f:
    summary = json.loads(f.read().strip().splitlines()[-1])
  peak_mb = max(peak[0] / 2**20, usage.ru_maxrss / 1024)
  return {'seconds': round(seconds, 2), 'peak_mb': round(peak_mb, 1),
          'summary': summary}


def bench_size(size: int, work: str, model: list) -> dict:
  folder = os.path.join(work, str(size))
  os.makedirs(folder)
  day1, day2, want = write_days(folder, size)
  full_out = os.path.join(folder, 'full', 'emb')
  full = run(['--input', day1, '--output', full_out, *model],
             os.path.join(folder, 'full'))
  nightly = run(['--input', day2, '--output',
                 os.path.join(folder, 'nightly', 'emb'), '--previous',
                 full_out, *model], os.path.join(folder, 'nightly'))
  s = nightly['summary']
  got = (s['documents_read'], s['documents_embedded'], s['documents_reused'],
         s['documents_removed'])
  expect = (want['read'], want['changed'], want['read'] - want['changed'],
            want['removed'])
  if got != expect or not s['reconciled']:
    raise RuntimeError(f'nightly run at {size}: read, embedded, reused, '
                       f'removed = {got}, expected {expect}')
  return {'documents': size, 'full_s': full['seconds'],
          'full_peak_mb': full['peak_mb'], 'nightly_s': nightly['seconds'],
          'nightly_peak_mb': nightly['peak_mb'],
          'embedded': s['documents_embedded'], 'reused': s['documents_reused'],
          'removed': s['documents_removed']}


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return 'unknown'


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--sizes', default='20000,100000',
                      help='corpus sizes, comma-separated (default: '
                      '20000,100000)')
  parser.add_argument('--smoke', action='store_true',
                      help='sizes 300 and 1500, without the warm-up run: '
                      'checks that the benchmark runs, not a measurement')
  parser.add_argument('--model_cache_dir',
                      default=os.path.join(ROOT, '.cache', 'models'))
  parser.add_argument('--keep', action='store_true',
                      help='keep the corpora and outputs (printed)')
  args = parser.parse_args(argv)
  sizes = [300, 1500] if args.smoke else [
      int(s) for s in args.sizes.split(',')]
  model = ['--model', 'minilm-l6', '--model_cache_dir', args.model_cache_dir]
  work = tempfile.mkdtemp(prefix='bench-nightly-')
  try:
    if not args.smoke:
      # Untimed: converts the model on first use and warms the file cache
      # (a smoke run's times are not figures: it saves the process).
      warm = os.path.join(work, 'warm')
      os.makedirs(warm)
      day1, _, _ = write_days(warm, 20)
      run(['--input', day1, '--output', os.path.join(warm, 'emb'), *model],
          os.path.join(warm, 'run'))
    rows = [bench_size(size, work, model) for size in sizes]
  finally:
    if args.keep:
      print(f'outputs kept in {work}', file=sys.stderr)
    else:
      shutil.rmtree(work, ignore_errors=True)
  small, large = rows[0], rows[-1]
  ratios = {
      'nightly_time_share': round(large['nightly_s'] / large['full_s'], 4),
      'nightly_memory_growth': round(
          large['nightly_peak_mb'] / small['nightly_peak_mb'], 4),
      'full_memory_growth': round(
          large['full_peak_mb'] / small['full_peak_mb'], 4),
  }
  print(f'cpu: {cpu_model()}; {CHANGED:.1%} of texts changed and '
        f'{REMOVED:.1%} of documents removed for the nightly run')
  print(f'{"documents":>10} {"full s":>8} {"full MB":>8} {"nightly s":>10} '
        f'{"nightly MB":>11} {"embedded":>9} {"reused":>8} {"removed":>8}')
  for r in rows:
    print(f'{r["documents"]:>10,} {r["full_s"]:>8.1f} '
          f'{r["full_peak_mb"]:>8.0f} {r["nightly_s"]:>10.1f} '
          f'{r["nightly_peak_mb"]:>11.0f} {r["embedded"]:>9,} '
          f'{r["reused"]:>8,} {r["removed"]:>8,}')
  for name, value in ratios.items():
    print(f'{name}: {value}')
  print(json.dumps({'cpu': cpu_model(), 'sizes': rows, **ratios}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
