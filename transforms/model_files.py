"""Model folders wherever Beam's FileSystems reach, loadable by TensorFlow.

Every other path of the job (inputs, outputs, --previous, export.json) goes
through Beam's FileSystems, with Beam's credentials and endpoints. TensorFlow
has its own GCS client, which does not: in TensorFlow 2.21 `hub.load` of a
gs:// folder calls www.googleapis.com directly, ignoring
STORAGE_EMULATOR_HOST (seen here). So a model folder given by a URI scheme
(gs://, ...) is copied through FileSystems into a local folder, once per
worker process, and loaded from there; local folders and TF Hub URLs go to
`hub.load` as they are.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
import threading

from apache_beam.io.filesystems import FileSystems

from transforms import paths

_LOCK = threading.Lock()


def is_url(handle: str) -> bool:
  return handle.startswith(('http://', 'https://'))


def list_files(folder: str) -> list[str]:
  """Every file under folder (recursively), through FileSystems."""
  folder = folder.rstrip('/')
  found = FileSystems.match([folder + '/**'])[0].metadata_list
  return sorted(m.path for m in found if not m.path.endswith('/'))


def copy_to_local(folder: str, dest: str) -> str:
  """Copies every file under folder into dest, keeping relative paths."""
  folder = folder.rstrip('/')
  files = list_files(folder)
  if not files:
    raise FileNotFoundError(f'{folder} holds no files')
  for path in files:
    relative = path[len(folder) + 1:]
    target = os.path.join(dest, *relative.split('/'))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with FileSystems.open(path, compression_type='uncompressed') as src, \
        open(target, 'wb') as out:
      shutil.copyfileobj(src, out, 1 << 22)
  return dest


@functools.lru_cache(maxsize=None)
def _local_copy(handle: str) -> str:
  dest = tempfile.mkdtemp(prefix='beam-text-embed-model-')
  atexit.register(shutil.rmtree, dest, True)
  logging.info('Copying model %s to %s (once per process)', handle, dest)
  return copy_to_local(handle, dest)


def loadable(handle: str) -> str:
  """A handle TensorFlow can load: the handle itself, or a local copy of it
  made once per process."""
  if (is_url(handle) or not paths.has_scheme(handle) or
      handle.startswith('file://')):
    return handle
  with _LOCK:
    return _local_copy(handle)
