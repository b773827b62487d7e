"""Output backends, one module each behind base.Backend, chosen once here.

URIs with a scheme name their backend (bq://, postgresql://); anything else
is a file prefix (local or gs://) in a file format: TFRecord by default for
embeddings and JSON lines for dead letters, or as --output_format /
--dead_letter_format say.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from transforms import records
from transforms.backends import files
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
           'DEAD_LETTER_FORMATS', 'output', 'dead_letters', 'existing']


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


def existing(uri: str, fmt: str = 'auto', *,
             record: records.Record = records.EMBEDDINGS,
             formats: tuple = OUTPUT_FORMATS) -> Backend:
  """The backend of an output that exists (--previous, pipeline.read): a
  file prefix's format is the one of `formats` whose shards are there."""
  for table in _TABLES:
    if table.claims(uri):
      return table(uri, record)
  if fmt != 'auto':
    return _backend(uri, fmt, record, WriteSettings())
  for name in formats:
    backend = _FILES[name](uri, record)
    if files.shards(uri, backend.suffix):
      return backend
  found = ' or '.join(f'{uri}-*{_FILES[n].suffix}' for n in formats)
  raise ValueError(f'{uri} is not an output of this job: it matches no '
                   f'{found}')
