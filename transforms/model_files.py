"""Model folders wherever Beam's FileSystems reach, loadable by TensorFlow.

TensorFlow opens local paths itself, and `gs://` only where the optional
tensorflow-io-gcs-filesystem plugin is installed (TensorFlow 2.21 does not
pull it in; its GCS client would also ignore STORAGE_EMULATOR_HOST). Beam's
FileSystems read `gs://` with google-cloud-storage, which every worker has.
So a model folder on a scheme TensorFlow cannot read is copied through
FileSystems into a local folder, once per worker process, and loaded from
there. TF Hub URLs go to `hub.load` as they are.
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

_LOCK = threading.Lock()


def is_url(handle: str) -> bool:
  return handle.startswith(('http://', 'https://'))


def _scheme(handle: str) -> str:
  return handle.split('://', 1)[0] if '://' in handle else ''


def tensorflow_reads(handle: str) -> bool:
  """Whether TensorFlow's own file system layer opens this path."""
  scheme = _scheme(handle)
  if not scheme or scheme == 'file':
    return True
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    tf.io.gfile.exists(handle)
  except tf.errors.UnimplementedError:
    return False
  except Exception:  # pylint: disable=broad-except
    return True  # registered, but failing for another reason: let TF say so
  return True


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
  if is_url(handle) or tensorflow_reads(handle):
    return handle
  with _LOCK:
    return _local_copy(handle)
