"""pipeline/console.py: the one line a person reads when a run fails
(run_error_line, _last_error_line) and the quiet log set-up's filter and
formatter.

Why: a failed run prints nothing else, so the step, the file and the
error's own message must survive Beam's wrapping (the step appended to the
message, or a worker's whole traceback repeated as text). The exceptions
here are real ones, raised and caught, some of them through project code
that opens files (transforms/compressed.py), so tracebacks are genuine.
"""

from __future__ import annotations

import io
import logging

import pytest

from pipeline import console
from transforms import compressed

pytestmark = pytest.mark.unit


def _raised(exc: BaseException) -> BaseException:
  try:
    raise exc
  except BaseException as e:  # noqa: BLE001
    return e


class OutputError(RuntimeError):
  """Named like the backends' OutputError: run_error_line goes by name."""


class Unrelated(Exception):
  pass


@pytest.mark.parametrize('exc,expected', [
    (ValueError("bad value [while running 'Read/Parse']"),
     "step 'Read/Parse': ValueError: bad value"),
    # Composite steps: Beam appends one marker per level; the last is
    # the one the error surfaced from.
    (KeyError("'id' [while running 'Inner'] [while running 'Outer/Inner']"),
     "step 'Outer/Inner': KeyError: \"'id'\""),
    (RuntimeError(), 'RuntimeError'),
    (RuntimeError("[while running 'Embed']"), "step 'Embed': RuntimeError"),
    (ValueError('two\n   lines\tand  spaces'),
     'ValueError: two lines and spaces'),
])
def test_builtin_errors_name_the_step_and_the_message(exc, expected):
  assert console.run_error_line(_raised(exc)) == expected


def test_errors_of_other_modules_carry_their_module():
  line = console.run_error_line(_raised(Unrelated('boom')))
  assert line == f'{__name__}.Unrelated: boom'


def test_a_worker_traceback_as_text_gives_its_last_error_line():
  text = (
      'Traceback (most recent call last):\n'
      '  File "/w/apache_beam/runners/worker/sdk_worker.py", line 1, in f\n'
      '    raise ValueError("first")\n'
      'ValueError: first\n'
      '\n'
      'During handling of the above exception, another exception occurred:\n'
      '\n'
      'Traceback (most recent call last):\n'
      '  File "/w/transforms/embed.py", line 9, in g\n'
      '    model.encode()\n'
      'tensorflow.python.framework.errors_impl.InvalidArgumentError: shape '
      "[3] [while running 'Embed/Encode']\n")
  line = console.run_error_line(_raised(RuntimeError(text)))
  assert line == "step 'Embed/Encode': InvalidArgumentError: shape [3]"


def test_an_output_error_speaks_for_itself():
  exc = _raised(OutputError(
      "writing /out/emb-00000-of-00001.tfrecord: disk full "
      "[while running 'Write/Shards']"))
  assert console.run_error_line(exc) == (
      'writing /out/emb-00000-of-00001.tfrecord: disk full')


def test_an_output_error_inside_a_worker_traceback():
  text = ('Traceback (most recent call last):\n  File "x.py", line 1\n'
          'transforms.backends.base.OutputError: table t: quota exceeded\n')
  assert console.run_error_line(_raised(RuntimeError(text))) == (
      'table t: quota exceeded')


def _open_and_fail(path: str, step: str, message: str):
  """A step error raised from the real failure of project code opening a
  file (the path is a local of transforms/ and apache_beam/io/ frames)."""
  try:
    compressed.open_file(path)
  except Exception as e:
    raise ValueError(f"{message} [while running '{step}']") from e
  raise AssertionError(f'{path} opened')


def test_the_file_a_failing_frame_worked_on_is_named(tmp_path):
  missing = str(tmp_path / 'missing.jsonl.gz')
  try:
    _open_and_fail(missing, 'Read/Open', 'could not open the input')
  except ValueError as e:
    line = console.run_error_line(e)
  assert line == (f"step 'Read/Open', file {missing}: ValueError: could not "
                  'open the input')


def test_a_file_already_in_the_message_is_not_repeated(tmp_path):
  missing = str(tmp_path / 'gone.txt.bz2')
  try:
    _open_and_fail(missing, 'Read/Open', f'{missing} vanished')
  except ValueError as e:
    line = console.run_error_line(e)
  assert line == f"step 'Read/Open': ValueError: {missing} vanished"


def test_paths_in_frames_outside_file_code_are_not_files():
  def fetch(path):  # a test frame: not transforms/ nor apache_beam/io/
    raise ConnectionError(f'GET failed [while running {path!r}]')
  try:
    fetch('/v1/projects/p/jobs')
  except ConnectionError as e:
    line = console.run_error_line(e)
  assert line == "step '/v1/projects/p/jobs': ConnectionError: GET failed"


def test_a_cycle_of_causes_ends():
  a, b = _raised(ValueError('a')), _raised(ValueError('b'))
  a.__cause__, b.__cause__ = b, a
  assert console.run_error_line(a) == 'ValueError: a'


@pytest.mark.parametrize('text,expected', [
    ('Traceback (most recent call last):\n  File "x"\nKeyError: 1\n'
     'ValueError: last one\n', 'ValueError: last one'),
    ('apache_beam.io.gcp.SomeException: gone\n', 'SomeException: gone'),
    ('OSError: [Errno 28] No space left on device', 'OSError: [Errno 28] No '
     'space left on device'),
    ('no error named here\nsecond line', 'no error named here'),
    ('   \n  ', ''),
    ('', ''),
])
def test_last_error_line(text, expected):
  assert console._last_error_line(text) == expected


def test_worker_traceback_ending_in_a_google_api_error():
  text = ('Traceback (most recent call last):\n  File "x.py", line 1, in f\n'
          '    bucket.blob(name).download()\n'
          'google.api_core.exceptions.NotFound: 404 gs://b/o: No such object\n')
  line = console.run_error_line(_raised(RuntimeError(text)))
  assert 'NotFound: 404 gs://b/o: No such object' in line


def _quiet_logger(name: str):
  """A real logger with the quiet run's formatter and filter, into a
  StringIO."""
  stream = io.StringIO()
  handler = logging.StreamHandler(stream)
  handler.setFormatter(console._PlainFormatter())
  handler.addFilter(console._OncePerMessage())
  logger = logging.getLogger(name)
  logger.handlers[:] = [handler]
  logger.propagate = False
  logger.setLevel(logging.INFO)
  return logger, stream


def test_quiet_log_lines_are_plain_and_each_warning_shows_once():
  logger, stream = _quiet_logger('tests.unit.quiet')
  for _ in range(3):
    logger.warning('shard %d is slow', 7)
  logger.warning('shard %d is slow', 8)
  logger.info('converting the preset')
  logger.info('converting the preset')
  logger.error('shard %d is slow', 7)  # the same text at another level
  logger.critical('stop')
  assert stream.getvalue().splitlines() == [
      'warning: shard 7 is slow',
      'warning: shard 8 is slow',
      'converting the preset',
      'error: shard 7 is slow',
      'critical: stop',
  ]


def test_each_handler_remembers_its_own_messages():
  first, one = _quiet_logger('tests.unit.quiet_a')
  second, two = _quiet_logger('tests.unit.quiet_b')
  first.warning('same')
  second.warning('same')
  first.warning('same')
  assert one.getvalue() == two.getvalue() == 'warning: same\n'
