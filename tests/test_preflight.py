"""Preflight (pipeline/preflight.py): docs/dataflow.md's GPU command, and
runs that name gs:// or bq://, checked in seconds before the job is built.

Swaps, named: Cloud Storage and BigQuery are the local emulators (so
MY_PROJECT and MY_BUCKET become theirs); Dataflow's job service is
tests/dataflow_standin.py on 127.0.0.1 (Beam's --dataflow_endpoint), which
answers a job listing for its one project and 403 for others; the Dataflow
commands run with `--preflight_only` (the documented check) or Beam's
`--dry_run True`, so nothing is submitted. The emulators grant
every permission, so the denied-permission answers of the real services
cannot be produced here; missing buckets, datasets and credentials can.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from pipeline import run
from tests import corpora
from tests import dataflow_standin
from tests import emulators
from tests import helpers
from tests import readme

pytestmark = pytest.mark.services

PLACEHOLDERS = dict(MY_PROJECT=emulators.PROJECT, MY_BUCKET='bucket')


@pytest.fixture(scope='module')
def cloud(minilm_export):
  with emulators.running(bigquery=True, datasets=('embeddings',)) as (
      emu, client):
    emulators.upload_folder(minilm_export, 'gs://bucket/models/roberta-large')
    emulators.upload_jsonl(corpora.sample_docs(4),
                           'gs://bucket/corpus/part-0.jsonl')
    yield emu, client


@pytest.fixture(scope='module')
def dataflow():
  with dataflow_standin.Standin(project=emulators.PROJECT) as standin:
    yield standin


def gpu_command() -> list[str]:
  """docs/dataflow.md's "A GPU on every worker", for this machine."""
  return readme.fill(readme.command('DataflowRunner', 'worker_accelerator'),
                     **PLACEHOLDERS)[3:]


def preflight_only(standin) -> list[str]:
  """The GPU command as docs/dataflow.md says to run it first."""
  return gpu_command() + ['--dataflow_endpoint', standin.endpoint,
                          '--preflight_only']


def _with(argv: list[str], flag: str, value: str) -> list[str]:
  out = list(argv)
  out[out.index(flag) + 1] = value
  return out


def _error(argv, capsys) -> str:
  status = run.main(argv)
  err = capsys.readouterr().err
  assert status == 2, err
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1, err
  return lines[0]


def test_no_credentials_is_one_line_in_seconds(cloud, tmp_path):
  """The documented command as a new user runs it: no credentials at all
  (no key file, no gcloud configuration, the metadata server a closed
  port on 127.0.0.1). The quiet console says why at once instead of
  retrying silently."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('GOOGLE_APPLICATION_CREDENTIALS', 'NO_GCE_CHECK',
                      'PYTHONPATH')}
  env.update(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / 'gcloud'),
             GCE_METADATA_HOST='127.0.0.1:9', GCE_METADATA_IP='127.0.0.1:9',
             TF_CPP_MIN_LOG_LEVEL='2')
  start = time.monotonic()
  proc = subprocess.run(
      [sys.executable, '-m', 'pipeline.run', *gpu_command(),
       '--dry_run', 'True'], cwd=corpora.ROOT, env=env, capture_output=True,
      text=True, timeout=300)
  seconds = time.monotonic() - start
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.splitlines() == [
      'pipeline.run: error: preflight credentials: no Google credentials '
      'found; run `gcloud auth application-default login`, or set '
      'GOOGLE_APPLICATION_CREDENTIALS to a service account key file '
      '(--skip_preflight credentials skips this check)'], proc.stderr
  print(f'no credentials: exit 2 after {seconds:.1f} s')


def test_missing_key_file_is_named(cloud, capsys, monkeypatch, tmp_path):
  monkeypatch.setenv('GOOGLE_APPLICATION_CREDENTIALS',
                     str(tmp_path / 'key.json'))
  line = _error(gpu_command() + ['--dry_run', 'True'], capsys)
  assert line.startswith('pipeline.run: error: preflight credentials: no '
                         'Google credentials found (')
  assert str(tmp_path / 'key.json') in line


def test_temp_location(cloud, dataflow, capsys):
  argv = preflight_only(dataflow)
  line = _error(readme.drop_flags(argv, '--temp_location'), capsys)
  assert line == (
      'pipeline.run: error: preflight temp_location: DataflowRunner needs '
      '--temp_location gs://BUCKET/tmp (a bucket in the job\'s region, which '
      'the job\'s service account may write) (--skip_preflight '
      'temp_location skips this check)')
  line = _error(_with(argv, '--temp_location', 'gs://no-such-bucket/tmp'),
                capsys)
  assert line.startswith(
      'pipeline.run: error: preflight temp_location: cannot write '
      '--temp_location gs://no-such-bucket/tmp: bucket gs://no-such-bucket '
      'does not exist; ')
  assert 'gcloud storage buckets create gs://no-such-bucket' in line
  line = _error(argv + ['--staging_location', '/tmp/staging'], capsys)
  assert ('--staging_location /tmp/staging is not on Cloud Storage' in
          line)
  # Writable: the probe is removed.
  assert run.main(argv) == 0, capsys.readouterr().err
  from apache_beam.io.filesystems import FileSystems
  left = FileSystems.match(['gs://bucket/tmp/.text-embed-preflight-*'])
  assert not left[0].metadata_list
  # A dry run writes no probe: where the location is, is all it checks.
  dry = _with(gpu_command(), '--temp_location', 'gs://no-such-bucket/tmp')
  assert run.main(dry + ['--dry_run', 'True']) == 0, (
      capsys.readouterr().err)


def test_skipping_a_check(cloud, dataflow, capsys):
  """--skip_preflight temp_location: the missing bucket is no longer
  asked about."""
  argv = _with(preflight_only(dataflow), '--temp_location',
               'gs://no-such-bucket/tmp')
  status = run.main(argv + ['--skip_preflight', 'temp_location'])
  out, err = capsys.readouterr()
  assert status == 0, err
  assert 'temp_location' not in helpers.summary_of(out)['checks']
  status = run.main(argv + ['--skip_preflight', 'nosuch'])
  err = capsys.readouterr().err
  assert status == 2
  assert ('unknown check nosuch; the checks are credentials, project, '
          'temp_location, bigquery, image, or all') in err


def test_image_tag_must_match_beam(cloud, capsys):
  from apache_beam import version
  argv = gpu_command() + ['--dry_run', 'True']
  image = argv[argv.index('--sdk_container_image') + 1]
  assert image.endswith(f':{version.__version__}')
  for other, shown in ((image.rsplit(':', 1)[0] + ':2.60.0', '2.60.0'),
                       (image.rsplit(':', 1)[0], 'latest (no tag)')):
    line = _error(_with(argv, '--sdk_container_image', other), capsys)
    assert line == (
        f'pipeline.run: error: preflight image: --sdk_container_image '
        f'{other} is tagged {shown}, but this launcher runs Beam '
        f'{version.__version__}; build the image for it (docker build '
        f'--build-arg BEAM_VERSION={version.__version__} ...) and tag it '
        f':{version.__version__} (--skip_preflight image skips this check)')
  assert run.main(_with(argv, '--sdk_container_image',
                        image.rsplit(':', 1)[0] + ':2.60.0') +
                  ['--skip_preflight', 'image']) == 0


def test_bigquery_dataset(cloud, dataflow, capsys):
  argv = preflight_only(dataflow)
  line = _error(_with(argv, '--output', f'bq://{emulators.PROJECT}.nodata.docs'),
                capsys)
  assert line == (
      f'pipeline.run: error: preflight bigquery: bq://{emulators.PROJECT}'
      f'.nodata.docs: dataset {emulators.PROJECT}.nodata does not exist; '
      'create it in the job\'s region: bq --location=REGION mk --dataset '
      f'{emulators.PROJECT}:nodata (--skip_preflight bigquery skips this '
      'check)')


def test_preflight_only_writes_nothing(cloud, capsys, tmp_path):
  """--preflight_only on a local run that reads gs:// and writes bq://:
  every check passes, each is printed, and nothing is left: no table, no
  probe table, no probe object, no lease."""
  _, client = cloud
  argv = ['--model_dir', 'gs://bucket/models/roberta-large',
          '--input', 'gs://bucket/corpus/*.jsonl',
          '--output', f'bq://{emulators.PROJECT}.embeddings.preflight',
          '--temp_location', 'gs://bucket/tmp', '--preflight_only']
  status = run.main(argv)
  out, err = capsys.readouterr()
  assert status == 0, err
  summary = helpers.summary_of(out)
  assert summary['preflight_only'] is True
  assert set(summary['checks']) == {'credentials', 'temp_location',
                                    'bigquery'}
  assert summary['checks']['bigquery'] == (
      f'bq://{emulators.PROJECT}.embeddings.preflight can be created, '
      f'bq://{emulators.PROJECT}.embeddings.preflight_dead_letter can be '
      'created')
  lines = err.splitlines()
  assert lines[0].startswith('embedding gs://bucket/corpus/*.jsonl (1 file')
  # The cost line: the 4 documents, all read (pipeline/estimate.py).
  assert lines[1].startswith('plan: 997 bytes in 1 file, 4 documents and ')
  assert [line.split(':')[0] for line in lines[2:5]] == [
      'preflight credentials', 'preflight temp_location',
      'preflight bigquery']
  assert lines[-1] == ('preflight passed: 3 check(s); nothing was built or '
                       'written')
  assert [t.table_id for t in client.list_tables('embeddings')] == []
  # Run again: nothing held (no lease was taken), the same answer.
  assert run.main(argv) == 0, capsys.readouterr().err


def test_documented_first_run_with_preflight_only(cloud, dataflow, capsys):
  """docs/dataflow.md: the first run's command with --preflight_only
  added, as the page says to run it first. Every check runs and passes;
  no job is created, no table, no probe is left."""
  _, client = cloud
  argv = preflight_only(dataflow)
  before = len(dataflow.requests)
  status = run.main(argv)
  out, err = capsys.readouterr()
  assert status == 0, err
  summary = helpers.summary_of(out)
  assert list(summary['checks']) == ['credentials', 'project',
                                     'temp_location', 'bigquery', 'image']
  assert summary['checks']['project'] == (
      f'{emulators.PROJECT} in us-central1')
  assert [line.split(':')[0] for line in err.splitlines()
          if line.startswith('preflight ')] == [
              'preflight credentials', 'preflight project',
              'preflight temp_location', 'preflight bigquery',
              'preflight image', 'preflight passed']
  assert dataflow.created() == []
  assert [(r.method, r.path) for r in dataflow.requests[before:]] == [
      ('GET', f'/v1b3/projects/{emulators.PROJECT}/locations/us-central1/'
       'jobs')]
  assert [t.table_id for t in client.list_tables('embeddings')] == []


def test_credentials_of_another_project(cloud, dataflow, capsys):
  """Dataflow refuses the project (403): one line naming both projects
  and the fix, before anything is built."""
  argv = _with(preflight_only(dataflow), '--project', 'other-project')
  line = _error(argv, capsys)
  assert line.startswith(
      'pipeline.run: error: preflight project: the credentials (user '
      'credentials) may not use Dataflow in project other-project: ')
  assert 'Permission denied on project other-project' in line
  assert ("the credentials' own project is test-project. Grant them "
          'roles/dataflow.developer there') in line
  assert line.endswith('(--skip_preflight project skips this check)')
  assert run.main(argv + ['--skip_preflight', 'project']) == 0, (
      capsys.readouterr().err)


def test_launch_json_checked_here(cloud, dataflow, tmp_path, minilm_export):
  """docs/dataflow.md's check of launch.json before the first night: the
  template's entry point run here as the Flex launcher runs it, with
  --preflight_only=true, in a folder holding the documented launch.json.
  Swap: --dataflow_endpoint (the stand-in) is added."""
  env = readme.scratch_folder(tmp_path, minilm_export)
  os.symlink(os.path.join(corpora.ROOT, 'flex'), tmp_path / 'flex')
  launch = readme.fill(readme.read().heredocs['launch.json'], **PLACEHOLDERS)
  (tmp_path / 'launch.json').write_text(launch, encoding='utf-8')
  argv = readme.fill(readme.command('flex/launch_local.py', 'launch.json'),
                     **PLACEHOLDERS)
  proc = readme.run(argv + [f'--dataflow_endpoint={dataflow.endpoint}'],
                    tmp_path, env)
  summary = helpers.command_summary(proc)
  assert summary['preflight_only'] is True
  assert list(summary['checks']) == ['credentials', 'project',
                                     'temp_location', 'bigquery', 'image']
  lines = proc.stderr.splitlines()
  table = f'bq://{emulators.PROJECT}.embeddings.docs'
  assert f'--previous_if_exists: none yet at {table}: full run' in lines
  assert lines[-1] == ('preflight passed: 5 check(s); nothing was built or '
                       'written')
  # A parameter the template does not take: one line, as documented.
  bad = json.loads(launch)
  bad['launchParameter']['parameters']['max_seq_len'] = '512'
  (tmp_path / 'launch.json').write_text(json.dumps(bad), encoding='utf-8')
  proc = readme.run(argv, tmp_path, env)
  assert proc.returncode == 2
  assert proc.stderr.strip() == (
      'flex/launch_local.py: error: launch.json: parameter max_seq_len is '
      'not one of the template\'s (flex/metadata.json)')


def test_gs_model_folder_without_export_json(cloud, capsys, minilm_export):
  """A model folder copied in part (its encoder only): named as such, not
  as missing."""
  emulators.upload_folder(os.path.join(minilm_export, 'encoder'),
                          'gs://bucket/models/partial/encoder')
  argv = _with(gpu_command(), '--model_dir', 'gs://bucket/models/partial')
  line = _error(argv + ['--dry_run', 'True'], capsys)
  assert line == (
      'pipeline.run: error: gs://bucket/models/partial is not an exported '
      'model folder (no export.json); make one with python -m '
      'pipeline.export_model, and copy the whole folder')


def test_a_check_skipped_and_stuck_is_not_silent(tmp_path):
  """With the credentials check skipped and no credentials, Beam's own
  lookup (reading the gs:// model) retries for minutes: the quiet console
  says what the launch is doing once it has waited (the interval lowered
  to a second for the test), instead of nothing. No emulator: Beam's real
  Cloud Storage client is what waits. Nothing leaves 127.0.0.1: the
  command is stopped while Beam still retries its credential lookup,
  which reads local files and the metadata host (a closed port here)."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('GOOGLE_APPLICATION_CREDENTIALS', 'NO_GCE_CHECK',
                      'PYTHONPATH', 'STORAGE_EMULATOR_HOST',
                      'BIGQUERY_EMULATOR_HOST')}
  env.update(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path / 'gcloud'),
             GCE_METADATA_HOST='127.0.0.1:9', GCE_METADATA_IP='127.0.0.1:9',
             TF_CPP_MIN_LOG_LEVEL='2', BEAM_TEXT_EMBED_STALL_SECONDS='1')
  proc = subprocess.Popen(
      [sys.executable, '-m', 'pipeline.run', *gpu_command(), '--dry_run',
       'True', '--skip_preflight', 'credentials'], cwd=corpora.ROOT, env=env,
      stderr=subprocess.PIPE, text=True)
  try:
    first = proc.stderr.readline()
  finally:
    proc.terminate()
    proc.wait(timeout=60)
  assert first.startswith('checking the launch: the model, the inputs and '
                          'the outputs ('), first
