"""What the test files share: running the job, reading its summary, comparing
its records, and the lines it prints.

One place for each, so that every test runs the job the way users do (the
module `pipeline.run`, in-process or as a command), reads the summary the
way schedulers do (the last stdout line), and compares records with one
strictness. Nothing here imports TensorFlow or Beam at import time: the unit
tier (tests/unit/) uses the record comparison too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np

from tests import corpora

# The tolerance between the embeddings of two runs that batch the same
# documents differently (another batch mix, another row packing): the
# encoder's sums run in another order. Exact equality is the default of
# assert_same_record; a comparison across runs says it takes this.
BATCH_MIX_ATOL = 1e-5

# A quiet run's progress line on stderr (pipeline/console.py).
PROGRESS = re.compile(
    r'^progress (?P<time>\S+)(?: \(ETA (?P<eta>\S+)\))?  (?P<read>[\d,]+) '
    r'read, (?P<embedded>[\d,]+) embedded(?:, (?P<reused>[\d,]+) reused)?, '
    r'(?P<rejected>[\d,]+) rejected  (?P<docs_s>[\d,.]+) docs/s  '
    r'(?P<tokens_s>[\d,]+) tokens/s(?:  input (?P<input>\d+)% read)?$')

# The one line an interrupted run prints last on stderr
# (pipeline/interrupts.py).
INTERRUPTED = re.compile(
    r'pipeline\.run: interrupted (again )?\((SIGINT|SIGTERM)\)'
    r'( before the run started)?; (.+)$')


# --- the summary --------------------------------------------------------------


def summary_of(out: str) -> dict:
  """The job's summary in what it printed on stdout: the last line, one JSON
  object (what schedulers read); the lines before it are for people."""
  lines = out.strip().splitlines()
  assert lines, 'nothing on stdout: no summary line'
  return json.loads(lines[-1])


def command_summary(proc: subprocess.CompletedProcess) -> dict:
  """The summary of a command that must have succeeded (exit status 0;
  otherwise the end of its stderr says why)."""
  assert proc.returncode == 0, proc.stderr[-3000:]
  return summary_of(proc.stdout)


# --- running the job ---------------------------------------------------------


def run_main(capsys, argv: list) -> tuple[int, dict | None, list[str]]:
  """`pipeline.run.main(argv)` in this process, as the command runs it:
  (exit status, summary or None when stdout is empty, stderr's lines).
  What the test printed before is not this run's, so it is read away."""
  from pipeline import run
  capsys.readouterr()
  status = run.main(list(argv))
  captured = capsys.readouterr()
  summary = summary_of(captured.out) if captured.out.strip() else None
  return status, summary, captured.err.strip().splitlines()


def run_job(capsys, argv: list, *, status: int = 0) -> dict:
  """`pipeline.run.main(argv)` in this process, which must exit with
  `status` (the end of stderr says why not), and its summary."""
  from pipeline import run
  capsys.readouterr()
  got = run.main(list(argv))
  out, err = capsys.readouterr()
  assert got == status, err[-3000:]
  return summary_of(out)


def job_command(*argv: str) -> list[str]:
  """The job as users start it (`python -m pipeline.run ...`), with this
  test's interpreter."""
  return [sys.executable, '-m', 'pipeline.run', *argv]


def run_command(argv: list, *, env: dict | None = None,
                cwd: str = corpora.ROOT,
                timeout: float = 600) -> subprocess.CompletedProcess:
  """A command (job_command(...) or any other) as a child process, from the
  project's root by default, its output captured as text. Without `env`,
  this process's environment with TensorFlow's C++ log lines kept off
  stderr (TF_CPP_MIN_LOG_LEVEL=2)."""
  if env is None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run(argv, cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


# --- comparing records -------------------------------------------------------


def assert_same_record(got: dict, want: dict, *,
                       atol: float | None = None) -> None:
  """One record equal to another, with one strictness: the same field
  names; every value equal and of the same type; arrays float32, of the
  same shape and the same bytes (so -0.0 is not 0.0 and a NaN keeps its
  bits). Only `atol`, given, loosens one field, the embedding: two runs
  that batched the documents differently (BATCH_MIX_ATOL)."""
  assert set(got) == set(want), (sorted(got), sorted(want))
  for name, value in want.items():
    if name == 'embedding' and atol is not None:
      np.testing.assert_allclose(got[name], value, atol=atol, rtol=0)
    elif isinstance(value, np.ndarray):
      assert isinstance(got[name], np.ndarray), name
      assert got[name].dtype == np.float32, name
      assert got[name].shape == value.shape, name
      assert got[name].tobytes() == value.tobytes(), name
    else:
      assert got[name] == value, (name, got[name], value)
      assert type(got[name]) is type(value), name


def assert_same_records(got: dict, want: dict, *,
                        atol: float | None = BATCH_MIX_ATOL) -> None:
  """Two runs' records by id (corpora.read_output's): the same ids, each
  record as assert_same_record compares it, embeddings within `atol` (by
  default the batch-mix tolerance; None for exactly equal)."""
  assert sorted(got) == sorted(want)
  for doc_id, record in got.items():
    assert_same_record(record, want[doc_id], atol=atol)


# --- an encoder that runs out of memory -------------------------------------


def oom_encoder(inner_path: str, out_dir: str, limit: int,
                packed: bool = False) -> str:
  """A SavedModel with inner's outputs, unchanged; above `limit` padded
  tokens a call asks for size x 2^40 floats and fails the way a full GPU
  does (a real ResourceExhaustedError from TensorFlow's allocator). With
  packed, inner's packed calls (packed, packed_bf16, packed_fp16) too, so
  that packed rows run out of memory the same way
  (tests/test_budgets.py, tests/test_packing_pipeline.py)."""
  import tensorflow as tf
  import tensorflow_hub as hub

  from tfmodels.encoder import INPUT_KEYS, PACKED_INPUT_KEYS

  def allocate_above_limit(word_ids):
    size = tf.size(word_ids)

    def allocate_too_much():
      # The shape depends on the input, so nothing can be folded away.
      shape = tf.stack([tf.cast(size, tf.int64) * (1 << 40)])
      return tf.reduce_sum(tf.fill(shape, 1.0))

    return tf.cond(size > limit, allocate_too_much, lambda: tf.constant(0.0))

  def out_of_memory_above(fn, keys):

    @tf.function(input_signature=[{
        k: tf.TensorSpec([None, None], tf.int32) for k in keys}])
    def call(inputs):
      outputs = fn(inputs)
      extra = allocate_above_limit(inputs['input_word_ids'])
      return {k: v + tf.cast(0.0 * extra, v.dtype) if v.dtype.is_floating
              else v for k, v in outputs.items()}

    return call

  class OutOfMemoryAbove(tf.Module):

    def __init__(self):
      super().__init__()
      self.inner = hub.load(inner_path)
      if packed:
        for name in ('packed', 'packed_bf16', 'packed_fp16'):
          setattr(self, name, out_of_memory_above(getattr(self.inner, name),
                                                  PACKED_INPUT_KEYS))

    @tf.function(input_signature=[{
        k: tf.TensorSpec([None, None], tf.int32) for k in INPUT_KEYS}])
    def __call__(self, inputs):
      outputs = self.inner(inputs)
      extra = allocate_above_limit(inputs['input_word_ids'])
      return {'sequence_output': outputs['sequence_output'] + 0.0 * extra,
              'pooled_output': outputs['pooled_output'],
              'encoder_outputs': outputs['encoder_outputs']}

  tf.saved_model.save(OutOfMemoryAbove(), out_dir)
  return out_dir


def launch(*argv: str) -> tuple[dict, dict]:
  """`pipeline.run.launch(argv)` in this process, which must succeed: its
  summary and the records it wrote (by id)."""
  from pipeline import run
  status, summary, _ = run.launch(list(argv))
  assert status == 0, summary
  records = {r['id']: r for r in corpora.read_output(
      argv[list(argv).index('--output') + 1])}
  return summary, records
