"""What the job prints for a person: log set-up, quiet or --verbose, and
errors as one line.

Quiet (the default): the job's own notices and warnings, each warning once,
as plain lines; libraries' INFO chatter and Python warnings hidden;
TensorFlow's native start-up lines held back (tfmodels.quiet_startup).
--verbose: every log line with its time and level, and tracebacks.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

import tfmodels
from pipeline import stall

# Loggers whose INFO lines a person wants in a quiet run: the job's own
# notices (converting a preset on first use).
_NOTICES = ('pipeline',)


class _OncePerMessage(logging.Filter):
  """A warning repeated by every bundle or worker is shown once."""

  def __init__(self):
    super().__init__()
    self._seen: set = set()

  def filter(self, record: logging.LogRecord) -> bool:
    key = (record.levelno, record.getMessage())
    if key in self._seen:
      return False
    self._seen.add(key)
    return True


class _NoticesOnly(logging.Filter):
  """Below WARNING, only the job's own notices. Some libraries' loggers
  are read at INFO for another purpose (pipeline/stall.py reads Beam's
  DataflowRunner messages to say what a stalled launch waits for); their
  INFO lines stay hidden."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or any(
        record.name == name or record.name.startswith(name + '.')
        for name in _NOTICES)


class _PlainFormatter(logging.Formatter):
  """Notices as they are; warnings and errors prefixed with their level."""

  def format(self, record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.levelno >= logging.WARNING:
      text = f'{record.levelname.lower()}: {text}'
    return text


class _StderrHandler(logging.StreamHandler):
  """Writes to whatever sys.stderr is now, so that a live progress display
  that redirects sys.stderr keeps log lines above it."""

  def __init__(self):
    super().__init__(sys.stderr)

  @property
  def stream(self):
    return sys.stderr

  @stream.setter
  def stream(self, value):  # set by StreamHandler.__init__; ignored
    pass


def configure(verbose: bool, import_tensorflow: bool = True) -> None:
  """Sets up what the process prints. Quiet, TensorFlow is imported here
  with its start-up lines held back, unless `import_tensorflow` is False:
  then the caller imports it with tfmodels.import_quietly() before
  anything else does (pipeline/launch.py, after its preflight)."""
  root = logging.getLogger()
  # A second call (tests run the job many times in one process) replaces
  # this module's handler; handlers of others (pytest's) stay.
  for handler in list(root.handlers):
    if isinstance(handler, _StderrHandler):
      root.removeHandler(handler)
  handler = _StderrHandler()
  root.addHandler(handler)
  if verbose:
    handler.setFormatter(logging.Formatter(
        '%(asctime)s %(levelname)s %(message)s'))
    root.setLevel(logging.INFO)
    logging.getLogger('apache_beam').setLevel(logging.WARNING)
    return
  tfmodels.quiet_startup(import_now=import_tensorflow)
  handler.setFormatter(_PlainFormatter())
  handler.addFilter(_OncePerMessage())
  handler.addFilter(_NoticesOnly())
  root.setLevel(logging.WARNING)
  for name in _NOTICES:
    logging.getLogger(name).setLevel(logging.INFO)
  # Libraries' Python warnings (deprecations and the like) are for their
  # developers; TensorFlow's and absl's own loggers say the same at INFO.
  warnings.simplefilter('ignore')
  for name in ('tensorflow', 'absl', 'apache_beam'):
    logging.getLogger(name).setLevel(logging.ERROR)
  # Beam logs a failing step's exception here before it re-raises it; the
  # job reports that exception as its one error line (run_error_line).
  logging.getLogger('apache_beam.runners.common').setLevel(logging.CRITICAL)
  # What Beam's DataflowRunner is doing, for the line a stalled launch
  # prints (after the levels above: it lowers its own loggers' level).
  stall.listen_to_beam()


_STEP = re.compile(r"\s*\[while running '([^']+)'\]")
_OUTPUT_ERROR = re.compile(r'\bOutputError: (.*)$')
# A damaged file (transforms/codecs): its message names the file, where in
# it, what is wrong and what to do; the step and the class add nothing.
_DAMAGED_FILE = re.compile(r'\bDamagedFile: (.*)$')
# Names of locals that hold the file a failing frame was working on, in
# the code that reads and writes files: transforms/ (the job's sources and
# sinks) and Beam's io package. Other libraries' `path` can be a URL path.
_FILE_LOCALS = ('file_name', 'path', 'file_path')
_FILE_CODE = (f'{os.sep}transforms{os.sep}',
              f'{os.sep}apache_beam{os.sep}io{os.sep}')


def run_error_line(exc: BaseException) -> str:
  """One line for an error raised while the pipeline ran: the step Beam
  names ("[while running 'Write/...']"), the file the failing code was
  reading or writing, and the error's own message. Beam re-raises a
  worker's exception with the step appended, or, from worker processes,
  inside a RuntimeError that repeats the whole traceback as text; the step,
  the file and the error's message are what a person acts on."""
  text = str(exc)
  steps = _STEP.findall(text)
  text = _STEP.sub('', text)
  if 'Traceback (most recent call last)' in text:
    message = _last_error_line(text)
  else:
    message = ' '.join(text.split())
    name = type(exc).__name__
    if type(exc).__module__ not in ('builtins', '__main__'):
      name = f'{type(exc).__module__}.{name}'
    message = f'{name}: {message}' if message else name
  output_error = _OUTPUT_ERROR.search(message) or _DAMAGED_FILE.search(
      message)
  if output_error:
    # It names what was written or read, where, and why: the step adds
    # nothing.
    return output_error.group(1)
  where = []
  if steps:
    where.append(f'step {steps[-1]!r}')
  path = _file_in_traceback(exc)
  if path and path not in message:
    where.append(f'file {path}')
  return f'{", ".join(where)}: {message}' if where else message


def _file_in_traceback(exc: BaseException):
  """The file named by the deepest frame that holds one, in the exception
  or the ones it was raised from."""
  found, seen = None, set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    tb = exc.__traceback__
    while tb is not None:
      in_file_code = any(part in tb.tb_frame.f_code.co_filename
                         for part in _FILE_CODE)
      for name in _FILE_LOCALS if in_file_code else ():
        value = tb.tb_frame.f_locals.get(name)
        if isinstance(value, str) and value:
          found = value
      tb = tb.tb_next
    exc = exc.__cause__ or exc.__context__
  return found


def _last_error_line(text: str) -> str:
  """The last 'SomeError: message' line of a traceback as text, or the
  text's first line."""
  found = re.findall(r'^(?:\w+\.)*(\w*(?:Error|Exception)\w*: .+)$', text,
                     flags=re.M)
  if found:
    return found[-1].strip()
  # Exceptions named otherwise (google.api_core's NotFound, Forbidden): the
  # last unindented line after the last traceback header.
  _, header, tail = text.rpartition('Traceback (most recent call last):')
  last = [line for line in tail.splitlines() if line[:1].isalpha()]
  if header and last:
    return re.sub(r'^(?:\w+\.)+(?=\w+: )', '', last[-1]).strip()
  return text.strip().splitlines()[0] if text.strip() else ''
