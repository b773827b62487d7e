"""What file backends share: PREFIX-SSSSS-of-NNNNN.SUFFIX shards, local or
gs://, through Beam's file sinks (FileBasedSink).

Re-running a job to the same prefix leaves one copy of each record: the
sinks write temporary files and rename them on finalisation (a failed run
leaves no partial shard under the final name), and shards of an earlier
run that this one did not write are then deleted.

WriteShards drives a sink through its public interface (initialize_write,
open_writer, pre_finalize, finalize_write), as Beam's own Write does, but
from several inputs: a nightly run writes its new records and the
unchanged records it streams from the previous output into one shard set
without a Flatten of the records. A Flatten of inputs made in different
stages is materialised whole by Beam's local runner (FnApiRunner), which
would hold every carried vector in memory; here only the writers' results
(temporary file names) meet.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import re
import uuid
from typing import Optional, Sequence

import random

import apache_beam as beam
from apache_beam.io import filebasedsink
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import window

from transforms import failpoints
from transforms import metrics
from transforms import paths
from transforms.backends import base
from transforms.codecs import DamagedFile



def _normal(path: str) -> str:
  return path if paths.has_scheme(path) else os.path.abspath(path)


def remove_stale_shards(written: Sequence[str], prefix: str,
                        suffix: str) -> int:
  """Deletes shards under `prefix` that this run did not write.

  A re-run that writes fewer shards (another --num_shards, or a runner
  that picks another count) would leave an earlier run's extra shards next
  to the new ones, and readers of PREFIX-* would see old records twice.
  Part of the commit (after the new shards are in place), so a failed run
  deletes nothing.
  """
  keep = {_normal(p) for p in written}
  stale = [p for p in shards(prefix, suffix) if _normal(p) not in keep]
  if stale:
    logging.warning('Removing %d shard(s) of an earlier run under %s: %s',
                    len(stale), prefix, stale[:5])
    FileSystems.delete(stale)
    metrics.BEAM.inc(metrics.STALE_SHARDS_REMOVED, len(stale))
  return len(stale)


@dataclasses.dataclass(frozen=True)
class OwnFiles:
  """The files a run writes under its file locations (embeddings and dead
  letters): their shards, whatever the suffix, the output's lease and
  notes, and
  Beam's temporary folders beside them (beam-temp-NAME-...). A path `in`
  it is one of them, so that an --input glob that also matches the output
  (the last night's shards or dead letters in the corpus folder) skips
  them."""
  prefixes: tuple = ()

  @classmethod
  def of(cls, *backends) -> 'OwnFiles':
    return cls(tuple(_normal(b.uri) for b in backends
                     if isinstance(b, FileBackend)))

  def __contains__(self, path: str) -> bool:
    path = _normal(path)
    for prefix in self.prefixes:
      if re.match(re.escape(prefix) + r'-\d+-of-\d+(\.\w+)*$', path):
        return True
      if re.match(re.escape(prefix) + r'\.lease(\.\w+\.tmp)?$', path):
        return True  # its lease (transforms/leases/files.py)
      if path == prefix + '.spec.json':
        return True  # its notes (transforms/provenance.py)
      if path.startswith(temp_prefix(prefix)):
        return True
    return False

  def __bool__(self) -> bool:
    return bool(self.prefixes)


def temp_prefix(prefix: str) -> str:
  """How the names of Beam's temporary folders for a prefix start:
  FOLDER/beam-temp-NAME- (FileBasedSink's initialize_write, a folder per
  run beside the shards; renamed shards leave it, and finalize_write
  deletes it; a failed or stopped run leaves it)."""
  prefix = _normal(prefix)
  folder, name = prefix.rsplit('/', 1) if '/' in prefix else ('', prefix)
  return f'{folder}/beam-temp-{name}-'


def temp_folders(prefix: str) -> list[str]:
  """The temporary folders of a prefix that exist now."""
  return temp_folders_under(temp_prefix(prefix))


def temp_folders_under(start: str) -> list[str]:
  """The folders whose names start with `start` (FOLDER/NAME-), local or
  on Cloud Storage."""
  if not paths.has_scheme(start):  # Beam's local match finds files, not folders
    return sorted(glob.glob(glob.escape(start) + '*'))
  try:
    # Beam's `*` stops at `/`; the objects are in the folders.
    matched = FileSystems.match([start + '*/**'])[0].metadata_list
  except BeamIOError:
    return []
  folder = re.compile(re.escape(start) + r'[^/]+')
  return sorted({found.group(0) for m in matched
                 if (found := folder.match(_normal(m.path)))})


def remove_folders(folders) -> None:
  """Deletes folders and what they hold, local or on Cloud Storage (where
  a folder is the objects under NAME/)."""
  if folders:
    FileSystems.delete([f.rstrip('/') + '/' if paths.has_scheme(f) else f
                        for f in folders])


def shards(prefix: str, suffix: str) -> list[str]:
  """This prefix's shard files, in name order: PREFIX-SSSSS-of-NNNNN only,
  not another output's whose name starts with the prefix (PREFIX-v2-...).
  The default dead letters (PREFIX_dead_letter-...) do not start with
  PREFIX- at all, so that readers' globs (PREFIX-*) match only
  embeddings."""
  return [m.path for m in _shard_metadata(prefix, suffix)]


def _shard_metadata(prefix: str, suffix: str) -> list:
  shard = re.compile(re.escape(_normal(prefix)) + r'-\d+-of-\d+' +
                     re.escape(suffix) + '$')
  matched = FileSystems.match([f'{prefix}-*-of-*{suffix}'])[0].metadata_list
  return sorted((m for m in matched if shard.match(_normal(m.path))),
                key=lambda m: m.path)


def missing_folder(prefix: str) -> Optional[str]:
  """What is missing of the place that holds a prefix's shards: the
  folder (local), or the bucket on Cloud Storage, whose folders are only
  the start of object names (none is there before its first object);
  None when it is there."""
  if not paths.has_scheme(prefix):
    folder = os.path.dirname(os.path.abspath(prefix))
    if os.path.isdir(folder):
      return None
    shown = os.path.dirname(prefix) or folder
    return (f'{shown} is a file, not a folder' if os.path.exists(folder)
            else f'folder {shown} does not exist')
  if not prefix.startswith('gs://'):
    return (f'whether the folder of {prefix} exists cannot be told on '
            f'{prefix.split("://")[0]}://')
  from google.api_core import exceptions
  from apache_beam.io.gcp import gcsio
  bucket = prefix[len('gs://'):].split('/')[0]
  try:
    # Listing needs only object permissions, which a job's account has;
    # looking the bucket up needs more.
    list(gcsio.GcsIO().client.list_blobs(bucket, max_results=1))
  except exceptions.NotFound:
    return f'bucket gs://{bucket} does not exist'
  except Exception as e:
    raise ValueError(f'cannot list gs://{bucket}: {cause(e)}') from e
  return None


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
  except Exception as e:
    raise ValueError(f'cannot write {what} {prefix}: {cause(e)}') from e
  try:
    FileSystems.delete([probe])
  except Exception as e:  # noqa: BLE001
    # Writable is what matters (a bucket with a retention policy keeps
    # objects); say what was left behind.
    logging.warning('could not remove the write probe %s: %s', probe,
                    cause(e))


class RecordSink(filebasedsink.FileBasedSink):
  """A FileBasedSink of record dicts in one layout, uncompressed; the
  format's sink says how a record is written (write_record)."""

  mime_type = 'application/octet-stream'

  def __init__(self, backend: 'FileBackend'):
    super().__init__(backend.uri, coder=None,
                     file_name_suffix=backend.suffix,
                     num_shards=backend.settings.num_shards,
                     mime_type=self.mime_type,
                     compression_type=CompressionTypes.UNCOMPRESSED)
    self.layout = backend.record


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

  def exists(self) -> bool:
    return bool(shards(self.uri, self.suffix))

  def missing_parent(self) -> Optional[str]:
    return missing_folder(self.uri)

  def check_readable(self) -> None:
    found = shards(self.uri, self.suffix)
    if not found:
      raise ValueError(f'--previous {self.uri} matches no '
                       f'{self.uri}-*{self.suffix}; leave --previous out '
                       'for a first run')
    try:
      names = self.field_names(found[0])
    except DamagedFile:
      raise  # it names the file and what to do
    except Exception as e:
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
    return f'{self.uri}_dead_letter', 'jsonl'

  def lease_store(self):
    from transforms.leases import files as file_leases
    return file_leases.store_for(self.uri)

  def notes(self):
    from transforms import provenance
    return provenance.FileNotes(self.uri)

  def write(self) -> beam.PTransform:
    return _WriteFiles(self, None)

  def write_changes(self, previous, carried) -> beam.PTransform:
    del previous  # files are rewritten whole, whatever the previous output
    return _WriteFiles(self, carried)

  def temporaries(self) -> list:
    return temp_folders(self.uri)

  def remove_temporaries(self, paths) -> None:
    """A folder with a commit journal holds shards of a finished run
    that were not all put in place: the commit is finished, not thrown
    away."""
    for folder in paths:
      finish_commit(folder)
    remove_folders([f for f in paths if FileSystems.exists(f)])

  def recover(self) -> None:
    for folder in self.temporaries():
      finish_commit(folder)

  def state(self):
    """The shards' names, sizes and times."""
    try:
      return tuple((m.path, m.size_in_bytes, m.last_updated_in_seconds)
                   for m in _shard_metadata(self.uri, self.suffix))
    except BeamIOError:
      return None

  def sink(self) -> RecordSink:
    """The sink that writes record dicts into shards of this prefix."""
    raise NotImplementedError


class _WriteFiles(beam.PTransform):
  """Record dicts, or {'records', 'removed'?} -> the final shard names
  (shards of earlier runs that this one did not write are deleted as it
  commits). With `carried`, the carried records are written too, from
  their own stream."""

  def __init__(self, backend: FileBackend, carried):
    super().__init__()
    self._backend = backend
    self._carried = carried

  def expand(self, changes):
    records = changes['records'] if isinstance(changes, dict) else changes
    inputs = [records]
    if self._carried is not None:
      inputs.append(records.pipeline | 'Carried' >> self._carried)
    b = self._backend
    return (tuple(inputs)
            | 'WriteShards' >> WriteShards(
                b.sink(), f'{b.record.name.replace("_", " ")} to {b.shown()}'))


class _Failing:
  """Turns any error of a write into an OutputError naming the output."""

  def __init__(self, where: str):
    self._where = where

  def __enter__(self):
    return self

  def __exit__(self, kind, exc, tb):
    if exc is not None and not isinstance(exc, base.OutputError):
      raise base.OutputError(
          f'writing {self._where} failed: {cause(exc)}') from exc
    return False


class _WriteBundle(beam.DoFn):
  """Records -> one temporary shard per bundle; yields the writer's result
  when the bundle ends."""

  def __init__(self, sink: filebasedsink.FileBasedSink, where: str):
    super().__init__()
    self._sink = sink
    self._where = where
    self._writer = None

  def start_bundle(self):
    self._writer = None

  def process(self, record, init):
    with _Failing(self._where):
      if self._writer is None:
        self._writer = self._sink.open_writer(init, uuid.uuid4().hex)
      self._writer.write(record)

  def finish_bundle(self):
    if self._writer is not None:
      with _Failing(self._where):
        result = self._writer.close()
      self._writer = None
      failpoints.reached('write')
      yield window.GlobalWindows.windowed_value(result)


class _RoundRobin(beam.DoFn):
  """Records -> (shard number, record), from a random start per bundle."""

  def __init__(self, count: int):
    super().__init__()
    self._count = count
    self._next = 0

  def start_bundle(self):
    self._next = random.randrange(self._count)

  def process(self, record):
    self._next = (self._next + 1) % self._count
    yield self._next, record


def _write_shard(keyed, sink, init, where: str):
  with _Failing(where):
    writer = sink.open_writer(init, uuid.uuid4().hex)
    for record in keyed[1]:
      writer.write(record)
    written = writer.close()
  failpoints.reached('write')
  return written


def _finalize(_, sink, init, results, min_shards: int, where: str):
  """The temporary shards committed into place (with empty shards added
  up to the asked-for count, or one for an empty output): the final
  names."""
  with _Failing(where):
    results = list(results)
    for _ in range(min_shards - len(results)):
      results.append(sink.open_writer(init, uuid.uuid4().hex).close())
    return commit(init, results, sink.file_path_prefix.get(),
                  sink.file_name_suffix.get())


# The commit journal in a run's temporary folder: while it is there, the
# folder's shards are being put in place (see commit).
JOURNAL = 'commit.json'


def shard_name(prefix: str, index: int, count: int, suffix: str) -> str:
  return f'{prefix}-{index:05d}-of-{count:05d}{suffix}'


def commit(folder: str, temporary: Sequence[str], prefix: str,
           suffix: str) -> list[str]:
  """Puts a run's finished temporary shards in place of the prefix's
  shards, so that a kill at any moment leaves a state the next run can
  finish, and the prefix never empty.

  Beam's FileBasedSink first deletes the shards the new ones will replace
  (pre_finalize), then renames the new ones in: a kill between the two
  leaves an empty prefix, and a nightly run into its own --previous then
  finds nothing to start from. Here:
  1. a journal of the renames is written into the run's temporary folder;
  2. each temporary shard is renamed over its final name (a rename
     replaces the old shard of that name in one step);
  3. shards of the prefix that this run did not write are deleted;
  4. the folder, journal last, is deleted.
  A kill during 2 or 3 leaves old and new shards side by side, and the
  journal; finish_commit (run at the next launch, and before any
  temporary folder is removed) does what is left. A kill before 1 leaves
  the old shards whole.
  """
  temporary = sorted(temporary)
  renames = [(src, shard_name(prefix, i, len(temporary), suffix))
             for i, src in enumerate(temporary)]
  journal = {'prefix': prefix, 'suffix': suffix, 'renames': renames}
  with FileSystems.create(FileSystems.join(folder, JOURNAL)) as f:
    f.write(json.dumps(journal).encode('utf-8'))
  failpoints.reached('commit:journal')
  return _apply(folder, journal)


def _apply(folder: str, journal: dict) -> list[str]:
  renames = journal['renames']
  for i, (src, dst) in enumerate(renames):
    if FileSystems.exists(src):
      FileSystems.rename([src], [dst])
    if i == len(renames) // 2:
      failpoints.reached('commit:rename')
  finals = [dst for _, dst in renames]
  remove_stale_shards(finals, journal['prefix'], journal['suffix'])
  failpoints.reached('commit:stale')
  remove_folders([folder])
  return finals


def finish_commit(folder: str) -> bool:
  """Finishes the commit a killed run left in `folder` (its journal
  there); False when the folder holds no journal (a run killed while it
  was still writing: its shards are partial and not used)."""
  path = FileSystems.join(folder, JOURNAL)
  if not FileSystems.exists(path):
    return False
  journal = json.loads(read_bytes(path))
  logging.warning(
      'An earlier run into %s was stopped while it put its %d shards in '
      'place; finishing that now, from %s', journal['prefix'],
      len(journal['renames']), folder)
  _apply(folder, journal)
  return True


class WriteShards(beam.PTransform):
  """(PCollections of records, ...) -> the final shard names, written by
  one FileBasedSink. Without a shard count each bundle of each input
  writes a shard as it streams by (nothing is grouped); with --num_shards
  N the records are grouped into N shards, as Beam's own sinks do (a
  shuffle of every record)."""

  def __init__(self, sink: filebasedsink.FileBasedSink, where: str):
    super().__init__()
    self._sink = sink
    self._where = where

  def expand(self, inputs):
    sink, where = self._sink, self._where
    pipeline = inputs[0].pipeline
    once = pipeline | 'Once' >> beam.Create([None])
    init = beam.pvalue.AsSingleton(
        once | 'Initialize' >> beam.Map(lambda _: sink.initialize_write()))
    count = sink.num_shards
    if count:
      keyed = [pcoll | f'Key{i}' >> beam.ParDo(_RoundRobin(count))
               for i, pcoll in enumerate(inputs)]
      results = (keyed
                 | 'AllKeyed' >> beam.Flatten()
                 | 'GroupShards' >> beam.GroupByKey()
                 | 'WriteKeyed' >> beam.Map(_write_shard, sink, init, where))
    else:
      results = ([pcoll | f'WriteBundles{i}' >> beam.ParDo(
          _WriteBundle(sink, where), init) for i, pcoll in enumerate(inputs)]
                 | 'AllResults' >> beam.Flatten())
    listed = beam.pvalue.AsList(results)
    return once | 'Finalize' >> beam.FlatMap(_finalize, sink, init, listed,
                                            count or 1, where)
