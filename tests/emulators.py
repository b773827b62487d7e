"""Local Cloud Storage and BigQuery emulators for the tests, on 127.0.0.1.

They run from .venv-emulators (scripts/bootstrap_emulators.sh):
gcp-storage-emulator keeps objects as plain files under its data folder, and
bqemulator (DuckDB) reads gs:// load files from that same folder, so Beam's
BigQuery FILE_LOADS works end to end. Google's clients find them through
STORAGE_EMULATOR_HOST and BIGQUERY_EMULATOR_HOST; a fake authorized_user
credentials file and a dead metadata host keep them offline.

Beam's own BigQuery clients need test-only patches
(tests/worker_site/sitecustomize.py), because they have no endpoint options
and the emulator lacks three details of the real service. This process gets
them from `patch_beam_bigquery`; worker processes of another environment
get them from that folder on their PYTHONPATH (`worker_env`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, '.venv-emulators')
PROJECT = 'test-project'

# bqemulator insists on DuckDB's `spatial` extension, which it downloads:
# offline, its loader becomes a no-op (GEOGRAPHY is then unavailable).
_BQ_LAUNCHER = r'''
import sys
from bqemulator.storage import engine
engine.DuckDBEngine._load_spatial = lambda self: None
from bqemulator.cli import main
sys.argv = ['bqemulator', 'start']
main()
'''


def available() -> Optional[str]:
  """None, or why the emulators cannot run here."""
  if not os.path.exists(os.path.join(VENV, 'bin', 'python')):
    return f'{VENV} is missing: run scripts/bootstrap_emulators.sh'
  return None


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def wait_ready(check, proc: subprocess.Popen, what: str, log: str,
               timeout: float = 60) -> None:
  """Until check() is true; fails with the log's tail if proc exits."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      with open(log, encoding='utf-8', errors='replace') as f:
        tail = f.read()[-3000:]
      raise RuntimeError(f'{what} exited with {proc.returncode}:\n{tail}')
    try:
      if check():
        return
    except OSError:
      pass
    time.sleep(0.05)
  raise TimeoutError(f'{what} not ready after {timeout} s (log: {log})')


def _http_ok(url: str) -> bool:
  with urllib.request.urlopen(url, timeout=1) as r:
    return r.status == 200


def tcp_open(port: int) -> bool:
  socket.create_connection(('127.0.0.1', port), timeout=1).close()
  return True


class Emulators:
  """Starts the GCS emulator, and the BigQuery one with bigquery=True."""

  def __init__(self, bigquery: bool = False, buckets=('bucket',)):
    self.workdir = tempfile.mkdtemp(prefix='emulators-')
    self.bigquery = bigquery
    self.buckets = buckets
    self.procs: list[subprocess.Popen] = []
    self.env: dict[str, str] = {}
    self.gcs_port = free_port()
    self.rest_port = free_port() if bigquery else None
    self.grpc_port = free_port() if bigquery else None

  def _spawn(self, args, name: str, env=None) -> tuple:
    log = os.path.join(self.workdir, f'{name}.log')
    proc = subprocess.Popen(
        args, cwd=self.workdir, env=env, stdout=open(log, 'wb'),
        stderr=subprocess.STDOUT, start_new_session=True)
    self.procs.append(proc)
    return proc, log

  def start(self) -> 'Emulators':
    try:
      self._start()
    except BaseException:
      self.stop()
      raise
    return self

  def _start(self) -> None:
    data = os.path.join(self.workdir, 'gcs')
    bin_dir = os.path.join(VENV, 'bin')
    proc, log = self._spawn(
        [os.path.join(bin_dir, 'gcp-storage-emulator'), '--data-dir', data,
         'start', '--host', '127.0.0.1', '--port', str(self.gcs_port),
         '--quiet'], 'gcs')
    gcs = f'http://127.0.0.1:{self.gcs_port}'
    wait_ready(lambda: _http_ok(f'{gcs}/storage/v1/b?project={PROJECT}'), proc,
          'gcp-storage-emulator', log)
    for bucket in self.buckets:
      request = urllib.request.Request(
          f'{gcs}/storage/v1/b?project={PROJECT}', method='POST',
          data=json.dumps({'name': bucket}).encode(),
          headers={'Content-Type': 'application/json'})
      urllib.request.urlopen(request, timeout=10).close()
    creds = os.path.join(self.workdir, 'credentials.json')
    with open(creds, 'w', encoding='utf-8') as f:
      json.dump({'type': 'authorized_user',
                 'client_id': 'test.apps.googleusercontent.com',
                 'client_secret': 'test', 'refresh_token': 'test',
                 'token': 'test-token', 'expiry': '2099-01-01T00:00:00Z'}, f)
    self.env = {
        'STORAGE_EMULATOR_HOST': gcs,
        'GOOGLE_CLOUD_PROJECT': PROJECT,
        'GOOGLE_APPLICATION_CREDENTIALS': creds,
        'NO_GCE_CHECK': 'true',
        'GCE_METADATA_HOST': '127.0.0.1:9',
        'GCE_METADATA_IP': '127.0.0.1:9',
    }
    if not self.bigquery:
      return
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('PYTHON', 'VIRTUAL_ENV'))}
    env.update({
        'BQEMU_ENABLE_FORMAT_EXTENSIONS': 'false',
        'BQEMU_REST_HOST': '127.0.0.1', 'BQEMU_GRPC_HOST': '127.0.0.1',
        'BQEMU_REST_PORT': str(self.rest_port),
        'BQEMU_GRPC_PORT': str(self.grpc_port),
        'BQEMU_DEFAULT_PROJECT_ID': PROJECT,
        'BQEMU_LOG_LEVEL': 'warning',
        # gs://BUCKET/PATH is read from here: the GCS emulator's objects.
        'BQEMU_GCS_LOCAL_ROOT': os.path.join(data, '.cloudstorage'),
        'BQEMU_QUERY_CACHE_TTL_SECONDS': '0',
        'BQEMU_UPLOAD_STAGING_DIR': os.path.join(self.workdir, 'uploads'),
    })
    proc, log = self._spawn([os.path.join(bin_dir, 'python'), '-c',
                             _BQ_LAUNCHER], 'bigquery', env=env)
    rest = f'http://127.0.0.1:{self.rest_port}'
    wait_ready(lambda: _http_ok(f'{rest}/readyz'), proc, 'bqemulator', log)
    wait_ready(lambda: tcp_open(self.grpc_port), proc, 'bqemulator gRPC', log)
    self.env['BIGQUERY_EMULATOR_HOST'] = rest

  @property
  def grpc_endpoint(self) -> str:
    return f'127.0.0.1:{self.grpc_port}'

  def stop(self) -> None:
    for proc in reversed(self.procs):
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
          proc.wait(10)
        except subprocess.TimeoutExpired:
          proc.kill()
          proc.wait()
    self.procs.clear()
    shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def environment(env: dict):
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    yield
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


WORKER_SITE = os.path.join(ROOT, 'tests', 'worker_site')


def _worker_site():
  """tests/worker_site/sitecustomize.py as a module (it is not a package)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      'bq_emulator_patches', os.path.join(WORKER_SITE, 'sitecustomize.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def patch_beam_bigquery(emulators: Emulators):
  """Test-only patches of Beam's BigQuery clients in this process (see
  tests/worker_site/sitecustomize.py); returns an undo function."""
  return _worker_site().patch_beam_bigquery(
      emulators.env['BIGQUERY_EMULATOR_HOST'], emulators.grpc_endpoint)


def worker_env(emulators: Emulators) -> dict:
  """Environment for processes of other Python environments (the EXTERNAL
  worker pool and its SDK workers) that must reach the emulators: their
  endpoints, credentials and project, and the BigQuery patches through
  sitecustomize."""
  env = dict(emulators.env, PYTHONPATH=WORKER_SITE, BQ_EMULATOR_TRACE='1')
  if emulators.bigquery:
    env['BQ_EMULATOR_GRPC'] = emulators.grpc_endpoint
  return env


def upload_folder(local: str, remote: str) -> list[str]:
  """Copies a local folder to remote (gs://...) through Beam's FileSystems,
  as `gsutil cp -r` would; returns the object paths."""
  from apache_beam.io.filesystems import FileSystems
  written = []
  for folder, _, files in os.walk(local):
    for name in files:
      path = os.path.join(folder, name)
      target = remote.rstrip('/') + '/' + os.path.relpath(path, local)
      with open(path, 'rb') as src, FileSystems.create(target) as out:
        shutil.copyfileobj(src, out)
      written.append(target)
  return written


def upload_jsonl(docs, remote: str) -> None:
  """Documents as a JSON-lines object at `remote` (gs://...)."""
  upload_bytes(''.join(json.dumps(d) + '\n' for d in docs).encode(), remote)


def upload_bytes(data: bytes, remote: str) -> None:
  from apache_beam.io.filesystems import FileSystems
  with FileSystems.create(remote) as out:
    out.write(data)


@contextlib.contextmanager
def running(bigquery: bool = False, datasets=()):
  """The emulators started, their environment set in this process (and
  Beam's BigQuery clients patched, with bigquery=True), datasets created;
  yields (Emulators, a google.cloud.bigquery Client or None)."""
  why = available()
  if why:
    import pytest
    pytest.fail(why)
  emu = Emulators(bigquery=bigquery).start()
  try:
    with environment(emu.env):
      if not bigquery:
        yield emu, None
        return
      undo = patch_beam_bigquery(emu)
      try:
        from google.cloud import bigquery as bq
        client = bq.Client(project=PROJECT)
        for dataset in datasets:
          client.create_dataset(dataset)
        yield emu, client
      finally:
        undo()
  finally:
    emu.stop()
