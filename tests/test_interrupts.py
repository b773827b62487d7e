"""Ctrl-C and SIGTERM at any moment of a real run (`python -m pipeline.run`
in a process of its own): one line, exit status 130 or 143, no traceback,
no worker process left, no temporary folder left.

Ctrl-C is sent as a terminal sends it, to the whole process group (the
job's worker processes too); SIGTERM as a scheduler sends it, to the
job's process only. The moments are found by watching the run: a time
during module imports, the line the launch prints before it builds the
graph, the first temporary folder (the first bundle being written), a
progress line with documents embedded (mid-run), and the first final
shard (finalisation).
"""

from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests import helpers
from tests import corpora



def _session(sid: int) -> set:
  """The processes of a session other than its leader: the job's workers
  and the shells that start them, even once re-parented (orphans)."""
  found = set()
  for name in os.listdir('/proc'):
    if name.isdigit() and int(name) != sid:
      try:
        with open(f'/proc/{name}/stat', 'rb') as f:
          stat = f.read()
      except OSError:
        continue
      if int(stat[stat.rfind(b')') + 2:].split()[3]) == sid:
        found.add(int(name))
  return found


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat', 'rb') as f:
      stat = f.read()
  except OSError:
    return False
  return stat[stat.rfind(b')') + 2:].split()[0] != b'Z'


def _reached(moment, out: str, err: str, elapsed: float) -> bool:
  if isinstance(moment, float):
    return elapsed >= moment
  if callable(moment):
    return moment()
  return {
      'launched': lambda: err.startswith('embedding '),
      'first bundle': lambda: bool(glob.glob(f'{out}/beam-temp-*/*')),
      'mid-run': lambda: bool(re.search(r'\b[1-9][\d,]* embedded', err)),
      'finalising': lambda: bool(glob.glob(f'{out}/emb-0*')),
  }[moment]()


def _interrupt(tmp_path, model, moment, signum, *, to_group: bool,
               extra=()) -> tuple:
  """model: an export folder, or flags that name the model."""
  model = ['--model_dir', model] if isinstance(model, str) else model
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'),
                               corpora.sample_docs(1000))
  out = str(tmp_path / 'out')
  os.makedirs(out)
  err_path = tmp_path / 'stderr'
  with open(err_path, 'wb') as err_file:
    proc = subprocess.Popen(
        [sys.executable, '-m', 'pipeline.run', *model, '--input',
         corpus.pattern, '--output', f'{out}/emb',
         '--progress_every', '1', *extra],
        cwd=corpora.ROOT, stdout=subprocess.PIPE, stderr=err_file,
        start_new_session=True,  # its own group, as a terminal's job
        env={k: v for k, v in os.environ.items()
             if k not in ('TF_CPP_MIN_LOG_LEVEL', 'BEAM_TEXT_EMBED_QUIET')})
  start, workers = time.monotonic(), set()
  try:
    while True:
      workers |= _session(proc.pid)
      assert proc.poll() is None, (
          f'the run ended before {moment}: {err_path.read_text()[-2000:]}')
      if _reached(moment, out, err_path.read_text(errors='replace'),
                  time.monotonic() - start):
        break
      time.sleep(0.02)
    if to_group:
      os.killpg(proc.pid, signum)
    else:
      proc.send_signal(signum)
    status = proc.wait(timeout=120)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  deadline = time.monotonic() + 3
  while _session(proc.pid) and time.monotonic() < deadline:
    time.sleep(0.1)
  left = sorted(w for w in workers | _session(proc.pid) if _alive(w))
  return status, err_path.read_text(errors='replace'), out, workers, left


def _assert_one_line(status, err, out, left, signum) -> str:
  assert status == 128 + signum, err[-3000:]
  assert left == [], f'worker processes left running: {left}'
  assert glob.glob(f'{out}/beam-temp-*') == []
  assert 'Traceback' not in err, err[-3000:]
  lines = [line for line in err.splitlines() if line.strip()]
  last = helpers.INTERRUPTED.match(lines[-1])
  assert last and last.group(2) == signal.Signals(signum).name, lines[-3:]
  for line in lines[:-1]:  # what a run says before it is stopped
    assert (line.startswith(('embedding ', 'Converting ')) or
            helpers.PROGRESS.match(line)), line
  what = last.group(4)
  if what == 'nothing was written':
    assert os.listdir(out) == [], os.listdir(out)
  return what


MOMENTS = [0.3, 'launched', 'first bundle', 'mid-run', 'finalising']


@pytest.mark.parametrize('moment', MOMENTS)
def test_ctrl_c_at_any_moment(tmp_path, minilm_export, moment):
  status, err, out, _, left = _interrupt(
      tmp_path, minilm_export, moment, signal.SIGINT, to_group=True)
  what = _assert_one_line(status, err, out, left, signal.SIGINT)
  if moment in (0.3, 'launched', 'first bundle', 'mid-run'):
    assert what.startswith('nothing was written'), err
  if moment == 0.3:
    assert 'before the run started' in err
  if moment == 'finalising':  # shards renamed into place: not "nothing"
    assert not what.startswith('nothing'), err


@pytest.mark.parametrize('moment', [0.3, 'launched', 'mid-run'])
def test_sigterm_from_a_scheduler(tmp_path, minilm_export, moment):
  status, err, out, _, left = _interrupt(
      tmp_path, minilm_export, moment, signal.SIGTERM, to_group=False)
  assert _assert_one_line(status, err, out, left, signal.SIGTERM).startswith(
      'nothing was written')


MULTI = ('--direct_running_mode', 'multi_processing', '--direct_num_workers',
         '2')


@pytest.mark.parametrize('signum,to_group', [(signal.SIGINT, True),
                                             (signal.SIGTERM, False),
                                             (signal.SIGTERM, True)])
def test_worker_processes_stop_with_the_run(tmp_path, minilm_export, signum,
                                            to_group):
  status, err, out, workers, left = _interrupt(
      tmp_path, minilm_export, 'mid-run', signum, to_group=to_group,
      extra=MULTI)
  assert len(workers) >= 2  # the two worker processes (and their shells)
  assert _assert_one_line(status, err, out, left, signum).startswith(
      'nothing was written')


def test_verbose_shows_where_it_stopped(tmp_path, minilm_export):
  status, err, _, _, left = _interrupt(
      tmp_path, minilm_export, 'mid-run', signal.SIGINT, to_group=True,
      extra=('--verbose',))
  assert status == 130 and left == []
  assert 'Traceback' in err and 'Interrupted: SIGINT' in err
  assert helpers.INTERRUPTED.match(err.strip().splitlines()[-1])


def test_ctrl_c_while_the_launch_converts_a_preset(tmp_path):
  """The first use of a preset converts it (seconds, in the launch): a
  stop while it saves the converted model leaves none half-written in the
  cache."""
  cache = tmp_path / 'models'
  status, err, out, _, left = _interrupt(
      tmp_path, ['--model', 'minilm-l6', '--model_cache_dir', str(cache)],
      lambda: bool(glob.glob(f'{cache}/**/.tmp-export-*/*', recursive=True)),
      signal.SIGINT,
      to_group=True)
  assert 'Converting minilm-l6' in err
  assert _assert_one_line(status, err, out, left, signal.SIGINT) == (
      'nothing was written')
  # No half-saved model, and none that a later run would take as done.
  assert glob.glob(f'{cache}/**/.tmp*', recursive=True) == []
  assert not os.path.exists(cache / 'minilm-l6' / 'export.json')
