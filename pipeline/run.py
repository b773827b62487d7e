"""Entry point: `python -m pipeline.run --input ... --output ...`.

The command line only: it makes the launch plan (pipeline/launch.py), builds
the job from it (pipeline/graph.py), runs it, and prints the summary
(pipeline/summary.py) as its last line, one JSON object with the run's
counts and rates, or one line for an error or an interrupt.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Optional

if __name__ == '__main__':
  # Ctrl-C and SIGTERM from the first moment, imports included: one line,
  # no traceback (pipeline/interrupts.py). Only the command installs it.
  from pipeline import interrupts as _interrupts
  _interrupts.install()
  # --help and flag errors before TensorFlow and Beam are imported below
  # (seconds): pipeline/flags.py.
  from pipeline.flags import answer_early as _answer_early
  _early = _answer_early(sys.argv[1:])
  if _early is not None:
    sys.exit(_early)

# TensorFlow's process defaults (tfmodels/__init__.py), before anything
# imports TensorFlow.
import tfmodels  # noqa: F401


import apache_beam as beam

from pipeline import cleanup
from pipeline import console
from pipeline import dataflow_job
from pipeline import interrupts
from pipeline import progress
from pipeline import progress_sources
from pipeline import stall
from pipeline import summary as summary_lib
from pipeline import worker
from pipeline.flags import answer_early, asks_verbose
from pipeline.graph import build_pipeline
from pipeline.launch import Plan, about_line, plan_from_argv
from pipeline.beam_options import EmbedOptions
from transforms import failpoints


def launch(argv) -> tuple[int, Optional[dict], object]:
  """Checks the flags, builds and runs the job: (exit status, summary,
  Beam's PipelineResult). main() prints; tests look at the result too.

  Whatever can be checked before the run is, and fails with one line and
  status 2; an error while the pipeline runs is one line naming the step,
  status 1. --verbose adds the traceback."""
  try:
    # A check that waits on a service (Cloud Storage, BigQuery, a
    # database) says so after a while (pipeline/stall.py).
    with stall.during(lambda elapsed: (
        'checking the launch: the model, the inputs and the outputs '
        f'({stall.seconds(elapsed)})')):
      plan = plan_from_argv(argv)
    if plan.embed.preflight_only:
      return _preflight_only(plan)
    # One writer per output: a second run is refused here (LeaseHeld).
    # Beam's local runner runs a --dry_run job all the same: it holds one.
    lease = None if plan.dry_run and not plan.local else plan.hold()
  except (ValueError, RuntimeError, OSError) as e:
    interrupts.reraise()
    _error(e, asks_verbose(argv))
    return 2, None, None
  try:
    failpoints.paused('lease:held')
    return _start(plan, lease)
  finally:
    if lease:
      lease.release()


def _preflight_only(plan: Plan) -> tuple[int, Optional[dict], object]:
  """--preflight_only: what the job would do, its size (the cost line)
  and what each check found; nothing built or written (no lease: nothing
  is written to hold it for)."""
  print(about_line(plan), file=sys.stderr)
  from pipeline import estimate
  print(estimate.cost_line(plan), file=sys.stderr)
  for check in plan.checked:
    print(f'preflight {check.name}: {check.found} ({check.seconds:.1f} s)',
          file=sys.stderr)
  print(f'preflight passed: {len(plan.checked)} check(s); nothing was '
        'built or written', file=sys.stderr, flush=True)
  return 0, summary_lib.preflight_only(plan), None


def _start(plan: Plan, lease) -> tuple[int, Optional[dict], object]:
  """What the launch says before the run, then the run (the lease held)."""
  if plan.embed.pooling == 'pooled' and plan.model.untrained_pooler:
    logging.warning(
        '--pooling pooled with %s: its pooled_output comes from a pooler '
        'the checkpoint never trained (random weights). Use --pooling mean '
        'unless you fine-tune the pooler.', plan.model.name)
  if not plan.dry_run:
    print(about_line(plan), file=sys.stderr, flush=True)
  if plan.checked and not plan.local:
    print(f'preflight passed: {", ".join(c.name for c in plan.checked)} '
          f'({sum(c.seconds for c in plan.checked):.1f} s)', file=sys.stderr,
          flush=True)
  if plan.runner == 'DataflowRunner':
    # Its size, before workers are paid for (a local run shows progress).
    from pipeline import estimate
    print(estimate.cost_line(plan), file=sys.stderr, flush=True)
  return _run(plan, lease)


def _run(plan: Plan, lease=None) -> tuple[int, Optional[dict], object]:
  """Builds the job from the plan and runs it, with the progress display
  on the default local runner; then the summary."""
  embed_options, local = plan.embed, plan.local
  verbose = bool(embed_options.verbose)
  start = time.monotonic()
  source = None if plan.dry_run or embed_options.progress_every <= 0 else (
      progress_sources.source_for(plan.runner, plan.options))
  display = source and progress.Display(
      source, every=embed_options.progress_every,
      total_bytes=plan.files.bytes if plan.files and not plan.files.compressed
      else None)
  p = beam.Pipeline(runner=worker.local_runner(
      plan.options, source and source.request_every)
                    if local else None, options=plan.options)
  build_pipeline(p, plan)
  files_left = None if plan.dry_run else cleanup.RunFiles(
      (plan.where.output, plan.where.dead_letters))
  job = None if plan.dry_run or plan.runner != dataflow_job.RUNNER else (
      dataflow_job.Launch(plan.options, embed_options.cancel_on_interrupt))
  interrupts.set_finisher(lambda _: _interrupted(
      files_left, local=local, finished=False, runner=plan.runner,
      lease=lease, job=job))
  try:
    if not display:
      result = _submit(p, job)
      _note_job(lease, result)
      if plan.dry_run:
        # Beam's --dry_run builds the whole job and stops before submitting.
        return 0, summary_lib.dry_run(plan), result
      result.wait_until_finish()
    else:
      with display.track():
        result = _submit(p, job)
        _note_job(lease, result)
        display.started(result)
        result.wait_until_finish()
        display.finish(result)
  except Exception as e:  # noqa: BLE001
    interrupts.reraise()
    if files_left and local:
      files_left.remove_own()
    _release(lease)  # before the error line, which ends what it prints
    _error(e, verbose, during_run=True)
    return 1, None, None
  interrupts.set_finisher(lambda _: _interrupted(
      files_left, local=local, finished=True, runner=plan.runner,
      lease=lease, job=job))
  try:
    plan.note()
  except (ValueError, RuntimeError, OSError) as e:
    _release(lease)
    _error(RuntimeError(f'the embeddings are written, but not how they '
                        f'were made: {e}'), verbose)
    return 1, None, None
  if files_left and local:
    files_left.remove_stale()
  summary = summary_lib.summarize(result, plan,
                                  seconds=time.monotonic() - start,
                                  started=summary_lib.process_started())
  return _conclude(summary, result, embed_options, display, verbose, lease,
                   letters=plan.where.dead_letters)



def _conclude(summary: dict, result, embed_options: EmbedOptions, display,
              verbose: bool, lease=None,
              letters=None) -> tuple[int, Optional[dict], object]:
  """After the run: the report, then whether the night failed for a
  scheduler (failure; `letters`, the dead letters' backend, gives it an
  example of the most frequent error)."""
  if embed_options.report:
    from pipeline import report
    try:
      report.write(embed_options.report, summary=summary,
                   options=embed_options,
                   samples=display.samples if display else ())
    except Exception as e:  # noqa: BLE001
      # The embeddings are written; the report is not.
      _release(lease)
      _error(RuntimeError(f'--report {embed_options.report}: '
                          f'{console.run_error_line(e)}'), verbose)
      return 1, summary, result
    print(f'report: {embed_options.report}', file=sys.stderr)
  why = summary_lib.failure(summary, embed_options.max_rejected, letters)
  if why:
    _release(lease)
    _error(RuntimeError(why), verbose=False)
    return 1, summary, result
  return 0, summary, result


def _submit(p, job: Optional[dataflow_job.Launch]):
  """p.run(); for a Dataflow job, what it waits for while Beam stages and
  submits it, and its id and console link as soon as it has one."""
  if job is None:
    return p.run()
  with job.submitting():
    result = p.run()
  job.started(result)
  return result


def _release(lease) -> None:
  """Releases the lease early: what it logs if it cannot (its database
  gone) comes before the run's last line."""
  if lease:
    lease.release()


def _note_job(lease, result) -> None:
  """Names a remote runner's job in the lease, for a second run's error
  line."""
  job_id = getattr(result, 'job_id', None)
  if lease and callable(job_id):
    lease.note_job(job_id())


def _interrupted(files_left: Optional[cleanup.RunFiles], *, local: bool,
                 finished: bool, runner: str, lease=None,
                 job: Optional[dataflow_job.Launch] = None) -> str:
  """What an interrupted run says after 'interrupted (SIGINT); ', once its
  temporary files are removed (and its lease released: this process may
  not unwind). A Dataflow job is cancelled or left running as
  --cancel_on_interrupt says (pipeline/dataflow_job.py); a job on another
  remote runner is not this process's to stop, nor are its files."""
  if lease:
    lease.release()
  if job is not None:
    return job.interrupted(finished=finished, say=_prompt,
                           ready=lambda: interrupts.unwound(10.0),
                           if_again=interrupts.if_again)
  if files_left is None:
    return 'nothing was written'
  if not local:
    return (f'the {runner} job keeps running where it was submitted; cancel '
            'it there (Dataflow: gcloud dataflow jobs cancel JOB_ID)')
  return files_left.interrupted(finished=finished)


def _prompt(text: str) -> None:
  sys.stderr.write(f'pipeline.run: {text}' if text.strip() else text)
  sys.stderr.flush()


def _error(exc: BaseException, verbose: bool, during_run: bool = False):
  if verbose:
    traceback.print_exception(exc, file=sys.stderr)
  text = console.run_error_line(exc) if during_run else str(exc)
  print(f'pipeline.run: error: {text}', file=sys.stderr, flush=True)


def main(argv=None) -> int:
  argv = list(argv if argv is not None else sys.argv[1:])
  early = answer_early(argv)
  if early is not None:
    return early
  verbose = asks_verbose(argv)
  # TensorFlow is imported after the preflight (pipeline/launch.py).
  console.configure(verbose=verbose, import_tensorflow=False)
  interrupts.started(verbose)
  # Its lines reach the terminal even while TensorFlow's import is held.
  stall.start(say=interrupts.to_terminal)
  try:
    status, summary, _ = launch(argv)
  except BaseException as e:
    if interrupts.received() is None:
      raise
    if verbose:
      traceback.print_exception(e, file=sys.stderr)
    return interrupts.finish(interrupts.received())
  if summary is not None:
    print(json.dumps(summary), flush=True)
  return status

if __name__ == '__main__':
  _status = main()
  if interrupts.received() is not None:
    # Threads Beam started may still wait on the stopped run.
    interrupts.exit_now(_status)
  sys.exit(_status)
