"""transforms/metrics.py declares every metric once: families give their
keys back from the names they make, a Tally counts as Beam's metrics do,
and no step names a metric anywhere else."""

from __future__ import annotations

import os
import re

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline

from pipeline import progress
from tests import corpora
from transforms import metrics


def test_a_family_gives_back_the_key_its_name_was_made_from():
  for family, key in ((metrics.ENCODER_SHAPES, (8, 128)),
                      (metrics.BATCHES_PER_BUCKET, (64,)),
                      (metrics.TOKEN_BUDGETS, (512,)),
                      (metrics.ROWS_WRITTEN, ('dead_letters',))):
    member = family.member(*key)
    assert family.key_of(member.name) == key
    assert member.namespace == family.namespace and member.kind == family.kind
  # Names keep their published form (Dataflow's job page shows them).
  assert metrics.BATCHES_PER_BUCKET.member(64).name == 'batches_len_064'
  assert metrics.ENCODER_SHAPES.member(8, 128).name == 'encoder_shape_8x128'
  # Another family's name, or a bare stem, is no member.
  assert metrics.ENCODER_SHAPES.key_of('batches_len_064') is None
  assert metrics.BATCHES_PER_BUCKET.key_of('batches_len_') is None
  assert metrics.TOKENS_PER_BUCKET.key_of('tokens_len_x12') is None


def test_every_declared_name_is_unique():
  declared = [v for v in vars(metrics).values()
              if isinstance(v, (metrics.Metric, metrics.Family))]
  names = [(m.namespace, getattr(m, 'name', None) or m.pattern)
           for m in declared]
  assert len(names) == len(set(names)) and len(names) >= 25


def test_a_tally_counts_what_the_handler_would_count_into_beam():
  tally = metrics.Tally()
  tally.inc(metrics.BATCHES)
  tally.counter(metrics.BATCHES).inc(2)
  tally.inc(metrics.ENCODER_SHAPES.member(4, 32))
  tally.update(metrics.TOKEN_BUDGETS.member(32), 128)
  assert tally.values[metrics.BATCHES] == 3
  assert tally.keyed(metrics.ENCODER_SHAPES) == {(4, 32): 1}
  assert tally.keyed(metrics.TOKEN_BUDGETS) == {(32,): [128]}


def test_totals_and_keys_read_back_what_a_pipeline_counted():
  def count(n):
    metrics.BEAM.inc(metrics.DOCUMENTS_READ)
    metrics.BEAM.inc(metrics.ENCODER_SHAPES.member(n % 2 + 1, 16), 2)
    metrics.BEAM.update(metrics.TOKEN_BUDGETS.member(16), 100 + n)
    return n

  p = TestPipeline(runner='FnApiRunner', blocking=False)
  _ = p | beam.Create(range(5)) | beam.Map(count)
  result = p.run()
  result.wait_until_finish()
  found = metrics.totals(result.metrics(), metrics.figure_metrics())
  assert found[metrics.DOCUMENTS_READ] == 5
  assert metrics.figures(found)['documents_read'] == 5
  assert metrics.figures(found)['documents_embedded'] == 0
  shapes = metrics.by_key(result.metrics(), metrics.ENCODER_SHAPES)
  assert {key: sum(v) for key, v in shapes.items()} == {(1, 16): 6,
                                                         (2, 16): 4}
  budgets = metrics.by_key(result.metrics(), metrics.TOKEN_BUDGETS)
  assert min(d.min for d in budgets[(16,)]) == 100
  # The source Dataflow runs use: the result's metrics, attempted values.
  source = progress.ResultMetrics(every=0)
  assert source.counts() is None
  source.started(result)
  assert progress.sample_from(source.counts(), 1.0).documents_read == 5


def test_no_step_names_a_metric_outside_transforms_metrics():
  """Beam's Metrics.counter / distribution appear only in metrics.py."""
  found = []
  for folder in ('pipeline', 'transforms', 'tfmodels'):
    for root, _, names in os.walk(os.path.join(corpora.ROOT, folder)):
      for name in names:
        path = os.path.join(root, name)
        if not name.endswith('.py') or path.endswith(
            os.path.join('transforms', 'metrics.py')):
          continue
        with open(path, encoding='utf-8') as f:
          text = f.read()
        found += [f'{path}: {m.group(0)}' for m in re.finditer(
            r'Metrics\.(counter|distribution|gauge)\(', text)]
  assert not found, found
