"""A real PostgreSQL 16 with pgvector for the tests, on a socket.

The server comes from the PyPI wheel pgserver (in .venv-emulators, from
scripts/bootstrap_emulators.sh), which bundles postgres and pgvector; as
root it runs the server as a user it creates. It listens only on a socket
in the data folder, and the tests reach it with a libpq URI whose `host` is
that folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile

from tests import emulators

PYTHON = os.path.join(emulators.VENV, 'bin', 'python')
# Start without a cleanup hook (the launcher exits, the server stays);
# stop (or restart) through pg_ctl as the server's user.
_START = '''
import sys, warnings
warnings.filterwarnings('ignore', message='XDG_RUNTIME_DIR')
import pgserver
server = pgserver.get_server(sys.argv[1], cleanup_mode=None)
print(server.get_postmaster_info().socket_dir)
'''
_PG_CTL = '''
import sys, warnings
warnings.filterwarnings('ignore', message='XDG_RUNTIME_DIR')
import pgserver
pgserver.pg_ctl(sys.argv[2:], pgdata=sys.argv[1], user='pgserver')
'''


class Server:

  def __init__(self):
    # Short: the socket's path must fit in about 100 bytes.
    self.root = tempfile.mkdtemp(prefix='pg', dir='/tmp')
    self.pgdata = os.path.join(self.root, 'data')
    self.socket_dir = None

  def start(self) -> 'Server':
    out = subprocess.run([PYTHON, '-c', _START, self.pgdata], check=True,
                         capture_output=True, text=True, timeout=60)
    self.socket_dir = out.stdout.strip().splitlines()[-1]
    return self

  def stop(self) -> None:
    subprocess.run([PYTHON, '-c', _PG_CTL, self.pgdata, '-w', '-m', 'fast',
                    'stop'], check=False, capture_output=True, timeout=60)

  def uri(self, table: str, database: str = 'postgres') -> str:
    return (f'postgresql://postgres@/{database}?host={self.socket_dir}'
            f'&table={table}')

  def connect(self):
    import psycopg
    return psycopg.connect(f'postgresql://postgres@/postgres?host='
                           f'{self.socket_dir}', autocommit=True)

  def remove(self) -> None:
    self.stop()
    shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running():
  why = emulators.available()
  if why or not os.path.exists(PYTHON):
    import pytest
    pytest.fail(why or f'{PYTHON} is missing')
  server = Server().start()
  try:
    yield server
  finally:
    server.remove()
