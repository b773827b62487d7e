"""Beam's local job service and an EXTERNAL worker pool whose SDK workers
run in a worker-only environment: the project's sdist installed as
Dataflow's --setup_file installs it, with nothing else of this checkout.
Used by tests/test_portable.py and tests/test_rehearsal.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys

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


def worker_python(dist: str) -> str:
  """Builds the sdist and installs it, with the dependencies setup.py
  declares (versions constrained by the lock), into the worker-only
  environment. Dependencies are kept between runs by a stamp of the
  requirement files; the project itself is always reinstalled. Test
  processes running side by side (pytest-xdist) take turns (a file lock)."""
  os.makedirs(os.path.dirname(VENV), exist_ok=True)
  with open(VENV + '.lock', 'w', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    return _install(dist)


def _install(dist: str) -> str:
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
    open(stamp, 'w').close()
  subprocess.run(pip + ['--force-reinstall', '--no-deps', sdist],
                 check=True, capture_output=True)
  return python


@contextlib.contextmanager
def services(worker: str, work: str, extra_env: dict | None = None):
  """Starts the job service and the worker pool; yields (job port, pool
  port, pool log, pids). extra_env goes to the pool and its workers."""
  job_port, pool_port = emulators.free_port(), emulators.free_port()
  procs = []
  try:
    log = os.path.join(work, 'job_service.log')
    procs.append(subprocess.Popen(
        [sys.executable, '-c', _JOB_SERVICE, str(job_port)], cwd=work,
        stdout=open(log, 'wb'), stderr=subprocess.STDOUT))
    emulators.wait_ready(lambda: emulators.tcp_open(job_port), procs[-1],
                         'job service', log)
    env = dict(os.environ, PATH=os.path.dirname(worker) + os.pathsep +
               os.environ['PATH'])
    env.pop('PYTHONPATH', None)
    env.update(extra_env or {})
    log = os.path.join(work, 'worker_pool.log')
    # cwd outside the repository: `python -c` workers put their cwd on
    # sys.path, and must import the installed package, not the checkout.
    procs.append(subprocess.Popen(
        [worker, '-c', _POOL, str(pool_port)], cwd=work, env=env,
        stdout=open(log, 'wb'), stderr=subprocess.STDOUT))
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


def runner_flags(job_port: int, pool_port: int) -> list[str]:
  """In place of --runner DataflowRunner: the local job service, and SDK
  workers from the EXTERNAL pool."""
  return ['--runner', 'PortableRunner', '--job_endpoint',
          f'localhost:{job_port}', '--environment_type', 'EXTERNAL',
          '--environment_config', f'localhost:{pool_port}']
