"""What file backends share: PREFIX-SSSSS-of-NNNNN.SUFFIX shards, local or
gs://, through Beam's file sinks.

Re-running a job to the same prefix leaves one copy of each record: Beam's
file sinks write temporary files and rename them on finalisation (a failed
run leaves no partial shard under the final name), and shards of an earlier
run that this one did not write are then deleted.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from typing import Sequence

import apache_beam as beam
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.backends import base

_NAMESPACE = 'write'


def _normal(path: str) -> str:
  return path if '://' in path else os.path.abspath(path)


def remove_stale_shards(written: Sequence[str], prefix: str,
                        suffix: str) -> int:
  """Deletes shards under `prefix` that this run did not write.

  Beam's file sinks replace shards of the same name, but a re-run that
  writes fewer shards (another --num_shards, or a runner that picks another
  count) would leave an earlier run's extra shards next to the new ones, and
  readers of PREFIX-* would see old records twice. Runs after the sink has
  finalised, so a failed run deletes nothing.
  """
  keep = {_normal(p) for p in written}
  stale = [p for p in shards(prefix, suffix) if _normal(p) not in keep]
  if stale:
    logging.warning('Removing %d shard(s) of an earlier run under %s: %s',
                    len(stale), prefix, stale[:5])
    FileSystems.delete(stale)
    Metrics.counter(_NAMESPACE, 'stale_shards_removed').inc(len(stale))
  return len(stale)


def shards(prefix: str, suffix: str) -> list[str]:
  """This prefix's shard files, in name order: PREFIX-SSSSS-of-NNNNN only,
  not another output's whose name starts with the prefix (its dead letters
  at PREFIX-dead_letter-...)."""
  shard = re.compile(re.escape(_normal(prefix)) + r'-\d+-of-\d+' +
                     re.escape(suffix) + '$')
  matched = FileSystems.match([f'{prefix}-*-of-*{suffix}'])[0].metadata_list
  return sorted(m.path for m in matched if shard.match(_normal(m.path)))


def read_bytes(path: str) -> bytes:
  with FileSystems.open(path) as f:
    return f.read()


def cause(exc: Exception) -> str:
  """The underlying error of a FileSystems call (BeamIOError wraps it in a
  dict of path -> exception)."""
  details = getattr(exc, 'exception_details', None)
  if isinstance(exc, BeamIOError) and details:
    exc = next(iter(details.values()))
  if (isinstance(exc, FileExistsError) and exc.filename and
      os.path.isfile(exc.filename)):
    # Making the folders of a path whose parent is a file.
    return f'{exc.filename} is a file, not a folder'
  if isinstance(exc, OSError) and exc.strerror:
    return exc.strerror
  return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def probe_writable(prefix: str, what: str) -> None:
  """Creates and removes a file beside `prefix`, so that a location that
  cannot be written fails at launch with one line instead of in the
  write step, after the whole corpus was embedded."""
  probe = f'{prefix}-write-probe-{uuid.uuid4().hex[:8]}'
  try:
    FileSystems.create(probe).close()
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'cannot write {what} {prefix}: {cause(e)}') from e
  try:
    FileSystems.delete([probe])
  except Exception as e:  # pylint: disable=broad-except
    # Writable is what matters (a bucket with a retention policy keeps
    # objects); say what was left behind.
    logging.warning('could not remove the write probe %s: %s', probe,
                    cause(e))


class FileBackend(base.Backend):
  """Shards under a prefix; subclasses give the suffix and the encoding."""

  suffix: str

  def shown(self) -> str:
    return f'{self.uri}-*{self.suffix}'

  def check(self) -> None:
    if not self.uri or self.uri.endswith(('/', self.suffix)):
      raise ValueError(f'{self.uri!r} is not a file prefix: the output is '
                       f'written to PREFIX-SSSSS-of-NNNNN{self.suffix}')
    if self.settings.probe:
      probe_writable(self.uri, self.record.name.replace('_', ' '))

  def check_readable(self) -> None:
    found = shards(self.uri, self.suffix)
    if not found:
      raise ValueError(f'--previous {self.uri} matches no '
                       f'{self.uri}-*{self.suffix}; leave --previous out '
                       'for a first run')
    try:
      names = self.field_names(found[0])
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f'--previous {self.uri}: cannot read {found[0]}: '
                       f'{cause(e)}') from e
    missing = [f.name for f in self.record.fields
               if f.required and f.name not in names]
    if missing:
      raise ValueError(f'--previous {self.uri}: {found[0]} is not an output '
                       f'of this job (no {", ".join(missing)} field)')

  def field_names(self, path: str) -> set:
    """The field names of a shard's first record (or its schema)."""
    raise NotImplementedError

  def dead_letter_location(self) -> tuple[str, str]:
    return f'{self.uri}-dead_letter', 'jsonl'

  def write(self) -> beam.PTransform:
    return _WriteShards(self)

  def sink(self) -> beam.PTransform:
    """Record dicts -> the written file names."""
    raise NotImplementedError


@beam.ptransform_fn
def _WriteShards(records, backend: FileBackend):
  return (records
          | 'WriteShards' >> backend.sink()
          | 'AllShards' >> beam.combiners.ToList()
          | 'RemoveStaleShards' >> beam.Map(remove_stale_shards, backend.uri,
                                            backend.suffix))
