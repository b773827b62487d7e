"""JSON lines: one JSON object per line."""

from __future__ import annotations

import json

SUFFIX = '.jsonl'


def decode_object(text: str) -> dict:
  """A line's JSON object: ValueError for malformed JSON or another JSON
  value."""
  record = json.loads(text)
  if not isinstance(record, dict):
    raise ValueError(f'expected a JSON object, got {type(record).__name__}')
  return record


def encode_object(record: dict) -> str:
  """One line (without its newline); text as it is, not \\u-escaped."""
  return json.dumps(record, ensure_ascii=False)
