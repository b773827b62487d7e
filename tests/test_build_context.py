"""The build contexts: what `docker build .` sends from .dockerignore, and
what gcloud uploads from .gcloudignore.

Why: without them every image build sends the whole checkout, with its
several-GB .venv*, the model caches in .cache, run outputs in out/ and the
git history; and an allowlist that leaves out a file the build or the
launch needs fails only on Google's side, after the upload.

Docker's side is computed by the Docker SDK for Python (docker-py), not by
this project: the .dockerignore lines as its APIClient.build reads them,
its matcher (docker.utils.build.exclude_paths) and its tar of the context
(docker.utils.build.tar). gcloud is not installable here, so .gcloudignore
(gitignore syntax) is matched by pathspec's GitIgnoreSpec instead of
gcloud's own matcher; that is the swap. The walk that feeds it skips an
ignored folder whole, as gcloud's does (nothing under it can be let back
in).

The tests run on the real checkout, which in CI is a fresh clone with .venv
and .cache beside the sources (out/ may be missing): they assert what is
let in, so local leftovers can only make them stricter. The unit tests read
files only; the two package builds run pip and setup.py in a temporary
folder holding only what the context lets in.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pathspec
import pytest
from docker.utils import build as docker_build

from tests import corpora

ROOT = corpora.ROOT
# Measured on 2026-12-07: the Docker context's tar is 0.84 MiB (101
# entries) with .dockerignore and 8,446 MiB without it; the files gcloud
# uploads add up to 0.66 MiB. The bound leaves the sources room to grow
# several times over.
MAX_CONTEXT_BYTES = 4 * 2**20
# Top-level entries neither context may hold (.venv* by prefix).
LOCAL_ONLY = ('.cache', 'out', 'tests', '.git', 'bench', 'docs', 'data',
              'scripts', 'build', 'dist', '.pytest_cache', '.ruff_cache')


def _dockerignore() -> list[str]:
  """The patterns as docker-py's APIClient.build reads .dockerignore."""
  path = os.path.join(ROOT, '.dockerignore')
  if not os.path.exists(path):
    pytest.fail('no .dockerignore: `docker build .` sends the whole checkout')
  with open(path, encoding='utf-8') as f:
    return [line for line in (raw.strip() for raw in f.read().splitlines())
            if line and not line.startswith('#')]


def _gcloudignore() -> pathspec.GitIgnoreSpec:
  path = os.path.join(ROOT, '.gcloudignore')
  if not os.path.exists(path):
    pytest.fail('no .gcloudignore: gcloud uploads every file .gitignore '
                'does not name (tests, docs, data, bench)')
  with open(path, encoding='utf-8') as f:
    return pathspec.GitIgnoreSpec.from_lines(f.read().splitlines())


def _copy_lines() -> list[tuple[list[str], str]]:
  """(sources, destination) of each Dockerfile COPY from the context.

  Handles the forms the Dockerfile uses (shell form, relative sources and
  destination under WORKDIR); any other form fails here, to be handled."""
  with open(os.path.join(ROOT, 'Dockerfile'), encoding='utf-8') as f:
    text = re.sub(r'\\\n', ' ', f.read())
  copies = []
  for line in text.splitlines():
    words = line.split(None, 1)
    if not words or words[0].upper() not in ('COPY', 'ADD'):
      continue
    assert '[' not in line, f'JSON-form COPY not handled: {line}'
    args = shlex.split(words[1])
    flags = [a for a in args if a.startswith('--')]
    if any(a.startswith('--from') for a in flags):
      continue  # from another stage, not from the context
    *sources, dest = [a for a in args if not a.startswith('--')]
    for source in sources:
      assert not re.search(r'[*?\[]|^/|\.\.', source), (
          f'COPY source form not handled here: {source}')
    assert not dest.startswith('/'), f'COPY to an absolute path: {line}'
    copies.append((sources, dest))
  assert copies, 'no COPY from the context found in the Dockerfile'
  return copies


def _copy_sources() -> list[str]:
  return [os.path.normpath(s) for sources, _ in _copy_lines() for s in sources]


def _package_files() -> list[str]:
  """What building the package reads: setup.py, MANIFEST.in and the files
  it includes, and the top-level folders of setup.py's `packages`."""
  with open(os.path.join(ROOT, 'setup.py'), encoding='utf-8') as f:
    tree = ast.parse(f.read())
  [packages] = [ast.literal_eval(k.value) for node in ast.walk(tree)
                if isinstance(node, ast.Call) for k in node.keywords
                if k.arg == 'packages']
  with open(os.path.join(ROOT, 'MANIFEST.in'), encoding='utf-8') as f:
    included = [name for line in f if line.split()[:1] == ['include']
                for name in line.split()[1:]]
  return (['setup.py', 'MANIFEST.in'] + included +
          sorted({p.split('.')[0] for p in packages}))


def _flex_entry_files() -> list[str]:
  """The files the Flex Template's launcher is told to run
  (FLEX_TEMPLATE_PYTHON_PY_FILE, and _SETUP_FILE where one is set), where
  the Dockerfile's ENV or the documented build command names them; a path
  inside the image is taken relative to the Dockerfile's WORKDIR."""
  named = set()
  for name in ('Dockerfile', os.path.join('docs', 'dataflow.md')):
    with open(os.path.join(ROOT, name), encoding='utf-8') as f:
      text = f.read()
    workdirs = re.findall(r'^WORKDIR\s+(\S+)', text, re.M)
    for value in re.findall(
        r'FLEX_TEMPLATE_PYTHON_(?:PY|SETUP)_FILE[= ]+["\']?([\w./-]+\.py)',
        text):
      inside = workdirs[-1].rstrip('/') + '/' if workdirs else None
      if inside and value.startswith(inside):
        value = value[len(inside):]
      named.add(value)
  assert named, 'no FLEX_TEMPLATE_PYTHON_PY_FILE in the Dockerfile or docs'
  return sorted(named)


def _python_files(folder: str) -> set[str]:
  """The modules of a package folder in the checkout, as relative paths."""
  found = set()
  for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
    dirnames[:] = [d for d in dirnames if d != '__pycache__']
    rel = os.path.relpath(dirpath, ROOT)
    found.update(os.path.join(rel, f) for f in filenames if f.endswith('.py'))
  return found


def _local_only(path: str) -> bool:
  parts = path.split('/')
  return (parts[0].startswith('.venv') or parts[0] in LOCAL_ONLY or
          parts[0].endswith('.egg-info') or '__pycache__' in parts or
          path.endswith('.pyc'))


def _docker_context() -> tuple[int, set[str]]:
  """The size of docker-py's context tar and the names in it. The names
  are checked first with exclude_paths, so that a .dockerignore that lets
  the venvs in fails in seconds instead of tarring gigabytes."""
  admitted = docker_build.exclude_paths(ROOT, _dockerignore())
  leaked = sorted(p for p in admitted if _local_only(p))
  assert not leaked, f'the Docker context holds {leaked[:10]}'
  tar = docker_build.tar(ROOT, exclude=_dockerignore(),
                         fileobj=io.BytesIO())
  size = len(tar.getvalue())
  with tarfile.open(fileobj=tar) as t:
    return size, set(t.getnames())


def _gcloud_upload() -> dict[str, int]:
  """{relative path: size} of the files gcloud would upload."""
  spec = _gcloudignore()
  files = {}
  for dirpath, dirnames, filenames in os.walk(ROOT):
    rel = os.path.relpath(dirpath, ROOT)
    prefix = '' if rel == '.' else rel + '/'
    dirnames[:] = [d for d in dirnames
                   if not spec.match_file(prefix + d + '/')]
    for name in filenames:
      if not spec.match_file(prefix + name):
        files[prefix + name] = os.path.getsize(os.path.join(dirpath, name))
  return files


@pytest.mark.unit
def test_docker_context_is_the_copied_files_only():
  size, names = _docker_context()
  assert size < MAX_CONTEXT_BYTES, f'Docker context of {size} bytes'
  assert not [n for n in names if _local_only(n)]
  for source in _copy_sources():
    assert source in names, f'COPY {source}: not in the Docker context'
    if os.path.isdir(os.path.join(ROOT, source)):
      missing = _python_files(source) - names
      assert not missing, f'COPY {source}: {sorted(missing)} left out'
  # Nothing beyond the COPY sources (and what Docker always sends).
  copied = set(_copy_sources())
  extra = {n for n in names
           if not any(n == c or n.startswith(c + '/') for c in copied)}
  assert extra <= {'Dockerfile', '.dockerignore'}, (
      f'let in by .dockerignore, copied by no COPY: {sorted(extra)}')


@pytest.mark.unit
def test_dockerfile_copies_what_the_package_build_reads():
  """The image runs `pip install .` on the copied files alone."""
  missing = set(_package_files()) - set(_copy_sources())
  assert not missing, f'the Dockerfile does not COPY {sorted(missing)}'


@pytest.mark.unit
def test_gcloud_upload_holds_the_image_build_and_the_launcher():
  files = _gcloud_upload()
  size = sum(files.values())
  assert size < MAX_CONTEXT_BYTES, f'gcloud upload of {size} bytes'
  leaked = sorted(p for p in files if _local_only(p))
  assert not leaked, f'gcloud would upload {leaked[:10]}'
  # The worker image built on Cloud Build (gcloud builds submit), the
  # package, and the Flex Template launcher's entry point.
  needed = (['Dockerfile', '.dockerignore'] + _copy_sources() +
            _package_files() + _flex_entry_files())
  for path in needed:
    if os.path.isdir(os.path.join(ROOT, path)):
      missing = _python_files(path) - set(files)
      assert not missing, f'{path}: {sorted(missing)} not uploaded'
    else:
      assert path in files, f'{path}: not uploaded'
  # The template's parameters are read locally (--metadata-file).
  assert 'flex/metadata.json' not in files


def _extract_docker_context(dest: str) -> None:
  tar = docker_build.tar(ROOT, exclude=_dockerignore(),
                         fileobj=io.BytesIO())
  with tarfile.open(fileobj=tar) as t:
    t.extractall(dest, filter='data')


def _lay_out_copies(context: str, workdir: str) -> None:
  """The Dockerfile's COPY lines run on the extracted context: a folder's
  contents go into the destination, files into it when it ends with '/'
  or when several are copied."""
  for sources, dest in _copy_lines():
    target = os.path.join(workdir, dest)
    for source in sources:
      path = os.path.join(context, source)
      if os.path.isdir(path):
        shutil.copytree(path, target, dirs_exist_ok=True)
      elif dest.endswith('/') or len(sources) > 1:
        os.makedirs(target, exist_ok=True)
        shutil.copy2(path, os.path.join(target, os.path.basename(source)))
      else:
        os.makedirs(os.path.dirname(target) or '.', exist_ok=True)
        shutil.copy2(path, target)


def test_image_package_builds_from_the_docker_context(tmp_path):
  """The Dockerfile's `pip install --no-deps .`, as a wheel built offline
  from the files its COPY lines take from the context."""
  context, workdir = str(tmp_path / 'context'), str(tmp_path / 'workspace')
  _extract_docker_context(context)
  _lay_out_copies(context, workdir)
  proc = subprocess.run(
      [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-index',
       '--no-build-isolation', '--disable-pip-version-check', '-w',
       str(tmp_path / 'wheels'), '.'],
      cwd=workdir, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  [wheel] = os.listdir(tmp_path / 'wheels')
  with zipfile.ZipFile(tmp_path / 'wheels' / wheel) as z:
    modules = set(z.namelist())
  for folder in ('pipeline', 'transforms', 'tfmodels'):
    missing = _python_files(folder) - modules
    assert not missing, f'the image package lacks {sorted(missing)}'


def test_flex_launcher_builds_the_sdist_from_the_upload(tmp_path):
  """The uploaded files (those .gcloudignore admits) alone, as Cloud
  Build gets them: the package's sdist holds the whole package, and the
  template's entry point starts from them."""
  upload = tmp_path / 'template'
  for path in _gcloud_upload():
    os.makedirs(upload / os.path.dirname(path), exist_ok=True)
    shutil.copy2(os.path.join(ROOT, path), upload / path)
  proc = subprocess.run(
      [sys.executable, 'setup.py', '-q', 'sdist', '--dist-dir',
       str(tmp_path / 'dist')],
      cwd=upload, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  [sdist] = os.listdir(tmp_path / 'dist')
  with tarfile.open(tmp_path / 'dist' / sdist) as t:
    names = {n.split('/', 1)[1] for n in t.getnames() if '/' in n}
  assert {'setup.py', 'requirements.in', 'requirements.txt'} <= names
  for folder in ('pipeline', 'transforms', 'tfmodels'):
    missing = _python_files(folder) - names
    assert not missing, f'the sdist lacks {sorted(missing)}'
  # The entry point's --help imports the job's command from the upload,
  # not from the checkout that .venv has installed (editable).
  [entry] = [f for f in _flex_entry_files() if f != 'setup.py']
  run_entry = (
      'import runpy, sys\n'
      f'sys.argv = [{entry!r}, "--help"]\n'
      'try:\n'
      f'  runpy.run_path({entry!r}, run_name="__main__")\n'
      'except SystemExit as stop:\n'
      '  assert not stop.code, stop.code\n'
      'print("FROM", sys.modules["pipeline.run"].__file__)\n')
  proc = subprocess.run(
      [sys.executable, '-c', run_entry], cwd=upload, capture_output=True,
      text=True, timeout=120,
      env={**os.environ, 'PYTHONDONTWRITEBYTECODE': '1'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '--input' in proc.stdout
  assert f'FROM {upload}/pipeline/run.py' in proc.stdout, proc.stdout[-500:]
