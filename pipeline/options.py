"""Command-line options of the embedding job: add_flags() declares them,
without Beam; EmbedOptions is the same flags as Beam's PipelineOptions."""

from __future__ import annotations

import argparse

from pipeline import preflight
from pipeline import dataflow_job
from pipeline import presets
from tfmodels.embedder import POOLINGS, PRECISIONS
from transforms.bigquery_tables import WRITE_DISPOSITIONS, WRITE_METHODS
from transforms.choices import (DEAD_LETTER_FORMATS, INPUT_FORMATS,
                                LONG_DOCUMENTS, MAX_DOCUMENT_BYTES,
                                ON_DUPLICATE_ID, OUTPUT_FORMATS,
                                PACKED_ROW_LENGTHS, PACKING, PG_INDEXES)


def _bool(value: str) -> bool:
  if value.lower() in ('true', '1', 'yes'):
    return True
  if value.lower() in ('false', '0', 'no'):
    return False
  raise ValueError(f'expected true or false, got {value!r}')


def token_budget(value: str):
  """--max_batch_tokens: 'auto' or a positive number of tokens."""
  if str(value).strip().lower() == 'auto':
    return 'auto'
  try:
    tokens = int(value)
  except ValueError:
    tokens = 0
  if tokens < 1:
    raise argparse.ArgumentTypeError(
        f'expected a positive number of tokens or auto, got {value!r}')
  return tokens


def document_bytes(value: str) -> int:
  """--max_document_bytes: a number of bytes, 0 for no limit."""
  try:
    size = int(value)
  except ValueError:
    size = -1
  if size < 0:
    raise argparse.ArgumentTypeError(
        f'expected a number of bytes (0: no limit), got {value!r}')
  return size


# Flags for runs on this machine: progress is drawn by local runners, a
# report is written where the launcher runs (a Flex Template's launcher is
# a container that goes away), and an interrupt of this command may cancel
# its Dataflow job (flex/main.py takes no signals of its own). The Flex
# Template leaves them out.
LOCAL_ONLY = ('progress_every', 'report', 'report_color_field',
              'cancel_on_interrupt')

# On/off flags also take =true / =false: Flex Templates and schedulers pass
# every parameter as --name=value.
_SWITCH = dict(nargs='?', const=True, default=False, type=_bool)


def _limit(text: str) -> tuple[float, bool]:
  """--max_rejected as (value, is a percentage); value -1 if malformed."""
  share = text.endswith('%')
  try:
    return (float(text[:-1]) if share else int(text)), share
  except ValueError:
    return -1, share


def rejection_limit(text: str) -> str:
  """--max_rejected as given, once checked: a count or a percentage."""
  value, share = _limit(text)
  # `not value >= 0` also refuses nan, which no count is ever more than.
  if not value >= 0 or (share and value > 100):
    raise argparse.ArgumentTypeError(
        f'{text!r} is neither a count (10) nor a percentage (0.5%)')
  return text


def over_rejection_limit(limit: str, rejected: int, read: int) -> bool:
  """Whether `rejected` of `read` documents is more than --max_rejected
  (already checked by rejection_limit) allows."""
  value, share = _limit(limit)
  return (100 * rejected / read if share else rejected) > value


class _Declared:
  """A group of the job's flags, of which only those named in `only` (by
  dest) are declared, where `only` is given."""

  def __init__(self, group, only):
    self._group, self._only = group, only

  def add_argument(self, *names, **kwargs):
    if self._only is None or names[0].lstrip('-') in self._only:
      self._group.add_argument(*names, **kwargs)


def add_flags(parser: argparse.ArgumentParser, only=None) -> None:
  """Declares the job's flags on `parser`: the command's --help and
  flag check (pipeline/flags.py), and Beam's EmbedOptions, whose
  parser is Beam's. `only`: the flags to declare (by dest), for a
  command that takes some of the job's (pipeline/query.py)."""
  io = _Declared(parser.add_argument_group('input and output'), only)
  io.add_argument(
      '--input', default=None,
      help='The corpus: a file pattern (local path or gs://, globs '
      'allowed) or a BigQuery table bq://PROJECT.DATASET.TABLE (read with '
      'the Storage Read API).')
  io.add_argument(
      '--input_query', default=None,
      help='Instead of --input: a BigQuery standard-SQL query whose rows '
      'are the documents.')
  io.add_argument(
      '--input_format', default='auto', choices=('auto',) + INPUT_FORMATS,
      help='Corpus format; auto picks it from the file extension (.txt, '
      '.jsonl/.json/.ndjson, .csv, .parquet, .tfrecord). Default: auto.')
  io.add_argument(
      '--id_field', default='id',
      help='Field/column/feature holding the document id (default: id). '
      'Documents without one get "sha256:" + the first 32 hex digits of '
      'the SHA-256 of their text. Plain text lines always get that id.')
  io.add_argument('--text_field', default='text',
                  help='Field holding the text to embed (default: text).')
  io.add_argument(
      '--text_b_field', default=None,
      help='Optional second text field: each document is then embedded as '
      'a text pair packed into one input (tokenize both, then '
      'bert_pack_inputs([a, b])).')
  io.add_argument(
      '--metadata_fields', default='',
      type=lambda v: tuple(f for f in v.split(',') if f),
      help='Comma-separated input fields copied to every output record '
      '(as text; TFRecord bytes features or BigQuery STRING columns).')
  io.add_argument(
      '--max_document_bytes', type=document_bytes,
      default=MAX_DOCUMENT_BYTES,
      help='Documents larger than this (their text, with --text_b_field '
      'both texts, in UTF-8; a text or JSON-lines file\'s line; a CSV '
      'file\'s line) go to the dead letters as document_too_large, with '
      'their size, in every --long_documents mode. Lines longer than this '
      'are read past, never held in memory. 0: no limit. Default: '
      f'{MAX_DOCUMENT_BYTES:,} ({MAX_DOCUMENT_BYTES >> 20} MiB).')
  io.add_argument(
      '--on_duplicate_id', default=None, choices=ON_DUPLICATE_ID,
      help='Documents sharing an id: keep all (the default for files and '
      'BigQuery), first (keep the earliest by source location; the others '
      'go to the dead letters as duplicate_id; the default for '
      'PostgreSQL, whose id is the primary key, and for a BigQuery table '
      'that is also --previous, which takes changes by id) or error (fail '
      'the run). Counted in every case.')
  # Not required=True: Beam parses every PipelineOptions subclass for any
  # pipeline in the process, so a required flag here would break other
  # pipelines (launch.check_io_flags requires it for this job).
  io.add_argument(
      '--output', default=None,
      help='Output prefix (local or gs://); shards are written as '
      'PREFIX-SSSSS-of-NNNNN.tfrecord (tf.train.Example records) or '
      '.parquet (--output_format parquet). Or a BigQuery table '
      'bq://PROJECT.DATASET.TABLE, or a PostgreSQL table '
      'postgresql://USER@HOST:PORT/DATABASE?table=TABLE (pgvector; any '
      'libpq URI, ?host=/socket/folder included; the password from '
      'PGPASSWORD or ~/.pgpass); tables are created if needed.')
  io.add_argument(
      '--output_format', default='auto', choices=('auto',) + OUTPUT_FORMATS,
      help='Format of a file --output: tfrecord (auto) or parquet.')
  io.add_argument(
      '--dead_letter', default=None,
      help='Where records that could not be read or embedded go, with the '
      'reason: a file prefix (default: OUTPUT_dead_letter) or a table '
      '(default with a table output: the output table + "_dead_letter").')
  io.add_argument(
      '--max_rejected', default=None, type=rejection_limit,
      help='Fail the run (exit status 1, after everything is written, dead '
      'letters included) when more documents than this were rejected: a '
      'count (10) or a percentage of the documents read (0.5%%). Default: '
      'no limit. A run that read documents but embedded and reused none '
      'fails whatever the limit.')
  io.add_argument(
      '--dead_letter_format', default='auto',
      choices=('auto',) + DEAD_LETTER_FORMATS,
      help='Format of file dead letters: jsonl, or parquet; auto: parquet '
      'with a Parquet output, jsonl otherwise.')
  io.add_argument(
      '--previous', default=None,
      help='Output of an earlier run (TFRecord or Parquet prefix, bq:// '
      'or postgresql:// table) to '
      're-embed incrementally: documents whose id, content hash, metadata '
      'fields and model fingerprint (the model\'s content digest, pooling, '
      'max_seq_length, normalisation, long-document and precision '
      'settings) match a previous record keep that record without running '
      'the encoder; new and changed ones are embedded; ids gone from the '
      'corpus are dropped. The summary counts reused / embedded / removed. '
      'A PostgreSQL or BigQuery --output that is also the --previous table '
      'gets only the changes: new and changed rows upserted, removed ones '
      'deleted (BigQuery: one MERGE).')
  io.add_argument(
      '--previous_if_exists', **_SWITCH,
      help='With --previous, for a schedule that passes the same flags '
      'every night: no output at --previous yet means a full run (the '
      'first night), an output there a nightly run; the job says which '
      'before the run and in the summary ("previous"). The place that '
      'holds it must exist (the folder, or a gs:// prefix\'s bucket; the '
      'BigQuery dataset; the PostgreSQL database and schema), or the '
      'launch fails: a mistyped location is an error, not a full run. '
      'Without it, a --previous with no output is refused.')
  io.add_argument(
      '--bq_write_method', default='FILE_LOADS', choices=WRITE_METHODS,
      help='How BigQuery outputs are written: FILE_LOADS (default; load '
      'jobs from files staged under --temp_location gs://...) or '
      'STREAMING_INSERTS.')
  io.add_argument(
      '--bq_write_disposition', default='WRITE_TRUNCATE',
      choices=WRITE_DISPOSITIONS,
      help='WRITE_TRUNCATE (default): a run replaces the table, so a '
      're-run leaves one copy of each record. WRITE_APPEND adds rows '
      '(required by STREAMING_INSERTS); WRITE_EMPTY fails on a non-empty '
      'table.')
  io.add_argument(
      '--pg_index', default=None, choices=PG_INDEXES,
      help='PostgreSQL outputs: build this pgvector index on the '
      'embedding (cosine distance) after the load, if missing.')
  io.add_argument('--num_shards', type=int, default=0,
                  help='Output shards; 0 lets the runner decide.')

  shown = _Declared(parser.add_argument_group('what a run shows'), only)
  shown.add_argument(
      '--verbose', **_SWITCH,
      help='Show TensorFlow\'s and Beam\'s start-up and worker logs, and '
      'a traceback with every error. Without it a run prints one line '
      'saying what it will do, progress and the summary.')
  shown.add_argument(
      '--progress_every', type=float, default=10.0,
      help='Seconds between progress lines when stderr is not a terminal '
      '(on a terminal one line is refreshed about every second); 0 turns '
      'progress off. Live counts come from FnApiRunner (the default), a '
      'job service (PortableRunner --job_endpoint) or Dataflow. Default: 10.')
  shown.add_argument(
      '--report', default=None,
      help='Write a static HTML run report here (local path): token '
      'lengths, batches and padding per bucket, documents/s over time, '
      'dead letters by type, a PCA map of a sample of embeddings and the '
      'summary.')
  shown.add_argument(
      '--report_color_field', default=None,
      help='Metadata field that colours the report\'s embedding map '
      '(default: the first of --metadata_fields).')
  shown.add_argument(
      '--cancel_on_interrupt', nargs='?', const=True, default=None,
      type=_bool,
      help='What Ctrl-C or SIGTERM does to the Dataflow job this command '
      'launched: true cancels it; false leaves it running and says how to '
      'cancel it (gcloud dataflow jobs cancel). Unset: at a terminal, asks '
      'once "cancel Dataflow job JOB_ID? [Y/n]" (no answer in '
      f'{dataflow_job.ASK_SECONDS:.0f} s cancels); elsewhere (a scheduler, '
      'a pipe) cancels. The interrupt\'s line says which it did.')

  model = _Declared(parser.add_argument_group('model'), only)
  model.add_argument(
      '--model', default=None, choices=sorted(presets.PRESETS),
      help='Model preset (default: roberta-large, which loads from '
      'tfhub.dev). minilm-l6 works offline. Or give --model_dir, or '
      '--preprocessor and --encoder, instead.')
  model.add_argument(
      '--preprocessor', default=None,
      help='TF Hub preprocessor handle: tfhub.dev/Kaggle URL, gs:// or a '
      'local SavedModel folder.')
  model.add_argument('--encoder', default=None,
                     help='TF Hub encoder handle, as for --preprocessor.')
  model.add_argument(
      '--model_dir', default=None,
      help='A folder made by python -m pipeline.export_model (bert or '
      'roberta, e.g. roberta-large from Hugging Face files): its '
      'preprocessor/ and encoder/ are used.')
  model.add_argument(
      '--model_cache_dir', default=None,
      help='Where locally built presets are cached (default: '
      '$XDG_CACHE_HOME/beam-text-embed/models).')
  model.add_argument(
      '--pooling', default='mean', choices=POOLINGS,
      help='mean: average of sequence_output over real tokens (default); '
      'pooled: the encoder\'s pooled_output; cls: the first token\'s '
      'output. RoBERTa TF Hub conversions have an untrained pooler, so '
      'pooled is a poor choice for them.')
  model.add_argument('--normalize', **_SWITCH,
                     help='L2-normalise every embedding.')
  model.add_argument(
      '--max_seq_length', type=int, default=128,
      help='Tokens per input including special tokens, up to the model\'s '
      'limit (512 for RoBERTa/BERT); longer inputs are truncated and '
      'flagged truncated=1, or chunked (--long_documents). Default: 128.')
  model.add_argument(
      '--long_documents', default='truncate',
      choices=LONG_DOCUMENTS,
      help='truncate (default): embed the first max_seq_length tokens. '
      'chunk: embed overlapping windows of max_seq_length tokens and '
      'average them, weighted by their tokens; the record carries '
      'num_chunks. Text pairs are always truncated.')
  model.add_argument(
      '--chunk_stride', type=int, default=None,
      help='Tokens between chunk starts with --long_documents chunk '
      '(default: half a window).')

  batching = _Declared(parser.add_argument_group('batching'), only)
  batching.add_argument(
      '--max_batch_tokens', type=token_budget, default='auto',
      help='Tokens per encoder call, padding included (rows x row length), '
      'or auto: estimated where the encoder runs from the device (8192 on '
      'CPUs; on a GPU from its memory and the model\'s size and precision) '
      'and lowered per row length whenever the device runs out of memory. '
      'Within --sort_window, documents are packed several to a row (the '
      'default, --packing) or, with --packing off, sorted by length and '
      'padded to their length bucket; either way little of this is '
      'padding. Default: auto.')
  batching.add_argument('--batch_size', type=int, default=256,
                        help='Most documents per batch (default: 256).')
  batching.add_argument(
      '--sort_window', type=int, default=4096,
      help='Documents planned together: packed into rows (the default) or, '
      'with --packing off, sorted into length buckets. Bounds the memory '
      'that batching holds: at most this many plus one full batch per row '
      'length (default: 4096).')
  batching.add_argument(
      '--packing', default='auto', choices=PACKING,
      help='Pack several documents into each encoder row (rows of '
      f'{", ".join(map(str, PACKED_ROW_LENGTHS))} tokens below '
      '--max_seq_length, and --max_seq_length; each document attends only '
      'to itself), so that almost no padding is computed and XLA sees one '
      'shape per row length. Needs an encoder exported by this '
      'project (format 6 on; the presets are). auto: packed where the '
      'encoder can, length buckets elsewhere (TF Hub modules); on: an '
      'error where it cannot; off: length buckets. Vectors are the same '
      'either way within float rounding, so switching keeps --previous '
      'records. The summary says which ran. Default: auto.')
  model.add_argument(
      '--precision', default='fp32', choices=PRECISIONS + ('auto',),
      help='The encoder\'s projections (product, bias, GELU) and attention '
      'products in this type; embeddings, LayerNorm, softmax and the '
      'residual stream in float32 (default: fp32). bf16 is faster on GPUs '
      'and on CPUs with AMX or AVX-512 BF16, slower on other CPUs; needs '
      'an encoder exported by this project. auto: bf16 where the encoder '
      'runs on a GPU (--encoder_accelerator or worker_accelerator on '
      'Dataflow, a visible GPU locally) or, locally, on such a CPU, and '
      'the model has a bf16 call; fp32 elsewhere. The summary says which '
      'ran.')
  model.add_argument(
      '--jit_compile', **_SWITCH,
      help='Compile the encoder with XLA (for GPU workers; on CPUs it was '
      'slower here).')
  model.add_argument(
      '--large_model', **_SWITCH,
      help='Share one model copy across the SDK processes of a worker '
      '(RunInference large_model mode; for GPU workers).')
  model.add_argument(
      '--encoder_accelerator', default=None,
      help='Dataflow right fitting: a GPU only for the Encode step, e.g. '
      '"type:nvidia-l4;count:1;install-nvidia-driver" (Beam\'s accelerator '
      'resource hint); reading, tokenizing and writing stay on CPU '
      'workers. Batch jobs only; not together with --dataflow_service_'
      'options worker_accelerator=... (a GPU on every worker).')
  model.add_argument(
      '--require_gpu', **_SWITCH,
      help='Fail (at start on local runners, at model load on workers) '
      'when TensorFlow sees no GPU, instead of running on CPU.')

  launch = _Declared(parser.add_argument_group('launch checks'), only)
  launch.add_argument(
      '--skip_preflight', type=preflight.skip_list, default=(),
      help='Skip these preflight checks (comma-separated, or all): '
      f'{", ".join(preflight.NAMES)}. They run for DataflowRunner, and on '
      'any runner for what flags name on gs:// or bq://, each in seconds '
      'before the job is built: Google credentials; that they may use '
      'Dataflow in --project and --region; --temp_location and '
      '--staging_location writable; the BigQuery output\'s dataset, and '
      'that a missing table can be created; --sdk_container_image tagged '
      'with this Beam version. '
      'Skip one for a set-up it does not fit.')
  launch.add_argument(
      '--preflight_only', **_SWITCH,
      help='Run every launch check (the flags, the model, the inputs, '
      'the outputs and the preflight checks), print what the job would '
      'do and each check\'s result, and stop: nothing is built, staged '
      'or written, besides the checks\' own probe object and table, '
      'which they remove.')

