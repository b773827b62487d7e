"""Leases of file outputs: PREFIX.lease beside the shards, a local file or
a Cloud Storage object.

Local: every operation runs under an exclusive flock on the output's
folder, so read-compare-write is atomic between processes of this machine
(a local output is written only by a local runner, on this machine).
Cloud Storage: generation preconditions (ifGenerationMatch), the service's
own compare-and-swap: a create succeeds only where no object is, and a
replace or delete only on the generation read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from typing import Any, Optional

from transforms import paths
from transforms.leases import Store

SUFFIX = '.lease'


def lease_path(prefix: str) -> str:
  """Where a file output's lease is."""
  return prefix + SUFFIX


def store_for(prefix: str) -> Store:
  path = lease_path(prefix)
  if path.startswith('gs://'):
    store = GcsStore(path)
  elif paths.has_scheme(path):
    raise ValueError(f'{prefix}: leases are kept on local paths and gs:// '
                     'only')
  else:
    store = LocalStore(path)
  store.output = prefix
  return store


class LocalStore(Store):

  def __init__(self, path: str):
    self.path = os.path.abspath(path)

  def shown(self) -> str:
    return self.path

  @contextlib.contextmanager
  def _locked(self):
    folder = os.path.dirname(self.path)
    os.makedirs(folder, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
      yield
    finally:
      os.close(fd)  # releases the flock

  def _text(self) -> Optional[str]:
    try:
      with open(self.path, encoding='utf-8', errors='replace') as f:
        return f.read()
    except FileNotFoundError:
      return None

  def _write(self, text: str) -> str:
    temp = f'{self.path}.{uuid.uuid4().hex}.tmp'
    with open(temp, 'w', encoding='utf-8') as f:
      f.write(text)
    os.replace(temp, self.path)
    return text

  def create(self, text: str) -> Optional[Any]:
    with self._locked():
      return None if os.path.exists(self.path) else self._write(text)

  def read(self) -> Optional[tuple[str, Any]]:
    with self._locked():
      text = self._text()
    return None if text is None else (text, text)

  def replace(self, text: str, version: Any) -> Optional[Any]:
    with self._locked():
      return self._write(text) if self._text() == version else None

  def delete(self, version: Any) -> bool:
    with self._locked():
      if self._text() != version:
        return False
      os.remove(self.path)
      return True


class GcsStore(Store):

  def __init__(self, path: str):
    self.path = path
    bucket, _, self.name = path[len('gs://'):].partition('/')
    self.bucket_name = bucket

  def shown(self) -> str:
    return self.path

  def _blob(self):
    from google.cloud import storage
    return storage.Client().bucket(self.bucket_name).blob(self.name)

  def create(self, text: str) -> Optional[Any]:
    from google.api_core import exceptions
    blob = self._blob()
    # The emulator in the tests ignores preconditions; the service does
    # not. Looking first keeps a plain second launch refused there too.
    if blob.exists():
      return None
    try:
      blob.upload_from_string(text, content_type='application/json',
                              if_generation_match=0)
    except exceptions.PreconditionFailed:
      return None
    return blob.generation

  def read(self) -> Optional[tuple[str, Any]]:
    from google.api_core import exceptions
    from google.cloud import storage
    blob = storage.Client().bucket(self.bucket_name).get_blob(self.name)
    if blob is None:
      return None
    try:
      text = blob.download_as_text(if_generation_match=blob.generation)
    except (exceptions.NotFound, exceptions.PreconditionFailed):
      return None  # replaced or removed in between: the caller looks again
    return text, blob.generation

  def replace(self, text: str, version: Any) -> Optional[Any]:
    from google.api_core import exceptions
    blob = self._blob()
    try:
      blob.upload_from_string(text, content_type='application/json',
                              if_generation_match=version)
    except (exceptions.PreconditionFailed, exceptions.NotFound):
      return None
    return blob.generation

  def delete(self, version: Any) -> bool:
    from google.api_core import exceptions
    try:
      self._blob().delete(if_generation_match=version)
    except (exceptions.PreconditionFailed, exceptions.NotFound):
      return False
    return True
