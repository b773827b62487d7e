"""Workers in separate processes that have only what setup.py installs.

The sdist is built as Dataflow's --setup_file builds it and installed into a
virtual environment used only by the workers; Beam's local job service runs
the job, and an EXTERNAL worker pool started from that environment runs its
SDK workers. The output must equal a run on the in-process runner.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from pipeline import run
from tests import corpora
from tests import emulators

ROOT = corpora.ROOT
VENV = os.path.join(ROOT, '.cache', 'worker-venv')

# Beam's job service and worker pool bind their gRPC servers (control, data,
# state, logging) to every interface; these launchers bind them to
# 127.0.0.1. Test code only.
_LOCAL_ONLY = r'''
from grpc import _server
_add = _server._Server.add_insecure_port
_server._Server.add_insecure_port = (
    lambda self, address: _add(self, address.replace('[::]', '127.0.0.1')
                               .replace('localhost', '127.0.0.1')))
'''
_JOB_SERVICE = _LOCAL_ONLY + r'''
import sys
from apache_beam.runners.portability import local_job_service_main
local_job_service_main.run(['--port', sys.argv[1]])
'''
# The pool's workers are `python` from PATH: the worker environment's.
_POOL = _LOCAL_ONLY + r'''
import sys
import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import (
    BeamFnExternalWorkerPoolServicer)
from apache_beam.utils import thread_pool_executor
server = grpc.server(thread_pool_executor.shared_unbounded_instance())
server.add_insecure_port('127.0.0.1:' + sys.argv[1])
beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
    BeamFnExternalWorkerPoolServicer(use_process=True), server)
server.start()
server.wait_for_termination()
'''


@pytest.fixture(scope='module')
def worker_python(tmp_path_factory) -> str:
  """Builds the sdist and installs it, with the dependencies setup.py
  declares (versions constrained by the lock), into the worker-only
  environment. Dependencies are kept between runs by a stamp of the
  requirement files; the project itself is always reinstalled."""
  dist = str(tmp_path_factory.mktemp('dist'))
  subprocess.run([sys.executable, 'setup.py', '-q', 'sdist', '--dist-dir',
                  dist], cwd=ROOT, check=True, capture_output=True)
  [sdist] = [os.path.join(dist, f) for f in os.listdir(dist)]
  digest = hashlib.sha256()
  for name in ('requirements.in', 'requirements.txt'):
    with open(os.path.join(ROOT, name), 'rb') as f:
      digest.update(f.read())
  stamp = os.path.join(VENV, '.deps-' + digest.hexdigest()[:16])
  python = os.path.join(VENV, 'bin', 'python')
  pip = [python, '-m', 'pip', 'install', '-q', '--disable-pip-version-check']
  if not os.path.exists(stamp):
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run(['python3.11', '-m', 'venv', VENV], check=True)
    subprocess.run(pip + ['-c', os.path.join(ROOT, 'requirements.txt'),
                          sdist], check=True, capture_output=True)
    open(stamp, 'w').close()  # pylint: disable=consider-using-with
  subprocess.run(pip + ['--force-reinstall', '--no-deps', sdist],
                 check=True, capture_output=True)
  return python


@pytest.fixture(scope='module')
def portable_services(worker_python, tmp_path_factory):
  work = str(tmp_path_factory.mktemp('portable'))
  job_port, pool_port = emulators.free_port(), emulators.free_port()
  procs = []
  try:
    log = os.path.join(work, 'job_service.log')
    procs.append(subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, '-c', _JOB_SERVICE, str(job_port)], cwd=work,
        stdout=open(log, 'wb'), stderr=subprocess.STDOUT))  # pylint: disable=consider-using-with
    emulators.wait_ready(lambda: emulators.tcp_open(job_port), procs[-1],
                         'job service', log)
    env = dict(os.environ, PATH=os.path.dirname(worker_python) + os.pathsep +
               os.environ['PATH'])
    env.pop('PYTHONPATH', None)
    log = os.path.join(work, 'worker_pool.log')
    # cwd outside the repository: `python -c` workers put their cwd on
    # sys.path, and must import the installed package, not the checkout.
    procs.append(subprocess.Popen(  # pylint: disable=consider-using-with
        [worker_python, '-c', _POOL, str(pool_port)], cwd=work, env=env,
        stdout=open(log, 'wb'), stderr=subprocess.STDOUT))  # pylint: disable=consider-using-with
    emulators.wait_ready(lambda: emulators.tcp_open(pool_port), procs[-1],
                         'worker pool', log)
    yield job_port, pool_port, log, [p.pid for p in procs]
  finally:
    for proc in procs:
      proc.terminate()
      try:
        proc.wait(10)
      except subprocess.TimeoutExpired:
        proc.kill()


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
  portable = str(tmp_path / 'portable' / 'emb')
  assert run.main(common + [
      '--output', portable, '--runner', 'PortableRunner',
      '--job_endpoint', f'localhost:{job_port}',
      '--environment_type', 'EXTERNAL',
      '--environment_config', f'localhost:{pool_port}']) == 0
  summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert summary['documents_embedded'] == len(docs)
  assert summary['reconciled'] is True
  want = {r['id']: r for r in corpora.read_output(direct)}
  got = {r['id']: r for r in corpora.read_output(portable)}
  assert sorted(got) == sorted(d['id'] for d in docs)
  corpora.assert_same_records(got, want, atol=1e-5)
  assert sorted(d['error_type'] for d in corpora.read_dead_letters(
      portable + '-dead_letter')) == corpus.bad_types
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
