"""The interface every output backend implements.

A backend is one place records go: a file prefix in one format, a BigQuery
table or a PostgreSQL table. It is chosen once (transforms/backends/
__init__.py) from the URI and the format, and then answers everything the
job asks of an output: validation at launch, the Beam transforms that write
and read records, the default dead-letter location, and reading the whole
output back outside Beam (pipeline.read).
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import logging
from typing import Callable, ClassVar, NamedTuple, Optional, Sequence

import apache_beam as beam

from transforms import records as records_lib


class OutputError(RuntimeError):
  """A write to an output failed: the message names what was written, where
  (the location as the summary shows it) and the cause, and is what the
  run's one error line says (pipeline/console.py)."""


@dataclasses.dataclass(frozen=True)
class WriteSettings:
  """The flags that shape writes; each backend uses those that concern it."""
  started: datetime.datetime = dataclasses.field(
      default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))
  num_shards: int = 0
  bq_method: str = 'FILE_LOADS'
  bq_disposition: str = 'WRITE_TRUNCATE'
  temp_location: Optional[str] = None
  pg_index: Optional[str] = None
  # Launch checks may create and remove a probe file (not on dry runs,
  # which write nothing).
  probe: bool = True


class Backend(abc.ABC):
  """One output location for records of one layout."""

  format: ClassVar[str]
  # True where a record's id is a primary key: documents that share an id
  # cannot all be kept (see pipeline/options.py, --on_duplicate_id).
  keyed_by_id: ClassVar[bool] = False

  def __init__(self, uri: str, record: records_lib.Record,
               settings: WriteSettings = WriteSettings()):
    self.uri = uri
    self.record = record
    self.settings = settings

  @classmethod
  def claims(cls, uri: str) -> bool:
    """Whether a URI names this kind of location whatever the format."""
    return False

  def shown(self) -> str:
    """The location as logs and the summary show it (no secrets)."""
    return self.uri

  def check(self) -> None:
    """Launch-time validation of a location to write: raises ValueError
    with a message for a person. A table's columns are compared with the
    record layout (compare_columns): nullable fields it lacks are added
    (not on dry runs, settings.probe False), a column of another type is
    refused, and a column the job does not write gets NULL in every row a
    full run writes."""

  def check_readable(self) -> None:
    """That an earlier run's output is here (for --previous), with the
    fields this job reads. Not called for a --previous that is the output
    itself and takes the run's changes (takes_changes): check() and
    check_previous() check that table."""

  @abc.abstractmethod
  def exists(self) -> bool:
    """Whether an output is here (a file prefix's shards, a table)."""

  @abc.abstractmethod
  def missing_parent(self) -> Optional[str]:
    """What is missing of the place that holds this output (a file
    prefix's folder or bucket, a table's dataset, or its database and
    schema), in words ('folder out/x does not exist'); None when it is
    there. Where no output is yet, this tells a first run (the place is
    there) from a mistyped location, which must not quietly become a full
    run. Other errors (no connection, no permission) raise ValueError or
    RuntimeError."""

  @abc.abstractmethod
  def dead_letter_location(self) -> tuple[str, str]:
    """(URI, format) of the dead letters when --dead_letter is not given."""

  @abc.abstractmethod
  def write(self) -> beam.PTransform:
    """Record dicts -> written (a PCollection the caller may ignore)."""

  def takes_changes(self, previous: Optional['Backend']) -> bool:
    """Whether a run whose --previous is `previous` writes only its changes
    here (upserts and deletes in place) rather than the whole output. Such
    a run never reads the unchanged records' vectors."""
    del previous
    return False

  def check_previous(self, previous: 'Backend') -> None:
    """Launch-time validation of writing here with that --previous, made
    before check() (which may change the output: a table's missing
    columns are added there), so that a run refused here changes
    nothing."""

  def write_changes(self, previous: Optional['Backend'],
                    carried: Optional[beam.PTransform]) -> beam.PTransform:
    """{'records', 'removed'?} -> written. An output rewritten whole takes
    the new records and the carried ones (`carried`: PBegin -> the previous
    records this run keeps, streamed); removed ids are gone because they
    are not carried."""
    del previous
    return _WriteAll(self.write(), carried)

  @abc.abstractmethod
  def read(self, names=None) -> beam.PTransform:
    """PBegin -> record dicts (only the fields in `names`, if given)."""

  def read_carried(self, into: 'Backend') -> beam.PTransform:
    """PBegin -> (id, record) for copying this output's records into
    `into`: record dicts in general; a backend whose records `into` can
    take as they are gives them encoded (records.Encoded)."""
    del into
    return self.read(self.record.names) | 'ById' >> beam.Map(
        lambda r: (r['id'], r))

  def load(self):
    """The whole output as a pyarrow Table, outside Beam: every record
    scanned, with the metadata fields found in them."""
    rows = list(self.scan())
    return records_lib.to_arrow(records_lib.layout_of(self.record, rows),
                                rows)

  def temporaries(self) -> list:
    """Temporary files or folders this output's writes leave while a run
    is under way (and after a run that failed or was stopped), as paths
    that remove_temporaries deletes. pipeline/cleanup.py removes a failed
    or stopped run's own, and every stale one after a run that succeeds.
    None for outputs that leave none."""
    return []

  def remove_temporaries(self, paths) -> None:
    del paths

  def recover(self) -> None:
    """At launch, before anything reads this output: finishes what a run
    killed while it put its records in place left (file outputs: see
    files.commit). Tables write in transactions or jobs, and need none."""

  def state(self):
    """Something equal before and after a run that did not change this
    output (for the line an interrupted run prints), or None where that
    cannot be told cheaply."""
    return None

  @abc.abstractmethod
  def lease_store(self):
    """Where this output's lease is kept (transforms/leases): a run that
    writes here holds it, so that two runs never write it at once."""

  @abc.abstractmethod
  def notes(self):
    """Where a run notes how this output's vectors are made
    (transforms/provenance.py), for embedding queries to match them."""

  @abc.abstractmethod
  def scan(self, names=None):
    """Every record as a dict (only the fields in `names`, if given),
    streamed outside Beam: memory does not grow with the output (the run
    report reads a bounded sample this way)."""


class Columns(NamedTuple):
  """How a table's columns meet the record layout a job writes."""
  # Fields the table lacks that can be added (nullable ones: metadata
  # fields above all), as (name, type the job writes).
  add: tuple
  # Required fields the table lacks: not an output of this job.
  missing: tuple
  # Columns the job does not write (metadata fields of an earlier run).
  extra: tuple
  # (name, type found, type the job writes).
  mistyped: tuple


def compare_columns(layout: records_lib.Record, found: dict,
                    expected: dict) -> Columns:
  """`found`: column -> type as the database names it; `expected`: field
  -> the type this job writes, in the same naming. Pure, so that both
  table backends decide alike."""
  fields = layout.fields
  return Columns(
      add=tuple((f.name, expected[f.name]) for f in fields
                if f.name not in found and not f.required),
      missing=tuple(f.name for f in fields
                    if f.name not in found and f.required),
      extra=tuple(n for n in found if n not in expected),
      mistyped=tuple((n, found[n], expected[n]) for n in found
                     if n in expected and found[n] != expected[n]))


def refuse_columns(shown: str, columns: Columns, alter: Callable) -> None:
  """Raises ValueError for a table this job cannot write as it is: a
  column of another type (`alter(name, type)`: the statement that fixes
  it), or a required field missing."""
  for name, found, want in columns.mistyped:
    raise ValueError(
        f'{shown}: column {name} is {found}, but this job writes {want} '
        f'there: {alter(name, want)}, or write to another table')
  if columns.missing:
    raise ValueError(f'{shown} is not an output of this job: it has no '
                     f'column {", ".join(columns.missing)}; write to another '
                     'table')


def log_columns(shown: str, columns: Columns, probe: bool) -> None:
  """One line for the columns a full run writes NULL into, and, on a dry
  run (`probe` False), one for those a run would add."""
  if columns.extra:
    logging.warning(
        '%s has column(s) %s that this job does not write (not in '
        '--metadata_fields): this run writes NULL there on every row',
        shown, ', '.join(columns.extra))
  if columns.add and not probe:
    logging.warning('dry run: a run would add column(s) %s to %s', ', '.join(
        f'{n} ({t})' for n, t in columns.add), shown)


def refuse_stale(shown: str, extra: Sequence[str], drop: Callable) -> None:
  """A nightly run that writes only its changes into a table with columns
  it does not write would leave the unchanged rows' old values there."""
  if extra:
    names = ', '.join(extra)
    raise ValueError(
        f'--previous is the --output table {shown}, whose column(s) '
        f'{names} this job does not write: a nightly run would leave the '
        f'rows it does not change with old values there; pass '
        f'--metadata_fields with {names}, drop the column '
        f'({"; ".join(drop(n) for n in extra)}), or run '
        'a full run without --previous')


def refuse_previous(shown: str, columns: Columns, alter: Callable) -> None:
  """A --previous table must have every field this job's records have:
  the run reads them (--metadata_fields included)."""
  if columns.missing:
    raise ValueError(f'--previous {shown} is not an output of this job (no '
                     f'column {", ".join(columns.missing)})')
  if columns.add:
    names = ', '.join(n for n, _ in columns.add)
    raise ValueError(
        f'--previous {shown} has no column {names}, which this job reads '
        f'(--metadata_fields): '
        f'add it ({"; ".join(alter(n, t) for n, t in columns.add)}), or '
        f'leave {names} out of --metadata_fields')


def with_carried(changes: dict, carried: Optional[beam.PTransform]):
  """The new records, and the carried ones when there are any."""
  records = changes['records']
  if carried is None:
    return records
  return ([records, records.pipeline | 'Carried' >> carried]
          | 'WithCarried' >> beam.Flatten())


class _WriteAll(beam.PTransform):

  def __init__(self, write: beam.PTransform,
               carried: Optional[beam.PTransform]):
    super().__init__()
    self._write = write
    self._carried = carried

  def expand(self, changes):
    return with_carried(changes, self._carried) | self._write
