"""The model is loaded once per worker process, not per bundle or batch;
worker processes give the same output as one process."""

from __future__ import annotations

import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from pipeline.graph import build_pipeline
from pipeline.launch import plan_from
from tests import corpora
from tests import helpers
from transforms import metrics as job_metrics


def _loads_and_batches(tmp_path, minilm_model, *extra):
  docs = corpora.sample_docs(160)
  for i in range(8):
    corpora.write_jsonl(str(tmp_path / f'part-{i}.jsonl'),
                        docs[i * 20:(i + 1) * 20], bad=False)
  options = PipelineOptions([
      '--input', str(tmp_path / 'part-*.jsonl'),
      '--output', str(tmp_path / 'out' / 'emb'), '--batch_size', '4',
      *extra])
  p = TestPipeline(runner='FnApiRunner', options=options, blocking=False)
  build_pipeline(p, plan_from(options, model=minilm_model))
  result = p.run()
  result.wait_until_finish()
  metrics = result.metrics().query(MetricsFilter())
  # Both RunInference steps (Tokenize, Encode) report their loads; they
  # share one model per process, so each reports the same count.
  loads = {}
  for d in metrics['distributions']:
    if d.key.metric.name.endswith('load_model_latency_milli_secs'):
      step = 'Tokenize' if 'Tokenize' in d.key.step else 'Encode'
      loads[step] = loads.get(step, 0) + d.committed.count
  assert set(loads) == {'Tokenize', 'Encode'}, loads
  loads = max(loads.values())
  found = job_metrics.totals(result.metrics(), (
      job_metrics.BATCHES, job_metrics.DOCUMENTS_EMBEDDED))
  batches = found[job_metrics.BATCHES]
  embedded = found[job_metrics.DOCUMENTS_EMBEDDED]
  records = {r['id']: r for r in corpora.read_output(
      str(tmp_path / 'out' / 'emb'))}
  return loads, batches, embedded, records


@pytest.fixture(scope='module')
def one_process(tmp_path_factory, minilm_model):
  return _loads_and_batches(tmp_path_factory.mktemp('one'), minilm_model)


def test_one_load_in_one_process_across_many_batches(one_process):
  loads, batches, embedded, records = one_process
  assert embedded == len(records) == 160
  # At most 4 encoder rows per call (packed rows hold several documents):
  # many calls, one load.
  assert batches >= 10
  assert loads == 1


def test_worker_processes_load_once_each_and_agree(tmp_path, minilm_model,
                                                   one_process):
  loads, batches, embedded, records = _loads_and_batches(
      tmp_path, minilm_model, '--direct_num_workers', '2',
      '--direct_running_mode', 'multi_processing')
  assert embedded == 160
  assert batches >= 10
  assert 1 <= loads <= 2
  # The same records as one process; embeddings within the batch-mix
  # tolerance (other processes make other batches).
  helpers.assert_same_records(records, one_process[3], atol=1e-5)
