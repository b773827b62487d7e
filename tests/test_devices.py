"""--require_gpu with and without a GPU (this project's CI machines have
none; a machine with one runs the GPU branch), and --precision auto."""

from __future__ import annotations

import pytest

from pipeline import launch
from pipeline import run
from pipeline.beam_options import EmbedOptions
from transforms.spec import EmbeddingSpec
from tests import corpora
from tfmodels import devices


def _gpus():
  import tensorflow as tf
  return tf.config.list_physical_devices('GPU')


def test_require_gpu_fails_fast_with_the_reason(tmp_path, capsys,
                                                minilm_export):
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'),
                               corpora.sample_docs(3), bad=False)
  out = tmp_path / 'out' / 'emb'
  if _gpus():
    # The GPU branch: the check passes and the run embeds on the GPU.
    assert devices.configure_gpus(require_gpu=True) == [
        gpu.name for gpu in _gpus()]
    assert run.main(['--input', corpus.pattern, '--output', str(out),
                     '--model_dir', minilm_export, '--require_gpu']) == 0
    assert f' on {len(_gpus())} GPU(s), ' in capsys.readouterr().err
    return
  assert devices.configure_gpus(require_gpu=False) == []
  with pytest.raises(devices.NoGpuError, match='sees no GPU'):
    devices.configure_gpus(require_gpu=True)
  assert run.main(['--input', corpus.pattern, '--output', str(out),
                   '--model_dir', minilm_export, '--require_gpu']) == 2
  err = capsys.readouterr().err
  assert '--require_gpu' in err and 'worker_accelerator' in err
  assert not list(tmp_path.glob('out/*'))  # nothing ran


CPUINFO = ('processor\t: 0\nvendor_id\t: GenuineIntel\n'
           'flags\t\t: fpu sse2 avx2 avx512f amx_bf16 amx_tile\n\n')


def test_auto_precision_follows_the_hardware():
  assert devices.cpu_flags(CPUINFO) >= {'avx2', 'amx_bf16'}
  assert devices.cpu_flags('no flags here') == set()
  assert devices.auto_precision(gpu=False,
                                flags=devices.cpu_flags(CPUINFO)) == 'bf16'
  assert devices.auto_precision(gpu=False, flags={'avx512_bf16'}) == 'bf16'
  assert devices.auto_precision(gpu=False, flags={'avx2', 'fma'}) == 'fp32'
  assert devices.auto_precision(gpu=True, flags=set()) == 'bf16'


def _options(*flags):
  from apache_beam.options.pipeline_options import PipelineOptions
  return PipelineOptions(['--input', 'x.jsonl', '--output', 'out/emb',
                          '--precision', 'auto', *flags])


def test_precision_auto_on_dataflow_asks_for_bf16_only_with_a_gpu(
    minilm_export):
  from pipeline import presets
  export = presets.from_export_dir(minilm_export)
  dataflow = ('--runner', 'DataflowRunner')
  assert launch.resolve_precision(_options(*dataflow), export) == 'fp32'
  assert launch.resolve_precision(_options(
      *dataflow, '--encoder_accelerator',
      'type:nvidia-l4;count:1;install-nvidia-driver'), export) == 'bf16'
  assert launch.resolve_precision(_options(
      *dataflow, '--dataflow_service_options',
      'worker_accelerator=type:nvidia-l4;count:1'), export) == 'bf16'
  # An encoder from elsewhere has only its float32 call.
  other = presets.ResolvedModel('other', 'p', 'e', untrained_pooler=False)
  assert launch.resolve_precision(_options(
      *dataflow, '--encoder_accelerator', 'type:nvidia-l4;count:1'),
                               other) == 'fp32'
  # Explicit values are kept as given.
  explicit = _options(*dataflow)
  explicit.view_as(EmbedOptions).precision = 'fp16'
  assert launch.resolve_precision(explicit, export) == 'fp16'


def _auto_here() -> str:
  """What --precision auto means on this machine, read from /proc/cpuinfo
  independently of tfmodels.devices."""
  flags = set()
  with open('/proc/cpuinfo', encoding='utf-8') as f:
    for line in f:
      if line.startswith('flags'):
        flags = set(line.split(':')[1].split())
        break
  return 'bf16' if (_gpus() or flags & {'amx_bf16', 'avx512_bf16'}) else (
      'fp32')


def test_precision_auto_runs_what_this_machine_has(tmp_path, minilm_export):
  """A local run: the summary names the precision that ran."""
  expected = _auto_here()
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'),
                               corpora.sample_docs(4), bad=False)
  out = str(tmp_path / 'out' / 'emb')
  status, summary, _ = run.launch(['--input', corpus.pattern, '--output', out,
                                   '--model_dir', minilm_export,
                                   '--precision', 'auto'])
  assert status == 0 and summary['precision'] == expected
  spec = EmbeddingSpec  # the fingerprint says what ran
  from pipeline import presets
  model = presets.from_export_dir(minilm_export)
  records = corpora.read_output(out)
  assert {r['model_fingerprint'] for r in records} == {
      spec(model=model.identity, precision=expected).fingerprint()}


def test_a_plan_made_in_code_runs_with_precision_auto(tmp_path,
                                                      minilm_export):
  """A test or a notebook: a Plan from options made in code, --precision
  auto among them, then build_pipeline and run. The plan decides the
  precision; the options keep saying auto."""
  from apache_beam.options.pipeline_options import PipelineOptions
  from apache_beam.testing.test_pipeline import TestPipeline

  from pipeline.graph import build_pipeline
  expected = _auto_here()
  docs = corpora.sample_docs(5)
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'), docs, bad=False)
  out = str(tmp_path / 'out' / 'emb')
  options = PipelineOptions(['--input', corpus.pattern, '--output', out,
                             '--model_dir', minilm_export,
                             '--precision', 'auto'])
  plan = launch.plan_from(options)
  assert plan.precision == expected and plan.spec.precision == expected
  assert plan.files.count == 1 and plan.local
  with TestPipeline(runner='FnApiRunner', options=options) as p:
    build_pipeline(p, plan)
  assert options.view_as(EmbedOptions).precision == 'auto'
  records = corpora.read_output(out)
  assert sorted(r['id'] for r in records) == sorted(d['id'] for d in docs)
  assert {r['model'] for r in records} == {plan.model.name}
  assert {r['model_fingerprint'] for r in records} == {
      EmbeddingSpec(model=plan.model.identity,
                    precision=expected).fingerprint()}
  assert not corpora.read_dead_letters(out + '_dead_letter')
