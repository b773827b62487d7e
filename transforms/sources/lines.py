"""Newline-delimited files (plain text, JSON lines) read line by line,
with where each line is: the file and its byte offset.
"""

from __future__ import annotations

import logging
from typing import Union

import apache_beam as beam
from apache_beam.io import filebasedsource

from transforms import compressed, encodings, metrics
from transforms.elements import MAX_RAW_CHARS, DeadLetter
from transforms.sources import base

_truncated_counter = metrics.BEAM.counter(metrics.FILES_TRUNCATED)


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

  def __init__(self, pattern: str, counted: bool = True, skip=(),
               max_bytes: int = base.MAX_DOCUMENT_BYTES):
    super().__init__(pattern)
    self._counted = counted
    self._skip = skip
    self._max_bytes = max_bytes

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
        # The line that crosses `start` belongs to the previous range; read
        # past it (no further than this range's end, which it may cross).
        f.seek(start - 1)
        position = start - 1 + skip_line(
            f, offset_range_tracker.stop_position() - start + 1)
      at[0] = position
      while offset_range_tracker.try_claim(position):
        line, size = read_line(f, self._max_bytes)
        record = line
        if position == 0 and encoding.bom:
          record = line[len(encoding.bom):]
        if not record:  # end of file (or a file holding only a mark)
          compressed.check_end(f)
          return
        if not line.endswith(b'\n'):
          compressed.check_end(f)  # the last line: cut short, or whole?
        record = strip_newline(record)
        if size > len(line):
          record = encodings.BadLine(
              record, base.DOCUMENT_TOO_LARGE, base.too_large_message(
                  size - (len(line) - len(record)), self._max_bytes))
        elif bad:
          record = encodings.BadLine(record, 'unmarked_encoding', bad)
        yield file_name, position, record
        if self._counted:
          base.bytes_counter.inc(size)
        position += size
        at[0] = position

  def _wide_records(self, file_name, f, encoding, at):
    """Every line of a UTF-16 or UTF-32 file (after its mark)."""
    if self._counted:
      base.bytes_counter.inc(len(encoding.bom))
    for wide in encodings.wide_lines(f, encoding):
      yield file_name, at[0], wide.line
      if self._counted:
        base.bytes_counter.inc(wide.raw_size)
      at[0] += wide.utf8_size
    compressed.check_end(f)


def read_line(f, max_bytes: int, block: int = 1 << 20) -> tuple[bytes, int]:
  """(line, its size in bytes): the next line of f with its newline, or
  for a line of more than max_bytes (0: no limit) bytes without its
  newline, only its start (MAX_RAW_CHARS bytes, what a dead letter keeps)
  and its newline: the rest is read past in blocks, never held, so that
  one huge line cannot take the worker's memory."""
  if not max_bytes:
    line = f.readline()
    return line, len(line)
  # Room for the content, then '\r\n'.
  line = f.readline(max_bytes + 2)
  size = len(line)
  if len(strip_newline(line)) <= max_bytes:
    return line, size
  head, end = line[:MAX_RAW_CHARS + 1], line
  while not end.endswith(b'\n'):
    end = f.readline(block)
    if not end:
      break
    size += len(end)
  return head + end[len(strip_newline(end)):], size


def skip_line(f, most: int, block: int = 1 << 20) -> int:
  """Reads past the rest of the current line in blocks, but not much
  beyond `most` bytes: the bytes read (newline included)."""
  size = 0
  while size < most:
    part = f.readline(block)
    size += len(part)
    if not part or part.endswith(b'\n'):
      break
  return size


def truncated(error: 'compressed.Truncated') -> encodings.BadLine:
  """A truncated compressed file: one warning naming it, and one dead
  letter where the cut is, so the run's counts show it (the records before
  the cut are kept)."""
  logging.getLogger(__name__).warning('%s', error)
  _truncated_counter.inc()
  return encodings.BadLine(b'', 'truncated_file', str(error))


def strip_newline(line: bytes) -> bytes:
  if line.endswith(b'\n'):
    line = line[:-1]
    if line.endswith(b'\r'):
      line = line[:-1]
  return line


def line_location(path: str, offset: int) -> str:
  return f'{path}@{offset}'


def line_text(line, source: str) -> Union[str, DeadLetter]:
  """A line's text, or the dead letter of a line that is not text: a
  BadLine from the source (wrong or unmarked encoding), or invalid UTF-8."""
  if isinstance(line, encodings.BadLine):
    return base.dead(source, line.raw, line.error_type, line.message)
  try:
    return line.decode('utf-8')
  except UnicodeDecodeError as e:
    return base.dead(source, line, 'invalid_utf8', str(e))


class LinesParsed(base.Source):
  """A newline-delimited format: each line, with its location, through
  the function line_parser names."""

  step: str  # the parse step's label

  def line_parser(self) -> tuple:
    """(parse, extra arguments): parse(line, location, *extra) -> Parsed.
    A plain function, so that the step pickles no transform."""
    raise NotImplementedError

  def expand(self, pbegin):
    parse, extra = self.line_parser()
    return (pbegin
            | 'ReadLines' >> beam.io.Read(
                LinesSource(self._pattern, self._counted, self._skip,
                            self._fields.max_document_bytes))
            | self.step >> beam.MapTuple(
                lambda path, at, line: parse(
                    line, line_location(path, at), *extra)))
