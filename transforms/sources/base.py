"""The interface every input source implements, and what they share.

A source is one input format: it is chosen once (transforms/sources/
__init__.py) from the --input pattern (its suffix, or a bq:// scheme) or
--input_format, and then reads the corpus into parsed elements: one
Document or one DeadLetter per record. transforms/read.py counts them and
splits the dead letters off.

The rules every source applies to a structured record (a JSON object, a
CSV row, a Parquet or BigQuery row, a tf.Example) are here, once:
record_to_document, and unfit_text for text no output can store.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

import apache_beam as beam

from transforms import metrics
from transforms.choices import MAX_DOCUMENT_BYTES
from transforms.elements import (MAX_RAW_CHARS, DeadLetter, Document,
                                 derived_id)

Parsed = Union[Document, DeadLetter]


DOCUMENT_TOO_LARGE = 'document_too_large'


@dataclass(frozen=True)
class Fields:
  """Which fields of a record make its Document, and how large a document
  may be (max_document_bytes, 0 for no limit)."""
  id_field: str = 'id'
  text_field: str = 'text'
  text_b_field: Optional[str] = None
  metadata_fields: tuple = ()
  max_document_bytes: int = MAX_DOCUMENT_BYTES


class Source(beam.PTransform):
  """PBegin -> parsed elements (Documents and DeadLetters) of one input
  format.

  counted=False reads the corpus again for a nightly run's second pass: no
  byte counters (the first pass counted). Files in `skip` (the job's own
  output) are not read."""

  format: ClassVar[str]
  # File name suffixes that say a file is in this format (before any
  # compression suffix); none for sources that are not files.
  suffixes: ClassVar[tuple] = ()

  def __init__(self, pattern: Optional[str], fields: Fields,
               counted: bool = True, skip=(), query: Optional[str] = None):
    super().__init__()
    self._pattern = pattern
    self._fields = fields
    self._counted = counted
    self._skip = skip
    self._query = query

  @classmethod
  def claims(cls, pattern: Optional[str]) -> bool:
    """Whether an --input names this kind of source whatever its format
    (a scheme, such as bq://)."""
    del pattern
    return False

  @classmethod
  def check(cls, pattern: str) -> None:
    """Launch-time validation of the pattern: raises ValueError."""
    del pattern

  def expand(self, pbegin):
    """PBegin -> Documents and DeadLetters."""
    raise NotImplementedError


def dead(source: str, raw: Any, error: str, message: str) -> DeadLetter:
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


# At most this many of a record's field names in a missing_text message.
_FIELDS_SHOWN = 12


def _fields_of(record: dict, field: str) -> str:
  """The record's field names when it lacks `field`: a wrong --text_field
  rejects every record, and the names say which field to give."""
  if field in record:
    return ''
  names = [str(name) for name in record]
  more = f', ... ({len(names)} in all)' if len(names) > _FIELDS_SHOWN else ''
  return ('; the record has no fields' if not names else
          f'; the record\'s fields: {", ".join(names[:_FIELDS_SHOWN])}{more}')


def record_to_document(record: dict, source: str, fields: Fields,
                       raw: Any = None) -> Parsed:
  """Turns one structured record (JSON object, CSV row, Parquet row,
  tf.Example) into a Document, or a DeadLetter saying what is wrong."""
  raw = record if raw is None else raw
  text, why = _text_value(record.get(fields.text_field), fields.text_field)
  if text is None:
    return dead(source, raw, 'missing_text',
                why + _fields_of(record, fields.text_field))
  if not text or text.isspace():
    return dead(source, raw, 'empty_text',
                f'field {fields.text_field!r} is empty or whitespace')
  text_b = None
  if fields.text_b_field:
    text_b, why = _text_value(record.get(fields.text_b_field),
                              fields.text_b_field)
    if text_b is None:
      return dead(source, raw, 'missing_text',
                  why + _fields_of(record, fields.text_b_field))
  size = oversize(fields.max_document_bytes, text, text_b)
  if size:
    return too_large(source, text, size, fields.max_document_bytes)
  doc_id = record.get(fields.id_field)
  if isinstance(doc_id, bytes):
    doc_id = doc_id.decode('utf-8', errors='backslashreplace')
  if isinstance(doc_id, (str, int)) and not isinstance(doc_id, bool):
    doc_id = str(doc_id)
  elif doc_id is not None:
    return dead(source, raw, 'bad_id',
                f'field {fields.id_field!r} must be a string or integer, '
                f'got {type(doc_id).__name__}')
  metadata = tuple((name, metadata_value(record.get(name)))
                   for name in fields.metadata_fields)
  unfit = unfit_text(
      (f'field {name!r}', value) for name, value in (
          (fields.text_field, text), (fields.text_b_field, text_b),
          (fields.id_field, doc_id), *metadata))
  if unfit:
    return dead(source, raw, *unfit)
  return Document(id=doc_id or derived_id(text, text_b), text=text,
                  text_b=text_b, source=source, metadata=metadata)


def utf8_size(text: str) -> int:
  """Bytes of text in UTF-8, without a copy for ASCII text."""
  if text.isascii():
    return len(text)
  return len(text.encode('utf-8', 'surrogatepass'))


def oversize(limit: int, *texts: Optional[str]) -> int:
  """The UTF-8 size of texts together if it is more than limit (0: no
  limit), else 0. Texts that cannot reach the limit are not measured."""
  if not limit or 4 * sum(len(t) for t in texts if t) <= limit:
    return 0
  size = sum(utf8_size(t) for t in texts if t)
  return size if size > limit else 0


def too_large_message(size: int, limit: int) -> str:
  return (f'{size:,} bytes, more than --max_document_bytes ({limit:,}); '
          'raise it to read it')


def too_large(source: str, head: Any, size: int, limit: int) -> DeadLetter:
  """The dead letter of a document over --max_document_bytes, carrying
  only the start of its input (the dead letter keeps no more)."""
  return dead(source, head[:MAX_RAW_CHARS + 1], DOCUMENT_TOO_LARGE,
              too_large_message(size, limit))


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


def _nul_message(what: str, text: str) -> str:
  return (f'{what} holds a NUL character (U+0000) at character '
          f'{text.index(chr(0))}: binary data, or text in another encoding')


def metadata_value(value: Any) -> Optional[str]:
  """Pass-through values become strings (one column type whatever the
  source format): text as is, anything else as JSON."""
  if value is None or isinstance(value, str):
    return value
  if isinstance(value, bytes):
    return value.decode('utf-8', errors='backslashreplace')
  return json.dumps(value, ensure_ascii=False, default=str)


# Input bytes read so far (text and JSONL as each line is read, CSV as
# each file is done): with the input's size, progress estimates the time
# left (pipeline/progress.py).
bytes_counter = metrics.BEAM.counter(metrics.BYTES_READ)
