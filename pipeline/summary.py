"""The run's summary: the last line the command prints, from Beam's
committed metrics (pipeline/progress.py reads the same counters), and
whether a finished run failed for a scheduler."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from apache_beam.metrics.metric import MetricsFilter

from pipeline import progress
from pipeline.options import over_rejection_limit
from transforms import embed as embed_lib
from transforms import records

if TYPE_CHECKING:
  from pipeline.launch import Locations

_counter = progress.committed


def _by_prefix(result, prefix: str, kind: str = 'counters') -> dict:
  """The embed step's per-bucket or per-shape metrics: {suffix: [committed
  values]}, one value per step and worker that reported the name."""
  found = result.metrics().query(
      MetricsFilter().with_namespace('embed'))[kind]
  out: dict = {}
  for m in found:
    if m.key.metric.name.startswith(prefix) and m.committed:
      out.setdefault(m.key.metric.name[len(prefix):], []).append(m.committed)
  return out


def _bucket_batches(result) -> dict:
  found = _by_prefix(result, embed_lib.BATCHES_PREFIX)
  return {str(int(length)): int(sum(counts)) for length, counts in
          sorted(found.items(), key=lambda kv: int(kv[0]))}


def _bucket_padding(result) -> dict:
  """Per bucket, real tokens / computed tokens (rows x length of every
  call, from the shape counters)."""
  computed: dict = {}
  for shape, counts in _by_prefix(result, embed_lib.SHAPE_PREFIX).items():
    rows, length = (int(x) for x in shape.split('x'))
    computed[length] = computed.get(length, 0) + rows * length * sum(counts)
  real = _by_prefix(result, embed_lib.TOKENS_PREFIX)
  return {str(length): round(sum(real.get(f'{length:03d}', [])) / total, 4)
          for length, total in sorted(computed.items()) if total}


def _token_budgets(result) -> dict:
  """Per bucket, the budget in force at the end: the lowest any worker
  used (budgets only go down)."""
  found = _by_prefix(result, embed_lib.BUDGET_PREFIX, 'distributions')
  budgets = {length: [d.min for d in ds if d.count]
             for length, ds in found.items()}
  return {str(int(length)): int(min(mins)) for length, mins in
          sorted(budgets.items(), key=lambda kv: int(kv[0])) if mins}


def _encoder_shapes(result) -> list[str]:
  """The distinct rows x length shapes the encoder was called with."""
  return sorted(_by_prefix(result, embed_lib.SHAPE_PREFIX),
                key=lambda s: tuple(int(x) for x in s.split('x'))[::-1])


def summarize(result, *, where: Locations, seconds: float) -> dict:
  """The summary of a finished run: counts, rates and the run's places
  (`where`, the plan's Locations)."""
  counts = progress.sample_from(progress.committed_counters(result), seconds)
  read, embedded = counts.documents_read, counts.documents_embedded
  reused, rejected = counts.documents_reused, counts.documents_rejected
  tokens = counts.tokens
  computed = _counter(result, 'embed', 'tokens_computed')
  carried = _counter(result, 'incremental', 'records_carried')
  # An output rewritten whole must have copied every reused record (the
  # previous output is read twice: once to decide, once to carry).
  carried_all = not where.previous or where.output.takes_changes(
      where.previous) or carried == reused
  shapes = _encoder_shapes(result)
  return {
      'documents_read': read,
      'documents_embedded': embedded,
      'documents_reused': reused,
      'documents_removed': _counter(result, 'incremental',
                                    'documents_removed'),
      'documents_rejected': rejected,
      'files_truncated': _counter(result, 'read', 'files_truncated'),
      'records_carried': carried,
      'reconciled': read == embedded + reused + rejected and carried_all,
      'duplicate_ids': _counter(result, 'dedup', 'duplicate_ids'),
      'duplicate_documents': _counter(result, 'dedup', 'duplicate_documents'),
      'documents_truncated': _counter(result, 'embed', 'documents_truncated'),
      'documents_chunked': _counter(result, 'embed', 'documents_chunked'),
      'tokens': tokens,
      'tokens_computed': computed,
      'padding_efficiency': round(tokens / computed, 4) if computed else None,
      'batches': _counter(result, 'embed', 'batches'),
      'batches_retried_one_by_one': _counter(result, 'embed',
                                             'batches_retried_one_by_one'),
      'batches_split_oom': _counter(result, 'embed', 'batches_split_oom'),
      'batches_per_bucket': _bucket_batches(result),
      'padding_per_bucket': _bucket_padding(result),
      'encoder_shapes': len(shapes),
      'encoder_shape_list': shapes,
      'token_budgets': _token_budgets(result),
      'encoder_seconds': round(
          _counter(result, 'embed', 'encoder_milliseconds') / 1000, 2),
      'seconds': round(seconds, 2),
      'documents_per_second': round(embedded / seconds, 2) if seconds else 0,
      # PostgreSQL outputs: rows written (upserted) and deleted.
      'rows_upserted': _counter(result, 'write',
                                f'rows_written_{records.EMBEDDINGS.name}'),
      'rows_deleted': _counter(result, 'write',
                               f'rows_deleted_{records.EMBEDDINGS.name}'),
      'output': where.output.shown(),
      'dead_letter': where.dead_letters.shown(),
  }


def failure(summary: dict, max_rejected: Optional[str]) -> Optional[str]:
  """Why a finished run fails for a scheduler (exit status 1), or None:
  counts that do not reconcile, a run that read documents but embedded
  and reused none, or more rejections than --max_rejected allows."""
  read, rejected = summary['documents_read'], summary['documents_rejected']
  done = summary['documents_embedded'] + summary['documents_reused']
  letters = f'dead letters in {summary["dead_letter"]}'
  if not summary['reconciled']:
    return (f'{read:,} documents read, but {done:,} embedded or reused and '
            f'{rejected:,} rejected (records carried: '
            f'{summary["records_carried"]:,}): the counts do not reconcile')
  if read and not done:
    return (f'no document was embedded or reused: all {read:,} documents '
            f'read were rejected; {letters}')
  if max_rejected is None or not rejected or not over_rejection_limit(
      max_rejected, rejected, read):
    return None
  return (f'{rejected:,} of {read:,} documents rejected '
          f'({100 * rejected / read:.3g}%), more than --max_rejected '
          f'{max_rejected}; {letters}')
