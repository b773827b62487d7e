"""Reading Hugging Face model folders (config, weights, vocabularies).

Weights are read with `safetensors.numpy`, so exporting needs no torch.
"""

from __future__ import annotations

import json
import os

import numpy as np


# How a special token written in a text ("[SEP]", "</s>") is read by an
# export's preprocessor (tfmodels/export.py): as that token, or as its
# characters (Hugging Face's split_special_tokens). Here, without
# TensorFlow, for the export command's --help.
SPECIAL_TOKENS_IN_TEXT = ('special', 'text')


class ModelFilesError(ValueError):
  """A Hugging Face model folder is missing a file or has a bad one."""


# Every file the exporters read, for the export's content digest.
MODEL_FILES = ('config.json', 'model.safetensors', 'pytorch_model.bin',
               'vocab.txt', 'tokenizer_config.json', 'vocab.json',
               'merges.txt', 'tokenizer.json')


def read_config(model_dir: str) -> dict:
  path = os.path.join(model_dir, 'config.json')
  if not os.path.exists(path):
    raise ModelFilesError(f'{model_dir} has no config.json')
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def read_weights(model_dir: str) -> dict[str, np.ndarray]:
  safetensors_path = os.path.join(model_dir, 'model.safetensors')
  if os.path.exists(safetensors_path):
    from safetensors.numpy import load_file
    return load_file(safetensors_path)
  bin_path = os.path.join(model_dir, 'pytorch_model.bin')
  if os.path.exists(bin_path):
    try:
      import torch
    except ImportError as e:
      raise ModelFilesError(
          f'{bin_path} is a PyTorch pickle and needs torch to read; install '
          'torch or convert it to model.safetensors') from e
    state = torch.load(bin_path, map_location='cpu', weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}
  raise ModelFilesError(
      f'{model_dir} has neither model.safetensors nor pytorch_model.bin')


def read_wordpiece_vocab(model_dir: str) -> list[str]:
  path = os.path.join(model_dir, 'vocab.txt')
  if not os.path.exists(path):
    raise ModelFilesError(f'{model_dir} has no vocab.txt')
  with open(path, encoding='utf-8') as f:
    return [line.rstrip('\n') for line in f]


def read_lower_case(model_dir: str, default: bool = True) -> bool:
  path = os.path.join(model_dir, 'tokenizer_config.json')
  if not os.path.exists(path):
    return default
  with open(path, encoding='utf-8') as f:
    config = json.load(f)
  if config.get('strip_accents') not in (None,):
    raise ModelFilesError(
        'tokenizer_config.json sets strip_accents separately from '
        'do_lower_case; only the standard BERT normalisation is supported')
  if config.get('tokenize_chinese_chars', True) is not True:
    raise ModelFilesError('tokenize_chinese_chars=False is not supported')
  return bool(config.get('do_lower_case', default))


def read_bpe_vocab(model_dir: str) -> dict[str, int]:
  """vocab.json: byte-level token spelling -> id."""
  path = os.path.join(model_dir, 'vocab.json')
  if not os.path.exists(path):
    raise ModelFilesError(f'{model_dir} has no vocab.json')
  with open(path, encoding='utf-8') as f:
    vocab = json.load(f)
  if not isinstance(vocab, dict) or not vocab:
    raise ModelFilesError(f'{path} is not a token -> id object')
  return vocab


def read_bpe_merges(model_dir: str) -> list[tuple[str, str]]:
  """merges.txt: one "left right" pair per line, by rank; a first line
  starting with #version is a header."""
  path = os.path.join(model_dir, 'merges.txt')
  if not os.path.exists(path):
    raise ModelFilesError(f'{model_dir} has no merges.txt')
  merges = []
  with open(path, encoding='utf-8') as f:
    for number, line in enumerate(f, 1):
      line = line.rstrip('\r\n')
      if (number == 1 and line.startswith('#version')) or not line:
        continue
      parts = line.split(' ')
      if len(parts) != 2:
        raise ModelFilesError(f'{path}:{number}: expected "left right", got '
                              f'{line!r}')
      merges.append((parts[0], parts[1]))
  return merges
