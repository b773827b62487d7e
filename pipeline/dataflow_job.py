"""A Dataflow job this command launches: its id and console link as soon as
Dataflow names it, what the quiet console says while the job is being
submitted and while it waits to start (pipeline/stall.py), and what Ctrl-C
or SIGTERM does to it (--cancel_on_interrupt).

Why cancel by default: a launch stopped from its terminal or by a
scheduler's SIGTERM otherwise leaves GPU workers billing for a job nobody
waits for. At a terminal the command asks once; `--cancel_on_interrupt`
answers for it (true: cancel, false: leave the job running). The cancel
is Beam's public DataflowPipelineResult.cancel().
"""

from __future__ import annotations

import os
import select
import sys
from typing import Callable, Optional

from pipeline import stall

RUNNER = 'DataflowRunner'
# How long the question waits for an answer; no answer means its default
# (cancel), so that an unattended terminal never keeps a job billing.
ASK_SECONDS = 30.0

CANCEL, KEEP, ASK = 'cancel', 'keep', 'ask'


def on_interrupt(cancel_on_interrupt: Optional[bool],
                 interactive: bool) -> str:
  """What an interrupt does to the job: CANCEL, KEEP or ASK.
  --cancel_on_interrupt unset asks at a terminal and cancels elsewhere (a
  scheduler, a pipe: nobody to ask)."""
  if cancel_on_interrupt is None:
    return ASK if interactive else CANCEL
  return CANCEL if cancel_on_interrupt else KEEP


def ask(question: str, *, read_fd: int, write: Callable[[str], None],
        echoed: bool, timeout: float = ASK_SECONDS) -> tuple[bool, str]:
  """Asks a [Y/n] question on a terminal: (yes, why). Yes unless the
  answer starts with n; no answer within `timeout`, or the end of input,
  counts as yes, and `why` says so. echoed: the terminal shows the answer
  (and its line break) where the question is written."""
  write(f'{question} [Y/n] ')
  ready, _, _ = select.select([read_fd], [], [], timeout)
  if not ready:
    write('\n')
    return True, f'no answer in {timeout:.0f} s'
  answer = os.read(read_fd, 1024).decode('utf-8', 'replace').strip().lower()
  if not echoed:
    write('\n')
  if not answer:
    return True, ''
  return not answer.startswith('n'), ''


def console_url(region: str, job_id: str, project: str) -> str:
  return (f'https://console.cloud.google.com/dataflow/jobs/{region}/'
          f'{job_id}?project={project}')


class Launch:
  """One Dataflow launch of this command: `submitting()` around p.run(),
  `started(result)` once it returns, `interrupted()` from the command's
  interrupt finisher."""

  def __init__(self, options, cancel_on_interrupt: Optional[bool]):
    from apache_beam.options.pipeline_options import GoogleCloudOptions
    # Read when needed: Beam's runner fills in a default region in p.run().
    self._cloud = options.view_as(GoogleCloudOptions)
    self.cancel_on_interrupt = cancel_on_interrupt
    self.result = None

  @property
  def project(self) -> Optional[str]:
    return self._cloud.project

  @property
  def region(self) -> Optional[str]:
    return self._cloud.region

  def submitting(self):
    """The stage of p.run() (staging, creating the job)."""
    return stall.submitting(
        "waiting for Beam's DataflowRunner to stage and submit the job")

  @property
  def job_id(self) -> Optional[str]:
    """None before p.run() returns, or when it created no job (Beam's
    --template_location writes a template instead)."""
    if not getattr(self.result, 'has_job', False):
      return None
    return self.result.job_id()

  def started(self, result) -> None:
    """p.run() returned: the job's id and link, at once; then, until the
    job runs, what it waits for."""
    self.result = result
    job_id = self.job_id
    if not job_id:
      return
    print(f'Dataflow job {job_id}: '
          f'{console_url(self.region, job_id, self.project)}',
          file=sys.stderr, flush=True)
    stall.stage(self._waiting_to_start)

  def _waiting_to_start(self, elapsed: float) -> Optional[str]:
    """The stall line while the job has not started; None once it runs
    (then its progress lines speak) or has ended."""
    state = str(self.result.state).rsplit('.', 1)[-1]
    if state not in ('PENDING', 'UNKNOWN', 'UNRECOGNIZED', 'STOPPED'):
      stall.stage(None)
      return None
    return (f'waiting for the Dataflow job to start: {self.job_id} '
            f'({state}, {stall.seconds(elapsed)})')

  def interrupted(self, *, finished: bool, say: Callable[[str], None],
                  ready: Callable[[], object] = lambda: None,
                  if_again: Callable[..., None] = lambda *_: None,
                  stdin=None) -> str:
    """Cancels the job, leaves it running, or asks which, and says which
    it did (the words after 'interrupted (SIGINT); '). ready() returns
    once the terminal can take the question; if_again(text) gives what a
    second signal, while the question waits, leaves."""
    from apache_beam.runners.runner import PipelineState
    stall.stage(None)
    job_id = self.job_id
    if not job_id:
      # Staging, or the create request sent and not yet answered: a job
      # Dataflow creates now has an id this process never learns.
      return ('Dataflow had not named a job yet (staging or submitting): '
              'nothing to cancel; if one was being created, gcloud '
              f'dataflow jobs list --region {self.region} --status active '
              'shows it')
    gcloud = (f'cancel it with gcloud dataflow jobs cancel {job_id} '
              f'--region {self.region}')
    if finished:  # wait_until_finish returned: nothing to cancel
      return f'the Dataflow job {job_id} had ended'
    stdin = sys.stdin if stdin is None else stdin
    interactive = _is_terminal(stdin)
    what = on_interrupt(self.cancel_on_interrupt, interactive)
    # Why it cancels, where the line should say so: the default without a
    # terminal, or a question nobody answered.
    why = ('--cancel_on_interrupt unset and no terminal to ask'
           if what == CANCEL and self.cancel_on_interrupt is None else '')
    if what == ASK:
      ready()  # the terminal is the question's alone
      if_again(f'the Dataflow job {job_id} keeps running; {gcloud}', True)
      yes, why = ask(f'cancel Dataflow job {job_id}?',
                     read_fd=stdin.fileno(), write=say,
                     echoed=_is_terminal(sys.stderr))
      what = CANCEL if yes else KEEP
    if what == KEEP:
      return f'the Dataflow job {job_id} keeps running; {gcloud}'
    if_again(f'the Dataflow job {job_id} may still be running; {gcloud}')
    try:
      # Ended meanwhile (Beam's cancel() then only logs a warning).
      state = self.result.state
      if PipelineState.is_terminal(state):
        return (f'the Dataflow job {job_id} had ended '
                f'({str(state).rsplit(".", 1)[-1]}): nothing to cancel')
      self.result.cancel()
    except Exception as e:  # noqa: BLE001
      first = (str(e).strip().splitlines() or [type(e).__name__])[0]
      return f'cancelling Dataflow job {job_id} failed ({first}); {gcloud}'
    return f'cancelled Dataflow job {job_id}' + (f' ({why})' if why else '')


def _is_terminal(stream) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):
    return False
