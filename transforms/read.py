"""Reading corpora into Documents; unreadable records become DeadLetters.

Every record read leaves this step as exactly one Document or one DeadLetter
(on the DEAD_LETTER output), so the run summary can reconcile: read =
embedded + reused + dead-lettered.

The sources, one per input format, are in transforms/sources/; this module
is the public entry the job uses (and names what it reads from them).
"""

from __future__ import annotations

from typing import Optional

import apache_beam as beam

from transforms import sources
from transforms import metrics
from transforms.elements import DEAD_LETTER, DeadLetter, Results, route
# The names the job, the benchmarks and the tests use.
from transforms.sources import (FORMATS, Fields,  # noqa: F401
                                check_compression, detect_format)
from transforms.sources.base import Parsed, record_to_document  # noqa: F401
from transforms.sources.csv import parse_csv_file  # noqa: F401
from transforms.sources.jsonl import parse_json_line  # noqa: F401
from transforms.sources.lines import LinesSource, line_location  # noqa: F401
from transforms.sources.text import parse_text_line  # noqa: F401

_read_counter = metrics.BEAM.counter(metrics.DOCUMENTS_READ)
_bad_counter = metrics.BEAM.counter(metrics.READ_DEAD_LETTERED)


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
    self._source = sources.source_for(pattern, input_format, fields, query,
                                      counted, skip)
    self._counted = counted

  def expand(self, pbegin):
    # Expanded in place, not applied as a step of its own: the steps keep
    # their names (Read/ReadLines, ...), which errors and the runner's
    # monitoring show.
    parsed = self._source.expand(pbegin)
    if not self._counted:
      return Results(parsed | 'Documents' >> beam.Filter(
          lambda e: not isinstance(e, DeadLetter)))
    out = parsed | 'CountRead' >> beam.Map(_count_read).with_outputs(
        DEAD_LETTER, main='documents')
    return Results(out.documents, (out[DEAD_LETTER],))


def _count_read(element: Parsed):
  _read_counter.inc()
  if isinstance(element, DeadLetter):
    _bad_counter.inc()
  return route(element)
