"""Quiet never means silent: when a launch makes no visible progress for
STALL_SECONDS, one line says what it waits for.

The launch names its stage as it goes (`stage`, `during`): submitting the
job to Dataflow, waiting for the Dataflow job to start. A watcher thread
prints a stage's line once the stage has lasted STALL_SECONDS, and again
only if what the line says changes (a step of Beam's staging, a Dataflow
job's state), at most once per STALL_SECONDS: a quiet run that waits says
so, and one that moves says nothing more.

Within Beam's DataflowRunner (p.run(): packaging --setup_file, staging
files to Cloud Storage, creating the job) this project's code cannot see
which step is running; Beam's own INFO messages say it, so `listen_to_beam`
reads them, here and nowhere else (BEAM_STEPS). If Beam's messages change,
the line falls back to the stage's own, generic words ("waiting for Beam's
DataflowRunner to stage and submit the job").

BEAM_TEXT_EMBED_STALL_SECONDS sets the interval for a process (tests use
a second). Stdlib only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from typing import Callable, Optional, Union

STALL_SECONDS = 10.0
ENV = 'BEAM_TEXT_EMBED_STALL_SECONDS'

# A stage's line: a text, or a function of the seconds the stage has lasted
# that returns the line (None: the stage is over, nothing to say).
Describe = Union[str, Callable[[float], Optional[str]]]


def interval() -> float:
  try:
    return float(os.environ.get(ENV, STALL_SECONDS))
  except ValueError:
    return STALL_SECONDS


class _Stage:
  def __init__(self, describe: Optional[Describe]):
    self.describe = describe
    self.since = time.monotonic()
    self.last = self.since  # its start, or when its line was last asked for
    self.said: Optional[str] = None  # the last line's key


class _Watcher:
  """No lock: a stage is replaced whole (one assignment), and an interrupt's
  finisher sets one while the interrupted main thread may be anywhere."""

  def __init__(self):
    self.stage = _Stage(None)
    self.thread: Optional[threading.Thread] = None
    self.say: Callable[[str], None] = _print

  def set(self, describe: Optional[Describe]) -> Optional[Describe]:
    before, self.stage = self.stage.describe, _Stage(describe)
    return before

  def tick(self, every: float) -> None:
    stage = self.stage
    if stage.describe is None:
      return
    now = time.monotonic()
    if now - stage.last < every:
      return
    stage.last = now  # asked at most once per interval, even if it fails
    describe = stage.describe
    text = describe(now - stage.since) if callable(describe) else describe
    if text is None:
      return
    # The key leaves out the seconds: a line is said again only when what
    # it says changes, and at most once per interval.
    key = re.sub(r'\d+ s\b', '', text)
    if stage is not self.stage or stage.said == key:
      return
    stage.said = key
    self.say(text)

  def run(self) -> None:
    every = interval()
    while True:
      time.sleep(min(1.0, every / 4))
      try:
        self.tick(every)
      except Exception:  # noqa: BLE001  (a line is never worth a crash)
        pass


def _print(text: str) -> None:
  print(text, file=sys.stderr, flush=True)


_watcher = _Watcher()


def start(say: Optional[Callable[[str], None]] = None) -> None:
  """Starts the watcher (once per process): the command's main()."""
  if say is not None:
    _watcher.say = say
  if _watcher.thread is None:
    _watcher.thread = threading.Thread(target=_watcher.run, daemon=True,
                                       name='stall')
    _watcher.thread.start()


def stage(describe: Optional[Describe]) -> Optional[Describe]:
  """The launch is now at this stage (None: none worth a line); returns
  the stage it was at."""
  return _watcher.set(describe)


@contextlib.contextmanager
def during(describe: Describe):
  """This stage while the block runs, then the one before."""
  before = stage(describe)
  try:
    yield
  finally:
    stage(before)


def seconds(value: float) -> str:
  return f'{int(value)} s'


# Beam's INFO messages that say what its DataflowRunner is doing in p.run()
# (Beam 2.77: runners/dataflow/internal/apiclient.py and
# runners/portability/stager.py): (logger, message pattern, the line; the
# pattern's groups fill it). A message not matched here changes nothing.
_APICLIENT = 'apache_beam.runners.dataflow.internal.apiclient'
_STAGER = 'apache_beam.runners.portability.stager'
BEAM_STEPS = (
    (_STAGER, re.compile(r"Executing command: .*'sdist'"),
     'packaging the job\'s code (--setup_file: setup.py sdist)'),
    (_STAGER, re.compile(r'Executing command: .*pip.*(download|install)'),
     'fetching the job\'s Python packages (pip)'),
    (_APICLIENT, re.compile(r'Starting GCS upload to (gs://\S+?)\.*$'),
     'staging {0} to Cloud Storage'),
    (_APICLIENT, re.compile(r'Completed GCS upload to '),
     'submitting the job to Dataflow'),
)
BEAM_LOGGERS = tuple(sorted({name for name, _, _ in BEAM_STEPS}))


class _BeamSteps(logging.Handler):
  """Turns Beam's messages into the stage within `submitting`."""

  def __init__(self, on_step: Callable[[str], None]):
    super().__init__(logging.INFO)
    self._on_step = on_step

  def emit(self, record: logging.LogRecord) -> None:
    for name, pattern, line in BEAM_STEPS:
      if record.name != name:
        continue
      try:
        found = pattern.search(record.getMessage())
      except Exception:  # noqa: BLE001
        return
      if found:
        self._on_step(line.format(*found.groups()))
        return


_beam = {'step': None, 'handler': None}


def listen_to_beam() -> None:
  """Beam's DataflowRunner loggers at INFO, read by this module only: the
  quiet console prints none of their INFO lines (console.configure keeps
  INFO lines to the job's own loggers)."""
  if _beam['handler'] is not None:
    return
  handler = _BeamSteps(lambda step: _beam.__setitem__('step', step))
  _beam['handler'] = handler
  for name in BEAM_LOGGERS:
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)


@contextlib.contextmanager
def submitting(generic: str):
  """The stage of Beam's p.run(): its current step as Beam's messages say
  it, or `generic` while they say nothing this module knows."""
  _beam['step'] = None

  def describe(elapsed: float) -> str:
    return f'{_beam["step"] or generic} ({seconds(elapsed)})'

  with during(describe):
    yield
