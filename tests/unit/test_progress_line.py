"""pipeline/progress.py and pipeline/fnapi_progress.py without a pipeline:
the progress line, its ETA and durations, samples from metric values,
user counters from Fn API monitoring infos, FnApiRunner bundle answers,
and the Display loop driven by a small LiveCounts (the interface's contract).

Why: the live line is what a person watches for hours; its numbers must
add up as metrics.FIGURES says, and a late or empty bundle answer must not
make counts go backwards. Expected lines are computed by hand from the
docstrings' definitions.
"""

from __future__ import annotations

import io
import logging
import threading
import time

import pytest
from apache_beam.metrics import monitoring_infos
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner

from pipeline import fnapi_progress
from pipeline import progress
from pipeline import progress_sources
from pipeline.progress import Sample
from transforms import metrics

pytestmark = pytest.mark.unit


@pytest.mark.parametrize('seconds,expected', [
    (0, '0:00'), (0.4, '0:00'), (9.6, '0:10'), (59, '0:59'), (60, '1:00'),
    (3599, '59:59'), (3599.6, '1:00:00'), (3661, '1:01:01'),
    (2 * 86400 + 5, '48:00:05'),
])
def test_duration(seconds, expected):
  assert progress._duration(seconds) == expected


def test_line_with_rates_over_the_window_and_an_eta():
  # Rates over the 10 s since `before`: 200 docs / 10 s, 10,000 tokens /
  # 10 s. Input: 1,000 documents in 5,000 of 20,000 bytes -> 4,000
  # expected; 805 done; 3,195 left at 20/s = 159.75 s -> 2:40.
  now = Sample(75.0, 1000, 800, 0, 5, 40000, 5000)
  before = Sample(65.0, 900, 600, 0, 5, 30000, 4500)
  assert progress.line(now, before, total_bytes=20000) == (
      'progress 1:15 (ETA 2:40)  1,000 read, 800 embedded, 5 rejected  '
      '20.0 docs/s  1,000 tokens/s  input 25% read')


def test_line_without_before_counts_from_the_start_and_shows_reused():
  now = Sample(8.0, 12345, 1000, 2000, 0, 123456, 10)
  assert progress.line(now, None, total_bytes=None) == (
      'progress 0:08  12,345 read, 1,000 embedded, 2,000 reused, 0 rejected'
      '  125.0 docs/s  15,432 tokens/s')


def test_line_caps_input_read_at_all_of_it():
  # Compressed input can count more bytes than the size given.
  now = Sample(30.0, 10, 10, 0, 0, 100, 900)
  text = progress.line(now, None, total_bytes=300)
  assert text.endswith('  input 100% read')
  # 10 read in 900 of 300 bytes -> 3.33 expected, 10 done: nothing left.
  assert '(ETA 0:00)' in text


def test_line_at_time_zero_has_no_rate_and_no_eta():
  text = progress.line(Sample(0.0, 0, 0, 0, 0, 0, 0), None, total_bytes=100)
  assert text == ('progress 0:00  0 read, 0 embedded, 0 rejected  0.0 '
                  'docs/s  0 tokens/s')


@pytest.mark.parametrize('now,rate,total,expected', [
    (Sample(10, 100, 50, 0, 0, 0, 1000), 5.0, 4000, (400 - 50) / 5.0),
    # Reused and rejected documents are done too.
    (Sample(10, 100, 50, 30, 20, 0, 1000), 5.0, 4000, (400 - 100) / 5.0),
    # More done than expected: no time left, never negative.
    (Sample(10, 100, 90, 10, 10, 0, 1000), 5.0, 1000, 0.0),
    (Sample(10, 100, 50, 0, 0, 0, 1000), 0.0, 4000, None),
    (Sample(10, 100, 50, 0, 0, 0, 0), 5.0, 4000, None),
    (Sample(10, 100, 50, 0, 0, 0, 1000), 5.0, None, None),
    (Sample(10, 100, 50, 0, 0, 0, 1000), 5.0, 0, None),
])
def test_estimate_remaining(now, rate, total, expected):
  assert progress.estimate_remaining(now, rate, total) == expected


def test_sample_from_adds_up_each_figures_counters():
  values = {
      metrics.DOCUMENTS_READ: 100,
      metrics.DOCUMENTS_EMBEDDED: 80,
      metrics.DOCUMENTS_REUSED: 5,
      metrics.READ_DEAD_LETTERED: 3,
      metrics.DEDUP_DEAD_LETTERED: 2,
      metrics.DOCUMENTS_FAILED: 1,
      metrics.TOKENS_EMBEDDED: 4321,
      metrics.BYTES_READ: 9999,
      metrics.TOKENS_COMPUTED: 10 ** 6,  # not a figure
  }
  assert progress.sample_from(values, 2.5) == Sample(2.5, 100, 80, 5, 6,
                                                     4321, 9999)
  assert progress.sample_from({}, 1.0) == Sample(1.0, 0, 0, 0, 0, 0, 0)


def _counter(metric, value, step='s1'):
  return monitoring_infos.int64_user_counter(metric.namespace, metric.name,
                                             value, ptransform=step)


def test_user_counters_sum_over_steps_and_keep_only_figures():
  infos = [
      _counter(metrics.DOCUMENTS_READ, 7, 'Read/A'),
      _counter(metrics.DOCUMENTS_READ, 5, 'Read/B'),
      _counter(metrics.DOCUMENTS_EMBEDDED, 3),
      _counter(metrics.BATCHES, 99),  # counted, but not a figure
      monitoring_infos.int64_user_counter('other', 'documents_read', 1000),
      monitoring_infos.int64_user_distribution(
          metrics.TOKENS_EMBEDDED.namespace, metrics.TOKENS_EMBEDDED.name,
          monitoring_infos.DistributionData(10, 1, 10, 10)),
      monitoring_infos.int64_counter(monitoring_infos.ELEMENT_COUNT_URN, 50,
                                     pcollection='pc'),
  ]
  assert progress.user_counters(infos) == {metrics.DOCUMENTS_READ: 12,
                                           metrics.DOCUMENTS_EMBEDDED: 3}
  assert progress.user_counters([]) == {}


def _answer(**counts):
  """A ProcessBundleProgressResponse carrying user counters."""
  return beam_fn_api_pb2.ProcessBundleProgressResponse(monitoring_infos=[
      _counter(getattr(metrics, name), value) for name, value in
      counts.items()])


def test_bundles_keep_each_counters_highest_answer_and_add_bundles():
  bundles = fnapi_progress._Bundles()
  assert bundles.totals() == {}
  bundles.on_progress('b1', _answer(DOCUMENTS_READ=10, DOCUMENTS_EMBEDDED=4))
  bundles.on_progress('b2', _answer(DOCUMENTS_READ=3))
  # A late answer of b1, from before the first: lower counts are ignored,
  # a counter it reports higher still moves.
  bundles.on_progress('b1', _answer(DOCUMENTS_READ=8, DOCUMENTS_EMBEDDED=6))
  # A bundle asked about after it finished answers with nothing.
  bundles.on_progress('b2', beam_fn_api_pb2.ProcessBundleProgressResponse())
  assert bundles.totals() == {metrics.DOCUMENTS_READ: 13,
                              metrics.DOCUMENTS_EMBEDDED: 6}


def test_bundles_answered_from_many_threads():
  bundles = fnapi_progress._Bundles()

  def answer(bundle):
    for n in range(1, 51):
      bundles.on_progress(bundle, _answer(DOCUMENTS_READ=n))
  threads = [threading.Thread(target=answer, args=(f'b{i}',))
             for i in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert bundles.totals() == {metrics.DOCUMENTS_READ: 8 * 50}


def test_source_on_another_beam_version_is_none_with_one_warning(
    monkeypatch, caplog):
  monkeypatch.setattr(fnapi_progress, 'WRITTEN_FOR', ('0.0.1',))
  with caplog.at_level(logging.WARNING):
    assert fnapi_progress.source() is None
  [record] = caplog.records
  assert record.levelno == logging.WARNING
  assert 'live progress is off' in record.getMessage()
  assert 'Beam 0.0.1' in record.getMessage()


def test_source_on_the_beam_version_it_was_written_for(monkeypatch, caplog):
  from apache_beam import version
  monkeypatch.setattr(fnapi_progress, 'WRITTEN_FOR', (version.__version__,))
  with caplog.at_level(logging.WARNING):
    found = fnapi_progress.source()
  assert isinstance(found, fnapi_progress.BundleProgress)
  assert found.counts() == {} and not caplog.records
  assert found.request_every == progress.SAMPLE_EVERY


class _Counts(progress.LiveCounts):
  """Counts that grow by 10 documents per answer (None first, as a runner
  that has reported nothing yet)."""

  def __init__(self, fail_after=None):
    self.asked = 0
    self._fail_after = fail_after

  def counts(self):
    self.asked += 1
    if self._fail_after is not None and self.asked > self._fail_after:
      raise ConnectionError('job service went away')
    if self.asked == 1:
      return None
    n = 10 * (self.asked - 1)
    return {metrics.DOCUMENTS_READ: n, metrics.DOCUMENTS_EMBEDDED: n,
            metrics.TOKENS_EMBEDDED: 7 * n}


def _wait_for(condition, timeout=10.0):
  deadline = time.monotonic() + timeout
  while not condition():
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.005)


def test_display_prints_lines_and_the_exact_final_one(monkeypatch):
  monkeypatch.setattr(progress, 'SAMPLE_EVERY', 0.01)
  stream = io.StringIO()
  source = _Counts()
  display = progress.Display(source, every=0.01, total_bytes=None,
                             stream=stream)
  with display.track():
    _wait_for(lambda: source.asked >= 5)
    # The finished run's committed counters: FnApiRunner's own result.
    result = _FinishedRun({'stage': [
        _counter(metrics.DOCUMENTS_READ, 40, 'A'),
        _counter(metrics.DOCUMENTS_READ, 2, 'B'),
        _counter(metrics.DOCUMENTS_EMBEDDED, 41, 'C'),
        _counter(metrics.DOCUMENTS_FAILED, 1, 'C'),
        _counter(metrics.TOKENS_EMBEDDED, 300, 'C'),
    ]})
    final = display.finish(result)
  lines = stream.getvalue().splitlines()
  assert lines[0].startswith('progress ')
  assert lines[0].endswith('  running; no counts from the runner yet')
  live = lines[1:-1]
  assert live and all(' embedded, 0 rejected  ' in text for text in live)
  reads = [int(text.split()[2].replace(',', '')) for text in live]
  assert reads == sorted(reads) and reads[0] == 10
  assert final[1:] == (42, 41, 0, 1, 300, 0)
  assert display.samples[-1] == final
  assert '  42 read, 41 embedded, 1 rejected  ' in lines[-1]


class _FinishedRun:
  """A PipelineResult's metrics() as FnApiRunner builds them."""

  def __init__(self, step_infos):
    self._metrics = fn_runner.FnApiMetrics(step_infos)

  def metrics(self):
    return self._metrics


def test_a_failing_source_is_logged_once_and_the_run_goes_on(monkeypatch,
                                                             caplog):
  monkeypatch.setattr(progress, 'SAMPLE_EVERY', 0.01)
  stream = io.StringIO()
  source = _Counts(fail_after=2)
  display = progress.Display(source, every=0.01, total_bytes=None,
                             stream=stream)
  with caplog.at_level(logging.WARNING):
    with display.track():
      _wait_for(lambda: stream.getvalue().count('\n') >= 6)
  warnings = [r.getMessage() for r in caplog.records]
  assert warnings == ['live progress stopped: job service went away']
  assert source.asked == 3  # never asked again after it failed
  lines = stream.getvalue().splitlines()
  assert ' 10 read, 10 embedded' in lines[1]
  assert all('running; no counts' in text for text in lines[2:])


def test_result_metrics_asks_the_result_at_most_every_so_often():
  source = progress.ResultMetrics(every=3600)
  assert source.counts() is None  # not started: nothing to ask
  result = _FinishedRun({'s': [_counter(metrics.DOCUMENTS_READ, 4)]})
  source.started(result)
  first = source.counts()
  assert first[metrics.DOCUMENTS_READ] == 4
  assert set(first) == set(metrics.figure_metrics())
  # The job moves on, but within `every` the last answer stands.
  result._metrics = fn_runner.FnApiMetrics(
      {'s': [_counter(metrics.DOCUMENTS_READ, 9)]})
  assert source.counts()[metrics.DOCUMENTS_READ] == 4
  eager = progress.ResultMetrics(every=0)
  eager.started(result)
  assert eager.counts()[metrics.DOCUMENTS_READ] == 9


def test_source_for_each_runner():
  from apache_beam.options.pipeline_options import PipelineOptions
  none = PipelineOptions([])
  assert isinstance(progress_sources.source_for('DataflowRunner', none),
                    progress.ResultMetrics)
  assert progress_sources.source_for('DirectRunner', none) is None
  assert progress_sources.source_for('SomeOtherRunner', none) is None
  # PortableRunner without a job service, or with the in-process one.
  assert progress_sources.source_for('PortableRunner', none) is None
  assert progress_sources.source_for('PortableRunner', PipelineOptions(
      ['--job_endpoint', 'embed'])) is None


class _JobService:
  """Answers of a job service through Beam's Job API messages (the gRPC
  stub's two calls that JobServiceMetrics makes)."""

  def __init__(self, jobs, attempted=(), committed=()):
    from apache_beam.portability.api import beam_job_api_pb2
    self.api, self.jobs = beam_job_api_pb2, list(jobs)
    self.attempted, self.committed = list(attempted), list(committed)
    self.asked = []

  def GetJobs(self, request, timeout):
    del request, timeout
    return self.api.GetJobsResponse(job_info=[
        self.api.JobInfo(job_id=j) for j in self.jobs])

  def GetJobMetrics(self, request, timeout):
    del timeout
    self.asked.append(request.job_id)
    return self.api.GetJobMetricsResponse(
        metrics=self.api.MetricResults(attempted=self.attempted,
                                       committed=self.committed))


def _job_service_source(service):
  source = progress.JobServiceMetrics('localhost:1')  # never connects
  source._service = service
  return source


def test_job_service_metrics_of_the_job_started_by_this_run():
  service = _JobService(['earlier'], attempted=[
      _counter(metrics.DOCUMENTS_READ, 5, 'a'),
      _counter(metrics.DOCUMENTS_READ, 2, 'b'),
      _counter(metrics.DOCUMENTS_EMBEDDED, 3)])
  source = _job_service_source(service)
  with source.attached():
    assert source.counts() is None  # no job yet
    service.jobs.append('this-run')
    source.started(result=None)
    assert source.counts() == {metrics.DOCUMENTS_READ: 7,
                               metrics.DOCUMENTS_EMBEDDED: 3}
  assert service.asked == ['this-run']
  service.attempted = []
  assert source.counts() is None  # no counts yet: None, not zeros


def test_job_service_metrics_of_an_unclear_job_are_none():
  service = _JobService(['earlier'], attempted=[
      _counter(metrics.DOCUMENTS_READ, 5)])
  source = _job_service_source(service)
  with source.attached():
    service.jobs += ['mine', 'someone-elses']
    source.started(result=None)
    assert source.counts() is None and not service.asked


def test_job_service_metrics_count_attempted_and_committed_once():
  service = _JobService([], attempted=[_counter(metrics.DOCUMENTS_READ, 5)],
                        committed=[_counter(metrics.DOCUMENTS_READ, 5)])
  source = _job_service_source(service)
  with source.attached():
    service.jobs.append('this-run')
    source.started(result=None)
    assert source.counts() == {metrics.DOCUMENTS_READ: 5}
