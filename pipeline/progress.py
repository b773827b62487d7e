"""Live progress of a local run, read from the run's own Beam metrics.

The job's steps already count what they do (Beam counters: documents read,
embedded, reused and rejected, tokens, input bytes). On Dataflow these
counters show in the job's page while it runs. Locally, Beam's in-process
FnApiRunner only hands them over when the pipeline has finished, but it can
ask a running bundle for its progress (a ProcessBundleProgressRequest, the
same request runners use to split work), and the answer carries the
bundle's counters so far. This module asks every second, adds up the
latest answer of every bundle, and shows the totals: one line refreshed in
place on a terminal (rich, which Keras already brings into the lock and
which draws a live line without garbling log lines printed above it), or a
plain line every --progress_every seconds when stderr is a file or a pipe.
The last line is drawn from the finished run's committed counters, the same
ones the summary reports.

Two approximations, both shown as such: a finished bundle counts with its
last answer until the run ends (the final line is exact), and the ETA
assumes the documents still unread are like those read so far, byte for
byte (it is not shown for compressed inputs, whose stored size says little
about their text).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import uuid
from typing import Callable, NamedTuple, Optional

from apache_beam.metrics import monitoring_infos
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.fn_api_runner import worker_handlers

# What each progress figure adds up: (namespace, counter) pairs, counted by
# transforms/read.py, dedup.py, embed.py and incremental.py. The summary
# reads the same figures (pipeline/run.py).
COUNTS = {
    'documents_read': (('read', 'documents_read'),),
    'documents_embedded': (('embed', 'documents_embedded'),),
    'documents_reused': (('incremental', 'documents_reused'),),
    'documents_rejected': (('read', 'records_dead_lettered'),
                           ('dedup', 'documents_dead_lettered'),
                           ('embed', 'documents_failed')),
    'tokens': (('embed', 'tokens_embedded'),),
    'bytes_read': (('read', 'bytes_read'),),
}
# Seconds between progress requests to a running bundle.
REQUEST_EVERY = 1.0


class Sample(NamedTuple):
  seconds: float
  documents_read: int
  documents_embedded: int
  documents_reused: int
  documents_rejected: int
  tokens: int
  bytes_read: int


def sample_from(counters: dict, seconds: float) -> Sample:
  """A sample from {(namespace, name): value}."""
  return Sample(seconds, *(sum(counters.get(key, 0) for key in keys)
                           for keys in COUNTS.values()))


def committed(result, namespace: str, name: str) -> int:
  """A finished run's committed counter, summed over steps and workers."""
  found = result.metrics().query(
      MetricsFilter().with_namespace(namespace).with_name(name))['counters']
  return int(sum(c.committed or 0 for c in found))


def committed_counters(result) -> dict:
  """A finished run's committed counters of COUNTS."""
  return {key: committed(result, *key)
          for keys in COUNTS.values() for key in keys}


class Tracker:
  """The latest counters of every bundle that answered a progress
  request; thread-safe (each bundle's requests come from its own thread)."""

  def __init__(self):
    self._lock = threading.Lock()
    self._bundles: dict = {}
    self.start = time.monotonic()
    self.samples: list[Sample] = []

  def on_progress(self, bundle: str, response) -> None:
    counters: dict = {}
    for info in response.monitoring_infos:
      if (monitoring_infos.is_user_monitoring_info(info) and
          monitoring_infos.is_counter(info)):
        key = monitoring_infos.parse_namespace_and_name(info)
        counters[key] = counters.get(key, 0) + (
            monitoring_infos.extract_counter_value(info))
    if not counters:
      # A bundle asked about after it finished answers with nothing.
      return
    with self._lock:
      # Counters only go up: an answer that arrives late keeps the higher.
      seen = self._bundles.setdefault(bundle, {})
      for key, value in counters.items():
        seen[key] = max(seen.get(key, 0), value)

  def sample(self) -> Sample:
    totals: dict = {}
    with self._lock:
      for counters in self._bundles.values():
        for key, value in counters.items():
          totals[key] = totals.get(key, 0) + value
    found = sample_from(totals, time.monotonic() - self.start)
    self.samples.append(found)
    return found

  def final(self, result) -> Sample:
    found = sample_from(committed_counters(result),
                        time.monotonic() - self.start)
    self.samples.append(found)
    return found


def _progress_request(bundle: str):
  return beam_fn_api_pb2.InstructionRequest(
      instruction_id=f'progress-{uuid.uuid4().hex}',
      process_bundle_progress=beam_fn_api_pb2.ProcessBundleProgressRequest(
          instruction_id=bundle))


@contextlib.contextmanager
def _bundles_report_to(tracker: Tracker):
  """While the block runs, running bundles' progress goes to `tracker`.

  Worker processes (--direct_running_mode multi_processing) answer
  FnApiRunner's own progress requests, which it makes when given a request
  frequency; Beam's ProgressRequester takes a callback, but FnApiRunner
  creates it without one, so the class is swapped for the block.

  The in-process worker runs a whole bundle inside the call that hands it
  over (EmbeddedWorkerHandler.push), so FnApiRunner's requests only start
  once the bundle is done. For it, push is wrapped: a thread asks the same
  worker for the bundle's progress every REQUEST_EVERY seconds while the
  bundle runs, as a gRPC worker would be asked."""
  original = fn_runner.ProgressRequester
  embedded_push = worker_handlers.EmbeddedWorkerHandler.push

  def push(handler, request):
    if request.WhichOneof('request') != 'process_bundle':
      return embedded_push(handler, request)
    bundle, done = request.instruction_id, threading.Event()

    def poll():
      while not done.wait(REQUEST_EVERY):
        response = handler.worker.do_instruction(_progress_request(bundle))
        if not response.error:
          tracker.on_progress(bundle, response.process_bundle_progress)

    thread = threading.Thread(target=poll, daemon=True,
                              name=f'progress-{bundle}')
    thread.start()
    try:
      return embedded_push(handler, request)
    finally:
      done.set()
      thread.join()

  class Requester(original):  # pylint: disable=too-few-public-methods

    def __init__(self, worker_handler, instruction_id, frequency,
                 callback=None):
      super().__init__(
          worker_handler, instruction_id, frequency,
          callback or (lambda response: tracker.on_progress(instruction_id,
                                                            response)))

  fn_runner.ProgressRequester = Requester
  worker_handlers.EmbeddedWorkerHandler.push = push
  try:
    yield
  finally:
    fn_runner.ProgressRequester = original
    worker_handlers.EmbeddedWorkerHandler.push = embedded_push


def _count(n: int) -> str:
  return f'{n:,}'


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return (f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'
          if seconds >= 3600 else f'{seconds // 60}:{seconds % 60:02d}')


def line(now: Sample, before: Optional[Sample], *,
         total_bytes: Optional[int]) -> str:
  """One progress line, most telling first (a terminal cuts it at its
  width): time and ETA, counts, rates, input read. Rates are over the
  interval since `before` (the sample about 10 s earlier), so that model
  loading and a slow start do not weigh on them for the rest of the run."""
  base = before or Sample(0.0, 0, 0, 0, 0, 0, 0)
  span = max(now.seconds - base.seconds, 1e-9)
  docs_rate = (now.documents_embedded - base.documents_embedded) / span
  tokens_rate = (now.tokens - base.tokens) / span
  parts = [f'{_count(now.documents_read)} read',
           f'{_count(now.documents_embedded)} embedded']
  if now.documents_reused:
    parts.append(f'{_count(now.documents_reused)} reused')
  parts.append(f'{_count(now.documents_rejected)} rejected')
  eta = estimate_remaining(now, docs_rate, total_bytes)
  text = f'progress {_duration(now.seconds)}'
  if eta is not None:
    text += f' (ETA {_duration(eta)})'
  text += (f'  {", ".join(parts)}  {docs_rate:,.1f} docs/s  '
           f'{tokens_rate:,.0f} tokens/s')
  if total_bytes and now.bytes_read:
    text += f'  input {min(now.bytes_read / total_bytes, 1):.0%} read'
  return text


def estimate_remaining(now: Sample, docs_rate: float,
                       total_bytes: Optional[int]) -> Optional[float]:
  """Seconds left: the documents the whole input should hold (documents
  read so far, scaled by total bytes / bytes read), less those done, at the
  current embedding rate. None until there is a rate and a byte count."""
  if not total_bytes or not now.bytes_read or docs_rate <= 0:
    return None
  expected = now.documents_read * total_bytes / now.bytes_read
  done = (now.documents_embedded + now.documents_reused +
          now.documents_rejected)
  return max(expected - done, 0) / docs_rate


class Display:
  """Shows progress while the block of `track()` runs."""

  def __init__(self, *, every: float, total_bytes: Optional[int],
               stream=None):
    self._every = every
    self._total_bytes = total_bytes
    self._stream = stream or sys.stderr
    self._stop = threading.Event()
    self.tracker = Tracker()

  def _window_start(self, now: Sample) -> Optional[Sample]:
    """The oldest sample within the last 10 s."""
    recent = [s for s in self.tracker.samples[:-1]
              if now.seconds - s.seconds <= 10.0]
    return recent[0] if recent else None

  def _line(self, now: Sample) -> str:
    return line(now, self._window_start(now), total_bytes=self._total_bytes)

  def _loop(self, show: Callable[[str], None], every: float) -> None:
    """A sample every second (the report plots them), shown every
    `every` seconds."""
    shown = 0.0
    while not self._stop.wait(REQUEST_EVERY):
      now = self.tracker.sample()
      if now.seconds - shown >= every - REQUEST_EVERY / 2:
        show(self._line(now))
        shown = now.seconds

  @contextlib.contextmanager
  def track(self):
    """Runs the block with progress shown; call finish() with the result
    inside it."""
    if self._stream.isatty():
      from rich.console import Console  # pylint: disable=import-outside-toplevel
      from rich.live import Live  # pylint: disable=import-outside-toplevel
      from rich.text import Text  # pylint: disable=import-outside-toplevel
      live = Live(Text(''), console=Console(file=self._stream),
                  refresh_per_second=4, transient=False)
      # One line, cut at the terminal's width rather than wrapped.
      show = lambda text: live.update(  # noqa: E731
          Text(text, no_wrap=True, overflow='ellipsis'))
      every, context = 1.0, live
    else:
      def show(text):
        print(text, file=self._stream, flush=True)
      every, context = self._every, contextlib.nullcontext()
    self._show = show
    self._thread = threading.Thread(target=self._loop, args=(show, every),
                                    daemon=True, name='progress')
    with context, _bundles_report_to(self.tracker):
      self._thread.start()
      try:
        yield self
      finally:
        self._stop.set()
        self._thread.join()

  def finish(self, result) -> Sample:
    """The exact last line, from the finished run's committed counters,
    after the last live one."""
    self._stop.set()
    self._thread.join()
    final = self.tracker.final(result)
    self._show(self._line(final))
    return final
