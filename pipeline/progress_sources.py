"""Where a run's live counts come from, by runner, chosen once per run.

- FnApiRunner, the job's local default, hands its metrics over only when
  the pipeline has finished; pipeline/fnapi_progress.py asks its running
  bundles instead, and is the one module that reaches into the runner.
- The portable runner with a job service (--job_endpoint): the job
  service's metrics of the job, through Beam's Job API. Beam's own local
  job service reports them only once the job ends, so its lines show the
  time until then.
- Dataflow: the public PipelineResult.metrics() of the running job.
Any other runner shows no live line; the summary is the same on all.

Why a module of its own: the sources depend on pipeline/progress.py (the
LiveCounts contract, the counters), and the choice depends on every source;
kept in progress.py, the choice made it and fnapi_progress.py import each
other.
"""

from __future__ import annotations

from typing import Callable, Optional

from pipeline import fnapi_progress
from pipeline import progress


def _portable_source(options) -> Optional[progress.LiveCounts]:
  from apache_beam.options.pipeline_options import PortableOptions
  endpoint = options.view_as(PortableOptions).job_endpoint
  return progress.JobServiceMetrics(endpoint) if endpoint and endpoint != (
      'embed') else None


SOURCES: dict[str, Callable] = {
    'FnApiRunner': lambda options: fnapi_progress.source(),
    'PortableRunner': _portable_source,
    'DataflowRunner': lambda options: progress.ResultMetrics(),
}


def source_for(runner: str, options) -> Optional[progress.LiveCounts]:
  """The progress source of a runner (by its --runner name), or None."""
  choose = SOURCES.get(runner)
  return choose(options) if choose else None
