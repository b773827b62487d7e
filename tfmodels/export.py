"""Exports Hugging Face models as TF Hub preprocessor + encoder SavedModels."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import tensorflow as tf

from tfmodels import bytebpe
from tfmodels import embedder
from tfmodels import encoder as encoder_lib
from tfmodels import hf
from tfmodels import identity
from tfmodels import wordpiece
# The folder layout and manifest (tfmodels/manifest.py), as export.* too.
from tfmodels.manifest import (ENCODER_DIR, MANIFEST,  # noqa: F401
                               NUM_SPECIAL, PREPROCESSOR_DIR, read_manifest,
                               recorded_num_special)
# Bumped when exports gain something older ones lack (2: call_bf16/fp16;
# 3: the content digest in export.json; 4: 2-D projections, faster on CPUs;
# 5: the encoder's packed calls, several documents per row; 6: packed calls
# whose output shapes follow the input's, so that XLA compiles them once;
# 7: bf16/fp16 calls that keep values in that type between products and add
# the bias in it, so that each projection is one fused oneDNN call; and the
# preprocessor's special-token counts in export.json).
FORMAT = 'tfhub-bert-pair/7'
# The first format whose encoders take packed rows at one XLA shape per
# rows x length.
PACKED_ROWS_SINCE = 6


def format_number(manifest: dict) -> int:
  """N of an export.json's 'tfhub-bert-pair/N' (0 when absent)."""
  try:
    return int(str(manifest.get('format', '')).rsplit('/', 1)[1])
  except (IndexError, ValueError):
    return 0


def _make_readable(top: str) -> None:
  """Folders 755, files 644: workers often run as another user than the one
  who exported (mkdtemp makes folders 700)."""
  os.chmod(top, 0o755)
  for folder, dirs, files in os.walk(top):
    for name in dirs:
      os.chmod(os.path.join(folder, name), 0o755)
    for name in files:
      os.chmod(os.path.join(folder, name), 0o644)


def _save_atomically(obj, out_dir: str, signatures=None) -> None:
  """Saves to a sibling temp folder, then renames: an interrupted export never
  leaves a half-written model that a later run would take as cached."""
  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix='.tmp-export-')
  try:
    tf.saved_model.save(obj, tmp, signatures=signatures)
    _make_readable(tmp)
    if os.path.exists(out_dir):
      shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)


SPECIAL_TOKENS_IN_TEXT = hf.SPECIAL_TOKENS_IN_TEXT


def export_bert_from_hf(hf_dir: str, out_dir: str,
                        default_seq_length: int = 128,
                        special_tokens_in_text: str = 'special') -> dict:
  """Writes OUT/preprocessor and OUT/encoder from a Hugging Face BERT folder
  (WordPiece vocab.txt). Returns the manifest (also written to
  OUT/export.json).

  special_tokens_in_text: 'special' reads "[SEP]" etc. written in a text as
  those tokens, as Hugging Face's tokenizers do by default; 'text' tokenizes
  them as ordinary characters (their split_special_tokens=True).
  """
  config = _read_config(hf_dir, 'bert', 'BERT-style (WordPiece)')
  vocab = hf.read_wordpiece_vocab(hf_dir)
  lower_case = hf.read_lower_case(hf_dir)
  preprocessor = wordpiece.build_wordpiece_preprocessor(
      vocab, lower_case=lower_case, default_seq_length=default_seq_length,
      literal_tokens=(wordpiece.STANDARD_SPECIAL_TOKENS
                      if _match_specials(special_tokens_in_text) else ()))
  return _export(hf_dir, out_dir, config, preprocessor, len(vocab),
                 default_seq_length,
                 {'tokenizer': 'wordpiece', 'lower_case': lower_case,
                  'special_tokens_in_text': special_tokens_in_text})


def export_roberta_from_hf(hf_dir: str, out_dir: str,
                           default_seq_length: int = 128,
                           special_tokens_in_text: str = 'special') -> dict:
  """Writes OUT/preprocessor and OUT/encoder from a Hugging Face RoBERTa
  folder (byte-level BPE vocab.json + merges.txt). Returns the manifest.
  special_tokens_in_text as for export_bert_from_hf (<s>, </s>, <mask>...)."""
  config = _read_config(hf_dir, 'roberta', 'RoBERTa-style (byte-level BPE)')
  vocab = hf.read_bpe_vocab(hf_dir)
  merges = hf.read_bpe_merges(hf_dir)
  tokenizer_json = os.path.join(hf_dir, 'tokenizer.json')
  try:
    specials = bytebpe.read_added_tokens(
        tokenizer_json if os.path.exists(tokenizer_json) else None, vocab)
    preprocessor = bytebpe.build_bpe_preprocessor(
        vocab, merges, specials, default_seq_length=default_seq_length,
        match_specials=_match_specials(special_tokens_in_text))
  except ValueError as e:
    raise hf.ModelFilesError(f'{hf_dir}: {e}') from e
  num_tokens = preprocessor.tokenize.get_special_tokens_dict.__call__()[
      'vocab_size'].numpy()
  return _export(hf_dir, out_dir, config, preprocessor, int(num_tokens),
                 default_seq_length,
                 {'tokenizer': 'byte-level-bpe', 'merges': len(merges),
                  'special_tokens_in_text': special_tokens_in_text,
                  'special_tokens': {s.content: s.token_id
                                     for s in specials}})


def _match_specials(special_tokens_in_text: str) -> bool:
  if special_tokens_in_text not in SPECIAL_TOKENS_IN_TEXT:
    raise ValueError(f'special_tokens_in_text must be one of '
                     f'{SPECIAL_TOKENS_IN_TEXT}, got '
                     f'{special_tokens_in_text!r}')
  return special_tokens_in_text == 'special'


def _read_config(hf_dir: str, model_type: str, description: str) -> dict:
  config = hf.read_config(hf_dir)
  if config.get('model_type', 'bert') != model_type:
    raise hf.ModelFilesError(
        f"{hf_dir} holds a {config.get('model_type')!r} model; this exporter "
        f'takes {description} models')
  return config


def _export(hf_dir: str, out_dir: str, config: dict, preprocessor,
            num_tokens: int, default_seq_length: int, tokenizer_info: dict):
  """Saves the preprocessor, converts and saves the encoder, then writes the
  manifest last, so its presence means a complete export."""
  enc_config = encoder_lib.EncoderConfig.from_hf_config(config)
  if num_tokens > enc_config.vocab_size:
    raise hf.ModelFilesError(
        f'the tokenizer has {num_tokens} token ids but config.json says '
        f'vocab_size={enc_config.vocab_size}')
  if not 8 <= default_seq_length <= enc_config.max_seq_length:
    raise hf.ModelFilesError(
        f'seq_length must be between 8 and {enc_config.max_seq_length}, got '
        f'{default_seq_length}')
  os.makedirs(out_dir, exist_ok=True)
  _save_atomically(preprocessor, os.path.join(out_dir, PREPROCESSOR_DIR))
  # Probed on the saved copy, as a loading job would probe it.
  num_special = embedder.probe_num_special(
      tf.saved_model.load(os.path.join(out_dir, PREPROCESSOR_DIR)))
  encoder = encoder_lib.TransformerEncoder(enc_config, hf.read_weights(hf_dir))
  root, signatures = encoder_lib.build_encoder_savedmodel(encoder)
  _save_atomically(root, os.path.join(out_dir, ENCODER_DIR), signatures)
  manifest = {
      'format': FORMAT,
      # The pair's identity by content (tfmodels/identity.py): equal for the
      # same model exported anywhere, new for new weights or tokenizer
      # settings in the same folder.
      'digest': export_digest(out_dir, hf_dir, tokenizer_info),
      'model_type': config.get('model_type', 'bert'),
      **tokenizer_info,
      'hidden_size': enc_config.hidden_size,
      'num_layers': enc_config.num_layers,
      'max_seq_length': enc_config.max_seq_length,
      'default_seq_length': default_seq_length,
      'pooler_trained': not encoder.missing_pooler,
      # Special tokens bert_pack_inputs adds to 1 and 2 segments
      # (embedder.probe_num_special), so that loading skips the probe.
      NUM_SPECIAL: {str(n): k for n, k in num_special.items()},
      'source': os.path.abspath(hf_dir),
  }
  path = os.path.join(out_dir, MANIFEST)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(manifest, f, indent=2)
  os.chmod(path, 0o644)
  os.chmod(out_dir, 0o755)
  return manifest


def export_digest(out_dir: str, hf_dir: str, tokenizer_info: dict) -> str:
  """The identity of the pair exported to out_dir (tfmodels/identity.py):
  the fingerprints TensorFlow wrote while saving, the source files and the
  tokenizer settings. The same for the same model exported anywhere."""
  prints = []
  for part in (PREPROCESSOR_DIR, ENCODER_DIR):
    with open(os.path.join(out_dir, part, identity.FINGERPRINT_FILE),
              'rb') as f:
      prints.append(identity.singleprint(f.read()))
  sources = {name: identity.file_digest(os.path.join(hf_dir, name))
             for name in hf.MODEL_FILES
             if os.path.exists(os.path.join(hf_dir, name))}
  return identity.export_digest(prints, sources,
                                dict(tokenizer_info, format=FORMAT))
