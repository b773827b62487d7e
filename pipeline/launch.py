"""The launch as data: every check made before a run, made once, and what
the checks decide, in one frozen Plan.

plan_from(options) resolves the model (its identity read once), decides
--precision auto, chooses the backends and lists the input files; it
raises ValueError, RuntimeError or OSError with the one line to print. It
never changes the options: what it decides is in the Plan, which
pipeline/graph.py builds the job from and pipeline/run.py runs. A test or
a notebook makes a Plan the same way the command does.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import logging
import os
from typing import NamedTuple, Optional, Sequence

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.options.pipeline_options import TestOptions

from pipeline import preflight
from pipeline import presets
from pipeline import summary as summary_lib
from pipeline.flags import DEFAULT_LOCAL_RUNNER, check_flags
from pipeline.beam_options import EmbedOptions
import tfmodels
from tfmodels.devices import auto_precision, configure_gpus
from tfmodels.embedder import import_hub
from transforms import backends
from transforms import compressed
from transforms import leases
from transforms import model_files
from transforms import paths
from transforms import provenance
from transforms import read as read_lib
from transforms import records
from transforms.backends import files as file_backends
from transforms.spec import EmbeddingSpec

def resolve_model(options: EmbedOptions) -> presets.ResolvedModel:
  """The model the flags name (plan_from reads its identity, once)."""
  return presets.resolve(options.model, options.preprocessor, options.encoder,
                         options.model_cache_dir, options.model_dir)


@dataclasses.dataclass(frozen=True)
class Locations:
  """The job's backends, chosen once from the flags."""
  output: backends.Backend
  dead_letters: backends.Backend
  previous: Optional[backends.Backend]
  started: datetime.datetime
  # Where --previous was looked for, found or not (--previous_if_exists:
  # a first run's --previous, which its output becomes).
  previous_place: Optional[backends.Backend] = None
  # --previous_if_exists: what was found, as the launch and the summary
  # say it (previous_note).
  previous_note: Optional[str] = None

  def own_files(self) -> file_backends.OwnFiles:
    """Files this run writes, which --input must not read."""
    return file_backends.OwnFiles.of(self.output, self.dead_letters)

  def on_duplicate_id(self, options: EmbedOptions) -> str:
    """The policy: as given, else keep, or first where ids are keys
    (a keyed table, or a table that takes a nightly run's changes by id)."""
    return options.on_duplicate_id or (
        'first' if self.keyed_by_id() else 'keep')

  def hold(self, note: Optional[provenance.Provenance] = None
           ) -> leases.Lease:
    """Takes the output's lease (one writer per output; LeaseHeld, a
    ValueError, names the run that holds it), then finishes what a killed
    run left: only a run that holds the lease may touch those files. Then
    notes how this run makes its vectors, beside the output."""
    lease = leases.acquire(self.output.lease_store(),
                           output=self.output.shown())
    try:
      self.output.recover()
      self.dead_letters.recover()
      if note:
        self.output.notes().write(note.stamped())
    except BaseException:
      lease.release()
      raise
    return lease

  def keyed_by_id(self) -> bool:
    """A table that takes a nightly run's changes keys its rows by id from
    its first run on, when --previous names it before it exists."""
    return self.output.keyed_by_id or self.output.takes_changes(
        self.previous or self.previous_place)


def locations(options: EmbedOptions) -> Locations:
  # One timestamp per run: every record of a run says the same.
  started = datetime.datetime.now(datetime.timezone.utc)
  settings = backends.WriteSettings(
      started=started, num_shards=options.num_shards,
      bq_method=options.bq_write_method,
      bq_disposition=options.bq_write_disposition,
      temp_location=options.view_as(GoogleCloudOptions).temp_location,
      pg_index=options.pg_index,
      # Neither a dry run nor a preflight-only run writes anything.
      probe=not (options.view_as(TestOptions).dry_run or
                 options.preflight_only))
  record = records.EMBEDDINGS.with_metadata(options.metadata_fields)
  output = backends.output(options.output, options.output_format,
                           record=record, settings=settings)
  if options.previous_if_exists and not options.previous:
    raise ValueError('--previous_if_exists needs --previous: the output '
                     'that a nightly run starts from')
  lookup = previous_output(options, record) if options.previous else None
  note = None
  if lookup and options.previous_if_exists:
    note = summary_lib.previous_note(lookup)
    logging.getLogger(__name__).info('--previous_if_exists: %s', note)
  return Locations(
      output=output,
      dead_letters=backends.dead_letters(output, options.dead_letter,
                                         options.dead_letter_format,
                                         settings=settings),
      previous=lookup and lookup.found, started=started,
      previous_place=lookup and lookup.place,
      previous_note=note)


def previous_output(options: EmbedOptions,
                    record: records.Record) -> backends.Lookup:
  """--previous: an output of an earlier run. With --previous_if_exists,
  none there yet means a first run; the place that holds it must exist
  even so."""
  if not options.previous_if_exists:
    try:
      found = backends.existing(options.previous, record=record)
    except ValueError as e:
      raise ValueError(f'--previous: {e}; leave --previous out for a first '
                       'run') from e
    return backends.Lookup(found=found, place=found, shown=found.shown())
  try:
    lookup = backends.look_up(options.previous, record=record)
  except backends.MissingParent as e:
    raise ValueError(f'--previous {e}; --previous_if_exists makes a first '
                     'run only where that exists: correct --previous, or '
                     'create it') from e
  except (ValueError, RuntimeError) as e:
    raise ValueError(f'--previous: {" ".join(str(e).split())}') from e
  return lookup


def fetch_hub_models(model: presets.ResolvedModel) -> None:
  """On local runners, fails fast on TF Hub URLs that cannot be fetched,
  instead of after the workers have started; resolving downloads them into
  the TF Hub cache that local workers then reuse. (Folders, local or gs://,
  are checked for every runner when the model is resolved.)"""
  for handle in (model.preprocessor, model.encoder):
    if model_files.is_url(handle):
      try:
        import_hub().resolve(handle)
      except Exception as e:
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


def resolve_packing(options: EmbedOptions,
                    model: presets.ResolvedModel) -> bool:
  """--packing as it will run: packed rows need the encoder's packed
  calls (tfmodels/export.py, PACKED_ROWS_SINCE)."""
  if options.packing == 'on' and not model.packed_rows:
    raise ValueError(
        f'--packing on needs an encoder with packed calls, exported by this '
        f'project at format 6 or later; {model.name} has none (re-export it '
        'with python -m pipeline.export_model, or use --packing auto)')
  return options.packing != 'off' and model.packed_rows


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
  if where.previous:
    # First: the output's check() may add a table's missing columns.
    where.output.check_previous(where.previous)
  where.output.check()
  where.dead_letters.check()
  if where.previous and not where.output.takes_changes(where.previous):
    # A previous that takes this run's changes is the output, which
    # check_previous() and check() checked (with the columns they add).
    where.previous.check_readable()
  if where.keyed_by_id() and options.on_duplicate_id == 'keep':
    raise ValueError(f'--on_duplicate_id keep: {where.output.shown()} holds '
                     'one record per id; use first or error')
  return where


class InputFiles(NamedTuple):
  count: int
  bytes: int
  compressed: bool


def input_files(options: EmbedOptions, *,
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
  except Exception as e:
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
  if paths.has_scheme(pattern):
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
  if paths.has_scheme(options.report) or os.path.isdir(options.report):
    raise ValueError(f'--report {options.report}: give the path of an HTML '
                     'file (a local path; the report is one file)')
  file_backends.probe_writable(options.report, 'the report')
  # matplotlib is imported only when a report is asked for, and here, so
  # that an environment without it fails before the run.
  from pipeline import report  # noqa: F401


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


def about_line(plan: Plan) -> str:
  """What the run is about to do, in one line."""
  source = plan.embed.input or 'a BigQuery query'
  files = plan.files
  if files:
    source += (f' ({files.count:,} file{"s" if files.count != 1 else ""}, '
               f'{_size(files.bytes)})')
  return (f'embedding {source} with {plan.model.name} on '
          f'{_device(plan.options)}, {plan.precision}, into '
          f'{plan.where.output.shown()}')


@dataclasses.dataclass(frozen=True)
class Plan:
  """A job as the launch decided it. Frozen, and neither plan_from nor
  build_pipeline changes its options: what was decided from them (the
  precision, the model, the backends) travels in the transforms, so the
  workers never need options rewritten by the launcher. (Running the job
  is another matter: Beam's runners and worker.local_runner adjust the
  options they are handed.)"""
  # The flags as given (--precision may still say auto): treat as read-only.
  options: PipelineOptions
  # The model to load, its identity read.
  model: presets.ResolvedModel
  # --precision as it will run (auto decided).
  precision: str
  # --packing as it will run: documents packed several to an encoder row.
  packing: bool
  # --runner, or the default local runner.
  runner: str
  where: Locations
  # The files --input names (None for BigQuery input).
  files: Optional[InputFiles]
  # What decides an embedding: the model's identity, the flags, precision.
  spec: EmbeddingSpec
  # The preflight checks that ran and passed (pipeline/preflight.py).
  checked: tuple = ()

  @property
  def embed(self) -> EmbedOptions:
    return self.options.view_as(EmbedOptions)

  @property
  def local(self) -> bool:
    """Whether the job runs in this process (FnApiRunner)."""
    return self.runner == DEFAULT_LOCAL_RUNNER

  @property
  def dry_run(self) -> bool:
    return bool(self.options.view_as(TestOptions).dry_run)

  def hold(self) -> leases.Lease:
    """The output's lease (Locations.hold). A job that runs elsewhere
    (Dataflow) notes how it makes its vectors now, as its launcher may
    end before the job does (a Flex Template); a local job notes it once
    it has succeeded (note()), so that a run that fails or is stopped
    leaves nothing behind."""
    return self.where.hold(None if self.local else self.provenance())

  def note(self) -> None:
    """Notes how this run made its vectors, beside the output (again,
    for a job that runs elsewhere: the note's time says when)."""
    self.where.output.notes().write(self.provenance().stamped())

  def provenance(self) -> provenance.Provenance:
    """How this run makes its vectors, as the output keeps it."""
    return provenance.Provenance(
        spec=self.spec, model_name=self.model.name,
        preprocessor=paths.absolute(self.model.preprocessor),
        encoder=paths.absolute(self.model.encoder),
        model_dir=self.embed.model_dir and paths.absolute(
            self.embed.model_dir),
        packing=self.packing,
        text_field=self.embed.text_field,
        metadata_fields=tuple(self.embed.metadata_fields))


def embedding_spec(options: EmbedOptions, *, model: presets.ResolvedModel,
                   precision: str) -> EmbeddingSpec:
  """The flags that decide an embedding, with the model's identity and the
  precision that runs (never auto: it is part of the fingerprint)."""
  return EmbeddingSpec(
      model=model.identity, pooling=options.pooling,
      max_seq_length=options.max_seq_length, normalize=bool(options.normalize),
      long_documents=options.long_documents,
      chunk_stride=options.chunk_stride, precision=precision)


def plan_from(options: PipelineOptions, *,
              model: Optional[presets.ResolvedModel] = None) -> Plan:
  """Every launch check, in order, each made once; the options are not
  changed. `model` is a model already resolved (tests, notebooks); by
  default the model flags name it. Raises ValueError, RuntimeError or
  OSError with the one line to print."""
  embed = options.view_as(EmbedOptions)
  runner = options.view_as(StandardOptions).runner or DEFAULT_LOCAL_RUNNER
  check_batching_flags(embed)
  check_accelerator_flags(options)
  # Google Cloud first, in seconds: the checks below may read gs:// (the
  # model), where a lookup without credentials retries for minutes.
  checked = tuple(preflight.run(preflight.flight(options, embed),
                                skip=embed.skip_preflight))
  # Only now TensorFlow (seconds), held quiet where the console is quiet:
  # a preflight failure comes before it.
  tfmodels.import_quietly()
  # The identity, read once here: it hashes the SavedModels' files.
  model = (model or resolve_model(embed)).with_identity()
  precision = resolve_precision(options, model)
  packing = resolve_packing(embed, model)
  if model.max_seq_length and embed.max_seq_length > model.max_seq_length:
    raise ValueError(f'--max_seq_length {embed.max_seq_length} is more than '
                     f'{model.name} takes ({model.max_seq_length})')
  where = check_io_flags(embed)
  files = input_files(embed, where=where)
  check_report_path(embed)
  if runner != 'DataflowRunner':
    fetch_hub_models(model)
    if embed.require_gpu:
      # Local workers see this machine's GPUs: fail before starting them.
      # On Dataflow the check runs on each worker, at model load.
      configure_gpus(require_gpu=True)
  return Plan(options=options, model=model, precision=precision,
              packing=packing, runner=runner, where=where, files=files,
              spec=embedding_spec(embed, model=model, precision=precision),
              checked=checked)


def plan_from_argv(argv: Sequence[str]) -> Plan:
  """The command line's plan: every flag known and well-formed
  (pipeline/flags.py), then plan_from."""
  check_flags(argv)
  return plan_from(PipelineOptions(list(argv)))
