"""Output backends, one module each behind base.Backend, chosen once here.

URIs with a scheme name their backend (bq://, postgresql://); anything else
is a file prefix (local or gs://) in a file format: TFRecord by default for
embeddings and JSON lines for dead letters, or as --output_format /
--dead_letter_format say.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

from transforms import records
from transforms.backends.base import Backend, WriteSettings
from transforms.backends.bigquery import BigQueryBackend
from transforms.backends.jsonl import JsonlBackend
from transforms.backends.parquet import ParquetBackend
from transforms.backends.postgres import PostgresBackend
from transforms.backends.tfrecord import TFRecordBackend
# What --output_format and --dead_letter_format take besides 'auto'.
from transforms.choices import DEAD_LETTER_FORMATS, OUTPUT_FORMATS

_TABLES = (BigQueryBackend, PostgresBackend)
_FILES = {b.format: b for b in (TFRecordBackend, ParquetBackend,
                                JsonlBackend)}

__all__ = ['Backend', 'WriteSettings', 'OUTPUT_FORMATS',
           'DEAD_LETTER_FORMATS', 'output', 'dead_letters', 'existing',
           'Lookup', 'MissingParent', 'look_up']


def _backend(uri: str, fmt: str, record: records.Record,
             settings: WriteSettings) -> Backend:
  for table in _TABLES:
    if table.claims(uri):
      return table(uri, record, settings)
  return _FILES[fmt](uri, record, settings)


def output(uri: str, fmt: str = 'auto', *,
           record: records.Record = records.EMBEDDINGS,
           settings: WriteSettings = WriteSettings()) -> Backend:
  """The backend for --output and --output_format."""
  if fmt not in ('auto', *OUTPUT_FORMATS):
    raise ValueError(f'--output_format must be auto or one of '
                     f'{OUTPUT_FORMATS}, got {fmt!r}')
  return _backend(uri, 'tfrecord' if fmt == 'auto' else fmt, record,
                  settings)


def dead_letters(out: Backend, uri: Optional[str] = None, fmt: str = 'auto',
                 *, settings: WriteSettings = WriteSettings()) -> Backend:
  """The dead letters' backend: --dead_letter (or the output's default
  location) in --dead_letter_format (or the output's default format)."""
  if fmt not in ('auto', *DEAD_LETTER_FORMATS):
    raise ValueError(f'--dead_letter_format must be auto or one of '
                     f'{DEAD_LETTER_FORMATS}, got {fmt!r}')
  default_uri, default_fmt = out.dead_letter_location()
  if default_fmt not in _FILES:
    default_fmt = 'jsonl'  # a table output's dead letters given as files
  # --num_shards is the embeddings' count; the runner shards dead letters.
  return _backend(uri or default_uri, default_fmt if fmt == 'auto' else fmt,
                  records.DEAD_LETTERS,
                  dataclasses.replace(settings, num_shards=0))


def _named(uri: str, fmt: str, record: records.Record) -> Optional[Backend]:
  """The backend a location and format name by themselves: a table's, or
  a file prefix's in a given format; None for a prefix in 'auto' format
  (the format of the shards found there)."""
  for table in _TABLES:
    if table.claims(uri):
      return table(uri, record)
  return None if fmt == 'auto' else _backend(uri, fmt, record,
                                             WriteSettings())


def existing(uri: str, fmt: str = 'auto', *,
             record: records.Record = records.EMBEDDINGS,
             formats: tuple = OUTPUT_FORMATS) -> Backend:
  """The backend of an output that exists (--previous, pipeline.read): a
  file prefix's format is the one of `formats` whose shards are there."""
  named = _named(uri, fmt, record)
  if named:
    return named
  candidates = [_FILES[name](uri, record) for name in formats]
  for backend in candidates:
    if backend.exists():
      return backend
  raise ValueError(f'{uri} is not an output of this job: it matches no '
                   f'{" or ".join(b.shown() for b in candidates)}')


class MissingParent(ValueError):
  """No output at a location whose folder or bucket, dataset, or
  database schema is missing too: a mistyped location, not a first
  run."""


class Lookup(NamedTuple):
  """An earlier output looked for where a first run may find none yet."""
  # The output there, in the format found; None: no output there yet.
  found: Optional[Backend]
  # The backend it was looked for as (a prefix in 'auto' format: in the
  # first of the formats).
  place: Backend
  # The location as messages show it (a table's without secrets).
  shown: str


def look_up(uri: str, fmt: str = 'auto', *,
            record: records.Record = records.EMBEDDINGS,
            formats: tuple = OUTPUT_FORMATS) -> Lookup:
  """An output that may not exist yet: no output at `uri` is a Lookup
  without `found` where the place that holds it (a folder or bucket, a
  dataset, a database and schema) exists; where that place is missing it
  is MissingParent, naming what is missing (a mistyped location is not a
  first run)."""
  named = _named(uri, fmt, record)
  candidates = [named] if named else [_FILES[name](uri, record)
                                      for name in formats]
  shown = named.shown() if named else uri
  missing = candidates[0].missing_parent()
  if missing:
    raise MissingParent(f'{shown}: {missing}')
  found = next((b for b in candidates if b.exists()), None)
  return Lookup(found=found, place=found or candidates[0], shown=shown)
