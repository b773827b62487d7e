"""Production rehearsal: docs/dataflow.md's Dataflow GPU job, then its nightly
Flex Template launch, end to end on this machine.

The first run is docs/dataflow.md's `python -m pipeline.run --runner
DataflowRunner ...` command (the GPU-on-every-worker form) as written, the
nightly run is `flex/main.py` launched with its launch.json
parameters in the form the Flex Template launcher passes them
(`--name=value`, environment fields as Beam flags). These are the swaps,
and nothing else changes:

1. Runner: `--runner PortableRunner` with Beam's local job service and an
   EXTERNAL worker pool (--job_endpoint, --environment_type EXTERNAL,
   --environment_config) in place of `--runner DataflowRunner`. The SDK
   workers run in a worker-only environment holding the project's sdist as
   `--setup_file` installs it (tests/portable.py), not this checkout.
2. No GPU: `--require_gpu` is dropped (it rightly stops the job on a machine
   without one). The worker_accelerator service option, container image,
   machine type and runner-v2 experiment stay: the portable runner ignores
   them.
3. Google's endpoints: Cloud Storage and BigQuery are the local emulators;
   MY_PROJECT and MY_BUCKET become their project and bucket. The worker
   processes reach them through tests/worker_site (Beam's BigQuery clients
   have no endpoint options).
4. The model: gs://MY_BUCKET/models/roberta-large holds the small
   minilm-l6 export, uploaded there as docs/dataflow.md says to do with an
   export; roberta-large's weights cannot be fetched here.

The run reads its corpus from gs://, loads the model from gs:// (each
worker process copies it locally once), writes embeddings and dead letters
to BigQuery, with --large_model --precision bf16. The nightly run, with 10%
of the documents changed and 3 removed and --previous equal to the output
table, must send exactly the changed documents through the encoder, and
leave the table equal to a full run's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from apache_beam.io.filesystems import FileSystems

from flex import launch_local
from pipeline import run
from tests import corpora
from tests import emulators
from tests import helpers
from tests import portable
from tests import readme

pytestmark = pytest.mark.portable

PLACEHOLDERS = dict(MY_PROJECT=emulators.PROJECT, MY_BUCKET='bucket')
TABLE = f'{emulators.PROJECT}.embeddings.docs'

@pytest.fixture(scope='module')
def cloud(tmp_path_factory, minilm_export):
  worker = portable.worker_python(str(tmp_path_factory.mktemp('dist')))
  with emulators.running(bigquery=True, datasets=['embeddings']) as (
      emu, client):
    emulators.upload_folder(minilm_export, 'gs://bucket/models/roberta-large')
    with portable.services(worker, str(tmp_path_factory.mktemp('services')),
                           emulators.worker_env(emu)) as (job, pool, log, _):
      yield client, portable.runner_flags(job, pool), log


def _upload_corpus(tmp_path, docs, name) -> list[str]:
  """Replaces gs://bucket/corpus/ with docs in two JSONL files, bad records
  mixed into both; returns the expected dead-letter types."""
  old = FileSystems.match(['gs://bucket/corpus/*'])[0].metadata_list
  if old:
    FileSystems.delete([m.path for m in old])
  bad = []
  half = len(docs) // 2
  for i, part in enumerate((docs[:half], docs[half:])):
    local = corpora.write_jsonl(str(tmp_path / f'{name}-{i}.jsonl'), part)
    bad += local.bad_types
    with open(local.pattern, 'rb') as f:
      emulators.upload_bytes(f.read(), f'gs://bucket/corpus/part-{i}.jsonl')
  return sorted(bad)


def _launch(argv, env) -> dict:
  proc = subprocess.run(argv, cwd=corpora.ROOT, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return helpers.summary_of(proc.stdout)


def _rows(client, table: str) -> dict:
  rows = [dict(r) for r in client.query(f'SELECT * FROM `{table}`').result()]
  assert len({r['id'] for r in rows}) == len(rows)
  return {r['id']: r for r in rows}


# The batch-mix bound at --precision bf16: the same text in batches of
# another shape rounds differently. On a CPU with AMX (bf16 matrix units),
# where bf16 runs natively, elements differed by up to 2.4e-3 between a
# nightly and a full run; the bound is the one bf16 keeps against fp32
# (tests/test_precision.py), as a cosine.
BF16_MIN_COSINE = 0.999


def _assert_same_table(got: dict, want: dict) -> None:
  """Equal rows, apart from the run's timestamp; vectors within the bf16
  batch-mix bound (the nightly run embeds its changed documents in other
  batches than a full run)."""
  assert sorted(got) == sorted(want)
  for doc_id, row in got.items():
    other = want[doc_id]
    assert {k: v for k, v in row.items() if k not in ('embedding',
                                                      'embedded_at')} == {
        k: v for k, v in other.items() if k not in ('embedding',
                                                    'embedded_at')}
    a = np.asarray(row['embedding'])
    b = np.asarray(other['embedding'])
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cosine >= BF16_MIN_COSINE, (doc_id, cosine)


def test_dataflow_job_then_nightly_template(cloud, tmp_path):
  client, runner_flags, pool_log = cloud
  env = dict(os.environ)
  env.pop('PYTHONPATH', None)
  docs = corpora.sample_docs(60)
  bad = _upload_corpus(tmp_path, docs, 'day1')

  # docs/dataflow.md's Dataflow GPU command, with the swaps above.
  job = readme.fill(readme.command('DataflowRunner', 'worker_accelerator'),
                    **PLACEHOLDERS)
  assert job[:3] == ['python', '-m', 'pipeline.run']
  argv = readme.drop_flags(job[3:], '--runner', '--require_gpu')
  assert len(argv) == len(job) - 3 - 3
  first = _launch([sys.executable, '-m', 'pipeline.run', *argv,
                   *runner_flags], env)
  print('rehearsal run 1:', json.dumps(first))
  assert (first['documents_read'], first['documents_embedded'],
          first['documents_rejected']) == (len(docs) + len(bad), len(docs),
                                           len(bad))
  assert first['reconciled'] is True
  assert first['output'] == f'bq://{TABLE}'
  day1 = _rows(client, TABLE)
  assert sorted(day1) == sorted(d['id'] for d in docs)
  assert {len(r['embedding']) for r in day1.values()} == {384}
  dead = _rows_list(client, f'{TABLE}_dead_letter')
  assert sorted(r['error_type'] for r in dead) == bad
  # The BigQuery loads ran in the SDK worker processes, not here.
  with open(pool_log, encoding='utf-8', errors='replace') as f:
    log = f.read()
  assert re.search(r'\[sitecustomize\] pid \d+: load job \S+ -> docs\b', log)

  # Night 2: 10% changed, 3 removed.
  changed = {d['id'] for d in docs[::10]}
  gone = {d['id'] for d in docs[1:4]}
  day2 = [dict(d, text=d['text'] + ' (revised)') if d['id'] in changed
          else d for d in docs if d['id'] not in gone]
  bad2 = _upload_corpus(tmp_path, day2, 'day2')
  launch = json.loads(readme.fill(readme.read().heredocs['launch.json'],
                                  **PLACEHOLDERS))['launchParameter']
  params = dict(launch['parameters'])
  assert params['previous'] == params['output'] == f'bq://{TABLE}'
  del params['require_gpu']  # swap 2: no GPU
  # The launcher's argv, as flex/launch_local.py makes it (each parameter
  # checked against flex/metadata.json); the runner flags come after its
  # --runner=DataflowRunner, and replace it (swap 1).
  nightly = _launch([sys.executable, 'flex/main.py',
                     *launch_local.launch_argv(dict(launch,
                                                    parameters=params)),
                     *runner_flags], env)
  print('rehearsal run 2 (nightly):', json.dumps(nightly))
  assert nightly['documents_embedded'] == len(changed)
  assert nightly['documents_reused'] == len(day2) - len(changed)
  assert nightly['documents_removed'] == len(gone)
  assert nightly['documents_rejected'] == len(bad2)
  assert nightly['reconciled'] is True
  after = _rows(client, TABLE)

  # A full run over night 2's corpus, in this process, to another table.
  full_argv = readme.drop_flags(argv, '--output') + [
      '--output', f'bq://{TABLE}_full']
  assert run.main(full_argv) == 0
  _assert_same_table(after, _rows(client, f'{TABLE}_full'))
  # Unchanged documents kept night 1's vectors exactly.
  for doc_id in set(after) - changed:
    assert after[doc_id]['embedding'] == day1[doc_id]['embedding']


def _rows_list(client, table: str) -> list[dict]:
  return [dict(r) for r in client.query(f'SELECT * FROM `{table}`').result()]
