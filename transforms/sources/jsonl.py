"""JSON lines: one object per line, its fields named by --id_field,
--text_field, --text_b_field and --metadata_fields."""

from __future__ import annotations

from transforms.codecs import jsonl as codec
from transforms.elements import DeadLetter
from transforms.sources import base, lines


def parse_json_line(line, source: str, fields: base.Fields) -> base.Parsed:
  text = lines.line_text(line, source)
  if isinstance(text, DeadLetter):
    return text
  try:
    record = codec.decode_object(text)
  except ValueError as e:
    return base.dead(source, text, 'malformed_json', str(e))
  return base.record_to_document(record, source, fields, raw=text)


class JsonlSource(lines.LinesParsed):
  format = 'jsonl'
  suffixes = (codec.SUFFIX, '.ndjson', '.json')
  step = 'ParseJson'

  def line_parser(self) -> tuple:
    return parse_json_line, (self._fields,)
