"""The plan's size in one line, before a job is sent to Dataflow.

    plan: 1.2 GB in 40 files, about 310,000 documents and 95 M tokens
    (estimated from 400 sampled documents; 12% longer than
    --max_seq_length 512, truncated per --long_documents); nightly: about
    4% new or changed (of 400 sampled)

GPU hours are paid per worker, and a job's size is what decides them; the
launcher can say it before a worker starts, and the user can stop there.
The line costs the same whatever the corpus: it reads a bounded sample
(at most SAMPLE_DOCUMENTS records from at most SAMPLE_FILES files, spread
across the files and across each uncompressed file), and scales what the
sample holds by the bytes the listing already found. A BigQuery table's
row count comes from its metadata; a query's rows are not known before it
runs (its dry run gives the bytes it scans).

Tokens are counted as the job counts them: the job's own TokenizeHandler
(the preprocessor only, never the encoder) makes each sampled document's
encoder rows, by --max_seq_length and --long_documents, and their lengths
(special tokens included) are the summary's `tokens`.

A nightly run (--previous) decides per id by the previous record's
content hash, metadata and model fingerprint (transforms/incremental.py,
decide): the sampled documents are decided by that same rule against
their ids' previous records. Tables are looked up by the sampled ids (one
bounded query). File outputs have no index by id: finding the sampled ids
means reading the previous output whole, which is the job's own first
step, so it is read only while it is small (PREVIOUS_FILE_BYTES);
otherwise the line says the share is unknown, and why.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import random
import time
from collections import defaultdict
from concurrent import futures
from typing import Callable, NamedTuple, Optional, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms import compressed
from transforms import incremental
from transforms import read as read_lib
from transforms.codecs import parquet as parquet_codec
from transforms.codecs import tfrecord as tfrecord_codec
from transforms.elements import Document
from transforms.sources import base as source_base
from transforms.sources import lines

# The sample: at most this many records ...
SAMPLE_DOCUMENTS = 1000
# ... from at most this many files, evenly spaced in the listing ...
SAMPLE_FILES = 8
# ... each uncompressed line file read at up to this many places in all,
# evenly spaced (a corpus sorted by length or date is not read from its
# start only; on gs:// each place is one request) ...
SPOTS = 64
# ... and no more than this many bytes at each place (a CSV file: four
# times this, from its start, as quoted fields may span lines).
SPOT_BYTES = 1 << 16
SPOTS_PER_FILE = 4
# Reads at once (each its own request on gs://).
READERS = 8
# The read size on gs:// for reads longer than SPOT_BYTES (a compressed
# file's prefix, a CSV file's start, Parquet and TFRecord files).
LARGE_READS = 1 << 20
# A compressed line file is read from its start, this many decompressed
# bytes at most (every line counted, the sample drawn from them all).
COMPRESSED_PREFIX = 8 << 20
# A previous output in files is read (its light fields) only up to this
# size: beyond it, finding the sampled ids costs as much as the job's own
# decision step.
PREVIOUS_FILE_BYTES = 64_000_000
# Deadline of each BigQuery call, in seconds.
BIGQUERY_SECONDS = 10


class Sample(NamedTuple):
  """What was read, and how much of the input it stands for."""
  # Documents and DeadLetters, as the read step would give them.
  parsed: list
  # Per sampled file: (records counted, the stored bytes they take, the
  # stored file's bytes, records in the file if known exactly: it was read
  # whole, or its footer says); None where the records cannot be scaled.
  spans: list
  # Bytes of input in all (files), or None.
  total_bytes: Optional[int]
  # Records of `parsed` per sampled file (parallel to spans).
  counts: list = []
  # Documents in the input if known without scaling (a table's rows).
  rows: Optional[int] = None
  # Files listed.
  files: int = 0
  # Why documents cannot be estimated, if they cannot.
  unknown: str = ''
  # Every record of the input was read (and parsed).
  complete: bool = False
  # Every record of the input was counted.
  counted: bool = False


class Estimate(NamedTuple):
  """The figures of the line (also for benchmarks and tests)."""
  total_bytes: Optional[int]
  files: int
  documents: Optional[float]
  tokens: Optional[float]
  sampled: int  # records in the sample
  long_share: Optional[float]  # of sampled documents
  rejected_share: Optional[float]  # of sampled records
  changed_share: Optional[float]  # nightly: of sampled documents
  changed_of: int
  changed_unknown: str
  complete: bool  # every record read: documents and tokens counted
  seconds: float
  note: str = ''  # what can be said where documents cannot
  documents_exact: bool = False  # counted (or a table's metadata)
  changed_tokens: Optional[float] = None  # nightly: tokens to embed


# ---------------------------------------------------------------- sampling


def _spread(items: Sequence, count: int) -> list:
  """Up to `count` items evenly spaced through `items` (first and last
  included)."""
  if len(items) <= count:
    return list(items)
  step = (len(items) - 1) / (count - 1) if count > 1 else 0
  return [items[round(i * step)] for i in range(count)]


def _spots(size: int, count: int) -> list:
  """Byte offsets where an uncompressed file of `size` bytes is read:
  one place if one read can take it whole."""
  if size <= SPOT_BYTES:
    return [0]
  return [size * i // count for i in range(count)]


def _line_records(f, start: int, stop: float, budget: int, keep: int,
                  rng: random.Random, max_bytes: int
                  ) -> tuple[list, int, int, bool]:
  """Whole lines that start in [start, stop), as the job's LinesSource
  splits them, read until `budget` bytes: ([(offset, line)] of at most
  `keep` of them, drawn evenly from all read (a reservoir), lines read,
  bytes they take, whether `stop` or the end of the file was reached)."""
  position = start
  if start > 0:
    f.seek(start - 1)
    position = start - 1 + lines.skip_line(f, int(stop - start + 1))
  kept, count, used = [], 0, 0
  while position < stop and used < budget:
    line, size = lines.read_line(f, max_bytes)
    if not line:
      return kept, count, used, True
    if len(kept) < keep:
      kept.append((position, line))
    else:
      slot = rng.randrange(count + 1)
      if slot < keep:
        kept[slot] = (position, line)
    count += 1
    position += size
    used += size
  kept.sort(key=lambda k: k[0])
  return kept, count, used, position >= stop


def _stored_bytes_read(f, decompressed: int) -> Optional[float]:
  """The stored (compressed) bytes that `decompressed` bytes of a
  compressed stream came from: the decompressor's own count at the same
  point, None where it cannot be told."""
  counts = compressed.consumed(f)
  if counts is None:
    return decompressed
  stored, produced = counts
  if not produced or not stored:
    return None
  return decompressed * stored / produced


def _opener(buffer: int) -> Callable:
  """Opens a file's stored bytes for the sample. On gs:// with requests of
  `buffer` bytes: FileSystems.open asks for 16 MB at a time, which dozens
  of small reads would multiply."""
  gcs = []

  def open_stored(path: str):
    if not path.startswith('gs://'):
      return FileSystems.open(path,
                              compression_type=CompressionTypes.UNCOMPRESSED)
    if not gcs:
      from apache_beam.io.gcp import gcsio
      gcs.append(gcsio.GcsIO())
    # Buffered here too: the blob reader's readline asks for one byte at
    # a time.
    return io.BufferedReader(
        gcs[0].open(path, 'rb', read_buffer_size=buffer), buffer)
  return open_stored


def _sample_lines(path: str, size: int, quota: int, parse: Callable,
                  max_bytes: int, places: int, opener: Callable) -> list:
  """Reads of a text or JSON lines file (callables, run in parallel by
  sample_files), each giving a stratum: every line it reads is counted,
  and some of them parsed (about `quota` in all). An uncompressed file is
  read at `places` evenly spaced places, SPOT_BYTES at most at each, each
  place a stratum of its own: its lines stand for its part of the file,
  so that places of many short lines are not under-weighted, and many
  small places spread the sample over a corpus whose neighbouring records
  are alike (sorted exports). A compressed file cannot be entered in the
  middle: its first COMPRESSED_PREFIX bytes (decompressed) are read, one
  stratum."""
  packed = compressed.is_compressed(path)
  spots = [0] if packed else _spots(size, places)
  budget = COMPRESSED_PREFIX if packed else SPOT_BYTES
  per_spot = max(1, math.ceil(quota / len(spots)))

  def read(start: int, stop: float) -> tuple:
    with compressed.open_file(path, opener) as f:
      kept, count, took, reached = _line_records(
          f, start, stop, budget, per_spot, random.Random(start), max_bytes)
      region = size if packed else min(stop, size) - start
      stored = region if reached else _stored_bytes_read(f, took)
    parsed = [parse(lines.strip_newline(line), lines.line_location(path, at))
              for at, line in kept]
    return parsed, None if stored is None else (
        count, stored, region, count if reached else None)

  stops = spots[1:] + [math.inf if packed else size]
  return [functools.partial(read, start, stop)
          for start, stop in zip(spots, stops)]


class _Limited(io.RawIOBase):
  """The first `limit` bytes of a stream (a CSV file's start)."""

  def __init__(self, f, limit: int):
    super().__init__()
    self._f, self._left, self.ended = f, limit, False

  def readable(self) -> bool:
    return True

  def readinto(self, buffer) -> int:
    if self._left <= 0:
      return 0
    data = self._f.read(min(len(buffer), self._left))
    if not data:
      self.ended = True
    self._left -= len(data)
    buffer[:len(data)] = data
    return len(data)


def _sample_csv(path: str, size: int, quota: int,
                fields: read_lib.Fields,
                opener: Callable) -> list:
  """The first rows of a CSV file (at most SPOT_BYTES of it), and its
  span: a row cut by the limit is not counted."""
  limit = SPOT_BYTES * SPOTS_PER_FILE
  with compressed.open_file(path, opener) as f:
    limited = _Limited(f, limit)
    rows = list(read_lib.parse_csv_file(path, io.BufferedReader(limited),
                                        fields))
    whole = limited.ended or (limit > 0 and limited._left > 0)
    used = limit - max(limited._left, 0)
    stored = size if whole else _stored_bytes_read(f, used)
  if not whole and rows:
    rows = rows[:-1]
  records = len(rows)
  rows = rows[:quota]
  if stored is None:
    return [(rows, None)]
  return [(rows, (records, stored, size, records if whole else None))]


def _sample_parquet(path: str, size: int, quota: int,
                    fields: read_lib.Fields,
                    opener: Callable) -> list:
  """The first rows of a Parquet file, and its exact row count (its
  footer, checked by the codec)."""
  wanted = [c for c in dict.fromkeys((fields.id_field, fields.text_field,
                                      fields.text_b_field,
                                      *fields.metadata_fields)) if c]
  with opener(path) as f:
    parquet = parquet_codec.parquet_file(f, path)
    rows = parquet.metadata.num_rows
    present = [c for c in wanted if c in parquet.schema_arrow.names]
    parsed = []
    for batch in parquet.iter_batches(batch_size=quota, columns=present):
      parsed = [source_base.record_to_document(row, path, fields)
                for row in batch.to_pylist()[:quota]]
      break
  return [(parsed, (rows, size, size, rows))]


def _example_record(raw: bytes, wanted: Sequence[str]) -> dict:
  """A serialized tf.Example's named features with one value each."""
  found = tfrecord_codec.features(raw)
  record = {}
  for name in wanted:
    if name and name in found:
      kind = found[name].WhichOneof('kind')
      values = list(getattr(found[name], kind).value) if kind else []
      if len(values) == 1:
        record[name] = values[0]
  return record


def _sample_tfrecord(path: str, size: int, quota: int,
                     fields: read_lib.Fields,
                     opener: Callable) -> list:
  wanted = (fields.id_field, fields.text_field, fields.text_b_field,
            *fields.metadata_fields)
  parsed, used, whole = [], 0, True
  with compressed.open_file(path, opener) as f:
    for raw in tfrecord_codec.stream_frames(f, path):
      used += len(raw) + tfrecord_codec.OVERHEAD
      parsed.append(source_base.record_to_document(
          _example_record(raw, wanted), path, fields))
      if len(parsed) >= quota:
        whole = not f.read(1)
        break
    stored = size if whole else _stored_bytes_read(f, used)
  if stored is None:
    return [(parsed, None)]
  count = len(parsed)
  return [(parsed, (count, stored, size, count if whole else None))]


def _file_sampler(input_format: str, fields: read_lib.Fields,
                  places: int) -> Callable:
  """(path, size, quota) -> the reads of one file: callables that give a
  stratum each, (parsed records, span) (Sample.spans says what a span
  is)."""
  limit = fields.max_document_bytes
  small, large = _opener(SPOT_BYTES), _opener(LARGE_READS)
  if input_format in ('jsonl', 'text'):
    if input_format == 'jsonl':
      parse = functools.partial(_parse_json, fields=fields)
    else:
      parse = functools.partial(_parse_text, limit=limit)
    return lambda path, size, quota: _sample_lines(
        path, size, quota, parse, limit, places,
        large if compressed.is_compressed(path) else small)
  sampler = {'csv': _sample_csv, 'parquet': _sample_parquet,
             'tfrecord': _sample_tfrecord}[input_format]
  return lambda path, size, quota: [
      lambda: sampler(path, size, quota, fields, large)[0]]


def _parse_json(line: bytes, where: str, fields: read_lib.Fields):
  return read_lib.parse_json_line(line, where, fields)


def _parse_text(line: bytes, where: str, limit: int):
  return read_lib.parse_text_line(line, where, limit)


def sample_files(pattern: str, input_format: str, fields: read_lib.Fields,
                 skip=()) -> Sample:
  """A bounded sample of the files a pattern matches (local or any file
  system Beam knows, gs:// included)."""
  found = sorted((m for m in FileSystems.match([pattern])[0].metadata_list
                  if m.path not in skip), key=lambda m: m.path)
  total = sum(m.size_in_bytes for m in found)
  chosen = _spread(found, SAMPLE_FILES)
  quota = max(1, SAMPLE_DOCUMENTS // max(1, len(chosen)))
  sampler = _file_sampler(input_format, fields,
                          max(1, SPOTS // max(1, len(chosen))))
  reads = [task for m in chosen
           for task in sampler(m.path, m.size_in_bytes, quota)]
  parsed, spans, counts = [], [], []
  # Reads of remote files wait on the network: in parallel, in order.
  with futures.ThreadPoolExecutor(max_workers=READERS) as pool:
    for got, span in pool.map(lambda read: read(), reads):
      parsed.extend(got)
      spans.append(span)
      counts.append(len(got))
  counted = len(chosen) == len(found) and all(
      span is not None and span[3] is not None for span in spans)
  complete = counted and all(span[3] == count
                             for span, count in zip(spans, counts))
  unknown = ''
  if any(s is None for s in spans):
    unknown = ('documents not estimated: the compressed sample does not say '
               'how many bytes it decompressed from')
  return Sample(parsed=parsed, spans=spans, counts=counts,
                total_bytes=total, files=len(found), unknown=unknown,
                complete=complete, counted=counted)


def sample_bigquery(table: Optional[str], query: Optional[str],
                    fields: read_lib.Fields) -> Sample:
  """A table: its row count (metadata) and its first rows (a bounded
  list). A query: what its dry run says it scans."""
  from google.api_core import retry
  from google.cloud import bigquery
  from transforms import bigquery_tables as bq
  deadline = retry.Retry(deadline=BIGQUERY_SECONDS)
  if query:
    client = bigquery.Client()
    job = client.query(query, job_config=bigquery.QueryJobConfig(
        dry_run=True, use_query_cache=False), retry=deadline,
                       timeout=BIGQUERY_SECONDS)
    return Sample(parsed=[], spans=[], total_bytes=None, unknown=(
        f'--input_query scans {_size(job.total_bytes_processed or 0)} '
        '(BigQuery\'s dry run); its rows are not known before it runs'))
  name = bq.TableName.of(table)
  client = bigquery.Client(project=name.project)
  found = client.get_table(name.dotted, retry=deadline,
                           timeout=BIGQUERY_SECONDS)
  wanted = {fields.id_field, fields.text_field, fields.text_b_field,
            *fields.metadata_fields}
  selected = [f for f in found.schema if f.name in wanted]
  rows = client.list_rows(found, selected_fields=selected,
                          max_results=SAMPLE_DOCUMENTS, retry=deadline,
                          timeout=BIGQUERY_SECONDS)
  parsed = [source_base.record_to_document(
      bq.document_record(dict(row.items())), table, fields) for row in rows]
  count = found.num_rows or 0
  return Sample(parsed=parsed, spans=[], total_bytes=found.num_bytes,
                rows=count, complete=len(parsed) == count, counted=True)


# ------------------------------------------------------------------ tokens


def token_rows(docs: Sequence[Document], spec, preprocessor: str
               ) -> list:
  """Each document's encoder rows (or a DeadLetter), by the job's own
  TokenizeHandler: only the preprocessor is loaded."""
  from transforms.embed import TokenizeHandler
  if not docs:
    return []
  handler = TokenizeHandler(spec, preprocessor, batch_size=256)
  return handler.run_inference(list(docs), handler.load_model())


# ----------------------------------------------------------------- nightly


def _previous_records(previous, ids: Sequence[str], names: tuple
                      ) -> Optional[list]:
  """The previous output's records (light fields) of these ids, or None
  for a file output too large to read at launch."""
  wanted = set(ids)
  fmt = getattr(previous, 'format', '')
  if fmt == 'postgres':
    from transforms.backends import postgres
    table = postgres._Table(previous.table, previous.record)
    sql = table.sql
    statement = sql.SQL('SELECT {} FROM {} WHERE {} = ANY(%s)').format(
        sql.SQL(', ').join(sql.Identifier(n) for n in names), table.ident,
        sql.Identifier('id'))
    with postgres.connect(previous.conninfo, previous.uri) as conn:
      return [table.record(row, list(names))
              for row in conn.execute(statement, (list(wanted),))]
  if fmt == 'bigquery':
    from google.cloud import bigquery
    from transforms import bigquery_tables as bq
    name = bq.TableName.of(previous.uri)
    client = bigquery.Client(project=name.project)
    columns = ', '.join(f'`{n}`' for n in names)
    job = client.query(
        f'SELECT {columns} FROM `{name.dotted}` '
        'WHERE id IN UNNEST(@ids)',
        job_config=bigquery.QueryJobConfig(query_parameters=[
            bigquery.ArrayQueryParameter('ids', 'STRING', sorted(wanted))]),
        timeout=BIGQUERY_SECONDS)
    return [dict(row.items()) for row in job.result(
        timeout=BIGQUERY_SECONDS)]
  from transforms.backends import files
  shards = files._shard_metadata(previous.uri, previous.suffix)
  if sum(m.size_in_bytes for m in shards) > PREVIOUS_FILE_BYTES:
    return None
  return [r for r in previous.scan(names) if r.get('id') in wanted]


def changed_share(docs: Sequence[Document], previous, fingerprint: str
                  ) -> tuple[Optional[set], str]:
  """(the sampled documents a nightly run embeds, by incremental.decide,
  as the set of their id()s; '') or (None, why that is unknown)."""
  if not docs:
    return None, 'no documents sampled'
  metadata = tuple(previous.record.metadata)
  records = _previous_records(previous, [d.id for d in docs],
                              incremental.LIGHT_FIELDS + metadata)
  if records is None:
    return None, (f'unknown for file outputs over '
                  f'{_size(PREVIOUS_FILE_BYTES)}: finding the sampled ids '
                  'means reading all of the previous output')
  seen = defaultdict(list)
  for record in records:
    doc_id, light = incremental.seen(record, metadata)
    seen[doc_id].append(light)
  by_id = defaultdict(list)
  for doc in docs:
    by_id[doc.id].append(doc)
  return {id(doc) for doc_id, same in by_id.items()
          if incremental.decide([incremental.current(d)[1] for d in same],
                                seen[doc_id], fingerprint)
          != incremental.REUSE for doc in same}, ''


# -------------------------------------------------------------- the figures


def _per_file(sample: Sample, *values: Callable) -> tuple:
  """(documents, total of each of `values` over them) in the whole input,
  from the sampled strata: each stratum's records (exact, or scaled from
  the bytes the ones counted took), and its total of each value (the mean
  over its sampled records, times its records); then all files scaled by
  bytes (the files not sampled are like the ones sampled)."""
  documents, totals = 0.0, [0.0] * len(values)
  sampled_size, at = 0, 0
  for (records, stored, size, exact), count in zip(sample.spans,
                                                   sample.counts):
    parsed = sample.parsed[at:at + count]
    at += count
    in_file = exact if exact is not None else (
        records * size / stored if stored else 0.0)
    documents += in_file
    if count:
      for i, value in enumerate(values):
        totals[i] += sum(value(p) for p in parsed) / count * in_file
    sampled_size += size
  scale = sample.total_bytes / sampled_size if sampled_size else 0.0
  return (documents * scale, *(total * scale for total in totals))


def estimate(sample: Sample, rows: list, *, changed=(None, ''),
             started: Optional[float] = None) -> Estimate:
  """The figures from a sample, its documents' token rows (token_rows, in
  the order of the sample's Documents) and, for a nightly run, which of
  them it embeds (changed_share's answer)."""
  docs = [p for p in sample.parsed if isinstance(p, Document)]
  lengths, long_docs = {}, set()
  for doc, result in zip(docs, rows):
    if isinstance(result, list):
      lengths[id(doc)] = sum(row.length for row in result)
      if any(row.truncated for row in result) or len(result) > 1:
        long_docs.add(id(doc))
  embeds, why = changed
  values = (lambda p: lengths.get(id(p), 0),  # tokens
            lambda p: id(p) in long_docs,
            lambda p: isinstance(p, Document),
            lambda p: bool(embeds) and id(p) in embeds,
            lambda p: lengths.get(id(p), 0) if embeds and id(p) in embeds
            else 0)
  # Totals over the sample, each record counting once ...
  sampled = [float(sum(v(p) for p in sample.parsed)) for v in values]
  documents = tokens = None
  records = len(sample.parsed)
  if sample.complete:
    documents, tokens = float(len(sample.parsed)), sampled[0]
  elif sample.rows is not None:
    documents = float(sample.rows)
    tokens = (sampled[0] / len(sample.parsed) * sample.rows
              if sample.parsed else 0.0)
  elif sample.spans and not sample.unknown:
    # ... or each standing for its stratum's share of the input.
    documents, *sampled = _per_file(sample, *values)
    tokens, records = sampled[0], documents
  token_total, long_total, good, embedded, embedded_tokens = sampled
  changed_tokens = None
  if embeds is not None and token_total:
    changed_tokens = (tokens or 0.0) * embedded_tokens / token_total
  return Estimate(
      total_bytes=sample.total_bytes, files=sample.files,
      documents=documents, tokens=tokens, sampled=len(sample.parsed),
      long_share=long_total / good if good else None,
      rejected_share=max(0.0, 1 - good / records) if records else None,
      changed_share=embedded / good if embeds is not None and good
      else None,
      changed_of=len(docs), changed_unknown=why,
      changed_tokens=changed_tokens,
      complete=sample.complete,
      seconds=time.monotonic() - started if started else 0.0,
      note=sample.unknown,
      documents_exact=sample.counted or sample.rows is not None)


# --------------------------------------------------------------- the line


def _size(n: float) -> str:
  for unit in ('bytes', 'KB', 'MB', 'GB', 'TB'):
    if n < 1000 or unit == 'TB':
      return f'{int(n):,} {unit}' if unit == 'bytes' else f'{n:.1f} {unit}'
    n /= 1000
  return str(n)


def about(n: float) -> str:
  """A count to two significant figures (exact below 100)."""
  if n < 100:
    return f'{round(n):,}'
  digits = int(math.floor(math.log10(n))) - 1
  return f'{int(round(n, -digits)):,}'


def tokens_shown(n: float) -> str:
  if n >= 1e9:
    return f'{n / 1e9:.2g} G'
  if n >= 1e6:
    return f'{float(f"{n / 1e6:.2g}"):g} M'
  return about(n)


def line(e: Estimate, *, max_seq_length: int, long_documents: str,
         nightly: bool) -> str:
  """The one line (without a timing)."""
  parts = []
  if e.total_bytes is not None and (e.files or e.total_bytes):
    where = _size(e.total_bytes)
    if e.files:
      where += f' in {e.files:,} file{"s" if e.files != 1 else ""}'
    parts.append(where)
  if e.documents is None:
    head = ', '.join(parts) or 'size unknown'
    return f'plan: {head}; {e.note}' if e.note else f'plan: {head}'
  if e.complete:
    parts.append(f'{e.documents:,.0f} documents and {e.tokens:,.0f} tokens')
    how = 'counted: the whole input was read'
  else:
    sampled = (f'{e.sampled:,} sampled record'
               f'{"s" if e.sampled != 1 else ""}')
    if e.documents_exact:
      parts.append(f'{e.documents:,.0f} documents and about '
                   f'{tokens_shown(e.tokens or 0)} tokens')
      how = f'tokens estimated from {sampled}'
    else:
      parts.append(f'about {about(e.documents)} documents and '
                   f'{tokens_shown(e.tokens or 0)} tokens')
      how = f'estimated from {sampled}'
  details = [how]
  if e.long_share:
    what = ('split into chunks' if long_documents == 'chunk'
            else 'truncated')
    details.append(f'{_percent(e.long_share)} longer than --max_seq_length '
                   f'{max_seq_length}, {what} per --long_documents')
  if e.rejected_share and e.rejected_share >= 0.0005:
    details.append(f'{_percent(e.rejected_share)} dead letters')
  text = f'plan: {", ".join(parts)} ({"; ".join(details)})'
  if nightly:
    if e.changed_share is None:
      text += f'; nightly: share of changes {e.changed_unknown}'
    else:
      text += (f'; nightly: about {_percent(e.changed_share)} new or '
               f'changed (of {e.changed_of:,} sampled)')
      if e.changed_tokens is not None:
        text += f', about {tokens_shown(e.changed_tokens)} tokens to embed'
  return text


def _percent(share: float) -> str:
  value = 100 * share
  if 0 < value < 1:
    return f'{value:.1f}%'
  return f'{round(value)}%'


# ------------------------------------------------------------ for the plan


def of_plan(plan) -> Estimate:
  """The figures of a Plan (pipeline/launch.py)."""
  started = time.monotonic()
  embed = plan.embed
  fields = read_lib.Fields(embed.id_field, embed.text_field,
                           embed.text_b_field, embed.metadata_fields,
                           embed.max_document_bytes)
  fmt = ('bigquery' if embed.input_query else
         read_lib.detect_format(embed.input, embed.input_format))
  if fmt == 'bigquery':
    sample = sample_bigquery(embed.input, embed.input_query, fields)
  else:
    sample = sample_files(embed.input, fmt, fields,
                          skip=plan.where.own_files())
  docs = [p for p in sample.parsed if isinstance(p, Document)]
  rows = token_rows(docs, plan.spec, plan.model.preprocessor)
  changed = (None, '')
  if plan.where.previous is not None:
    try:
      changed = changed_share(docs, plan.where.previous,
                              plan.spec.fingerprint())
    except Exception as e:  # noqa: BLE001 (the line says why)
      changed = None, f'unknown ({_why(e)})'
  return estimate(sample, rows, changed=changed, started=started)


def cost_line(plan) -> str:
  """The plan's size in one line; never raises: a sample that cannot be
  read makes a line that says why."""
  started = time.monotonic()
  try:
    figures = of_plan(plan)
  except Exception as e:
    logging.debug('estimate failed', exc_info=True)
    return (f'plan: size not estimated ({_why(e)}) '
            f'[{time.monotonic() - started:.1f} s]')
  embed = plan.embed
  return (line(figures, max_seq_length=embed.max_seq_length,
               long_documents=embed.long_documents,
               nightly=plan.where.previous is not None) +
          f' [{figures.seconds:.1f} s]')


def _why(e: Exception) -> str:
  text = str(e).splitlines()[0] if str(e) else type(e).__name__
  return text[:200]
