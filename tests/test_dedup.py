"""Duplicate ids under each policy, as plain functions and in a pipeline."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms import dedup
from transforms.elements import DeadLetter, Document


def _doc(doc_id, source, text='t'):
  return Document(doc_id, text, None, source)


def test_first_keeps_the_earliest_source_whatever_the_order():
  docs = [_doc('a', 'f@10', 'ten'), _doc('a', 'f@9', 'nine'),
          _doc('a', 'e@100', 'other file')]
  for order in (docs, docs[::-1], docs[1:] + docs[:1]):
    out = dedup.resolve_duplicates('a', order, 'first')
    assert out[0].text == 'other file'
    assert [d.source for d in out[1:]] == ['f@9', 'f@10']
    assert all(isinstance(d, DeadLetter) and d.error_type == 'duplicate_id'
               and 'e@100' in d.message for d in out[1:])
  assert dedup.resolve_duplicates('a', docs, 'keep') == sorted(
      docs, key=lambda d: dedup.source_order(d.source))
  with pytest.raises(dedup.DuplicateIdError, match="'a' occurs 3 times"):
    dedup.resolve_duplicates('a', docs, 'error')
  single = [_doc('b', 'f@1')]
  assert dedup.resolve_duplicates('b', single, 'error') == single


@pytest.mark.parametrize('policy', ['keep', 'first'])
def test_policies_in_a_pipeline(policy):
  docs = [_doc('a', 'f@1'), _doc('a', 'f@2'), _doc('b', 'f@3'),
          _doc('c', 'f@4'), _doc('c', 'f@5'), _doc('c', 'f@6')]
  with TestPipeline('FnApiRunner', options=PipelineOptions([])) as p:
    out = (p | beam.Create(docs)
           | dedup.HandleDuplicateIds(policy))
    dead = (out.dead_letters | 'AllDead' >> beam.Flatten(pipeline=p)
            | beam.Map(lambda d: (d.source, d.error_type)))
    want = docs if policy == 'keep' else [docs[0], docs[2], docs[3]]
    assert_that(out.main, equal_to(want), label='kept')
    want_dead = (
        [] if policy == 'keep' else
        [('f@2', 'duplicate_id'), ('f@5', 'duplicate_id'),
         ('f@6', 'duplicate_id')])
    assert_that(dead, equal_to(want_dead), label='dead')
  metrics = p.result.metrics().query()['counters']
  counts = {c.key.metric.name: c.committed for c in metrics}
  assert counts['duplicate_ids'] == 2 and counts['duplicate_documents'] == 3


def test_error_policy_fails_the_run():
  with pytest.raises(Exception, match='occurs 2 times'):
    with TestPipeline('FnApiRunner', options=PipelineOptions([])) as p:
      _ = (p | beam.Create([_doc('a', 'f@1'), _doc('a', 'f@2')])
           | dedup.HandleDuplicateIds('error'))
