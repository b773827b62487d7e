"""Plain text: one document per line, its id derived from its text."""

from __future__ import annotations

from transforms.elements import DeadLetter, Document, derived_id
from transforms.sources import base, lines


def parse_text_line(line, source: str,
                    max_bytes: int = base.MAX_DOCUMENT_BYTES) -> base.Parsed:
  text = lines.line_text(line, source)
  if isinstance(text, DeadLetter):
    return text
  if not text or text.isspace():
    return base.dead(source, text, 'empty_text',
                     'line is empty or whitespace')
  size = base.oversize(max_bytes, text)
  if size:
    return base.too_large(source, text, size, max_bytes)
  unfit = base.unfit_text((('the line', text),))
  if unfit:
    return base.dead(source, text, *unfit)
  return Document(id=derived_id(text), text=text, text_b=None, source=source)


class TextSource(lines.LinesParsed):
  format = 'text'
  suffixes = ('.txt', '.text')
  step = 'ParseText'

  def line_parser(self) -> tuple:
    return parse_text_line, (self._fields.max_document_bytes,)
