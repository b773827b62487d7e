"""scripts/bootstrap.sh installs the project into .venv, editable: the
Python API works from any folder, with no PYTHONPATH, and imports this
checkout's files."""

from __future__ import annotations

import os
import subprocess

from tests import corpora
from tests import helpers

ROOT = corpora.ROOT
PYTHON = os.path.join(ROOT, '.venv', 'bin', 'python')

_PROBE = '''
import json
import importlib.metadata
import pipeline, tfmodels, transforms.backends
from pipeline import read
dist = importlib.metadata.distribution('beam-text-embed')
print(json.dumps({
    'files': [m.__file__ for m in (pipeline, tfmodels, transforms.backends,
                                   read)],
    'direct_url': json.loads(dist.read_text('direct_url.json'))}))
'''


def test_the_package_imports_from_any_folder(tmp_path):
  env = dict(os.environ)
  env.pop('PYTHONPATH', None)
  proc = subprocess.run([PYTHON, '-c', _PROBE], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  got = helpers.summary_of(proc.stdout)
  assert got['files'] == [
      os.path.join(ROOT, 'pipeline', '__init__.py'),
      os.path.join(ROOT, 'tfmodels', '__init__.py'),
      os.path.join(ROOT, 'transforms', 'backends', '__init__.py'),
      os.path.join(ROOT, 'pipeline', 'read.py')]
  assert got['direct_url'] == {'dir_info': {'editable': True},
                               'url': 'file://' + ROOT}


def test_bootstrap_again_does_nothing_and_asks_no_index():
  """A second bootstrap (the environment ready) installs nothing: no
  output, and no package index reached (an unreachable one is given)."""
  env = dict(os.environ, PIP_INDEX_URL='http://127.0.0.1:9/simple',
             PIP_NO_INDEX='1')
  for flags in ([], ['--test']):
    proc = subprocess.run([os.path.join(ROOT, 'scripts', 'bootstrap.sh'),
                           *flags], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, '', '')
