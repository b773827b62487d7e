"""Runs the same jobs with the code of two revisions and compares what they
wrote, record by record: a refactor must leave records and summaries as
they were.

    .venv/bin/python scripts/compare_outputs.py --base REV [--head REV]

Each revision is checked out into a worktree of its own (this checkout's
.venv and .cache are linked in), and runs, one after the other, under the
same paths so that the summaries can be compared as they are:
- a full run of a corpus with bad records (the sample corpus' first
  --docs documents, a malformed line, an empty text, a record without
  text), to TFRecord and to Parquet;
- a nightly run after it (--previous): a tenth of the texts changed, a
  twentieth removed, as many added, the bad records again.
Then, for every job: the summary's fields but the times and rates; every
record by id, its vector compared bit for bit; every dead letter. Both
outputs are read with this checkout's pipeline.read, so that a reader
that changed cannot hide a difference. With --head omitted, the working
tree's HEAD is compared with --base; --base HEAD compares a revision with
itself, the floor of any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Summary fields that measure the run rather than describe what it did.
VOLATILE = ('seconds', 'encoder_seconds', 'first_batch_seconds',
            'documents_per_second')
FORMATS = ('tfrecord', 'parquet')


def corpora(folder: str, docs: int) -> tuple[str, str]:
  """Day 1 and day 2 corpora (JSON lines, with bad records)."""
  with open(os.path.join(ROOT, 'data', 'stdlib_docstrings.jsonl'),
            encoding='utf-8') as f:
    rows = [json.loads(line) for line in f]
  day1 = rows[:docs]
  changed = {d['id'] for d in day1[::10]}
  removed = {d['id'] for d in day1[5::20]}
  day2 = [dict(d, text=d['text'] + ' (revised)') if d['id'] in changed
          else d for d in day1 if d['id'] not in removed]
  day2 += rows[docs:docs + len(removed)]
  bad = ['{"id": "broken", "text": ',
         json.dumps({'id': 'empty', 'text': '   '}),
         json.dumps({'id': 'notext'})]
  paths = []
  for name, day in (('day1', day1), ('day2', day2)):
    lines = [json.dumps(d) for d in day]
    for i, line in enumerate(bad):
      lines.insert(3 + 2 * i, line)
    path = os.path.join(folder, f'{name}.jsonl')
    with open(path, 'w', encoding='utf-8') as f:
      f.write('\n'.join(lines) + '\n')
    paths.append(path)
  return paths[0], paths[1]


def worktree(rev: str, folder: str) -> str:
  subprocess.run(['git', 'worktree', 'add', '-q', '--detach', folder, rev],
                 cwd=ROOT, check=True)
  for name in ('.venv', '.cache'):
    os.symlink(os.path.join(ROOT, name), os.path.join(folder, name))
  return folder


def run_jobs(code: str, out: str, day1: str, day2: str) -> dict:
  """{job: summary} of every job, run with the code in `code`."""
  summaries = {}
  python = os.path.join(ROOT, '.venv', 'bin', 'python')
  for fmt in FORMATS:
    for job, corpus, extra in (
        ('full', day1, []),
        ('nightly', day2, ['--previous', f'{out}/{fmt}/full/emb'])):
      argv = [python, '-m', 'pipeline.run', '--model', 'minilm-l6',
              '--input', corpus, '--output', f'{out}/{fmt}/{job}/emb',
              '--output_format', fmt, '--metadata_fields', 'source',
              '--max_rejected', '100%', *extra]
      proc = subprocess.run(argv, cwd=code, capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
      if proc.returncode != 0:
        raise SystemExit(f'{job} {fmt} failed with the code of {code}:\n'
                         f'{proc.stderr[-3000:]}')
      summaries[f'{fmt}/{job}'] = json.loads(
          proc.stdout.strip().splitlines()[-1])
  return summaries


def records(prefix: str) -> dict:
  from pipeline import read
  loaded = read.load(prefix)
  rows = loaded.table.to_pylist()
  return {row['id']: (row, vector.tobytes())
          for row, vector in zip(rows, loaded.vectors)}


def dead_letters(prefix: str) -> list:
  """The dead letters beside a file output (its default location)."""
  from pipeline import read
  rows = read.load(prefix + '_dead_letter',
                   dead_letters=True).table.to_pylist()
  return sorted(json.dumps(without_times(r), sort_keys=True, default=str)
                for r in rows)


def without_times(row: dict) -> dict:
  return {k: v for k, v in row.items()
          if k not in ('embedded_at', 'failed_at', 'embedding')}


def compare(base: str, head: str, job: str, summaries: dict) -> list[str]:
  """What differs in one job, one line each (none: the same)."""
  import numpy as np
  found = []
  a, b = (dict(summaries[side][job]) for side in ('base', 'head'))
  for key in sorted(set(a) | set(b)):
    if key not in VOLATILE and a.get(key) != b.get(key):
      found.append(f'summary {key}: {a.get(key)!r} -> {b.get(key)!r}')
  prefix = f'{job}/emb'
  ra, rb = records(os.path.join(base, prefix)), records(
      os.path.join(head, prefix))
  if set(ra) != set(rb):
    found.append(f'ids: {len(set(ra) - set(rb))} only before, '
                 f'{len(set(rb) - set(ra))} only after')
  worst, differing = 0.0, 0
  for doc_id in sorted(set(ra) & set(rb)):
    (row_a, vec_a), (row_b, vec_b) = ra[doc_id], rb[doc_id]
    if without_times(row_a) != without_times(row_b):
      found.append(f'record {doc_id}: {without_times(row_a)} -> '
                   f'{without_times(row_b)}')
    if vec_a != vec_b:
      differing += 1
      worst = max(worst, float(np.max(np.abs(
          np.frombuffer(vec_a, np.float32) -
          np.frombuffer(vec_b, np.float32)))))
  if differing:
    found.append(f'vectors: {differing} of {len(ra)} not bit-identical '
                 f'(largest difference {worst:.3g})')
  if dead_letters(os.path.join(base, prefix)) != dead_letters(
      os.path.join(head, prefix)):
    found.append('dead letters differ')
  return found


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--base', required=True, help='revision before')
  parser.add_argument('--head', default='HEAD', help='revision after '
                      '(default: HEAD)')
  parser.add_argument('--docs', type=int, default=300,
                      help='documents of the sample corpus (default: 300)')
  parser.add_argument('--keep', action='store_true',
                      help='keep the work folder (printed)')
  args = parser.parse_args(argv)
  work = tempfile.mkdtemp(prefix='compare-outputs-')
  try:
    day1, day2 = corpora(work, args.docs)
    out = os.path.join(work, 'out')
    summaries = {}
    for side, rev in (('base', args.base), ('head', args.head)):
      code = worktree(rev, os.path.join(work, f'code-{side}'))
      try:
        # The same output paths for both: the summaries name them.
        summaries[side] = run_jobs(code, out, day1, day2)
      finally:
        subprocess.run(['git', 'worktree', 'remove', '--force', code],
                       cwd=ROOT, check=False)
      os.rename(out, os.path.join(work, side))
    report = {}
    for job in summaries['base']:
      differences = compare(os.path.join(work, 'base'),
                            os.path.join(work, 'head'), job, summaries)
      n = len(records(os.path.join(work, 'base', job, 'emb')))
      print(f'{job}: {n} records, '
            f'{summaries["base"][job]["documents_rejected"]} dead letters: '
            + ('the same' if not differences else
               f'{len(differences)} difference(s)'))
      for line in differences[:20]:
        print(f'  {line}')
      report[job] = differences
    print(json.dumps({'base': args.base, 'head': args.head,
                      'same': not any(report.values()),
                      'jobs': {job: len(d) for job, d in report.items()}}))
    return 0 if not any(report.values()) else 1
  finally:
    if args.keep:
      print(f'work folder: {work}', file=sys.stderr)
    else:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
  sys.exit(main())
