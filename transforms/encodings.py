"""The text encoding of a line-based input file (text, JSONL, CSV): the
byte-order mark at byte 0 decides, and a file that looks like UTF-16 or
UTF-32 without one is named, never misread.

Why: UTF-16 is what Windows tools write (PowerShell's `>`, Notepad's
"Unicode", Excel's "Unicode text"). Read as UTF-8, its ASCII lines become
text with a NUL between letters, which the tokenizer silently drops: the
vectors look right, but ids and content hashes match no UTF-8 copy of the
corpus, so the next nightly run re-embeds everything.

Pure functions on bytes; transforms/read.py drives them from its sources.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Optional


@dataclass(frozen=True)
class Encoding:
  codec: str  # Python's codec, which takes no mark ('utf-16-le')
  name: str  # as `iconv -l` and editors say it ('UTF-16LE')
  bom: bytes = b''

  @property
  def width(self) -> int:
    """Bytes per code unit: 1 for UTF-8, 2 for UTF-16, 4 for UTF-32."""
    return len('\n'.encode(self.codec))

  @property
  def newline(self) -> bytes:
    return '\n'.encode(self.codec)

  @property
  def invalid(self) -> str:
    """The error_type of text that does not decode: invalid_utf16."""
    return 'invalid_utf' + str(8 * self.width)


UTF8 = Encoding('utf-8', 'UTF-8')
# Longest first: the UTF-32LE mark begins with the UTF-16LE one.
_MARKED = (
    Encoding('utf-32-le', 'UTF-32LE', codecs.BOM_UTF32_LE),
    Encoding('utf-32-be', 'UTF-32BE', codecs.BOM_UTF32_BE),
    Encoding('utf-8', 'UTF-8', codecs.BOM_UTF8),
    Encoding('utf-16-le', 'UTF-16LE', codecs.BOM_UTF16_LE),
    Encoding('utf-16-be', 'UTF-16BE', codecs.BOM_UTF16_BE),
)
# Enough of the file's start to tell; read once per file (range).
HEAD_BYTES = 64


def detect(head: bytes) -> Encoding:
  """The encoding a file's first bytes declare: UTF-8 unless a byte-order
  mark says otherwise (the UTF-8 mark included, so it can be skipped)."""
  for encoding in _MARKED:
    if head.startswith(encoding.bom):
      return encoding
  return UTF8


def unmarked(head: bytes) -> Optional[str]:
  """The likely encoding of a file with no byte-order mark whose first
  bytes are UTF-16 or UTF-32 text (NULs between ASCII letters), else None.

  UTF-8 text holds no NUL bytes, so a regular pattern of them is a strong
  sign. UTF-32 must fit every code unit (its top byte is always 0, and
  ASCII has three NULs per letter); UTF-16 needs most units to be ASCII
  (a NUL high byte beside a non-NUL low byte).
  """
  if b'\0' not in head:
    return None
  words = [head[i:i + 4] for i in range(0, len(head) - 3, 4)]
  if words and all(w[2:] == b'\0\0' and w[:2] != b'\0\0' for w in words):
    return 'UTF-32LE'
  if words and all(w[:2] == b'\0\0' and w[2:] != b'\0\0' for w in words):
    return 'UTF-32BE'
  units = [head[i:i + 2] for i in range(0, len(head) - 1, 2)]
  if len(units) < 2:
    return None
  if sum(u[1] == 0 and u[0] != 0 for u in units) * 2 > len(units):
    return 'UTF-16LE'
  if sum(u[0] == 0 and u[1] != 0 for u in units) * 2 > len(units):
    return 'UTF-16BE'
  return None


def unmarked_message(path: str, likely: str) -> str:
  return (f'{path} looks like {likely} without a byte-order mark (NUL bytes '
          f'between letters), not UTF-8; convert it (iconv -f {likely} -t '
          'UTF-8) or save it with a byte-order mark')


class BadLine(NamedTuple):
  """A line that cannot become text, in place of its bytes: read.py makes
  it a dead letter with this error_type and message."""
  raw: bytes
  error_type: str
  message: str


class WideLine(NamedTuple):
  """One line of a UTF-16 or UTF-32 file: its UTF-8 bytes (or a BadLine),
  the raw bytes it took in the file, and its length in UTF-8 (newline
  included), which advances the UTF-8 offset of the next line."""
  line: object
  raw_size: int
  utf8_size: int


def wide_lines(stream, encoding: Encoding,
               chunk: int = 1 << 16) -> Iterator[WideLine]:
  """The lines of a UTF-16 or UTF-32 stream read past its mark, each as
  UTF-8 without its newline.

  Lines end at a '\\n' code unit, found only at unit boundaries (in UTF-16
  the bytes 0A 00 also occur across two units; a surrogate pair never
  holds one); a '\\r' before it goes too, as in UTF-8 files. A line that
  does not decode (a lone surrogate, an odd byte at the end) is a BadLine.
  """
  width, newline = encoding.width, encoding.newline
  buffer, scan = b'', 0
  while True:
    data = stream.read(chunk)
    if data:
      buffer += data
    start = 0
    while True:
      found = buffer.find(newline, scan)
      if found < 0:
        break
      if (found - start) % width:
        scan = found + 1
        continue
      yield _wide_line(buffer[start:found + width], encoding)
      start = scan = found + width
    buffer = buffer[start:]
    scan = max(0, len(buffer) - width + 1)
    scan -= scan % width
    if not data:
      if buffer:
        yield _wide_line(buffer, encoding)
      return


def _wide_line(raw: bytes, encoding: Encoding) -> WideLine:
  try:
    text = raw.decode(encoding.codec)
  except UnicodeDecodeError as e:
    shown = raw.decode(encoding.codec, errors='replace')
    return WideLine(
        BadLine(shown.rstrip('\r\n').encode('utf-8'),
                encoding.invalid,
                f'not valid {encoding.name}: {e.reason} at byte {e.start} '
                'of the line'),
        len(raw), len(shown.encode('utf-8')))
  size = len(text.encode('utf-8'))
  if text.endswith('\n'):
    text = text[:-1]
    if text.endswith('\r'):
      text = text[:-1]
  return WideLine(text.encode('utf-8'), len(raw), size)
