"""What the job prints for a person: log set-up, quiet or --verbose, and
errors as one line.

Quiet (the default): the job's own notices and warnings, each warning once,
as plain lines; libraries' INFO chatter and Python warnings hidden;
TensorFlow's native start-up lines held back (tfmodels.quiet_startup).
--verbose: every log line with its time and level, and tracebacks.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings

import tfmodels

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


def configure(verbose: bool) -> None:
  root = logging.getLogger()
  for handler in list(root.handlers):
    root.removeHandler(handler)
  handler = _StderrHandler()
  root.addHandler(handler)
  if verbose:
    handler.setFormatter(logging.Formatter(
        '%(asctime)s %(levelname)s %(message)s'))
    root.setLevel(logging.INFO)
    logging.getLogger('apache_beam').setLevel(logging.WARNING)
    return
  tfmodels.quiet_startup()
  handler.setFormatter(_PlainFormatter())
  handler.addFilter(_OncePerMessage())
  root.setLevel(logging.WARNING)
  for name in _NOTICES:
    logging.getLogger(name).setLevel(logging.INFO)
  # Libraries' Python warnings (deprecations and the like) are for their
  # developers; TensorFlow's and absl's own loggers say the same at INFO.
  warnings.simplefilter('ignore')
  for name in ('tensorflow', 'absl', 'apache_beam'):
    logging.getLogger(name).setLevel(logging.ERROR)


_STEP = re.compile(r"\[while running '([^']+)'\]")


def run_error_line(exc: BaseException) -> str:
  """One line for an error raised while the pipeline ran: the step Beam
  names ("[while running 'Read/...']") and the innermost cause's message.
  Beam wraps a worker's exception in several layers, each repeating the
  traceback as text; the step and the first line of the cause are what a
  person acts on."""
  text = str(exc)
  steps = _STEP.findall(text)
  cause = exc
  while cause.__cause__ is not None or cause.__context__ is not None:
    cause = cause.__cause__ or cause.__context__
  message = _last_error_line(str(cause)) or type(cause).__name__
  where = f'step {steps[-1]!r}: ' if steps else ''
  return f'{where}{message}'


def _last_error_line(text: str) -> str:
  """The last 'SomeError: message' line of a traceback as text, or the
  text's first line."""
  found = re.findall(r'^(?:\w+\.)*(\w*(?:Error|Exception)\w*: .+)$', text,
                     flags=re.M)
  if found:
    return found[-1].strip()
  return text.strip().splitlines()[0] if text.strip() else ''
