"""The run's summary: the last line the command prints, from Beam's
committed metrics (declared in transforms/metrics.py), and whether a
finished run failed for a scheduler."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Optional

from pipeline.options import over_rejection_limit
from transforms import metrics
from transforms import records
from transforms.elements import LIKELY_FIXES

if TYPE_CHECKING:
  from pipeline.launch import Plan
  from transforms.backends import Backend, Lookup

# How the summary's "previous" (--previous_if_exists) ends for a run that
# found no earlier output.
FULL_RUN = 'full run'


def previous_note(lookup: Lookup) -> str:
  """What --previous_if_exists found at --previous, as the launch's
  notice and the summary's "previous" say it."""
  if lookup.found:
    return f'{lookup.found.shown()}: nightly run'
  return f'none yet at {lookup.shown}: {FULL_RUN}'


def first_run(summary: dict) -> bool:
  """Whether --previous_if_exists found no earlier output: a full run,
  though --previous is given."""
  return str(summary.get('previous') or '').endswith(f': {FULL_RUN}')


def _bucket_batches(results) -> dict:
  found = metrics.by_key(results, metrics.BATCHES_PER_BUCKET)
  return {str(length): int(sum(counts))
          for (length,), counts in sorted(found.items())}


def _bucket_padding(results) -> dict:
  """Per bucket, real tokens / computed tokens (rows x length of every
  call, from the shape counters)."""
  computed: dict = {}
  for (rows, length), counts in metrics.by_key(
      results, metrics.ENCODER_SHAPES).items():
    computed[length] = computed.get(length, 0) + rows * length * sum(counts)
  real = metrics.by_key(results, metrics.TOKENS_PER_BUCKET)
  return {str(length): round(sum(real.get((length,), [])) / total, 4)
          for length, total in sorted(computed.items()) if total}


def _token_budgets(results) -> dict:
  """Per bucket, the budget in force at the end: the lowest any worker
  used (budgets only go down)."""
  found = metrics.by_key(results, metrics.TOKEN_BUDGETS)
  budgets = {length: [d.min for d in ds if d.count]
             for (length,), ds in found.items()}
  return {str(length): int(min(mins))
          for length, mins in sorted(budgets.items()) if mins}


def _dead_letters_by_type(results) -> dict:
  """{error type: dead letters}, the most frequent first."""
  found = metrics.by_key(results, metrics.DEAD_LETTERS_BY_TYPE)
  counts = {error_type: int(sum(n)) for (error_type,), n in found.items()}
  return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _encoder_shapes(results) -> list[str]:
  """The distinct rows x length shapes the encoder was called with."""
  shapes = metrics.by_key(results, metrics.ENCODER_SHAPES)
  return [f'{rows}x{length}' for rows, length in
          sorted(shapes, key=lambda shape: shape[::-1])]


def process_started() -> Optional[float]:
  """When this process started (seconds since the epoch), from Linux's
  /proc; None elsewhere."""
  import os
  try:
    with open('/proc/self/stat', encoding='ascii') as f:
      # Field 22, after the parenthesised command name (which may hold
      # spaces): start time in clock ticks after boot.
      ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/stat', encoding='ascii') as f:
      boot = next(int(line.split()[1]) for line in f
                  if line.startswith('btime '))
  except (OSError, ValueError, IndexError, StopIteration):
    return None
  return boot + ticks / os.sysconf('SC_CLK_TCK')


def summarize(result, plan: Plan, *, seconds: float,
              started: Optional[float] = None) -> dict:
  """The summary of a finished run: counts and rates from its metrics,
  its places and what the launch decided from the plan. The one place the
  summary is built (a dry run's and a --preflight_only run's are below)."""
  where = plan.where
  results = result.metrics()
  m = metrics
  found = metrics.totals(results, (
      *m.figure_metrics(), m.TOKENS_COMPUTED, m.RECORDS_CARRIED,
      m.DOCUMENTS_REMOVED, m.FILES_TRUNCATED, m.DUPLICATE_IDS,
      m.DUPLICATE_DOCUMENTS, m.DOCUMENTS_TRUNCATED, m.DOCUMENTS_CHUNKED,
      m.DOCUMENTS_SAME_TEXT,
      m.BATCHES, m.BATCHES_RETRIED, m.BATCHES_SPLIT_OOM,
      m.ENCODER_MILLISECONDS,
      m.ROWS_WRITTEN.member(records.EMBEDDINGS.name),
      m.ROWS_DELETED.member(records.EMBEDDINGS.name)))
  counts = metrics.figures(found)
  read, embedded = counts['documents_read'], counts['documents_embedded']
  reused, rejected = counts['documents_reused'], counts['documents_rejected']
  tokens, computed = counts['tokens'], found[m.TOKENS_COMPUTED]
  carried = found[m.RECORDS_CARRIED]
  # An output rewritten whole must have copied every reused record (the
  # previous output is read twice: once to decide, once to carry).
  carried_all = not where.previous or where.output.takes_changes(
      where.previous) or carried == reused
  shapes = _encoder_shapes(results)
  first_batch = metrics.earliest(results, m.FIRST_BATCH)
  return {
      'documents_read': read,
      'documents_embedded': embedded,
      'documents_reused': reused,
      'documents_removed': found[m.DOCUMENTS_REMOVED],
      'documents_rejected': rejected,
      'dead_letters_by_type': _dead_letters_by_type(results),
      'files_truncated': found[m.FILES_TRUNCATED],
      'records_carried': carried,
      'reconciled': read == embedded + reused + rejected and carried_all,
      'duplicate_ids': found[m.DUPLICATE_IDS],
      'duplicate_documents': found[m.DUPLICATE_DOCUMENTS],
      'documents_truncated': found[m.DOCUMENTS_TRUNCATED],
      'documents_chunked': found[m.DOCUMENTS_CHUNKED],
      'documents_same_text': found[m.DOCUMENTS_SAME_TEXT],
      'tokens': tokens,
      'tokens_computed': computed,
      'padding_efficiency': round(tokens / computed, 4) if computed else None,
      'batches': found[m.BATCHES],
      'batches_retried_one_by_one': found[m.BATCHES_RETRIED],
      'batches_split_oom': found[m.BATCHES_SPLIT_OOM],
      'batches_per_bucket': _bucket_batches(results),
      'padding_per_bucket': _bucket_padding(results),
      'encoder_shapes': len(shapes),
      'encoder_shape_list': shapes,
      'token_budgets': _token_budgets(results),
      'encoder_seconds': round(found[m.ENCODER_MILLISECONDS] / 1000, 2),
      'seconds': round(seconds, 2),
      # Start-up: from the command's start (`started`) to the first
      # encoder call of any worker.
      'first_batch_seconds': (round(first_batch / 1000 - started, 2)
                              if first_batch and started else None),
      'documents_per_second': round(embedded / seconds, 2) if seconds else 0,
      # PostgreSQL outputs: rows written (upserted) and deleted.
      'rows_upserted': found[m.ROWS_WRITTEN.member(records.EMBEDDINGS.name)],
      'rows_deleted': found[m.ROWS_DELETED.member(records.EMBEDDINGS.name)],
      'output': where.output.shown(),
      'dead_letter': where.dead_letters.shown(),
      # --previous_if_exists: whether an earlier output was found there.
      **({'previous': where.previous_note} if where.previous_note else {}),
      'model': plan.model.name,
      'precision': plan.precision,
      'packing': 'packed rows' if plan.packing else 'length buckets',
  }


def dry_run(plan: Plan) -> dict:
  """The summary of --dry_run: Beam built the whole job and stopped
  before submitting it."""
  return {'dry_run': True, 'runner': plan.runner, 'model': plan.model.name,
          'model_fingerprint': plan.spec.fingerprint()}


def preflight_only(plan: Plan) -> dict:
  """The summary of --preflight_only: what each launch check found."""
  return {'preflight_only': True, 'runner': plan.runner,
          'model': plan.model.name,
          'model_fingerprint': plan.spec.fingerprint(),
          'checks': {c.name: c.found for c in plan.checked}}


def failure(summary: dict, max_rejected: Optional[str],
            letters: Optional[Backend] = None) -> Optional[str]:
  """Why a finished run fails for a scheduler (exit status 1), or None:
  counts that do not reconcile, a run that read documents but embedded
  and reused none, or more rejections than --max_rejected allows. The
  last two name the most frequent error type, its likely fix and, from
  `letters` (the dead letters' backend), an example."""
  read, rejected = summary['documents_read'], summary['documents_rejected']
  done = summary['documents_embedded'] + summary['documents_reused']
  where = f'dead letters in {summary["dead_letter"]}'
  if not summary['reconciled']:
    return (f'{read:,} documents read, but {done:,} embedded or reused and '
            f'{rejected:,} rejected (records carried: '
            f'{summary["records_carried"]:,}): the counts do not reconcile')
  if read and not done:
    return (f'no document was embedded or reused: all {read:,} documents '
            f'read were rejected{cause(summary, letters)}; {where}')
  if max_rejected is None or not rejected or not over_rejection_limit(
      max_rejected, rejected, read):
    return None
  return (f'{rejected:,} of {read:,} documents rejected '
          f'({100 * rejected / read:.3g}%), more than --max_rejected '
          f'{max_rejected}{cause(summary, letters)}; {where}')


# How much of an example dead letter the failing line quotes.
EXAMPLE_RAW_CHARS = 40
EXAMPLE_MESSAGE_CHARS = 240
# At most this many dead letters are read looking for the example.
EXAMPLE_SEARCH = 10_000


def cause(summary: dict, letters: Optional[Backend] = None) -> str:
  """', all as TYPE (N): FIX (e.g. ...)', or ', most often as ...' when
  the dead letters are of several types: the most frequent error type
  (the summary's dead_letters_by_type), its likely fix
  (elements.LIKELY_FIXES) and one dead letter of that type, read back
  from `letters`. Empty when the run counted no types."""
  by_type = summary.get('dead_letters_by_type') or {}
  if not by_type:
    return ''
  error_type, count = next(iter(by_type.items()))
  text = (f', all as {error_type} ({count:,})' if len(by_type) == 1 else
          f', most often as {error_type} ({count:,} of '
          f'{sum(by_type.values()):,})')
  fix = LIKELY_FIXES.get(error_type)
  if fix:
    text += f': {fix}'
  example = first_letter(letters, error_type) if letters else None
  if example:
    raw = example.get('raw') or ''
    raw = raw if len(raw) <= EXAMPLE_RAW_CHARS else (
        raw[:EXAMPLE_RAW_CHARS - 1] + '\u2026')
    # One line, whatever the message holds.
    message = ' '.join(str(example.get('message') or '').split())[
        :EXAMPLE_MESSAGE_CHARS]
    text += f' (e.g. {message}, in {raw!r})'
  return text


def first_letter(letters: Backend, error_type: str,
                 search: int = EXAMPLE_SEARCH) -> Optional[dict]:
  """The first dead letter of `error_type` among the first `search` ones
  read back (streamed), or None: also when they cannot be read, as the
  failing line must be printed whatever the dead letters' store does."""
  found = None
  try:
    found = iter(letters.scan(['error_type', 'message', 'raw']))
    for record in itertools.islice(found, search):
      if record.get('error_type') == error_type:
        return record
  except Exception:  # noqa: BLE001
    return None
  finally:
    # A file stays open, a query cursor stays out, until the scan closes.
    getattr(found, 'close', lambda: None)()
  return None
