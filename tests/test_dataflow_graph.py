"""docs/dataflow.md's Dataflow GPU commands, built into Dataflow jobs without
contacting Google: Beam's --dry_run stops before staging and submission.

Swaps, and nothing else: `--dry_run True` is added; MY_PROJECT and MY_BUCKET
become the emulators' project and bucket; Cloud Storage is the local GCS
emulator, holding the corpus and, under the documented
gs://MY_BUCKET/models/roberta-large, the small minilm-l6 export in place of
roberta-large (whose weights cannot be fetched here).
"""

from __future__ import annotations


import pytest
from apache_beam.options.pipeline_options import DebugOptions
from apache_beam.options.pipeline_options import GoogleCloudOptions
from apache_beam.options.pipeline_options import WorkerOptions

from pipeline import run
from pipeline.beam_options import EmbedOptions
from tests import corpora
from tests import emulators
from tests import readme

pytestmark = pytest.mark.services

ACCELERATOR_URN = 'beam:resources:accelerator:v1'
PLACEHOLDERS = dict(MY_PROJECT=emulators.PROJECT, MY_BUCKET='bucket')


@pytest.fixture(scope='module')
def gcs(minilm_export):
  with emulators.running() as (emu, _):
    emulators.upload_folder(minilm_export, 'gs://bucket/models/roberta-large')
    emulators.upload_jsonl(corpora.sample_docs(4),
                           'gs://bucket/corpus/part-0.jsonl')
    yield emu


def _dry_run(argv, capsys):
  status, summary, result = run.launch(argv + ['--dry_run', 'True'])
  err = capsys.readouterr().err
  assert status == 0, err
  assert summary['dry_run'] is True
  return result.job


def _hints(job) -> dict:
  """Leaf transform name -> its environment's accelerator hint (or None)."""
  components = job.proto_pipeline.components
  out = {}
  for t in components.transforms.values():
    if t.subtransforms or not t.environment_id:
      continue
    hints = components.environments[t.environment_id].resource_hints
    out[t.unique_name] = hints.get(ACCELERATOR_URN)
  return out


def test_gpu_on_every_worker(gcs, capsys):
  argv = readme.fill(readme.command('DataflowRunner', 'worker_accelerator'),
                     **PLACEHOLDERS)[3:]
  job = _dry_run(argv, capsys)
  names = {t.unique_name for t in
           job.proto_pipeline.components.transforms.values()}
  assert {'Embed/Tokenize/BeamML_RunInference',
          'Embed/Encode/BeamML_RunInference', 'Read', 'Write',
          'WriteDeadLetters'} <= names
  envs = job.proto_pipeline.components.environments.values()
  assert all(e.urn == 'beam:env:docker:v1' for e in envs)
  image = argv[argv.index('--sdk_container_image') + 1]
  assert all(image.encode() in e.payload for e in envs)
  opts = job.options
  service = opts.view_as(GoogleCloudOptions).dataflow_service_options
  assert any(o.startswith('worker_accelerator=type:nvidia-l4') for o in service)
  assert 'use_runner_v2' in opts.view_as(DebugOptions).experiments
  assert opts.view_as(WorkerOptions).machine_type == 'g2-standard-8'
  embed = opts.view_as(EmbedOptions)
  assert embed.large_model and embed.require_gpu and embed.precision == 'bf16'
  assert embed.model_dir == 'gs://bucket/models/roberta-large'
  # No step asks for an accelerator of its own: every worker has one.
  assert not any(_hints(job).values())


def test_right_fitted_gpu_only_for_encode(gcs, capsys):
  argv = readme.fill(readme.command('DataflowRunner', '--encoder_accelerator'),
                     **PLACEHOLDERS)[3:]
  job = _dry_run(argv, capsys)
  hints = _hints(job)
  with_hint = sorted(name for name, hint in hints.items() if hint)
  assert with_hint == ['Embed/Encode/BeamML_RunInference'], with_hint
  assert hints['Embed/Encode/BeamML_RunInference'] == (
      b'type:nvidia-l4;count:1;install-nvidia-driver')
  reads_writes = [n for n in hints
                  if n.startswith(('Read', 'Write', 'Embed/Tokenize'))]
  assert reads_writes and not any(hints[n] for n in reads_writes)
  service = job.options.view_as(GoogleCloudOptions).dataflow_service_options
  assert not any(o.startswith('worker_accelerator') for o in service or ())


def test_both_accelerator_forms_are_refused(gcs, capsys):
  argv = readme.fill(readme.command('DataflowRunner', 'worker_accelerator'),
                     **PLACEHOLDERS)[3:]
  assert run.main(argv + ['--encoder_accelerator',
                          'type:nvidia-l4;count:1', '--dry_run', 'True']) == 2
  assert 'not both' in capsys.readouterr().err
  right = readme.fill(readme.command('DataflowRunner', '--encoder_accelerator'),
                      **PLACEHOLDERS)[3:]
  assert run.main(right + ['--streaming', '--dry_run', 'True']) == 2
  assert 'batch jobs only' in capsys.readouterr().err


def test_gs_model_folder_errors_like_a_local_one(gcs, capsys, tmp_path):
  argv = readme.fill(readme.command('DataflowRunner', 'worker_accelerator'),
                     **PLACEHOLDERS)[3:]
  i = argv.index('--model_dir') + 1
  for folder in ('gs://bucket/models/missing', str(tmp_path / 'missing')):
    argv[i] = folder
    assert run.main(argv + ['--dry_run', 'True']) == 2
    assert (f'--model_dir {folder} does not exist' in
            capsys.readouterr().err)
