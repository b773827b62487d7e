"""Input sources, one module each behind base.Source, chosen once here.

An --input with a scheme names its source (bq://); --input_query is a
BigQuery query; anything else is a file pattern (local or gs://) in the
format --input_format says, or, by default, the one its suffix says
(after a compression suffix, transforms/compressed.py).
"""

from __future__ import annotations

import os
from typing import Optional

from transforms import compressed
from transforms.sources.base import Fields, Source
from transforms.sources.bigquery import BigQuerySource
from transforms.sources.csv import CsvSource
from transforms.sources.jsonl import JsonlSource
from transforms.sources.parquet import ParquetSource
from transforms.sources.text import TextSource
from transforms.sources.tfrecord import TFRecordSource

_SCHEMES = (BigQuerySource,)
_FILES = {s.format: s for s in (TextSource, JsonlSource, CsvSource,
                                ParquetSource, TFRecordSource)}
# What --input_format takes besides 'auto'.
FORMATS = tuple(_FILES)
_BY_FORMAT = {s.format: s for s in (*_SCHEMES, *_FILES.values())}
_SUFFIXES = {suffix: s.format for s in _FILES.values()
             for suffix in s.suffixes}
_ARCHIVES = ('.zip', '.tar', '.tgz', '.7z')

__all__ = ['Fields', 'Source', 'FORMATS', 'check_compression',
           'detect_format', 'source_for']


def _uncompressed_name(path: str) -> str:
  """A file's name, lower case, without its compression suffix."""
  name = path.lower()
  if compressed.is_compressed(name):
    name = os.path.splitext(name)[0]
  return name


def check_compression(path: str) -> None:
  """Archives are not compressed files: Beam reads no .zip (or .tar), and
  would take its bytes for text."""
  name = _uncompressed_name(path)
  for archive in _ARCHIVES:
    if name.endswith(archive):
      raise ValueError(
          f'{path}: {archive} archives are not read; extract the files, or '
          'compress each one with gzip, bzip2, xz or zstd (.gz, .bz2, .xz, '
          '.zst)')


def detect_format(pattern: str, declared: str = 'auto') -> str:
  """The format of --input (and --input_format): a source's scheme, the
  declared format, or the one the pattern's suffix says."""
  for source in _SCHEMES:
    if source.claims(pattern):
      source.check(pattern)
      return source.format
  if declared != 'auto':
    if declared not in FORMATS:
      raise ValueError(f'--input_format must be auto or one of {FORMATS}, '
                       f'got {declared!r}')
    return declared
  check_compression(pattern)
  ext = os.path.splitext(_uncompressed_name(pattern))[1]
  if ext not in _SUFFIXES:
    raise ValueError(
        f'Cannot tell the format of {pattern!r} from its extension; pass '
        f'--input_format ({", ".join(FORMATS)})')
  return _SUFFIXES[ext]


def source_for(pattern: Optional[str], input_format: str = 'auto',
               fields: Fields = Fields(), query: Optional[str] = None,
               counted: bool = True, skip=()) -> Source:
  """The source of --input (or --input_query) in --input_format."""
  if bool(pattern) == bool(query):
    raise ValueError('give exactly one of --input and --input_query')
  fmt = BigQuerySource.format if query else detect_format(pattern,
                                                          input_format)
  return _BY_FORMAT[fmt](pattern, fields, counted=counted, skip=skip,
                         query=query)
