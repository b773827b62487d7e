"""Ctrl-C (SIGINT) and a scheduler's SIGTERM at any moment of a run: one
line, exit status 130 or 143, no traceback (unless --verbose), no worker
process left, and the run's temporary files removed.

Why a thread: the signals are blocked in every thread of the command and
taken by one watcher thread with sigwait, so that they are seen at once
wherever the job is: importing TensorFlow, inside a TensorFlow op, or
waiting on worker processes, where a Python signal handler would run only
when the main thread next runs Python code. The watcher then
- before the job's code has started (module imports): nothing was written
  and nothing is held, so it prints the line and exits at once;
- later: raises Interrupted in the main thread, which unwinds through the
  job's own clean-up code (temporary exports, open writers) to the command,
  whose finisher (set_finisher) removes the run's temporary files and says
  what was written. If the main thread has not started unwinding within
  GRACE_SECONDS (a long TensorFlow op), the watcher runs the finisher
  itself and exits.
A second signal exits at once, saying what may be left.

Worker processes of --direct_running_mode multi_processing are started by
pipeline/worker.py, which ignores SIGINT: a terminal's Ctrl-C reaches the
whole process group, and Beam's own workers would each print a traceback.
They are killed by the command on its way out.

Only the command's own process installs this (pipeline/run.py as
__main__), never a process that imports the job (tests, notebooks).
Stdlib only: it is set up before anything heavy is imported.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import sys
import threading
from typing import Callable, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_SECONDS = 5.0
PROG = 'pipeline.run'


class Interrupted(BaseException):
  """Raised in the main thread for a signal. A BaseException, as
  KeyboardInterrupt is, so that `except Exception` (a retry, a clean-up
  that goes on) does not swallow it."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


def exit_status(signum: int) -> int:
  """What a shell reports for a process a signal ended: 130, 143."""
  return 128 + signum


class _State:
  def __init__(self):
    self.installed = False
    self.received: Optional[int] = None
    self.started = False  # the job's code runs: raise, do not exit
    self.verbose = False
    self.finisher: Optional[Callable[[int], str]] = None
    self.unwinding = threading.Event()
    self.signalled = threading.Event()  # set once received is
    self.lock = threading.Lock()
    self.finished = False
    self.stderr: Optional[int] = None
    self.if_again: Optional[tuple[bool, str]] = None


_state = _State()


def install() -> None:
  """Blocks SIGINT and SIGTERM in this (still the only) thread, so that
  every thread started later has them blocked too, and starts the
  watcher. File descriptor 2 is kept as it is now: quiet runs point it at
  a temporary file while TensorFlow loads (tfmodels), and the line must
  reach the terminal."""
  if _state.installed:
    return
  _state.installed = True
  _state.stderr = os.dup(2)
  for signum in SIGNALS:
    signal.signal(signum, _raise_in_main)
  signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
  threading.Thread(target=_watch, name='interrupts', daemon=True).start()


def started(verbose: bool) -> None:
  """The job's code runs now (main()): a signal raises Interrupted in the
  main thread rather than ending the process. Without --verbose, what the
  stopped run's other threads say on their way out is not shown."""
  _state.started = True
  _state.verbose = verbose
  if _state.installed and not verbose:
    threading.excepthook = _quiet_after_signal(threading.excepthook)


# How long a failing thread waits to learn whether a signal is why.
_SIGNAL_WAIT_SECONDS = 0.5


def _quiet_after_signal(original):
  """A thread's uncaught exception, shown unless a signal stopped the run.

  Why wait: a terminal's Ctrl-C and a group's SIGTERM reach the worker
  processes as they reach this one. A worker ended by SIGTERM makes Beam's
  thread that watches it fail ("Worker subprocess exited with return code
  -15") at once, which can be before the watcher thread has taken the
  signal. The failing thread waits briefly for it; a real failure is
  shown after that wait."""

  def hook(args):
    if not _state.signalled.wait(_SIGNAL_WAIT_SECONDS):
      original(args)

  return hook


def _silence() -> None:
  """After a signal, threads of the stopping run (gRPC servers of worker
  processes, Beam's worker monitors) fail one by one, each with a
  traceback or an error log; the one line says what happened."""
  sys.unraisablehook = lambda args: None
  logging.disable(logging.CRITICAL)


def set_finisher(finisher: Callable[[int], str]) -> None:
  """finisher(signum) removes what the run leaves and returns what to say
  after 'interrupted (SIGINT); ': run once, by whichever thread ends the
  process."""
  _state.finisher = finisher


def received() -> Optional[int]:
  return _state.received


def if_again(text: str, line_open: bool = False) -> None:
  """What a second signal leaves, said in its line, when the finisher
  knows better than the default (a Dataflow job); line_open: a question
  waits for its answer on the current line, so the line starts a new
  one."""
  _state.if_again = (line_open, text)


def unwound(timeout: float) -> bool:
  """For a finisher that asks a question: waits until the main thread has
  unwound to the command (what its blocks held is closed: a live progress
  line no longer redraws the terminal), at most `timeout` seconds. The
  finisher may run in the watcher's stand-in thread while the main thread
  still sleeps in a library's wait (Beam's Dataflow wait sleeps 5 s)."""
  return _state.unwinding.wait(timeout)


def reraise() -> None:
  """In an `except` block: if a signal is why the block runs (Beam wraps
  an exception raised inside a step in its own), raise Interrupted."""
  if _state.received is not None:
    raise Interrupted(_state.received)


def finish(signum: int) -> int:
  """Ends an interrupted run in the main thread: the finisher, the line;
  returns the exit status. The caller exits with os._exit (see exit_now):
  threads Beam started may still be waiting."""
  _state.unwinding.set()
  _finish(signum)
  return exit_status(signum)


def exit_now(status: int) -> None:
  """Leaves the process without waiting for other threads."""
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except Exception:  # noqa: BLE001
      pass
  os._exit(status)


def _raise_in_main(signum, frame):
  del frame
  raise Interrupted(signum)


def _watch() -> None:
  while True:
    signum = signal.sigwait(SIGNALS)
    if _state.received is not None:
      line_open, leaves = _state.if_again or (
          False, 'temporary files (beam-temp-*) may be left, and the next '
          'run that succeeds removes them')
      _say(f'interrupted again ({signal.Signals(signum).name}); stopped at '
           f'once: {leaves}', new_line=line_open)
      stop_workers()
      exit_now(exit_status(signum))
    _state.received = signum
    _state.signalled.set()
    if not _state.verbose:
      _silence()
    if not _state.started:
      _say(f'interrupted ({signal.Signals(signum).name}) before the run '
           'started; nothing was written')
      exit_now(exit_status(signum))
    _thread.interrupt_main(signum)
    if not _state.unwinding.wait(GRACE_SECONDS):
      threading.Thread(target=_finish_stuck, args=(signum,), daemon=True,
                       name='interrupts-finish').start()


def _finish_stuck(signum: int) -> None:
  _finish(signum)
  exit_now(exit_status(signum))


def _finish(signum: int) -> None:
  """Once, by whichever thread gets here first: workers stopped (they may
  still be writing), the finisher, the line."""
  with _state.lock:
    if _state.finished:
      return
    _state.finished = True
    stop_workers()
    what = 'nothing was written'
    if _state.finisher is not None:
      try:
        what = _state.finisher(signum)
      except Exception as e:  # noqa: BLE001
        what = f'cleaning up failed: {e}'
    _say(f'interrupted ({signal.Signals(signum).name}); {what}')


def to_terminal(text: str) -> None:
  """One line where the command's lines go, even while a quiet start-up
  holds file descriptor 2 (TensorFlow's import): the descriptor kept at
  install(). In a process that did not install this, stderr."""
  if _state.stderr is None:
    print(text, file=sys.stderr, flush=True)
    return
  try:
    sys.stderr.flush()
  except Exception:  # noqa: BLE001
    pass
  os.write(_state.stderr, (text + '\n').encode('utf-8', 'replace'))


def _say(text: str, new_line: bool = False) -> None:
  line = (('\n' if new_line else '') + f'{PROG}: {text}\n').encode(
      'utf-8', 'replace')
  try:
    sys.stderr.flush()
  except Exception:  # noqa: BLE001
    pass
  os.write(_state.stderr if _state.stderr is not None else 2, line)


def stop_workers() -> int:
  """Kills this process's descendants (local worker processes and the
  shells that started them): SIGKILL, so that none prints on its way
  out. Linux's /proc; elsewhere `ps`."""
  children = _descendants(os.getpid())
  for pid in children:
    try:
      os.kill(pid, signal.SIGKILL)
    except OSError:
      pass
  return len(children)


def _descendants(root: int) -> list[int]:
  parents = _parent_map()
  found, frontier = [], [root]
  while frontier:
    parent = frontier.pop()
    for pid, ppid in parents.items():
      if ppid == parent and pid not in found:
        found.append(pid)
        frontier.append(pid)
  return found


def _parent_map() -> dict:
  parents = {}
  if os.path.isdir('/proc'):
    for name in os.listdir('/proc'):
      if not name.isdigit():
        continue
      try:
        with open(f'/proc/{name}/stat', 'rb') as f:
          stat = f.read()
      except OSError:
        continue
      # pid (comm) state ppid ...: comm may hold spaces and parentheses.
      fields = stat[stat.rfind(b')') + 2:].split()
      parents[int(name)] = int(fields[1])
    return parents
  import subprocess
  try:
    out = subprocess.run(['ps', '-A', '-o', 'pid=,ppid='], check=True,
                         capture_output=True, text=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return parents
  for line in out.splitlines():
    pid, ppid = line.split()
    parents[int(pid)] = int(ppid)
  return parents
