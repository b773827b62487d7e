"""--precision and --jit_compile: the same embeddings within a stated
tolerance of float32 (docs/performance.md, "Precision")."""

from __future__ import annotations

import numpy as np
import pytest

from tests import textgen
from tfmodels import embedder
from tfmodels.embedder import EmbeddingModel

# Measured, then set with margin: bf16 has 8 bits of mantissa.
MIN_COSINE = {'bf16': 0.999, 'fp16': 0.9999}


@pytest.fixture(scope='module')
def texts():
  return textgen.varied_sentences()


@pytest.fixture(scope='module')
def fp32(minilm_model, texts):
  model = EmbeddingModel.load(minilm_model.preprocessor, minilm_model.encoder,
                              normalize=True)
  return model.embed(texts).embeddings


@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_lower_precision_close_to_fp32(minilm_model, texts, fp32, precision):
  model = EmbeddingModel.load(minilm_model.preprocessor, minilm_model.encoder,
                              normalize=True, precision=precision)
  out = model.embed(texts).embeddings
  cosines = (out * fp32).sum(axis=1)
  print(precision, 'min cosine to fp32', cosines.min(), 'max abs diff',
        np.abs(out - fp32).max())
  assert cosines.min() >= MIN_COSINE[precision]
  # And it did run in lower precision: not bit-identical to fp32.
  assert np.abs(out - fp32).max() > 1e-7


def test_jit_compile_equals_fp32(minilm_model, texts, fp32):
  model = EmbeddingModel.load(minilm_model.preprocessor, minilm_model.encoder,
                              normalize=True, jit_compile=True)
  np.testing.assert_allclose(model.embed(texts).embeddings, fp32, atol=1e-5)


def test_lower_precision_needs_an_encoder_exported_here():
  with pytest.raises(ValueError, match='exported by this project'):
    embedder._encoder_function(object(), 'bf16', False)
  with pytest.raises(ValueError, match='precision must be one of'):
    embedder._encoder_function(object(), 'int8', False)
