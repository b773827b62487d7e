"""Reading corpora into Documents; unreadable records become DeadLetters.

Every record read leaves this step as exactly one Document or one DeadLetter
(on the DEAD_LETTER output), so the run summary can reconcile: read =
embedded + reused + dead-lettered.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

import apache_beam as beam
from apache_beam.io import filebasedsource
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import bigquery, compressed, encodings
from transforms.elements import (DEAD_LETTER, DeadLetter, Document, Results,
                                 derived_id, route)

FORMATS = ('text', 'jsonl', 'csv', 'parquet', 'tfrecord')
_EXTENSIONS = {
    '.txt': 'text', '.text': 'text', '.jsonl': 'jsonl', '.ndjson': 'jsonl',
    '.json': 'jsonl', '.csv': 'csv', '.parquet': 'parquet',
    '.tfrecord': 'tfrecord', '.tfrecords': 'tfrecord',
}
_NAMESPACE = 'read'

Parsed = Union[Document, DeadLetter]


@dataclass(frozen=True)
class Fields:
  id_field: str = 'id'
  text_field: str = 'text'
  text_b_field: Optional[str] = None
  metadata_fields: tuple = ()


def check_compression(path: str) -> None:
  """Archives are not compressed files: Beam reads no .zip (or .tar), and
  would take its bytes for text."""
  name = path.lower()
  if compressed.is_compressed(name):
    name = os.path.splitext(name)[0]
  for archive in ('.zip', '.tar', '.tgz', '.7z'):
    if name.endswith(archive):
      raise ValueError(
          f'{path}: {archive} archives are not read; extract the files, or '
          'compress each one with gzip, bzip2, xz or zstd (.gz, .bz2, .xz, '
          '.zst)')


def detect_format(pattern: str, declared: str = 'auto') -> str:
  if bigquery.is_table(pattern):
    bigquery.table_spec(pattern)  # a clear error for a malformed name
    return 'bigquery'
  if declared != 'auto':
    if declared not in FORMATS:
      raise ValueError(f'--input_format must be auto or one of {FORMATS}, '
                       f'got {declared!r}')
    return declared
  check_compression(pattern)
  name = pattern.lower()
  if compressed.is_compressed(name):
    name = os.path.splitext(name)[0]
  ext = os.path.splitext(name)[1]
  if ext not in _EXTENSIONS:
    raise ValueError(
        f'Cannot tell the format of {pattern!r} from its extension; pass '
        f'--input_format ({", ".join(FORMATS)})')
  return _EXTENSIONS[ext]


def _dead(source: str, raw: Any, error: str, message: str) -> DeadLetter:
  if isinstance(raw, bytes):
    raw = raw.decode('utf-8', errors='backslashreplace')
  elif not isinstance(raw, str):
    raw = repr(raw)
  return DeadLetter(source=source, raw=raw, error_type=error,
                    message=message, stage='read')


def _text_value(value: Any, field: str) -> tuple[Optional[str], str]:
  """(text, '') or (None, reason)."""
  if value is None:
    return None, f'field {field!r} is missing or null'
  if isinstance(value, bytes):
    try:
      value = value.decode('utf-8')
    except UnicodeDecodeError as e:
      return None, f'field {field!r} is not valid UTF-8: {e}'
  if not isinstance(value, str):
    return None, (f'field {field!r} must be a string, got '
                  f'{type(value).__name__}')
  return value, ''


def record_to_document(record: dict, source: str, fields: Fields,
                       raw: Any = None) -> Parsed:
  """Turns one structured record (JSON object, CSV row, Parquet row,
  tf.Example) into a Document, or a DeadLetter saying what is wrong."""
  raw = record if raw is None else raw
  text, why = _text_value(record.get(fields.text_field), fields.text_field)
  if text is None:
    return _dead(source, raw, 'missing_text', why)
  if not text.strip():
    return _dead(source, raw, 'empty_text',
                 f'field {fields.text_field!r} is empty or whitespace')
  text_b = None
  if fields.text_b_field:
    text_b, why = _text_value(record.get(fields.text_b_field),
                              fields.text_b_field)
    if text_b is None:
      return _dead(source, raw, 'missing_text', why)
  doc_id = record.get(fields.id_field)
  if isinstance(doc_id, bytes):
    doc_id = doc_id.decode('utf-8', errors='backslashreplace')
  if isinstance(doc_id, (str, int)) and not isinstance(doc_id, bool):
    doc_id = str(doc_id)
  elif doc_id is not None:
    return _dead(source, raw, 'bad_id',
                 f'field {fields.id_field!r} must be a string or integer, '
                 f'got {type(doc_id).__name__}')
  metadata = tuple((name, metadata_value(record.get(name)))
                   for name in fields.metadata_fields)
  unfit = unfit_text(
      (f'field {name!r}', value) for name, value in (
          (fields.text_field, text), (fields.text_b_field, text_b),
          (fields.id_field, doc_id), *metadata))
  if unfit:
    return _dead(source, raw, *unfit)
  return Document(id=doc_id or derived_id(text, text_b), text=text,
                  text_b=text_b, source=source, metadata=metadata)


def unfit_text(named_values) -> Optional[tuple[str, str]]:
  """(error_type, message) for the first (what, value) whose text no
  output can store or the encoder take, else None: the read stage's rule,
  so that every later stage gets only text it can handle.
  - U+0000 (nul_character): binary data or another encoding; PostgreSQL
    text cannot hold it.
  - A lone surrogate, U+D800 to U+DFFF (lone_surrogate): JSON's "\\ud800"
    escape gives one; it has no UTF-8 form, so neither the tokenizer nor
    any output could take it.
  Other control characters are text: the tokenizers drop them, every
  output stores them."""
  for what, value in named_values:
    if not isinstance(value, str) or not value:
      continue
    if '\0' in value:
      return 'nul_character', _nul_message(what, value)
    surrogate = _SURROGATE.search(value)
    if surrogate:
      return 'lone_surrogate', (
          f'{what} holds a lone surrogate '
          f'(U+{ord(surrogate.group()):04X}) at character '
          f'{surrogate.start()}: half of a UTF-16 pair, which has no UTF-8 '
          'form')
  return None


_SURROGATE = re.compile('[\ud800-\udfff]')


def metadata_value(value: Any) -> Optional[str]:
  """Pass-through values become strings (one column type whatever the
  source format): text as is, anything else as JSON."""
  if value is None or isinstance(value, str):
    return value
  if isinstance(value, bytes):
    return value.decode('utf-8', errors='backslashreplace')
  return json.dumps(value, ensure_ascii=False, default=str)


def _line_text(line, source: str) -> Union[str, DeadLetter]:
  """A line's text, or the dead letter of a line that is not text: a
  BadLine from the source (wrong or unmarked encoding), or invalid UTF-8."""
  if isinstance(line, encodings.BadLine):
    return _dead(source, line.raw, line.error_type, line.message)
  try:
    return line.decode('utf-8')
  except UnicodeDecodeError as e:
    return _dead(source, line, 'invalid_utf8', str(e))


def parse_text_line(line, source: str) -> Parsed:
  text = _line_text(line, source)
  if isinstance(text, DeadLetter):
    return text
  if not text.strip():
    return _dead(source, text, 'empty_text', 'line is empty or whitespace')
  unfit = unfit_text((('the line', text),))
  if unfit:
    return _dead(source, text, *unfit)
  return Document(id=derived_id(text), text=text, text_b=None, source=source)


def parse_json_line(line, source: str, fields: Fields) -> Parsed:
  text = _line_text(line, source)
  if isinstance(text, DeadLetter):
    return text
  try:
    record = json.loads(text)
  except ValueError as e:
    return _dead(source, text, 'malformed_json', str(e))
  if not isinstance(record, dict):
    return _dead(source, text, 'malformed_json',
                 f'expected a JSON object, got {type(record).__name__}')
  return record_to_document(record, source, fields, raw=text)


def _nul_message(what: str, text: str) -> str:
  return (f'{what} holds a NUL character (U+0000) at character '
          f'{text.index(chr(0))}: binary data, or text in another encoding')


def parse_csv_file(path: str, stream: io.BufferedIOBase,
                   fields: Fields) -> Iterable[Parsed]:
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
    line = truncated(e)
    where = at[0]
    if held is not None and not compressed.ends_a_line(stream):
      where, held = held[1], None
    if held is not None:
      yield held[0]
    yield _dead(f'{path}:{where}', line.raw, line.error_type, line.message)
    return
  if held is not None:
    yield held[0]


def _csv_rows(path: str, stream: io.BufferedIOBase, fields: Fields,
              at: list) -> Iterable[Parsed]:
  """Parses a whole CSV file (quoted fields may span lines, so CSV is not
  split by byte ranges). The header row names the fields.

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
  reader = csv.reader(text)
  try:
    header = next(reader)
  except StopIteration:
    return
  except csv.Error as e:
    yield _dead(f'{path}:1', '', 'malformed_csv', f'header: {e}')
    return
  while True:
    at[0] = reader.line_num + 1
    source = f'{path}:{at[0]}'
    try:
      row = next(reader)
    except StopIteration:
      return
    except csv.Error as e:
      yield _dead(source, '', 'malformed_csv', str(e))
      continue
    raw = ','.join(row)
    if any(_has_surrogates(v) for v in row):
      yield _dead(source, raw.encode('utf-8', 'surrogateescape'),
                  encoding.invalid,
                  f'row is not valid {encoding.name}')
      continue
    if len(row) != len(header):
      yield _dead(source, raw, 'malformed_csv',
                  f'expected {len(header)} fields, got {len(row)}')
      continue
    yield record_to_document(dict(zip(header, row)), source, fields, raw=raw)


def _unmarked_rows(path: str, stream, message: str) -> Iterable[Parsed]:
  for number, line in enumerate(stream, 1):
    if number > 1:
      yield _dead(f'{path}:{number}', _strip_newline(line),
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


def record_batch_to_documents(batch, source: str,
                              fields: Fields) -> Iterable[Parsed]:
  """tfx-bsl decodes tf.Examples into Arrow record batches whose features
  are lists; a text feature must hold exactly one bytes value."""
  columns = {name: batch.column(name).to_pylist()
             for name in batch.schema.names}
  for i in range(batch.num_rows):
    record, problems = {}, []
    for name, values in columns.items():
      value = values[i]
      if value is None:
        continue
      if len(value) != 1:
        problems.append(f'feature {name!r} has {len(value)} values')
        continue
      record[name] = value[0]
    if problems:
      yield _dead(source, repr(record), 'bad_feature', '; '.join(problems))
      continue
    yield record_to_document(record, source, fields)


class LinesSource(filebasedsource.FileBasedSource):
  """Newline-delimited records as (path, byte offset, line bytes), or a
  encodings.BadLine in place of the bytes of a line that cannot be text.

  Beam's text source does not say where a line came from; the byte offset
  makes a dead letter findable in a corpus of any size. Uncompressed files
  split into ranges; a range owns every line that starts inside it.

  A byte-order mark at byte 0 of a file (transforms/encodings.py) is not
  part of the first line: editors and spreadsheet exports write one.
  - UTF-8 (EF BB BF): dropped only there, the start of the (decompressed)
    data, in whichever range owns offset 0; a U+FEFF anywhere else is
    content and stays. Offsets stay byte offsets into the (decompressed)
    file, so the first line's location is still 0 (its text begins after
    the mark, at 3). A file holding only a mark has no lines.
  - UTF-16 and UTF-32: lines are decoded and given as UTF-8, and offsets
    count UTF-8 bytes, so ids, hashes and locations equal those of the same
    file converted to UTF-8 (`iconv -f UTF-16 -t UTF-8`). Such a file is
    read whole by the range that owns offset 0 (an offset in UTF-8 needs
    every line before it); its other ranges give nothing.
  - No mark, but NULs between ASCII letters: every line is a BadLine
    saying which encoding the file likely is (never JSON errors, never
    embedded).
  """

  def __init__(self, pattern: str, counted: bool = True, skip=()):
    super().__init__(pattern)
    self._counted = counted
    self._skip = skip

  def read_records(self, file_name, offset_range_tracker):
    if file_name in self._skip:
      return
    at = [offset_range_tracker.start_position()]  # where the next line is
    try:
      yield from self._records(file_name, offset_range_tracker, at)
    except compressed.Truncated as e:
      yield file_name, at[0], truncated(e)

  def _records(self, file_name, offset_range_tracker, at):
    start = offset_range_tracker.start_position()
    with compressed.open_file(file_name) as f:
      head = f.read(encodings.HEAD_BYTES)
      encoding = encodings.detect(head)
      if encoding.width > 1:
        f.seek(len(encoding.bom))
        at[0] = 0
        if start == 0 and offset_range_tracker.try_claim(0):
          yield from self._wide_records(file_name, f, encoding, at)
        return
      likely = encodings.unmarked(head)
      bad = likely and encodings.unmarked_message(file_name, likely)
      f.seek(0)
      position = 0
      if start > 0:
        # The line that crosses `start` belongs to the previous range.
        f.seek(start - 1)
        position = start - 1 + len(f.readline())
      at[0] = position
      while offset_range_tracker.try_claim(position):
        line = f.readline()
        record = line
        if position == 0 and encoding.bom:
          record = line[len(encoding.bom):]
        if not record:  # end of file (or a file holding only a mark)
          compressed.check_end(f)
          return
        if not line.endswith(b'\n'):
          compressed.check_end(f)  # the last line: cut short, or whole?
        record = _strip_newline(record)
        if bad:
          record = encodings.BadLine(record, 'unmarked_encoding', bad)
        yield file_name, position, record
        if self._counted:
          _bytes_counter.inc(len(line))
        position += len(line)
        at[0] = position

  def _wide_records(self, file_name, f, encoding, at):
    """Every line of a UTF-16 or UTF-32 file (after its mark)."""
    if self._counted:
      _bytes_counter.inc(len(encoding.bom))
    for wide in encodings.wide_lines(f, encoding):
      yield file_name, at[0], wide.line
      if self._counted:
        _bytes_counter.inc(wide.raw_size)
      at[0] += wide.utf8_size
    compressed.check_end(f)


def truncated(error: 'compressed.Truncated') -> encodings.BadLine:
  """A truncated compressed file: one warning naming it, and one dead
  letter where the cut is, so the run's counts show it (the records before
  the cut are kept)."""
  logging.getLogger(__name__).warning('%s', error)
  _truncated_counter.inc()
  return encodings.BadLine(b'', 'truncated_file', str(error))


def _strip_newline(line: bytes) -> bytes:
  if line.endswith(b'\n'):
    line = line[:-1]
    if line.endswith(b'\r'):
      line = line[:-1]
  return line


def line_location(path: str, offset: int) -> str:
  return f'{path}@{offset}'


def _read_lines(pattern: str, counted: bool, skip):
  return beam.io.Read(LinesSource(pattern, counted, skip))


class ReadDocuments(beam.PTransform):
  """Reads a corpus into Results(Documents, (DeadLetters,)): files, a
  BigQuery table (bq://PROJECT.DATASET.TABLE) or a BigQuery query.

  counted=False reads the corpus again for a nightly run's second pass
  (transforms/incremental.py): the same documents, but no counters and no
  dead letters, which the first pass already gave. Files `in` skip (the
  job's own output, files.OwnFiles) are not read."""

  def __init__(self, pattern: Optional[str], input_format: str = 'auto',
               fields: Fields = Fields(), query: Optional[str] = None,
               counted: bool = True, skip=()):
    super().__init__()
    if bool(pattern) == bool(query):
      raise ValueError('give exactly one of --input and --input_query')
    self._pattern = pattern
    self._query = query
    self._format = 'bigquery' if query else detect_format(pattern,
                                                         input_format)
    self._fields = fields
    self._counted = counted
    self._skip = skip

  def expand(self, pbegin):
    fields, fmt = self._fields, self._format
    if fmt == 'bigquery':
      source = self._pattern or 'query'
      parsed = (pbegin
                | 'ReadBigQuery' >> beam.io.ReadFromBigQuery(
                    method=beam.io.ReadFromBigQuery.Method.DIRECT_READ,
                    **bigquery.read_args(self._pattern, self._query))
                | 'ParseRows' >> beam.Map(
                    lambda row: record_to_document(
                        bigquery.document_record(row), source, fields)))
    elif fmt == 'text':
      parsed = (pbegin | 'ReadLines' >> _read_lines(self._pattern, self._counted, self._skip)
                | 'ParseText' >> beam.MapTuple(
                    lambda path, at, line: parse_text_line(
                        line, line_location(path, at))))
    elif fmt == 'jsonl':
      parsed = (pbegin | 'ReadLines' >> _read_lines(self._pattern, self._counted, self._skip)
                | 'ParseJson' >> beam.MapTuple(
                    lambda path, at, line: parse_json_line(
                        line, line_location(path, at), fields)))
    elif fmt == 'csv':
      parsed = (pbegin | 'Match' >> fileio.MatchFiles(self._pattern)
                | 'NotOwn' >> beam.Filter(lambda m, skip: m.path not in skip,
                                          self._skip)
                | 'Open' >> fileio.ReadMatches()
                | 'ParseCsv' >> beam.FlatMap(
                    _parse_csv_counted if self._counted else _parse_csv,
                    fields))
    elif fmt == 'parquet':
      parsed = (pbegin | 'ParquetFiles' >> beam.Create([self._pattern])
                | 'Match' >> fileio.MatchAll()
                | 'NotOwn' >> beam.FlatMap(
                    lambda m, skip: [] if m.path in skip else [m.path],
                    self._skip)
                | 'ReadParquet' >> beam.io.ReadAllFromParquetBatched(
                    with_filename=True)
                | 'ParseParquet' >> beam.FlatMapTuple(
                    lambda path, table: _table_rows(table, path, fields)))
    else:
      parsed = (pbegin | 'ReadExamples' >> _tfxio_source(
                    _files_to_read(self._pattern, self._skip))
                | 'ParseExamples' >> beam.FlatMap(
                    record_batch_to_documents, self._pattern, fields))
    if not self._counted:
      return Results(parsed | 'Documents' >> beam.Filter(
          lambda e: not isinstance(e, DeadLetter)))
    out = parsed | 'CountRead' >> beam.Map(_count_read).with_outputs(
        DEAD_LETTER, main='documents')
    return Results(out.documents, (out[DEAD_LETTER],))


def _table_rows(table, source, fields) -> Iterable[Parsed]:
  wanted = (fields.id_field, fields.text_field, fields.text_b_field,
            *fields.metadata_fields)
  present = [c for c in dict.fromkeys(wanted) if c and c in table.column_names]
  for row in table.select(present).to_pylist():
    yield record_to_document(row, source, fields)


def _files_to_read(pattern: str, skip):
  """The pattern, or, where it matches files to skip, the others by name
  (for readers that take patterns, not a filter)."""
  if not skip:
    return pattern
  found = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
  kept = [path for path in found if path not in skip]
  return pattern if len(kept) == len(found) else kept


def _tfxio_source(pattern):
  """tfx-bsl's TFXIO reader: decodes TFRecords of tf.Example into Arrow
  record batches in C++, much faster than parsing protos in Python. No
  schema is given, so id features may be bytes or int64."""
  from tfx_bsl.public import tfxio  # pylint: disable=import-outside-toplevel
  return tfxio.TFExampleRecord(pattern).BeamSource()


_read_counter = Metrics.counter(_NAMESPACE, 'documents_read')
_truncated_counter = Metrics.counter(_NAMESPACE, 'files_truncated')
_bad_counter = Metrics.counter(_NAMESPACE, 'records_dead_lettered')
# Input bytes read so far (text and JSONL as each line is read, CSV as
# each file is done): with the input's size, progress estimates the time
# left (pipeline/progress.py).
_bytes_counter = Metrics.counter(_NAMESPACE, 'bytes_read')


def _parse_csv(readable: fileio.ReadableFile,
               fields: Fields) -> Iterable[Parsed]:
  path = readable.metadata.path
  with compressed.open_file(path) as stream:
    yield from parse_csv_file(path, stream, fields)


def _parse_csv_counted(readable: fileio.ReadableFile,
                       fields: Fields) -> Iterable[Parsed]:
  yield from _parse_csv(readable, fields)
  _bytes_counter.inc(readable.metadata.size_in_bytes)


def _count_read(element: Parsed):
  _read_counter.inc()
  if isinstance(element, DeadLetter):
    _bad_counter.inc()
  return route(element)
