"""Live counts of FnApiRunner's running bundles: the one module that
reaches into Beam's runner internals, for the job's local default runner.

FnApiRunner hands its metrics over only when the pipeline has finished,
but it can ask a running bundle for its progress (a
ProcessBundleProgressRequest, the same request runners use to split work),
and the answer carries the bundle's counters so far. No public API offers
that, so two things are swapped for the duration of the run, and only for
the Beam versions this was written and tested for (WRITTEN_FOR): with any
other version source() warns once and gives None, and the run goes on
without a live line (the summary does not depend on it).

- Worker processes (--direct_running_mode multi_processing) answer
  FnApiRunner's own progress requests, which it makes when given a request
  frequency; Beam's ProgressRequester takes a callback, but FnApiRunner
  creates it without one, so the class is swapped.
- The in-process worker runs a whole bundle inside the call that hands it
  over (EmbeddedWorkerHandler.push), so FnApiRunner's requests only start
  once the bundle is done. For it, push is wrapped: a thread asks the same
  worker for the bundle's progress every second while the bundle runs, as
  a gRPC worker would be asked.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from typing import Optional

from apache_beam import version as beam_version

from pipeline import progress

# The Beam versions whose FnApiRunner this module was written against.
WRITTEN_FOR = ('2.77.0',)


class _Bundles:
  """The latest counts of every bundle that answered a progress request;
  thread-safe (each bundle's requests come from its own thread)."""

  def __init__(self):
    self._lock = threading.Lock()
    self._bundles: dict = {}

  def on_progress(self, bundle: str, response) -> None:
    found = progress.user_counters(response.monitoring_infos)
    if not found:
      # A bundle asked about after it finished answers with nothing.
      return
    with self._lock:
      # Counters only go up: an answer that arrives late keeps the higher.
      seen = self._bundles.setdefault(bundle, {})
      for metric, value in found.items():
        seen[metric] = max(seen.get(metric, 0), value)

  def totals(self) -> dict:
    out: dict = {}
    with self._lock:
      for found in self._bundles.values():
        for metric, value in found.items():
          out[metric] = out.get(metric, 0) + value
    return out


class BundleProgress(progress.LiveCounts):
  """Counts so far, from the running bundles' progress answers."""

  request_every = progress.SAMPLE_EVERY

  def __init__(self):
    self._bundles = _Bundles()

  def counts(self) -> dict:
    # Until a bundle answers, nothing has been counted: zeros.
    return self._bundles.totals()

  @contextlib.contextmanager
  def attached(self):
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    original = fn_runner.ProgressRequester
    embedded_push = worker_handlers.EmbeddedWorkerHandler.push
    fn_runner.ProgressRequester = _requester(original, self._bundles)
    worker_handlers.EmbeddedWorkerHandler.push = _push(embedded_push,
                                                       self._bundles)
    try:
      yield
    finally:
      fn_runner.ProgressRequester = original
      worker_handlers.EmbeddedWorkerHandler.push = embedded_push


def _progress_request(bundle: str):
  from apache_beam.portability.api import beam_fn_api_pb2
  return beam_fn_api_pb2.InstructionRequest(
      instruction_id=f'progress-{uuid.uuid4().hex}',
      process_bundle_progress=beam_fn_api_pb2.ProcessBundleProgressRequest(
          instruction_id=bundle))


def _push(embedded_push, bundles: _Bundles):
  """EmbeddedWorkerHandler.push, with a thread asking the bundle it hands
  over for its progress while it runs. A request that fails ends that
  thread's asking, never the bundle."""

  def push(handler, request):
    if request.WhichOneof('request') != 'process_bundle':
      return embedded_push(handler, request)
    bundle, done = request.instruction_id, threading.Event()

    def poll():
      try:
        while not done.wait(progress.SAMPLE_EVERY):
          response = handler.worker.do_instruction(_progress_request(bundle))
          if not response.error:
            bundles.on_progress(bundle, response.process_bundle_progress)
      except Exception:
        logging.debug('progress request to bundle %s failed', bundle,
                      exc_info=True)

    thread = threading.Thread(target=poll, daemon=True,
                              name=f'progress-{bundle}')
    thread.start()
    try:
      return embedded_push(handler, request)
    finally:
      done.set()
      thread.join()

  return push


def _requester(original, bundles: _Bundles):
  """Beam's ProgressRequester, given the callback FnApiRunner omits."""

  class Requester(original):

    def __init__(self, worker_handler, instruction_id, frequency,
                 callback=None):
      super().__init__(
          worker_handler, instruction_id, frequency,
          callback or (lambda response: bundles.on_progress(instruction_id,
                                                            response)))

  return Requester


def source() -> Optional[BundleProgress]:
  """The live source on a Beam version this module knows; else None, with
  one warning."""
  version = beam_version.__version__
  if version not in WRITTEN_FOR:
    logging.warning(
        'live progress is off: pipeline/fnapi_progress.py reads FnApiRunner '
        'internals of Beam %s, and this is Beam %s (the run and its summary '
        'are unaffected)', ', '.join(WRITTEN_FOR), version)
    return None
  return BundleProgress()
