"""--require_gpu on a machine without a GPU (this project's CI machines)."""

from __future__ import annotations

import pytest

from pipeline import run
from tests import corpora
from tfmodels import devices


def _gpus():
  import tensorflow as tf
  return tf.config.list_physical_devices('GPU')


def test_require_gpu_fails_fast_with_the_reason(tmp_path, capsys,
                                                minilm_export):
  if _gpus():
    pytest.skip('this machine has a GPU')
  assert devices.configure_gpus(require_gpu=False) == []
  with pytest.raises(devices.NoGpuError, match='sees no GPU'):
    devices.configure_gpus(require_gpu=True)
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'),
                               corpora.sample_docs(3), bad=False)
  out = tmp_path / 'out' / 'emb'
  assert run.main(['--input', corpus.pattern, '--output', str(out),
                   '--model_dir', minilm_export, '--require_gpu']) == 2
  err = capsys.readouterr().err
  assert '--require_gpu' in err and 'worker_accelerator' in err
  assert not list(tmp_path.glob('out/*'))  # nothing ran
