"""Every counter and distribution the job reports, declared once.

A step counts with the declaration (`DOCUMENTS_READ.inc()` inside a DoFn),
and everything that reads the figures back — the live progress line, the
summary, the HTML report, the benches and the tests — reads them through
the same declaration, so that a name is written in one place. Figures per
length bucket or per encoder shape are families: the key (a length, or
rows x length) goes into the Beam metric name by the family's pattern and
comes back out by the same pattern, never by prefix arithmetic elsewhere.

Beam's metrics are strings (namespace, name) on every runner; Dataflow shows
these names on the job page, so they keep the names they always had.

Steps count through a `Sink`: Beam's metrics by default, or an in-memory
`Tally` for code that runs a handler outside a pipeline (bench/gpu.py).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import string
from typing import Iterable, Optional

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

COUNTER, DISTRIBUTION = 'counters', 'distributions'


@dataclasses.dataclass(frozen=True)
class Metric:
  """One Beam metric: where it is counted and what it means."""
  namespace: str
  name: str
  meaning: str
  kind: str = COUNTER


@dataclasses.dataclass(frozen=True)
class Family:
  """Metrics of one meaning, one per key: `pattern` names the key's fields
  in str.format syntax ('batches_len_{length:03d}'; '{record!s}' for a
  text field) and parses names back into keys."""
  namespace: str
  pattern: str
  meaning: str
  kind: str = COUNTER

  @property
  def fields(self) -> tuple[str, ...]:
    return tuple(re.findall(r'{(\w+)', self.pattern))

  def member(self, *key) -> Metric:
    return Metric(self.namespace,
                  self.pattern.format(**dict(zip(self.fields, key))),
                  self.meaning, self.kind)

  def key_of(self, name: str) -> Optional[tuple]:
    """The key of a member's name: numbers, but for fields marked !s
    (strings); None for another metric's name."""
    regex, numeric = _parser(self.pattern)
    found = regex.fullmatch(name)
    if not found:
      return None
    return tuple(int(found[f]) if numeric[f] else found[f]
                 for f in self.fields)


@functools.lru_cache(maxsize=None)
def _parser(pattern: str) -> tuple:
  """A family pattern's regex and which of its fields are numbers, built
  once per pattern (summaries and tallies parse many names)."""
  numeric = {}
  regex = ''
  for text, field, _, conversion in string.Formatter().parse(pattern):
    regex += re.escape(text)
    if field:
      numeric[field] = conversion != 's'
      regex += (rf'(?P<{field}>\d+)' if numeric[field] else
                rf'(?P<{field}>.+)')
  return re.compile(regex), numeric


# --- transforms/read.py ------------------------------------------------------
DOCUMENTS_READ = Metric('read', 'documents_read',
                        'records read from the input (documents and bad '
                        'records alike)')
READ_DEAD_LETTERED = Metric('read', 'records_dead_lettered',
                            'input records that are dead letters (unparsable, '
                            'no text, bad encoding)')
FILES_TRUNCATED = Metric('read', 'files_truncated',
                         'compressed input files that end before their end '
                         'marker')
BYTES_READ = Metric('read', 'bytes_read',
                    'input bytes read (stored size), for the ETA')
# --- transforms/dedup.py -----------------------------------------------------
DUPLICATE_IDS = Metric('dedup', 'duplicate_ids',
                       'ids held by more than one input document')
DUPLICATE_DOCUMENTS = Metric('dedup', 'duplicate_documents',
                             'documents beyond the first of a repeated id')
DEDUP_DEAD_LETTERED = Metric('dedup', 'documents_dead_lettered',
                             'documents dead-lettered by --on_duplicate_id')
# --- transforms/incremental.py -----------------------------------------------
DOCUMENTS_REUSED = Metric('incremental', 'documents_reused',
                          'documents whose embedding from --previous holds')
DOCUMENTS_TO_EMBED = Metric('incremental', 'documents_to_embed',
                            'documents new or changed since --previous')
DOCUMENTS_REMOVED = Metric('incremental', 'documents_removed',
                           'ids in --previous no longer in the input')
RECORDS_CARRIED = Metric('incremental', 'records_carried',
                         'reused records copied into a rewritten output')
# --- transforms/embed.py -----------------------------------------------------
DOCUMENTS_EMBEDDED = Metric('embed', 'documents_embedded',
                            'documents given an embedding')
DOCUMENTS_FAILED = Metric('embed', 'documents_failed',
                          'documents the model could not embed '
                          '(dead letters)')
DOCUMENTS_TRUNCATED = Metric('embed', 'documents_truncated',
                             'documents cut at --max_seq_length')
DOCUMENTS_SAME_TEXT = Metric('embed', 'documents_same_text',
                             'documents given the vector of an identical '
                             'text of the run (encoded once)')
DOCUMENTS_CHUNKED = Metric('embed', 'documents_chunked',
                           'documents embedded in several chunks')
TOKENS_EMBEDDED = Metric('embed', 'tokens_embedded',
                         'real tokens the encoder saw')
TOKENS_COMPUTED = Metric('embed', 'tokens_computed',
                         'tokens computed, padding included (rows x length '
                         'of every call)')
BATCHES = Metric('embed', 'batches', 'encoder calls')
BATCHES_RETRIED = Metric('embed', 'batches_retried_one_by_one',
                         'batches that failed and were retried a row at a '
                         'time')
BATCHES_SPLIT_OOM = Metric('embed', 'batches_split_oom',
                           'calls that ran out of memory and were split')
ENCODER_MILLISECONDS = Metric('embed', 'encoder_milliseconds',
                              'time inside encoder calls')
FIRST_BATCH = Metric('embed', 'first_batch_epoch_ms',
                     'when each process holding the encoder began its first '
                     'call (ms since the epoch): the start-up a run waits '
                     'through', DISTRIBUTION)
BATCHES_PER_BUCKET = Family('embed', 'batches_len_{length:03d}',
                            'batches formed per length bucket')
TOKENS_PER_BUCKET = Family('embed', 'tokens_len_{length:03d}',
                           'real tokens per length bucket')
ENCODER_SHAPES = Family('embed', 'encoder_shape_{rows}x{length}',
                        'encoder calls per rows x length input shape')
TOKEN_BUDGETS = Family('embed', 'token_budget_len_{length:03d}',
                       'the token budget per call in force, per bucket',
                       DISTRIBUTION)
# --- transforms/backends/ ----------------------------------------------------
STALE_SHARDS_REMOVED = Metric('write', 'stale_shards_removed',
                              'shards of an earlier run deleted at commit')
ROWS_WRITTEN = Family('write', 'rows_written_{record!s}',
                      'rows written (upserted) to a table, per record layout')
ROWS_DELETED = Family('write', 'rows_deleted_{record!s}',
                      'rows deleted from a table, per record layout')
DEAD_LETTERS_BY_TYPE = Family('write', 'dead_letters_{error_type!s}',
                              'dead letters written, per error type (every '
                              'stage\'s: read, dedup, embed)')

# What the progress line and the summary call each figure: the counters it
# adds up. A rejected document is a dead letter of any stage.
FIGURES = {
    'documents_read': (DOCUMENTS_READ,),
    'documents_embedded': (DOCUMENTS_EMBEDDED,),
    'documents_reused': (DOCUMENTS_REUSED,),
    'documents_rejected': (READ_DEAD_LETTERED, DEDUP_DEAD_LETTERED,
                           DOCUMENTS_FAILED),
    'tokens': (TOKENS_EMBEDDED,),
    'bytes_read': (BYTES_READ,),
}


def figure_metrics() -> tuple[Metric, ...]:
  return tuple(m for metrics in FIGURES.values() for m in metrics)


def figures(values: dict) -> dict:
  """{figure: total} from {Metric: value}."""
  return {figure: sum(values.get(m, 0) for m in metrics)
          for figure, metrics in FIGURES.items()}


# --- counting ----------------------------------------------------------------


class Sink:
  """Where a step's counts go: Beam's metrics (this class), or a Tally.
  Picklable, so that a handler carrying one ships to workers."""

  def counter(self, metric: Metric):
    return Metrics.counter(metric.namespace, metric.name)

  def distribution(self, metric: Metric):
    return Metrics.distribution(metric.namespace, metric.name)

  def inc(self, metric: Metric, n: int = 1) -> None:
    self.counter(metric).inc(n)

  def update(self, metric: Metric, value: int) -> None:
    self.distribution(metric).update(value)


BEAM = Sink()


class _Cell:

  def __init__(self, tally: 'Tally', metric: Metric):
    self._tally, self._metric = tally, metric

  def inc(self, n: int = 1) -> None:
    self._tally.values[self._metric] = self._tally.values.get(
        self._metric, 0) + n

  def update(self, value: int) -> None:
    self._tally.values.setdefault(self._metric, []).append(value)


class Tally(Sink):
  """Counts in memory, {Metric: total} (distributions: {Metric: [values]}),
  for a handler run outside a pipeline, where Beam's metrics have no
  container to count into."""

  def __init__(self):
    self.values: dict = {}

  def counter(self, metric: Metric):
    return _Cell(self, metric)

  distribution = counter

  def keyed(self, family: Family) -> dict:
    """{key: value} of a family's members."""
    keys = {m: family.key_of(m.name) for m in self.values
            if m.namespace == family.namespace}
    return {key: self.values[m] for m, key in keys.items() if key}


# --- reading a run's metrics -------------------------------------------------


def _value(found, committed: bool) -> int:
  """A finished run's committed value; a running one's attempted value,
  or the committed one where the runner reports only that."""
  value = found.committed if committed else (
      found.committed if found.attempted is None else found.attempted)
  return int(value or 0)


def totals(results, metrics: Iterable[Metric], *,
           committed: bool = True) -> dict:
  """{Metric: total over steps and workers} of several counters, from a
  PipelineResult's metrics(), one query per namespace."""
  wanted = tuple(metrics)
  out = dict.fromkeys(wanted, 0)
  for namespace in {m.namespace for m in wanted}:
    found = results.query(MetricsFilter().with_namespace(namespace))[COUNTER]
    for c in found:
      metric = next((m for m in wanted if m.namespace == namespace and
                     m.name == c.key.metric.name), None)
      if metric is not None:
        out[metric] += _value(c, committed)
  return out


def earliest(results, metric: Metric) -> Optional[int]:
  """The smallest value a distribution saw over steps and workers, or
  None when nothing reported it."""
  found = results.query(MetricsFilter().with_namespace(
      metric.namespace).with_name(metric.name))[DISTRIBUTION]
  values = [m.committed.min for m in found if m.committed and
            m.committed.count]
  return min(values) if values else None


def by_key(results, family: Family) -> dict:
  """{key: [committed values]} of a family, one value per step and worker
  that reported the member (distributions: DistributionResult values)."""
  found = results.query(MetricsFilter().with_namespace(family.namespace))[
      family.kind]
  out: dict = {}
  for m in found:
    key = family.key_of(m.key.metric.name)
    if key is not None and m.committed:
      out.setdefault(key, []).append(m.committed)
  return out
