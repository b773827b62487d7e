"""The minilm-l6 export against Hugging Face / sentence-transformers, which
read the same package weights: token ids and embeddings."""

from __future__ import annotations

import random

import numpy as np
import pytest
import tensorflow as tf

from tests import hf_reference
from tests import textgen
from tfmodels.embedder import EmbeddingModel


def test_varied_sentences_token_ids_equal_hugging_face(preprocessor,
                                                       hf_tokenizer):
  texts = textgen.varied_sentences()
  assert len(texts) >= 50
  ours = hf_reference.token_ids(preprocessor, texts)
  ref = hf_tokenizer(texts, add_special_tokens=False)['input_ids']
  for text, a, b in zip(texts, ours, ref):
    assert a == b, (text, hf_tokenizer.convert_ids_to_tokens(a),
                    hf_tokenizer.convert_ids_to_tokens(b))


def test_generated_strings_token_ids_equal_hugging_face(preprocessor,
                                                        hf_tokenizer):
  rng = random.Random(20261127)
  texts = [textgen.random_text(rng) for _ in range(3000)]
  ours = hf_reference.token_ids(preprocessor, texts)
  ref = hf_tokenizer(texts, add_special_tokens=False)['input_ids']
  bad = [t for t, a, b in zip(texts, ours, ref) if a != b]
  assert not bad, f'{len(bad)} of {len(texts)} differ, first: {bad[0]!r}'


@pytest.mark.parametrize('seq_length', [8, 9, 16, 33, 64])
def test_pair_packing_equals_hugging_face_longest_first(
    preprocessor, hf_tokenizer, seq_length):
  rng = random.Random(seq_length)
  a_texts = [textgen.random_text(rng, 30) for _ in range(200)]
  b_texts = [textgen.random_text(rng, 30) for _ in range(200)]
  segments = [preprocessor.tokenize(tf.constant(a_texts)),
              preprocessor.tokenize(tf.constant(b_texts))]
  ours = preprocessor.bert_pack_inputs(segments, seq_length=seq_length)
  ref = hf_tokenizer(a_texts, b_texts, truncation='longest_first',
                     max_length=seq_length, padding='max_length',
                     return_tensors='np')
  hf_reference.assert_packed_equal(ours, ref)


@pytest.mark.parametrize('seq_length', [16, 128])
def test_single_packing_equals_hugging_face(preprocessor, hf_tokenizer,
                                            seq_length):
  texts = textgen.varied_sentences()
  ours = preprocessor.bert_pack_inputs(
      [preprocessor.tokenize(tf.constant(texts))], seq_length=seq_length)
  ref = hf_tokenizer(texts, truncation=True, max_length=seq_length,
                     padding='max_length', return_tensors='np')
  hf_reference.assert_packed_equal(ours, ref)


@pytest.mark.parametrize('max_seq_length', [128, 256])
def test_embeddings_match_sentence_transformers(minilm_model, minilm_hf_dir,
                                                max_seq_length):
  from sentence_transformers import SentenceTransformer
  texts = textgen.varied_sentences()
  model = EmbeddingModel.load(minilm_model.preprocessor, minilm_model.encoder,
                              pooling='mean', normalize=True,
                              max_seq_length=max_seq_length)
  ours = model.embed(texts)
  reference = SentenceTransformer(minilm_hf_dir, device='cpu')
  reference.max_seq_length = max_seq_length
  ref = reference.encode(texts, normalize_embeddings=True, batch_size=16)
  cosine = np.sum(ours.embeddings * ref, axis=1)
  print(f'max_seq_length={max_seq_length}: {len(texts)} sentences, '
        f'min cosine {cosine.min():.7f}, max abs diff '
        f'{np.abs(ours.embeddings - ref).max():.2e}')
  assert cosine.min() >= 0.9999
  # Long texts are cut at max_seq_length, and flagged.
  assert ours.truncated.any()
  lengths = reference.tokenizer(texts, truncation=False)['input_ids']
  np.testing.assert_array_equal(
      ours.truncated, [len(ids) > max_seq_length for ids in lengths])


def test_special_tokens_as_plain_text_option(minilm_hf_dir):
  """The WordPiece counterpart of special_tokens_in_text='text'."""
  from transformers import AutoTokenizer
  from tfmodels import hf, wordpiece
  tokenizer = AutoTokenizer.from_pretrained(minilm_hf_dir,
                                            split_special_tokens=True)
  root = wordpiece.build_wordpiece_preprocessor(
      hf.read_wordpiece_vocab(minilm_hf_dir), lower_case=True,
      literal_tokens=())
  rng = random.Random(5)
  texts = ['a [SEP] b', '[CLS][MASK]x'] + [textgen.random_text(rng)
                                            for _ in range(300)]
  ours = root.tokenize.__call__(tf.constant(texts)).merge_dims(-2,
                                                               -1).to_list()
  ref = tokenizer(texts, add_special_tokens=False)['input_ids']
  bad = [t for t, a, b in zip(texts, ours, ref) if a != b]
  assert not bad, f'{len(bad)} of {len(texts)} differ, first: {bad[0]!r}'
  assert tokenizer.sep_token_id not in ours[0]
