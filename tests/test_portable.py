"""Workers in separate processes that have only what setup.py installs.

The sdist is built as Dataflow's --setup_file builds it and installed into a
virtual environment used only by the workers; Beam's local job service runs
the job, and an EXTERNAL worker pool started from that environment runs its
SDK workers. The output must equal a run on the in-process runner.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from pipeline import run
from tests import corpora
from tests import helpers
from tests import portable

pytestmark = [pytest.mark.portable, pytest.mark.first]


@pytest.fixture(scope='module')
def worker_python(tmp_path_factory) -> str:
  return portable.worker_python(str(tmp_path_factory.mktemp('dist')))


@pytest.fixture(scope='module')
def portable_services(worker_python, tmp_path_factory):
  with portable.services(worker_python,
                         str(tmp_path_factory.mktemp('portable'))) as found:
    yield found


def test_worker_environment_has_only_what_setup_py_installs(worker_python):
  out = subprocess.run(
      [worker_python, '-c', 'import importlib.util as u, json; print(json.'
       'dumps({m: u.find_spec(m) is not None for m in ("pipeline", '
       '"transforms", "tfmodels", "apache_beam", "tensorflow_text", '
       '"tfx_bsl", "pytest", "transformers", "torch")}))'],
      cwd='/', capture_output=True, text=True, check=True)
  found = json.loads(out.stdout)
  assert all(found[m] for m in ('pipeline', 'transforms', 'tfmodels',
                                'apache_beam', 'tensorflow_text', 'tfx_bsl'))
  assert not any(found[m] for m in ('pytest', 'transformers', 'torch'))


def test_portable_runner_with_external_workers_equals_direct(
    tmp_path, capsys, portable_services, minilm_export):
  job_port, pool_port, pool_log, pids = portable_services
  docs = corpora.sample_docs(40)
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'), docs)
  common = ['--input', corpus.pattern, '--model_dir', minilm_export,
            '--batch_size', '8']
  direct = str(tmp_path / 'direct' / 'emb')
  assert run.main(common + ['--output', direct]) == 0
  capsys.readouterr()
  portable_out = str(tmp_path / 'portable' / 'emb')
  assert run.main(common + ['--output', portable_out, '--progress_every',
                             '1'] +
                  portable.runner_flags(job_port, pool_port)) == 0
  captured = capsys.readouterr()
  summary = helpers.summary_of(captured.out)
  assert summary['documents_embedded'] == len(docs)
  assert summary['reconciled'] is True
  # Progress from the job service's metrics (Beam's Job API): Beam's local
  # job service has none until the job ends, so the live lines say so; the
  # last line is the finished job's counts, the summary's.
  shown = [line for line in captured.err.splitlines()
           if line.startswith('progress ')]
  assert len(shown) >= 2, captured.err[-2000:]
  assert all(helpers.PROGRESS.match(line) or line.endswith(
      'running; no counts from the runner yet') for line in shown), shown
  last = helpers.PROGRESS.match(shown[-1])
  assert last and [int(last.group(g).replace(',', '')) for g in (
      'read', 'embedded', 'rejected')] == [
          summary['documents_read'], summary['documents_embedded'],
          summary['documents_rejected']]
  want = {r['id']: r for r in corpora.read_output(direct)}
  got = {r['id']: r for r in corpora.read_output(portable_out)}
  assert sorted(got) == sorted(d['id'] for d in docs)
  helpers.assert_same_records(got, want, atol=1e-5)
  assert sorted(d['error_type'] for d in corpora.read_dead_letters(
      portable_out + '_dead_letter')) == corpus.bad_types
  # The SDK workers were processes of the worker pool.
  with open(pool_log, encoding='utf-8', errors='replace') as f:
    assert "Starting worker with command ['python'" in f.read()
  # Every port the job service and the pool listen on is on 127.0.0.1.
  listening = subprocess.run(['ss', '-ltnpH'], capture_output=True,
                             text=True, check=True).stdout.splitlines()
  ours = [line.split()[3] for line in listening
          if any(f'pid={pid},' in line for pid in pids)]
  assert len(ours) >= 2, listening
  assert all(address.startswith(('127.0.0.1:', '[::ffff:127.0.0.1]:'))
             for address in ours), ours
