"""Typed elements that flow between the pipeline's steps."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import NamedTuple, Optional

import apache_beam as beam
import numpy as np

# Dead-letter records keep at most this much of the raw input.
MAX_RAW_CHARS = 2000
# The tag of every step's dead-letter output.
DEAD_LETTER = 'dead_letter'


class Document(NamedTuple):
  id: str
  text: str
  text_b: Optional[str]
  # Where it came from: file@byte_offset (text, JSONL), file:line (CSV),
  # file (Parquet), pattern (TFRecord) or the BigQuery table/query.
  source: str
  # Pass-through columns (--metadata_fields): ((name, value or None), ...),
  # values as strings.
  metadata: tuple = ()

  @property
  def content_hash(self) -> str:
    return content_hash(self.text, self.text_b)


class EmbeddedDocument(NamedTuple):
  id: str
  embedding: np.ndarray
  num_tokens: int  # tokens the encoder saw (all chunks together)
  truncated: bool
  content_hash: str
  num_chunks: int = 1
  metadata: tuple = ()


class EncoderRow(NamedTuple):
  """One input row of the encoder: a document, or one window of a long one."""
  doc: Document
  key: str  # shared by the chunks of one document; '' when not chunked
  ids: np.ndarray  # int32 token ids of text, no special tokens
  ids_b: Optional[np.ndarray]  # of text_b, for pairs
  length: int  # packed length with special tokens, at most max_seq_length
  truncated: bool
  chunk: int
  num_chunks: int


@dataclasses.dataclass(frozen=True)
class EncoderBatch:
  """Rows of one length bucket, padded together to seq_length, or with
  row_of, documents packed several to an encoder row of seq_length tokens:
  one element, one encoder call (RunInference takes it pre-batched)."""
  seq_length: int
  rows: tuple  # of EncoderRow; packed: row by row, in each row's order
  # Rows of a full batch of this length under the planning budget (the
  # encode step may cut a batch smaller, to its device's budget).
  full_rows: int
  # Packed batches: the encoder row of each of rows (0, 0, 1, 2, 2, ...).
  row_of: Optional[tuple] = None
  # Rows whose text is that of a row of this batch, or of one sent before:
  # they get its result, not an encoder row (transforms/same_text.py).
  copies: tuple = ()

  def __len__(self) -> int:
    return len(self.rows)

  def units(self) -> list[tuple]:
    """What the encoder computes as one row each: every EncoderRow alone,
    or the EncoderRows packed into one row together."""
    if self.row_of is None:
      return [(row,) for row in self.rows]
    units: dict[int, list] = {}
    for row, unit in zip(self.rows, self.row_of):
      units.setdefault(unit, []).append(row)
    return [tuple(units[u]) for u in sorted(units)]


class ChunkEmbedding(NamedTuple):
  """One chunk of a long document after the encoder, before combining.
  Carries the document only on chunk 0, so that regrouping does not copy a
  long text once per chunk."""
  key: str
  chunk: int
  num_chunks: int
  doc: Optional[Document]
  embedding: Optional[np.ndarray]  # None when the chunk failed
  num_tokens: int
  error: Optional[tuple] = None  # (error_type, message) when it failed


class DeadLetter(NamedTuple):
  """A record that could not be read or embedded, and why."""
  source: str
  raw: str
  error_type: str
  message: str
  stage: str  # 'read' or 'embed'


# Per error type (README.md lists them all), the likely fix when most
# records of a run end as that type: a run with a flag wrong (a forgotten
# --text_field, a CSV read as JSON lines) rejects every record alike, and
# its failing line (pipeline/summary.py) says what to check. Types with
# no likely flag (a model error, a cut file) have none.
LIKELY_FIXES = {
    'missing_text': 'is --text_field right?',
    'empty_text': 'is --text_field the field that holds the text?',
    'bad_id': 'is --id_field right? An id must be a string or an integer',
    'bad_feature': ('are --text_field and --id_field right? Each must name '
                    'a feature of one value'),
    'malformed_json': ('is the input JSON lines? If not, give its format '
                       'with --input_format'),
    'malformed_csv': ('is the input CSV (a header row naming the fields, '
                      'separated by commas)? If not, give its format with '
                      '--input_format'),
    'document_too_large': 'raise --max_document_bytes to read them',
    'duplicate_id': ('is --id_field right? --on_duplicate_id keep embeds '
                     'every copy'),
    'invalid_utf8': ('is the input UTF-8? Save it as UTF-8, or UTF-16 with '
                     'a byte-order mark'),
    'unmarked_encoding': 'save the files as UTF-8, or with a byte-order mark',
}



class Results(NamedTuple):
  """What a step returns: its main PCollection and its dead letters (a
  tuple of PCollections, each a step's DEAD_LETTER output), which the job
  flattens once."""
  main: object
  dead_letters: tuple = ()


def route(element):
  """Dead letters to the DEAD_LETTER output, anything else to the main
  one: for DoFns whose pure function returns either."""
  if isinstance(element, DeadLetter):
    return beam.pvalue.TaggedOutput(DEAD_LETTER, element)
  return element


def content_hash(text: str, text_b: Optional[str] = None) -> str:
  """SHA-256 of the embedded content; pairs hash both parts unambiguously."""
  h = hashlib.sha256(text.encode('utf-8'))
  if text_b is not None:
    h.update(b'\x00')
    h.update(text_b.encode('utf-8'))
  return h.hexdigest()


def derived_id(text: str, text_b: Optional[str] = None) -> str:
  """Id for a document that has none: content-derived, so it is stable
  across re-runs, file moves and re-sharding (identical texts share it)."""
  return 'sha256:' + content_hash(text, text_b)[:32]
