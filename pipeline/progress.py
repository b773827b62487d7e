"""Live progress of a run, read from the run's own Beam metrics.

The job's steps count what they do (transforms/metrics.py: documents read,
embedded, reused and rejected, tokens, input bytes). While the job runs,
a progress source gives the counts so far, and this module shows them: one
line refreshed in place on a terminal (rich, which Keras already brings
into the lock and which draws a live line without garbling log lines
printed above it), or a plain line every --progress_every seconds when
stderr is a file or a pipe. The last line is drawn from the finished run's
committed counters, the same ones the summary reports.

Where the counts come from depends on the runner, chosen once
(pipeline/progress_sources.py); the sources that need no runner internals
are here (ResultMetrics, JobServiceMetrics).

Two approximations, both shown as such: a finished bundle counts with its
last answer until the run ends (the final line is exact), and the ETA
assumes the documents still unread are like those read so far, byte for
byte (it is not shown for compressed inputs, whose stored size says little
about their text).
"""

from __future__ import annotations

import abc
import contextlib
import logging
import sys
import threading
import time
from typing import Callable, NamedTuple, Optional

from apache_beam.metrics import monitoring_infos

from transforms import metrics

# Seconds between two samples of the counts.
SAMPLE_EVERY = 1.0


class Sample(NamedTuple):
  seconds: float
  documents_read: int
  documents_embedded: int
  documents_reused: int
  documents_rejected: int
  tokens: int
  bytes_read: int


def sample_from(values: dict, seconds: float) -> Sample:
  """A sample from {Metric: value} (metrics.FIGURES say what each figure
  adds up)."""
  return Sample(seconds, **metrics.figures(values))


def user_counters(infos) -> dict:
  """{Metric: value} of the figures' counters among Fn API monitoring
  infos, summed over the steps that report them."""
  wanted = {(m.namespace, m.name): m for m in metrics.figure_metrics()}
  found: dict = {}
  for info in infos:
    if (monitoring_infos.is_user_monitoring_info(info) and
        monitoring_infos.is_counter(info)):
      metric = wanted.get(monitoring_infos.parse_namespace_and_name(info))
      if metric is not None:
        found[metric] = found.get(metric, 0) + (
            monitoring_infos.extract_counter_value(info))
  return found


class LiveCounts(abc.ABC):
  """Where the counts of a running job come from."""

  # FnApiRunner's own progress requests, every so many seconds (None: none).
  request_every: Optional[float] = None

  def attached(self):
    """A context to run the pipeline in (p.run() and the wait)."""
    return contextlib.nullcontext()

  def started(self, result) -> None:
    """The running job's PipelineResult, once p.run() has returned."""

  @abc.abstractmethod
  def counts(self) -> Optional[dict]:
    """{Metric: value} so far, or None while the runner reports none."""


class ResultMetrics(LiveCounts):
  """The running job's PipelineResult.metrics(), attempted values (runners
  whose result is live while the job runs: Dataflow). Asked every
  `every` seconds at most: each answer is a call to the service's API,
  whose counters move every few tens of seconds anyway."""

  def __init__(self, every: float = 15.0):
    self._result = None
    self._every = every
    self._asked = -every
    self._counts: Optional[dict] = None

  def started(self, result) -> None:
    self._result = result

  def counts(self) -> Optional[dict]:
    if self._result is None or time.monotonic() - self._asked < self._every:
      return self._counts
    self._asked = time.monotonic()
    found = self._result.metrics()
    if found is not None:
      self._counts = metrics.totals(found, metrics.figure_metrics(),
                                    committed=False)
    return self._counts


class JobServiceMetrics(LiveCounts):
  """The job service's metrics of the job, through Beam's Job API
  (beam_job_api.proto, the contract between an SDK and any job service).
  Asked afresh every time: PortableRunner's PipelineResult.metrics()
  keeps the first answer, which mid-run would also be the summary's. The
  job is the one the service did not hold before p.run()."""

  def __init__(self, endpoint: str):
    import grpc
    from apache_beam.portability.api import beam_job_api_pb2
    from apache_beam.portability.api import beam_job_api_pb2_grpc
    self._api = beam_job_api_pb2
    self._channel = grpc.insecure_channel(endpoint)
    self._service = beam_job_api_pb2_grpc.JobServiceStub(self._channel)
    self._job: Optional[str] = None
    self._before: Optional[set] = None

  def _job_ids(self) -> set:
    return {job.job_id for job in self._service.GetJobs(
        self._api.GetJobsRequest(), timeout=10).job_info}

  @contextlib.contextmanager
  def attached(self):
    self._before = self._job_ids()
    try:
      yield
    finally:
      self._channel.close()

  def started(self, result) -> None:
    new = self._job_ids() - (self._before or set())
    if len(new) == 1:
      self._job = new.pop()

  def counts(self) -> Optional[dict]:
    if self._job is None:
      return None
    found = self._service.GetJobMetrics(
        self._api.GetJobMetricsRequest(job_id=self._job), timeout=10).metrics
    # A running job's counts are attempted ones; a service that fills only
    # committed (Beam's local job service, once the job ends) gives those.
    return user_counters(found.attempted or found.committed) or None


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
  """Shows progress while the block of `track()` runs, from `source`."""

  def __init__(self, source: LiveCounts, *, every: float,
               total_bytes: Optional[int], stream=None):
    self._source = source
    self._every = every
    self._total_bytes = total_bytes
    self._stream = stream or sys.stderr
    self._stop = threading.Event()
    self._start = time.monotonic()
    self._failed = False
    self.samples: list[Sample] = []

  def _window_start(self, now: Sample) -> Optional[Sample]:
    """The oldest sample within the last 10 s."""
    recent = [s for s in self.samples[:-1]
              if now.seconds - s.seconds <= 10.0]
    return recent[0] if recent else None

  def _line(self, now: Sample) -> str:
    return line(now, self._window_start(now), total_bytes=self._total_bytes)

  def _counts(self) -> Optional[dict]:
    """The source's counts; a source that fails is logged once and shows
    nothing more, and never stops the run."""
    if self._failed:
      return None
    try:
      return self._source.counts()
    except Exception as e:  # noqa: BLE001
      self._failed = True
      logging.warning('live progress stopped: %s', e)
      return None

  def _next_line(self) -> str:
    seconds = time.monotonic() - self._start
    counts = self._counts()
    if counts is None:
      return (f'progress {_duration(seconds)}  running; no counts from the '
              'runner yet')
    self.samples.append(sample_from(counts, seconds))
    return self._line(self.samples[-1])

  def _loop(self, show: Callable[[str], None], every: float) -> None:
    """A sample every second (the report plots them), shown every
    `every` seconds."""
    shown = 0.0
    while not self._stop.wait(SAMPLE_EVERY):
      text = self._next_line()
      seconds = time.monotonic() - self._start
      if seconds - shown >= every - SAMPLE_EVERY / 2:
        show(text)
        shown = seconds

  @contextlib.contextmanager
  def track(self):
    """Runs the block with progress shown; call started() with the
    PipelineResult once p.run() returns, and finish() once it finished."""
    if self._stream.isatty():
      from rich.console import Console
      from rich.live import Live
      from rich.text import Text
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
    with context, self._source.attached():
      self._start = time.monotonic()
      self._thread.start()
      try:
        yield self
      finally:
        self._stop.set()
        self._thread.join()

  def started(self, result) -> None:
    try:
      self._source.started(result)
    except Exception as e:  # noqa: BLE001
      self._failed = True
      logging.warning('live progress is off: %s', e)

  def finish(self, result) -> Sample:
    """The exact last line, from the finished run's committed counters,
    after the last live one."""
    self._stop.set()
    self._thread.join()
    final = sample_from(
        metrics.totals(result.metrics(), metrics.figure_metrics()),
        time.monotonic() - self._start)
    self.samples.append(final)
    self._show(self._line(final))
    return final
