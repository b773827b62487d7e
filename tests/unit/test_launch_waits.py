"""What a quiet Dataflow launch says while it waits (pipeline/stall.py) and
what an interrupt does to its job (pipeline/dataflow_job.py): the pieces
that tests/test_dataflow_launch.py runs end to end, each case here."""

from __future__ import annotations

import io
import logging
import os

import pytest

from pipeline import dataflow_job
from pipeline import stall

pytestmark = pytest.mark.unit


@pytest.mark.parametrize('flag,interactive,expected', [
    (None, True, dataflow_job.ASK),
    (None, False, dataflow_job.CANCEL),
    (True, True, dataflow_job.CANCEL),
    (True, False, dataflow_job.CANCEL),
    (False, True, dataflow_job.KEEP),
    (False, False, dataflow_job.KEEP),
])
def test_what_an_interrupt_does(flag, interactive, expected):
  assert dataflow_job.on_interrupt(flag, interactive) == expected


def _asked(answer, *, close=False, timeout=5.0):
  read_fd, write_fd = os.pipe()
  if answer is not None:
    os.write(write_fd, answer)
  if close:
    os.close(write_fd)
  said = []
  try:
    return dataflow_job.ask('cancel Dataflow job J?', read_fd=read_fd,
                            write=said.append, echoed=False,
                            timeout=timeout), said
  finally:
    os.close(read_fd)
    if not close:
      os.close(write_fd)


@pytest.mark.parametrize('answer,yes', [
    (b'\n', True), (b'y\n', True), (b'Yes\n', True), (b'n\n', False),
    (b'NO\n', False)])
def test_the_question_takes_yes_by_default(answer, yes):
  (got, why), said = _asked(answer)
  assert (got, why) == (yes, '')
  assert said == ['cancel Dataflow job J? [Y/n] ', '\n']


def test_no_answer_cancels_and_says_so():
  (got, why), _ = _asked(None, timeout=0.05)
  assert got is True and why == 'no answer in 0 s'


def test_end_of_input_is_yes():
  (got, _), _ = _asked(None, close=True)
  assert got is True


def _watcher(said):
  watcher = stall._Watcher()
  watcher.say = said.append
  return watcher


def test_a_stage_is_said_once_until_what_it_says_changes():
  said, state = [], ['PENDING']
  watcher = _watcher(said)
  watcher.set(lambda seconds: f'waiting: J ({state[0]}, {int(seconds)} s)')
  watcher.tick(every=3600)  # not yet stalled
  assert said == []
  watcher.tick(every=0)
  watcher.tick(every=0)  # the same words (the seconds aside): not again
  assert len(said) == 1 and said[0].startswith('waiting: J (PENDING, ')
  state[0] = 'QUEUED'
  watcher.tick(every=0)
  assert len(said) == 2 and 'QUEUED' in said[1]


def test_a_stage_that_ends_says_nothing():
  said = []
  watcher = _watcher(said)
  watcher.set(lambda seconds: None)
  watcher.tick(every=0)
  watcher.set(None)
  watcher.tick(every=0)
  assert said == []


def test_the_interval_can_be_lowered(monkeypatch):
  assert stall.interval() == stall.STALL_SECONDS == 10.0
  monkeypatch.setenv(stall.ENV, '0.5')
  assert stall.interval() == 0.5


def _beam_says(logger: str, message: str, *args) -> str:
  """The submitting stage's line after Beam logs `message`."""
  stall.listen_to_beam()
  said = []
  with stall.submitting('generic'):
    logging.getLogger(logger).info(message, *args)
    watcher = _watcher(said)
    watcher.stage = stall._watcher.stage
    watcher.tick(every=0)
  return said[0]


def test_beams_messages_name_the_step():
  """Beam 2.77's own messages (format strings as in its apiclient and
  stager); an unknown one leaves the generic line."""
  apiclient = 'apache_beam.runners.dataflow.internal.apiclient'
  stager = 'apache_beam.runners.portability.stager'
  assert _beam_says(apiclient, 'Starting GCS upload to %s...',
                    'gs://b/tmp/job.1/pipeline.pb').startswith(
                        'staging gs://b/tmp/job.1/pipeline.pb to Cloud '
                        'Storage (')
  assert _beam_says(apiclient, 'Completed GCS upload to %s in %s seconds.',
                    'gs://b/x', 0).startswith(
                        'submitting the job to Dataflow (')
  assert _beam_says(stager, 'Executing command: %s',
                    ['python', 'setup.py', 'sdist', '--dist-dir', '/t']
                    ).startswith("packaging the job's code")
  assert _beam_says(apiclient, 'a message Beam did not send before'
                    ).startswith('generic (')


def _launch_of(state: str):
  """A Launch whose job is Beam's own DataflowPipelineResult for a job in
  `state` (a terminal state is not asked for again: no service needed)."""
  from apache_beam.options.pipeline_options import PipelineOptions
  from apache_beam.runners.dataflow.dataflow_runner import (
      DataflowPipelineResult)
  from google.cloud.dataflow_v1beta3.types import Job, JobState
  launch = dataflow_job.Launch(
      PipelineOptions(['--project', 'p', '--region', 'r']), None)
  launch.result = DataflowPipelineResult(
      Job(id='J', current_state=JobState[state]), runner=None)
  return launch


def test_a_job_that_ended_meanwhile_is_not_cancelled():
  said = []
  line = _launch_of('JOB_STATE_DONE').interrupted(
      finished=False, say=said.append, stdin=io.StringIO())  # no terminal
  assert line == 'the Dataflow job J had ended (DONE): nothing to cancel'
  assert said == []


def test_a_finished_run_leaves_its_job():
  line = _launch_of('JOB_STATE_DONE').interrupted(finished=True,
                                                   say=print)
  assert line == 'the Dataflow job J had ended'
