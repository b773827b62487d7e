"""CSV files with a header row naming the fields. A file is parsed whole
(quoted fields may span lines, so CSV is not split by byte ranges);
locations are line numbers."""

from __future__ import annotations

import csv
import io
import sys
from typing import Iterable

import apache_beam as beam
from apache_beam.io import fileio

from transforms import compressed, encodings
from transforms.elements import MAX_RAW_CHARS
from transforms.sources import base, lines


def parse_csv_file(path: str, stream: io.BufferedIOBase,
                   fields: base.Fields) -> Iterable[base.Parsed]:
  """The rows of a CSV file (_csv_rows), one behind: where a compressed
  file is cut short, its last row is the cut one unless the cut fell
  between lines, and a truncated_file dead letter takes its place (or
  follows it)."""
  at = [1]
  held = None
  for parsed in _csv_rows(path, stream, fields, at):
    if held is not None:
      yield held[0]
    held = parsed, at[0]
  try:
    compressed.check_end(stream)
  except compressed.Truncated as e:
    line = lines.truncated(e)
    where = at[0]
    if held is not None and not compressed.ends_a_line(stream):
      where, held = held[1], None
    if held is not None:
      yield held[0]
    yield base.dead(f'{path}:{where}', line.raw, line.error_type,
                    line.message)
    return
  if held is not None:
    yield held[0]


def _csv_rows(path: str, stream: io.BufferedIOBase, fields: base.Fields,
              at: list) -> Iterable[base.Parsed]:
  """Parses a whole CSV file. The header row names the fields.

  A byte-order mark at the start of the (decompressed) stream gives the
  encoding (transforms/encodings.py) and is dropped: spreadsheet exports
  write one (Excel's "CSV UTF-8", or UTF-16 "Unicode text"), and read as
  text it would rename the first column (`id` would become `\\ufeffid`,
  and every row would silently get a derived id). A U+FEFF anywhere later
  is content. Locations are line numbers, which no mark changes. A file
  that looks like UTF-16 or UTF-32 without a mark gives one dead letter per
  line after the first, saying so.
  """
  stream = io.BufferedReader(_RawStream(stream))
  head = stream.peek(encodings.HEAD_BYTES)[:encodings.HEAD_BYTES]
  encoding = encodings.detect(head)
  likely = encoding.width == 1 and encodings.unmarked(head)
  if likely:
    yield from _unmarked_rows(path, stream,
                              encodings.unmarked_message(path, likely))
    return
  stream.read(len(encoding.bom))
  text = io.TextIOWrapper(stream, encoding=encoding.codec,
                          errors='surrogateescape', newline='')
  limit = fields.max_document_bytes
  # The csv module's own limit (128 KiB per field by default) would make a
  # long text malformed_csv: a field as long as a document may be.
  csv.field_size_limit(max(limit or sys.maxsize, _CSV_FIELD_LIMIT))
  skipped: list = []
  reader = csv.reader(_bounded_lines(text, limit, skipped))
  try:
    header = next(reader)
  except StopIteration:
    return
  except csv.Error as e:
    yield base.dead(f'{path}:1', '', 'malformed_csv', f'header: {e}')
    return
  while True:
    at[0] = reader.line_num + 1
    source = f'{path}:{at[0]}'
    try:
      row = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      yield base.dead(source, '', 'malformed_csv', str(e))
      continue
    if skipped:
      yield base.too_large(source, skipped[0][0],
                           sum(size for _, size in skipped), limit)
      skipped.clear()
      continue
    yield _row(header, row, source, encoding, fields)


# csv.field_size_limit() as the csv module starts.
_CSV_FIELD_LIMIT = csv.field_size_limit()


def _bounded_lines(text: io.TextIOBase, max_bytes: int,
                   skipped: list) -> Iterable[str]:
  """The lines of text for csv.reader. A line of more than max_bytes
  characters (so more bytes; 0: no limit) is read past in blocks, never
  held, and given as an empty line; (its start, its size in bytes) goes to
  `skipped`, so that its row becomes a document_too_large dead letter. A
  shorter line over the limit in bytes is caught with its row
  (base.record_to_document)."""
  while True:
    line = text.readline(max_bytes + 2) if max_bytes else text.readline()
    if not line:
      return
    if not max_bytes or len(line.rstrip('\r\n')) <= max_bytes:
      yield line
      continue
    head, size = line[:MAX_RAW_CHARS + 1], base.utf8_size(line)
    while not line.endswith(('\n', '\r')):
      line = text.readline(1 << 20)
      if not line:
        break
      size += base.utf8_size(line)
    skipped.append((head, size - (len(line) - len(line.rstrip('\r\n')))))
    yield '\n'


def _row(header: list, row: list, source: str, encoding,
         fields: base.Fields) -> base.Parsed:
  raw = ','.join(row)
  if any(_has_surrogates(v) for v in row):
    return base.dead(source, raw.encode('utf-8', 'surrogateescape'),
                     encoding.invalid, f'row is not valid {encoding.name}')
  if len(row) != len(header):
    return base.dead(source, raw, 'malformed_csv',
                     f'expected {len(header)} fields, got {len(row)}')
  return base.record_to_document(dict(zip(header, row)), source, fields,
                                 raw=raw)


def _unmarked_rows(path: str, stream, message: str) -> Iterable[base.Parsed]:
  for number, line in enumerate(stream, 1):
    if number > 1:
      yield base.dead(f'{path}:{number}', lines.strip_newline(line),
                      'unmarked_encoding', message)


class _RawStream(io.RawIOBase):
  """Any binary stream with read() as a raw io stream, so that a
  BufferedReader over it gives parse_csv_file peek() (the encoding is read
  from the first bytes) and TextIOWrapper can wrap it."""

  def __init__(self, stream):
    super().__init__()
    self._stream = stream

  def readable(self) -> bool:
    return True

  def readinto(self, buffer) -> int:
    data = self._stream.read(len(buffer))
    buffer[:len(data)] = data
    return len(data)

  def close(self) -> None:
    if not self.closed:
      self._stream.close()
    super().close()


def _has_surrogates(value: str) -> bool:
  return any('\udc80' <= c <= '\udcff' for c in value)


def _parse_csv(readable: fileio.ReadableFile,
               fields: base.Fields) -> Iterable[base.Parsed]:
  path = readable.metadata.path
  with compressed.open_file(path) as stream:
    yield from parse_csv_file(path, stream, fields)


def _parse_csv_counted(readable: fileio.ReadableFile,
                       fields: base.Fields) -> Iterable[base.Parsed]:
  yield from _parse_csv(readable, fields)
  base.bytes_counter.inc(readable.metadata.size_in_bytes)


class CsvSource(base.Source):
  format = 'csv'
  suffixes = ('.csv',)

  def expand(self, pbegin):
    return (pbegin
            | 'Match' >> fileio.MatchFiles(self._pattern)
            | 'NotOwn' >> beam.Filter(lambda m, skip: m.path not in skip,
                                      self._skip)
            | 'Open' >> fileio.ReadMatches()
            | 'ParseCsv' >> beam.FlatMap(
                _parse_csv_counted if self._counted else _parse_csv,
                self._fields))
