"""An export's folder layout and its manifest (export.json), read without
TensorFlow: the loader (tfmodels/embedder.py) reads what the exporter
(tfmodels/export.py) wrote, and neither imports the other for it."""

from __future__ import annotations

import json
import os
from typing import Optional

PREPROCESSOR_DIR = 'preprocessor'
ENCODER_DIR = 'encoder'
MANIFEST = 'export.json'
NUM_SPECIAL = 'num_special_tokens'


def read_manifest(out_dir: str) -> dict:
  with open(os.path.join(out_dir, MANIFEST), encoding='utf-8') as f:
    return json.load(f)


def recorded_num_special(preprocessor_dir: str) -> Optional[dict]:
  """{segments: special tokens} recorded in the manifest beside a
  preprocessor folder of this project's export (export format 7 on), or
  None: another preprocessor, or an older export."""
  path = os.path.join(os.path.dirname(os.path.normpath(preprocessor_dir)),
                      MANIFEST)
  if (os.path.basename(os.path.normpath(preprocessor_dir)) !=
      PREPROCESSOR_DIR or not os.path.exists(path)):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      recorded = json.load(f).get(NUM_SPECIAL)
    return {int(n): int(k) for n, k in recorded.items()} if recorded else None
  except (OSError, ValueError, AttributeError):
    return None
