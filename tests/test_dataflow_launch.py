"""A Dataflow launch as a person sees it: `python -m pipeline.run --runner
DataflowRunner ...` in a process of its own, quiet (the default).

Swaps, and nothing else: Dataflow's job service is a stand-in on
127.0.0.1 (tests/dataflow_standin.py, reached through Beam's public
`--dataflow_endpoint`) instead of dataflow.googleapis.com, and Cloud
Storage is the local GCS emulator (tests/emulators.py), where Beam stages
the job and the model and corpus live. The stand-in holds the job in
JOB_STATE_PENDING (a stalled start) or holds its create request (a launch
stopped before Dataflow names the job). BEAM_TEXT_EMBED_STALL_SECONDS=1
lowers the quiet console's stall interval (10 s) so that a test need not
wait for it.

Checked: the job's id and console link as soon as it exists; the line a
stalled start prints; Ctrl-C and SIGTERM cancelling the job (the stand-in
receives the cancel), leaving it running with --cancel_on_interrupt=false
(no cancel sent), asking at a terminal (a pty), and saying there is
nothing to cancel before the job has an id.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import time

import pytest

from tests import helpers
from tests import corpora
from tests import emulators
from tests.dataflow_standin import Standin
from transforms import leases
from transforms.leases import files as leases_files

pytestmark = pytest.mark.services

ROOT = corpora.ROOT
REGION = 'us-central1'
PENDING = (('JOB_STATE_PENDING', 0),)
JOB_LINE = re.compile(
    r'^Dataflow job (\S+): https://console\.cloud\.google\.com/dataflow/jobs/'
    rf'{REGION}/(\S+)\?project={emulators.PROJECT}$', flags=re.M)
WAITING = re.compile(r'^waiting for the Dataflow job to start: (\S+) '
                     r'\(PENDING, \d+ s\)$', flags=re.M)


@pytest.fixture(scope='module')
def gcs(minilm_export):
  with emulators.running() as (emu, _):
    emulators.upload_folder(minilm_export, 'gs://bucket/models/minilm')
    emulators.upload_jsonl(corpora.sample_docs(4),
                           'gs://bucket/corpus/part-0.jsonl')
    yield emu


def _argv(standin: Standin, extra=()) -> list[str]:
  return [sys.executable, '-m', 'pipeline.run', '--runner', 'DataflowRunner',
          '--project', emulators.PROJECT, '--region', REGION,
          '--temp_location', 'gs://bucket/tmp',
          '--dataflow_endpoint', standin.endpoint,
          '--model_dir', 'gs://bucket/models/minilm',
          '--input', 'gs://bucket/corpus/*.jsonl',
          '--output', 'gs://bucket/out/emb', *extra]


def _env(gcs) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ('TF_CPP_MIN_LOG_LEVEL', 'BEAM_TEXT_EMBED_QUIET')}
  env.update(gcs.env, BEAM_TEXT_EMBED_STALL_SECONDS='1')
  return env


def _launch(tmp_path, gcs, standin, until, signum, *, extra=(), stdin=None,
            to_group=True, then=None):
  """Runs the launch until `until(stderr)` holds, sends `signum` (to the
  group, as a terminal's Ctrl-C; else to the process, as a scheduler's
  SIGTERM), calls then(stderr's path, the process) if given; returns
  (status, stderr)."""
  err_path = tmp_path / 'stderr'
  with open(err_path, 'wb') as err_file:
    proc = subprocess.Popen(
        _argv(standin, extra), cwd=ROOT, env=_env(gcs),
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=err_file, start_new_session=True)
  try:
    deadline = time.monotonic() + 300
    while not until(err_path.read_text(errors='replace')):
      assert proc.poll() is None, err_path.read_text()[-3000:]
      assert time.monotonic() < deadline, err_path.read_text()[-3000:]
      time.sleep(0.05)
    if to_group:
      os.killpg(proc.pid, signum)
    else:
      proc.send_signal(signum)
    if then:
      then(err_path, proc)
    status = proc.wait(timeout=120)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  return status, err_path.read_text(errors='replace')


def _last(err: str) -> re.Match:
  lines = [line for line in err.splitlines() if line.strip()]
  last = helpers.INTERRUPTED.match(lines[-1])
  assert last, lines[-5:]
  return last


def _updates(standin: Standin) -> list:
  return [r for r in standin.requests if r.method == 'PUT']


def _lease_names_a_job() -> str:
  """The Dataflow job the output's lease names ('' for none yet): a
  second run on the output names it in its refusal."""
  from apache_beam.io.filesystems import FileSystems
  path = leases_files.lease_path('gs://bucket/out/emb')
  if not FileSystems.exists(path):
    return ''
  with FileSystems.open(path) as f:
    return leases.Holder.from_text(f.read().decode()).job


def test_a_stalled_start_is_named_and_ctrl_c_cancels_the_job(tmp_path, gcs):
  """No flag, no terminal (stdin is not one): Ctrl-C cancels the job,
  once the output's lease names it."""
  noted = []

  def until(err: str) -> bool:
    if WAITING.search(err) and not noted:
      noted.extend(filter(None, [_lease_names_a_job()]))
    return bool(noted)

  with Standin(PENDING) as standin:
    status, err = _launch(tmp_path, gcs, standin, until, signal.SIGINT)
  job_id = standin.created()[0]
  assert noted == [job_id]
  assert _lease_names_a_job() == '', 'the interrupted run left its lease'
  # The id and link as soon as Dataflow named the job, then the wait.
  found = JOB_LINE.search(err)
  assert found and found.group(1) == found.group(2) == job_id, err
  waiting = WAITING.search(err)
  assert waiting.group(1) == job_id and waiting.start() > found.start()
  # Beam's INFO lines, read for the stall line, are not printed.
  assert 'GCS upload' not in err and 'Create job' not in err, err
  assert 'Traceback' not in err, err[-3000:]
  assert status == 130, err[-3000:]
  assert _last(err).group(4) == (
      f'cancelled Dataflow job {job_id} (--cancel_on_interrupt unset and '
      'no terminal to ask)')
  assert standin.cancelled == [job_id]
  assert _updates(standin)[0].body['requestedState'] in (
      'JOB_STATE_CANCELLED', 5)


def test_sigterm_with_cancel_on_interrupt_false_leaves_the_job(tmp_path,
                                                               gcs):
  with Standin(PENDING) as standin:
    status, err = _launch(tmp_path, gcs, standin, JOB_LINE.search,
                          signal.SIGTERM, to_group=False,
                          extra=['--cancel_on_interrupt=false'])
  job_id = standin.created()[0]
  assert status == 143, err[-3000:]
  assert _last(err).group(4) == (
      f'the Dataflow job {job_id} keeps running; cancel it with gcloud '
      f'dataflow jobs cancel {job_id} --region {REGION}')
  assert standin.cancelled == [] and _updates(standin) == []


def _at_the_question(tmp_path, gcs, answer):
  """stdin a terminal (a pty): Ctrl-C once the job has an id, then
  answer(the pty's master, the process) once the question is asked."""
  master, slave = pty.openpty()

  def answered(err_path, proc):
    deadline = time.monotonic() + 60
    while '[Y/n]' not in err_path.read_text(errors='replace'):
      assert time.monotonic() < deadline, err_path.read_text()[-2000:]
      time.sleep(0.05)
    answer(master, proc)

  try:
    with Standin(PENDING) as standin:
      status, err = _launch(tmp_path, gcs, standin, JOB_LINE.search,
                            signal.SIGINT, stdin=slave, then=answered)
  finally:
    os.close(master)
    os.close(slave)
  job_id = standin.created()[0]
  assert f'pipeline.run: cancel Dataflow job {job_id}? [Y/n]' in err, err
  assert status == 130, err[-3000:]
  assert 'Traceback' not in err, err[-3000:]
  return standin, job_id, _last(err)


def test_ctrl_c_at_a_terminal_asks(tmp_path, gcs):
  """Answered n: the job is left running, and the line says how to cancel
  it."""
  standin, job_id, last = _at_the_question(
      tmp_path, gcs, lambda master, proc: os.write(master, b'n\n'))
  assert last.group(4) == (
      f'the Dataflow job {job_id} keeps running; cancel it with gcloud '
      f'dataflow jobs cancel {job_id} --region {REGION}')
  assert _updates(standin) == []


def test_the_questions_default_cancels(tmp_path, gcs):
  """Answered with Enter alone: [Y/n]'s Y."""
  standin, job_id, last = _at_the_question(
      tmp_path, gcs, lambda master, proc: os.write(master, b'\n'))
  assert last.group(4) == f'cancelled Dataflow job {job_id}'
  assert standin.cancelled == [job_id]


def test_a_second_ctrl_c_at_the_question_leaves_the_job(tmp_path, gcs):
  """A second Ctrl-C instead of an answer stops at once; the line says the
  job keeps running, not what a local run leaves."""
  standin, job_id, last = _at_the_question(
      tmp_path, gcs, lambda master, proc: os.killpg(proc.pid, signal.SIGINT))
  assert last.group(1) == 'again ', last.group(0)
  assert last.group(4) == (
      f'stopped at once: the Dataflow job {job_id} keeps running; cancel it '
      f'with gcloud dataflow jobs cancel {job_id} --region {REGION}')
  assert _updates(standin) == []


def test_ctrl_c_before_the_job_has_an_id(tmp_path, gcs):
  """Held at the create request: the stall line names the step (from
  Beam's messages); interrupted then, there is no id to cancel, and the
  line says where a job being created would show."""
  submitting = re.compile(r'^submitting the job to Dataflow \(\d+ s\)$',
                          flags=re.M)
  with Standin(PENDING, hold_create=True) as standin:
    status, err = _launch(
        tmp_path, gcs, standin,
        lambda err: standin.create_arrived.is_set() and submitting.search(err),
        signal.SIGINT, extra=['--cancel_on_interrupt'])
  assert status == 130, err[-3000:]
  assert _last(err).group(4) == (
      'Dataflow had not named a job yet (staging or submitting): nothing to '
      f'cancel; if one was being created, gcloud dataflow jobs list '
      f'--region {REGION} --status active shows it')
  assert not JOB_LINE.search(err)
  assert _updates(standin) == []
