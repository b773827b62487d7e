"""Exports Hugging Face models as TF Hub preprocessor + encoder SavedModels."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import tensorflow as tf

from tfmodels import encoder as encoder_lib
from tfmodels import hf
from tfmodels import wordpiece

PREPROCESSOR_DIR = 'preprocessor'
ENCODER_DIR = 'encoder'
MANIFEST = 'export.json'


def _save_atomically(obj, out_dir: str, signatures=None) -> None:
  """Saves to a sibling temp folder, then renames: an interrupted export never
  leaves a half-written model that a later run would take as cached."""
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix='.tmp-export-')
  try:
    tf.saved_model.save(obj, tmp, signatures=signatures)
    if os.path.exists(out_dir):
      shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)


def export_bert_from_hf(hf_dir: str, out_dir: str,
                        default_seq_length: int = 128) -> dict:
  """Writes OUT/preprocessor and OUT/encoder from a Hugging Face BERT folder.

  Returns the manifest (also written to OUT/export.json).
  """
  config = hf.read_config(hf_dir)
  if config.get('model_type', 'bert') != 'bert':
    raise hf.ModelFilesError(
        f"{hf_dir} holds a {config.get('model_type')!r} model; this exporter "
        'takes BERT-style (WordPiece) models')
  vocab = hf.read_wordpiece_vocab(hf_dir)
  lower_case = hf.read_lower_case(hf_dir)
  enc_config = encoder_lib.EncoderConfig.from_hf_config(config)
  if len(vocab) != enc_config.vocab_size:
    raise hf.ModelFilesError(
        f'vocab.txt has {len(vocab)} tokens but config.json says '
        f'vocab_size={enc_config.vocab_size}')
  os.makedirs(out_dir, exist_ok=True)
  preprocessor = wordpiece.build_wordpiece_preprocessor(
      vocab, lower_case=lower_case, default_seq_length=default_seq_length)
  _save_atomically(preprocessor, os.path.join(out_dir, PREPROCESSOR_DIR))
  encoder = encoder_lib.TransformerEncoder(enc_config, hf.read_weights(hf_dir))
  root, signatures = encoder_lib.build_encoder_savedmodel(encoder)
  _save_atomically(root, os.path.join(out_dir, ENCODER_DIR), signatures)
  manifest = {
      'format': 'tfhub-bert-pair/1',
      'tokenizer': 'wordpiece',
      'lower_case': lower_case,
      'hidden_size': enc_config.hidden_size,
      'num_layers': enc_config.num_layers,
      'max_position_embeddings': enc_config.max_position_embeddings,
      'default_seq_length': default_seq_length,
      'pooler_trained': not encoder.missing_pooler,
      'source': os.path.abspath(hf_dir),
  }
  with open(os.path.join(out_dir, MANIFEST), 'w', encoding='utf-8') as f:
    json.dump(manifest, f, indent=2)
  return manifest
