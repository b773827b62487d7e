"""Entry point: `python -m pipeline.run --input ... --output ...`.

Prints, as its last line, one JSON object with the run's counts and rates.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import glob
import json
import logging
import os
import sys
import time
import traceback
from typing import NamedTuple, Optional

if __name__ == '__main__':
  # Ctrl-C and SIGTERM from the first moment, imports included: one line,
  # no traceback (pipeline/interrupts.py). Only the command installs it.
  from pipeline import interrupts as _interrupts
  _interrupts.install()

# TensorFlow's process defaults (tfmodels/__init__.py), before anything
# imports TensorFlow.
import tfmodels  # noqa: F401  pylint: disable=unused-import

# pylint: disable=wrong-import-position

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions
from apache_beam.options.pipeline_options import _BeamArgumentParser
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.options.pipeline_options import TestOptions

from pipeline import cleanup
from pipeline import console
from pipeline import interrupts
from pipeline import presets
from pipeline import progress
from pipeline import worker
from pipeline.options import EmbedOptions, over_rejection_limit
from tfmodels.devices import auto_precision, configure_gpus
from tfmodels.embedder import import_hub
from transforms import backends
from transforms import compressed
from transforms import embed as embed_lib
from transforms import metrics
from transforms import model_files
from transforms import read as read_lib
from transforms import records
from transforms.backends import files as file_backends
from transforms.dedup import HandleDuplicateIds
from transforms.incremental import CarriedRecords, CarryForward
from transforms.spec import EmbeddingSpec
from transforms.write import WriteDeadLetters, WriteEmbeddings

# Without --runner, run in-process with Beam's FnApiRunner. DirectRunner in
# Beam 2.77 first tries to download the Prism runner binary (about 8 s lost
# offline before it falls back); FnApiRunner is what it falls back to, and it
# takes the same --direct_num_workers / --direct_running_mode flags.
DEFAULT_LOCAL_RUNNER = 'FnApiRunner'


def resolve_model(options: EmbedOptions) -> presets.ResolvedModel:
  return presets.resolve(options.model, options.preprocessor, options.encoder,
                         options.model_cache_dir, options.model_dir
                         ).with_identity()


def embedding_spec(options: EmbedOptions,
                   model: presets.ResolvedModel) -> EmbeddingSpec:
  """The flags that decide an embedding, with the model's identity."""
  return EmbeddingSpec(
      model=model.with_identity().identity, pooling=options.pooling,
      max_seq_length=options.max_seq_length, normalize=bool(options.normalize),
      long_documents=options.long_documents,
      chunk_stride=options.chunk_stride, precision=options.precision)


@dataclasses.dataclass(frozen=True)
class Locations:
  """The job's backends, chosen once from the flags."""
  output: backends.Backend
  dead_letters: backends.Backend
  previous: Optional[backends.Backend]
  started: datetime.datetime

  def own_files(self) -> file_backends.OwnFiles:
    """Files this run writes, which --input must not read."""
    return file_backends.OwnFiles.of(self.output, self.dead_letters)

  def on_duplicate_id(self, options: EmbedOptions) -> str:
    """The policy: as given, else keep, or first where ids are keys
    (a keyed table, or a table that takes a nightly run's changes by id)."""
    return options.on_duplicate_id or (
        'first' if self.keyed_by_id() else 'keep')

  def keyed_by_id(self) -> bool:
    return self.output.keyed_by_id or self.output.takes_changes(
        self.previous)


def locations(options: EmbedOptions) -> Locations:
  # One timestamp per run: every record of a run says the same.
  started = datetime.datetime.now(datetime.timezone.utc)
  settings = backends.WriteSettings(
      started=started, num_shards=options.num_shards,
      bq_method=options.bq_write_method,
      bq_disposition=options.bq_write_disposition,
      temp_location=options.view_as(GoogleCloudOptions).temp_location,
      pg_index=options.pg_index,
      probe=not options.view_as(TestOptions).dry_run)
  record = records.EMBEDDINGS.with_metadata(options.metadata_fields)
  output = backends.output(options.output, options.output_format,
                           record=record, settings=settings)
  previous = None
  if options.previous:
    try:
      previous = backends.existing(options.previous, record=record)
    except ValueError as e:
      raise ValueError(f'--previous: {e}; leave --previous out for a first '
                       'run') from e
  return Locations(
      output=output,
      dead_letters=backends.dead_letters(output, options.dead_letter,
                                         options.dead_letter_format,
                                         settings=settings),
      previous=previous, started=started)


def build_pipeline(p: beam.Pipeline, options: EmbedOptions,
                   model: Optional[presets.ResolvedModel] = None,
                   where: Optional[Locations] = None) -> dict:
  """Adds the read -> embed -> write graph to `p` without running it.

  Returns the main PCollections by name, for tests and for callers that
  extend the graph.
  """
  model = (model or resolve_model(options)).with_identity()
  where = where or locations(options)
  spec = embedding_spec(options, model)
  fingerprint = spec.fingerprint()
  fields = read_lib.Fields(options.id_field, options.text_field,
                           options.text_b_field, options.metadata_fields)
  own = where.own_files()
  read = p | 'Read' >> read_lib.ReadDocuments(
      options.input, options.input_format, fields, query=options.input_query,
      skip=own)
  policy = where.on_duplicate_id(options)
  docs = read.main | 'DuplicateIds' >> HandleDuplicateIds(policy)
  to_embed, changes, carried = docs.main, {}, None
  if where.previous:
    reread = read_lib.ReadDocuments(
        options.input, options.input_format, fields,
        query=options.input_query, counted=False, skip=own)
    plan = docs.main | 'CarryForward' >> CarryForward(
        where.previous, fingerprint, reread, policy)
    to_embed, changes['removed'] = plan.to_embed, plan.removed
    carried = CarriedRecords(where.previous, plan.dropped, where.output)
  embedded = to_embed | 'Embed' >> embed_lib.EmbedDocuments(
      spec, model.preprocessor, model.encoder,
      max_batch_tokens=options.max_batch_tokens,
      batch_size=options.batch_size, sort_window=options.sort_window,
      large_model=options.large_model, jit_compile=options.jit_compile,
      require_gpu=options.require_gpu,
      encoder_accelerator=options.encoder_accelerator)
  changes['embedded'] = embedded.main
  dead = ((*read.dead_letters, *docs.dead_letters, *embedded.dead_letters)
          | 'AllDeadLetters' >> beam.Flatten(pipeline=p))
  changes | 'Write' >> WriteEmbeddings(
      where.output, records.RunInfo(model.name, options.pooling, fingerprint,
                                    where.started), where.previous,
      carried)
  dead | 'WriteDeadLetters' >> WriteDeadLetters(where.dead_letters,
                                                where.started)
  return {'documents': docs.main, 'embedded': embedded.main,
          'dead_letters': dead}


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


def _encoder_shapes(results) -> list[str]:
  """The distinct rows x length shapes the encoder was called with."""
  shapes = metrics.by_key(results, metrics.ENCODER_SHAPES)
  return [f'{rows}x{length}' for rows, length in
          sorted(shapes, key=lambda shape: shape[::-1])]


def summarize(result, options: EmbedOptions, seconds: float,
              where: Optional[Locations] = None) -> dict:
  where = where or locations(options)
  results = result.metrics()
  m = metrics
  found = metrics.totals(results, (
      *m.figure_metrics(), m.TOKENS_COMPUTED, m.RECORDS_CARRIED,
      m.DOCUMENTS_REMOVED, m.FILES_TRUNCATED, m.DUPLICATE_IDS,
      m.DUPLICATE_DOCUMENTS, m.DOCUMENTS_TRUNCATED, m.DOCUMENTS_CHUNKED,
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
  return {
      'documents_read': read,
      'documents_embedded': embedded,
      'documents_reused': reused,
      'documents_removed': found[m.DOCUMENTS_REMOVED],
      'documents_rejected': rejected,
      'files_truncated': found[m.FILES_TRUNCATED],
      'records_carried': carried,
      'reconciled': read == embedded + reused + rejected and carried_all,
      'duplicate_ids': found[m.DUPLICATE_IDS],
      'duplicate_documents': found[m.DUPLICATE_DOCUMENTS],
      'documents_truncated': found[m.DOCUMENTS_TRUNCATED],
      'documents_chunked': found[m.DOCUMENTS_CHUNKED],
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
      'documents_per_second': round(embedded / seconds, 2) if seconds else 0,
      # PostgreSQL outputs: rows written (upserted) and deleted.
      'rows_upserted': found[m.ROWS_WRITTEN.member(records.EMBEDDINGS.name)],
      'rows_deleted': found[m.ROWS_DELETED.member(records.EMBEDDINGS.name)],
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


def fetch_hub_models(model: presets.ResolvedModel) -> None:
  """On local runners, fails fast on TF Hub URLs that cannot be fetched,
  instead of after the workers have started; resolving downloads them into
  the TF Hub cache that local workers then reuse. (Folders, local or gs://,
  are checked for every runner when the model is resolved.)"""
  for handle in (model.preprocessor, model.encoder):
    if model_files.is_url(handle):
      try:
        import_hub().resolve(handle)
      except Exception as e:  # pylint: disable=broad-except
        raise RuntimeError(
            f'cannot fetch model {handle}: {e}. Offline, use --model '
            'minilm-l6 or --preprocessor/--encoder with local folders.'
        ) from e


def _worker_accelerator(options: PipelineOptions) -> bool:
  """Whether a Dataflow service option gives every worker a GPU."""
  service = options.view_as(GoogleCloudOptions).dataflow_service_options
  return any(o.startswith('worker_accelerator') for o in service or ())


def check_accelerator_flags(options: PipelineOptions) -> None:
  """--encoder_accelerator is Dataflow right fitting: batch jobs only, and
  not with a GPU on every worker as well."""
  embed = options.view_as(EmbedOptions)
  if not embed.encoder_accelerator:
    return
  if options.view_as(StandardOptions).streaming:
    raise ValueError('--encoder_accelerator (right fitting) works for batch '
                     'jobs only; drop --streaming, or give every worker a '
                     'GPU with --dataflow_service_options '
                     'worker_accelerator=...')
  if _worker_accelerator(options):
    raise ValueError('give either --encoder_accelerator (a GPU only for the '
                     'Encode step) or --dataflow_service_options '
                     'worker_accelerator=... (a GPU on every worker), not '
                     'both')
  if 'type:' not in embed.encoder_accelerator:
    raise ValueError('--encoder_accelerator takes Dataflow\'s accelerator '
                     'form, e.g. "type:nvidia-l4;count:1;'
                     'install-nvidia-driver"')


def resolve_precision(options: PipelineOptions,
                      model: presets.ResolvedModel) -> str:
  """--precision as it will run: auto decided here, once, because the
  precision is part of every record's model fingerprint. On Dataflow the
  launcher cannot see the workers' CPUs: bf16 only where a GPU is asked
  for. Local runners run on this machine."""
  embed = options.view_as(EmbedOptions)
  if embed.precision != 'auto':
    return embed.precision
  if not model.low_precision:
    return 'fp32'
  if options.view_as(StandardOptions).runner == 'DataflowRunner':
    # Not this machine's CPU flags: the workers' CPUs are unknown here.
    return auto_precision(gpu=bool(embed.encoder_accelerator) or
                          _worker_accelerator(options), flags=set())
  return auto_precision(gpu=bool(configure_gpus()))


def check_batching_flags(options: EmbedOptions) -> None:
  if options.max_seq_length < 8:
    raise ValueError('--max_seq_length must be at least 8')
  for flag in ('batch_size', 'sort_window'):
    if getattr(options, flag) < 1:
      raise ValueError(f'--{flag} must be positive')
  if options.chunk_stride is not None and options.chunk_stride < 1:
    raise ValueError('--chunk_stride must be positive')


def check_io_flags(options: EmbedOptions) -> Locations:
  """The input and output flags, and each backend's own launch checks."""
  if bool(options.input) == bool(options.input_query):
    raise ValueError('give exactly one of --input and --input_query')
  if not options.output:
    raise ValueError('--output is required: a file prefix (local or '
                     'gs://), bq://PROJECT.DATASET.TABLE or '
                     'postgresql://USER@HOST:PORT/DATABASE?table=TABLE')
  input_format = (read_lib.detect_format(options.input, options.input_format)
                  if options.input else 'bigquery')
  if options.metadata_fields and input_format == 'text':
    raise ValueError('--metadata_fields needs records with fields; plain '
                     'text lines have none')
  where = locations(options)
  where.output.check()
  where.dead_letters.check()
  if not options.view_as(TestOptions).dry_run:
    where.output.recover()
    where.dead_letters.recover()
  if where.previous:
    where.previous.check_readable()
    where.output.check_previous(where.previous)
  if where.keyed_by_id() and options.on_duplicate_id == 'keep':
    raise ValueError(f'--on_duplicate_id keep: {where.output.shown()} holds '
                     'one record per id; use first or error')
  return where


class _Parser(_BeamArgumentParser):
  """Beam's argparse parser that raises instead of printing usage and
  exiting, so that a bad flag is one line like every other launch
  error."""

  def error(self, message):
    raise ValueError(message)


def help_parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog='python -m pipeline.run', allow_abbrev=False,
      description='Embed a text corpus with a TF Hub preprocessor + encoder '
      'pair on Apache Beam and write the embeddings to TFRecord or Parquet '
      'files, BigQuery or PostgreSQL (pgvector).',
      epilog='Beam pipeline flags (--runner, --project, --region, '
      '--temp_location, --direct_num_workers, --direct_running_mode, ...) are '
      f'accepted too. Without --runner the job runs locally on '
      f'{DEFAULT_LOCAL_RUNNER}. The last line printed is a JSON summary.')
  EmbedOptions._add_argparse_args(parser)  # pylint: disable=protected-access
  return parser


def check_flags(argv) -> None:
  """The job's flags (values, choices), then every flag against those of
  the job and of Beam. Beam keeps flags it does not know and the job's own
  parser would skip them, so a misspelt --max_seq_lenght would otherwise
  run with the default. Built as Beam's PipelineOptions.get_all_options
  builds its parser: every PipelineOptions subclass, no abbreviations."""
  help_parser().parse_known_args(argv)
  parser = _Parser(allow_abbrev=False)
  classes = {str(c): c for c in PipelineOptions.__subclasses__()}
  for cls in classes.values():
    cls._add_argparse_args(parser)  # pylint: disable=protected-access
  _, unknown = parser.parse_known_args(argv)
  if not unknown:
    return
  arg = unknown[0]
  if not arg.startswith('-'):
    raise ValueError(f'unexpected argument {arg!r}: flags take the form '
                     '--name value or --name=value')
  name = arg.split('=', 1)[0]
  known = [o for a in parser._actions for o in a.option_strings]  # pylint: disable=protected-access
  close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
  hint = f'; did you mean {close[0]}?' if close else (
      '; python -m pipeline.run --help lists the job\'s flags')
  raise ValueError(f'unknown flag {name}{hint}')


class InputFiles(NamedTuple):
  count: int
  bytes: int
  compressed: bool


def input_files(options: EmbedOptions,
                where: Locations) -> Optional[InputFiles]:
  """The files --input names (None for BigQuery): none is an error here,
  at launch, rather than an empty run. Files of this job's own output and
  dead letters are not input (Locations.own_files): skipped, with one
  warning."""
  if not options.input or read_lib.detect_format(
      options.input, options.input_format) == 'bigquery':
    return None
  try:
    found = FileSystems.match([options.input])[0].metadata_list
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'--input {options.input}: cannot list files: '
                     f'{file_backends.cause(e)}') from e
  if not found:
    raise ValueError(f'--input {options.input} matches no files')
  warn_unreadable(options.input, found)
  own = where.own_files()
  skipped = [m.path for m in found if m.path in own]
  found = [m for m in found if m.path not in own]
  if not found:
    raise ValueError(f'--input {options.input} matches only files of this '
                     f'job\'s own output ({len(skipped):,}, e.g. '
                     f'{skipped[0]})')
  if skipped:
    logging.warning(
        'skipping %d file(s) that --input %s matches but that are this '
        'job\'s own output or dead letters (e.g. %s)', len(skipped),
        options.input, skipped[0])
  for m in found:
    read_lib.check_compression(m.path)
  return InputFiles(len(found), sum(m.size_in_bytes for m in found),
                    any(compressed.is_compressed(m.path) for m in found))


def warn_unreadable(pattern: str, found) -> int:
  """Names, one warning each, the local files a pattern matches that
  Beam's listing leaves out because they cannot be read (a dangling
  link), or that this process may not read: never a silent skip. Remote
  files that vanish or fail to open later fail the run, naming them."""
  if '://' in pattern:
    return 0
  listed = {os.path.abspath(m.path) for m in found}
  count = 0
  for path in sorted(glob.glob(pattern, recursive=True)):
    if os.path.isdir(path):
      continue
    why = None
    if not os.path.exists(path):
      why = f'a dangling link (to {os.readlink(path)})'
    elif not os.access(path, os.R_OK):
      why = 'this user may not read it'
    elif os.path.abspath(path) not in listed:
      why = 'the file system does not list it'
    if why:
      logging.warning('--input %s matches %s, which cannot be read: %s; '
                      'it is not read', pattern, path, why)
      count += 1
  return count


def check_report_path(options: EmbedOptions) -> None:
  """--report and --report_color_field, before the run rather than after
  it."""
  color = options.report_color_field
  if color and not options.report:
    raise ValueError('--report_color_field colours the report: give '
                     '--report PATH.html too')
  if color and color not in options.metadata_fields:
    raise ValueError(f'--report_color_field {color} is not one of '
                     '--metadata_fields (the output records carry only '
                     'those)')
  if not options.report:
    return
  if '://' in options.report or os.path.isdir(options.report):
    raise ValueError(f'--report {options.report}: give the path of an HTML '
                     'file (a local path; the report is one file)')
  file_backends.probe_writable(options.report, 'the report')
  # matplotlib is imported only when a report is asked for, and here, so
  # that an environment without it fails before the run.
  from pipeline import report  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import


def _size(n: int) -> str:
  for unit in ('bytes', 'KB', 'MB', 'GB'):
    if n < 1000 or unit == 'GB':
      return f'{n:,} {unit}' if unit == 'bytes' else f'{n:.1f} {unit}'
    n /= 1000
  return str(n)


def _device(options: PipelineOptions) -> str:
  embed = options.view_as(EmbedOptions)
  if options.view_as(StandardOptions).runner == 'DataflowRunner':
    if embed.encoder_accelerator:
      return f'Dataflow workers, the Encode step on {embed.encoder_accelerator}'
    return ('Dataflow GPU workers' if _worker_accelerator(options)
            else 'Dataflow CPU workers')
  gpus = configure_gpus()
  return f'{len(gpus)} GPU(s)' if gpus else 'CPU'


def about_line(options: PipelineOptions, model: presets.ResolvedModel,
               where: Locations, files: Optional[InputFiles]) -> str:
  """What the run is about to do, in one line."""
  embed = options.view_as(EmbedOptions)
  source = embed.input or 'a BigQuery query'
  if files:
    source += (f' ({files.count:,} file{"s" if files.count != 1 else ""}, '
               f'{_size(files.bytes)})')
  return (f'embedding {source} with {model.name} on {_device(options)}, '
          f'{embed.precision}, into {where.output.shown()}')


def _prepare(argv):
  """Every launch check, in order: (options, model, locations, input
  files), with the runner defaulted and --precision auto resolved; raises
  ValueError, RuntimeError or OSError with the one line to print."""
  check_flags(argv)
  options = PipelineOptions(argv)
  embed_options = options.view_as(EmbedOptions)
  standard = options.view_as(StandardOptions)
  if not standard.runner:
    standard.runner = DEFAULT_LOCAL_RUNNER
  check_batching_flags(embed_options)
  check_accelerator_flags(options)
  model = resolve_model(embed_options)
  embed_options.precision = resolve_precision(options, model)
  if model.max_seq_length and embed_options.max_seq_length > (
      model.max_seq_length):
    raise ValueError(f'--max_seq_length {embed_options.max_seq_length} is '
                     f'more than {model.name} takes '
                     f'({model.max_seq_length})')
  where = check_io_flags(embed_options)
  files = input_files(embed_options, where)
  check_report_path(embed_options)
  if standard.runner != 'DataflowRunner':
    fetch_hub_models(model)
    if embed_options.require_gpu:
      # Local workers see this machine's GPUs: fail before starting them.
      # On Dataflow the check runs on each worker, at model load.
      configure_gpus(require_gpu=True)
  return options, model, where, files


def launch(argv) -> tuple[int, Optional[dict], object]:
  """Checks the flags, builds and runs the job: (exit status, summary,
  Beam's PipelineResult). main() prints; tests look at the result too.

  Whatever can be checked before the run is, and fails with one line and
  status 2; an error while the pipeline runs is one line naming the step,
  status 1. --verbose adds the traceback."""
  try:
    options, model, where, files = _prepare(argv)
  except (ValueError, RuntimeError, OSError) as e:
    interrupts.reraise()
    _error(e, _asks_verbose(argv))
    return 2, None, None
  embed_options = options.view_as(EmbedOptions)
  verbose = bool(embed_options.verbose)
  standard = options.view_as(StandardOptions)
  if embed_options.pooling == 'pooled' and model.untrained_pooler:
    logging.warning(
        '--pooling pooled with %s: its pooled_output comes from a pooler '
        'the checkpoint never trained (random weights). Use --pooling mean '
        'unless you fine-tune the pooler.', model.name)
  dry_run = options.view_as(TestOptions).dry_run
  if not dry_run:
    print(about_line(options, model, where, files), file=sys.stderr,
          flush=True)
  start = time.monotonic()
  local = standard.runner == DEFAULT_LOCAL_RUNNER
  source = None if dry_run or embed_options.progress_every <= 0 else (
      progress.source_for(standard.runner, options))
  display = source and progress.Display(
      source, every=embed_options.progress_every,
      total_bytes=files.bytes if files and not files.compressed else None)
  p = beam.Pipeline(runner=worker.local_runner(
      options, source and source.request_every) if local else None,
                    options=options)
  build_pipeline(p, embed_options, model, where)
  files_left = None if dry_run else cleanup.RunFiles(
      (where.output, where.dead_letters))
  interrupts.set_finisher(lambda _: _interrupted(
      files_left, local=local, finished=False, runner=standard.runner))
  try:
    if not display:
      result = p.run()
      if dry_run:
        # Beam's --dry_run builds the whole job and stops before submitting.
        return 0, {'dry_run': True, 'runner': standard.runner,
                   'model': model.name,
                   'model_fingerprint': embedding_spec(
                       embed_options, model).fingerprint()}, result
      result.wait_until_finish()
    else:
      with display.track():
        result = p.run()
        display.started(result)
        result.wait_until_finish()
        display.finish(result)
  except Exception as e:  # pylint: disable=broad-except
    interrupts.reraise()
    if files_left and local:
      files_left.remove_own()
    _error(e, verbose, during_run=True)
    return 1, None, None
  interrupts.set_finisher(lambda _: _interrupted(
      files_left, local=local, finished=True, runner=standard.runner))
  if files_left and local:
    files_left.remove_stale()
  summary = summarize(result, embed_options, time.monotonic() - start, where)
  summary['model'] = model.name
  summary['precision'] = embed_options.precision
  return _conclude(summary, result, embed_options, display, verbose)


def _conclude(summary: dict, result, embed_options: EmbedOptions, display,
              verbose: bool) -> tuple[int, Optional[dict], object]:
  """After the run: the report, then whether the night failed for a
  scheduler (failure)."""
  if embed_options.report:
    from pipeline import report  # pylint: disable=import-outside-toplevel
    try:
      report.write(embed_options.report, summary=summary,
                   options=embed_options, samples=display.samples if display else ())
    except Exception as e:  # pylint: disable=broad-except
      # The embeddings are written; the report is not.
      _error(RuntimeError(f'--report {embed_options.report}: '
                          f'{console.run_error_line(e)}'), verbose)
      return 1, summary, result
    print(f'report: {embed_options.report}', file=sys.stderr)
  why = failure(summary, embed_options.max_rejected)
  if why:
    _error(RuntimeError(why), verbose=False)
    return 1, summary, result
  return 0, summary, result


def _interrupted(files_left: Optional[cleanup.RunFiles], *, local: bool,
                 finished: bool, runner: str) -> str:
  """What an interrupted run says after 'interrupted (SIGINT); ', once its
  temporary files are removed. A job on a remote runner is not this
  process's to stop, nor are its files."""
  if files_left is None:
    return 'nothing was written'
  if not local:
    return (f'the {runner} job keeps running where it was submitted; cancel '
            'it there (Dataflow: gcloud dataflow jobs cancel JOB_ID)')
  return files_left.interrupted(finished=finished)


def _error(exc: BaseException, verbose: bool, during_run: bool = False):
  if verbose:
    traceback.print_exception(exc, file=sys.stderr)
  text = console.run_error_line(exc) if during_run else str(exc)
  print(f'pipeline.run: error: {text}', file=sys.stderr, flush=True)


def main(argv=None) -> int:
  argv = list(argv if argv is not None else sys.argv[1:])
  if '-h' in argv or '--help' in argv:
    help_parser().print_help()
    return 0
  verbose = _asks_verbose(argv)
  console.configure(verbose=verbose)
  interrupts.started(verbose)
  try:
    status, summary, _ = launch(argv)
  except BaseException as e:  # pylint: disable=broad-except
    if interrupts.received() is None:
      raise
    if verbose:
      traceback.print_exception(e, file=sys.stderr)
    return interrupts.finish(interrupts.received())
  if summary is not None:
    print(json.dumps(summary), flush=True)
  return status


def _asks_verbose(argv) -> bool:
  """--verbose as the job will read it; read before anything is logged,
  so that start-up chatter is held from the start."""
  try:
    known, _ = help_parser().parse_known_args(argv)
  except ValueError:
    return False
  return bool(known.verbose)


if __name__ == '__main__':
  _status = main()
  if interrupts.received() is not None:
    # Threads Beam started may still wait on the stopped run.
    interrupts.exit_now(_status)
  sys.exit(_status)
