"""GPU-worker behaviour that a CPU can prove: out-of-memory back-off, bounded
XLA shapes, and the `--max_batch_tokens auto` rule (docs/performance.md,
"GPUs").

The out-of-memory encoder is a real SavedModel: the MiniLM encoder wrapped
so that a call on more than `limit` padded tokens allocates a tensor far
beyond any machine's address space, which TensorFlow's allocator refuses
with a real ResourceExhaustedError, as a GPU's does.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from pipeline import run
from tests import helpers
from tfmodels import budget
from tfmodels.embedder import EmbeddingModel
from transforms import batching, embed
from transforms.elements import Document, EmbeddedDocument, DeadLetter
from transforms.elements import EncoderBatch
from transforms.spec import EmbeddingSpec

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'data',
                      'stdlib_docstrings.jsonl')


@pytest.fixture(scope='module')
def oom_encoder(tmp_path_factory, minilm_model):
  return helpers.oom_encoder(
      minilm_model.encoder, str(tmp_path_factory.mktemp('oom') / 'encoder'),
      1024)


def _corpus(path, n: int) -> str:
  with open(SAMPLE, encoding='utf-8') as f:
    lines = [next(f) for _ in range(n)]
  path.write_text(''.join(lines), encoding='utf-8')
  return str(path)


def test_out_of_memory_splits_batches_and_lowers_the_budget(
    tmp_path, minilm_model, oom_encoder):
  corpus = _corpus(tmp_path / 'docs.jsonl', 250)
  common = ['--input', corpus, '--preprocessor', minilm_model.preprocessor,
            '--encoder', oom_encoder, '--max_seq_length', '128']
  summary, records = helpers.launch(*common, '--max_batch_tokens', '4096',
                                    '--output', str(tmp_path / 'oom' / 'emb'))
  print(json.dumps({k: summary[k] for k in (
      'documents_embedded', 'batches', 'batches_split_oom',
      'batches_retried_one_by_one', 'encoder_shapes', 'token_budgets')}))
  # Every document embedded, nothing retried one by one.
  assert summary['documents_read'] == 250
  assert summary['documents_embedded'] == 250
  assert summary['documents_rejected'] == 0 and summary['reconciled']
  assert summary['batches_retried_one_by_one'] == 0
  # Few failed calls: a failure lowers its bucket and caps the longer ones,
  # so later batches fit; every budget in force now fits the device.
  # (Every call above 1024 tokens fails and counts one split.)
  assert 1 <= summary['batches_split_oom'] <= 4
  assert summary['batches'] >= 5 * summary['batches_split_oom']
  budgets = {int(k): v for k, v in summary['token_budgets'].items()}
  lowered = [length for length, tokens in budgets.items()
             if tokens < batching.batch_limit(length, 4096, 256) * length]
  assert lowered
  assert all(tokens <= 1024 for length, tokens in budgets.items()
             if length >= min(lowered))

  # The same encoder under a budget that fits never runs out of memory (the
  # allocation is conditional) and gives the same embeddings.
  fits, want = helpers.launch(*common, '--max_batch_tokens', '1024',
                              '--output', str(tmp_path / 'fits' / 'emb'))
  assert fits['batches_split_oom'] == 0
  helpers.assert_same_records(records, want)


def test_a_row_that_never_fits_is_a_dead_letter(tmp_path, minilm_model):
  """Halving stops at one row: a row larger than the device alone becomes
  a dead letter with the reason, and its batch's other rows are embedded."""
  small = helpers.oom_encoder(minilm_model.encoder,
                              str(tmp_path / 'encoder'), 96)
  spec = EmbeddingSpec(model='oom-96', max_seq_length=128)
  handler = embed.EncodeHandler(spec, minilm_model.preprocessor, small,
                                max_batch_tokens=4096)
  model = handler.load_model()
  texts = ['short text number %d about sorting lists' % i for i in range(6)]
  long_text = ' '.join(['a longer text about file systems'] * 20)

  def rows(text_list, length):
    out = []
    for i, text in enumerate(text_list):
      ids = model.tokenize([text])[0]
      doc = Document(id=f'{length}-{i}', text=text, text_b=None,
                     source='test')
      out.extend(batching.rows_for_document(
          doc, ids, None, model.num_special(1), 128, 'truncate', 64))
    return EncoderBatch(seq_length=length, rows=tuple(out), full_rows=32)

  short = handler.run_inference(rows(texts, 16), model)
  too_long = handler.run_inference(
      rows([long_text, long_text + ' again'], 128), model)
  assert all(isinstance(r, EmbeddedDocument) for r in short)
  assert len(short) == 6
  assert all(isinstance(r, DeadLetter) for r in too_long)
  assert {r.error_type for r in too_long} == {
      'embed_error:ResourceExhaustedError'}
  # The 6 rows, padded to 8 (padded_batch_rows), failed at 8 x 16 = 128
  # tokens; 4 x 16 is the limit now (two calls, 4 and 2 rows, fit in 96
  # tokens); the long bucket came down to one row and then gave up.
  budgets = handler._budgets(model)
  assert budgets.rows(16) == 4 and budgets.rows(128) == 1
  reference = EmbeddingModel.load(minilm_model.preprocessor,
                                  minilm_model.encoder, max_seq_length=128)
  np.testing.assert_allclose(np.stack([r.embedding for r in short]),
                             reference.embed(texts).embeddings, atol=1e-5)


def test_jit_compile_uses_one_shape_per_bucket(tmp_path, minilm_model):
  # Three buckets (8 to 24 tokens): XLA compiles each shape, slowly on CPU.
  corpus = _corpus(tmp_path / 'docs.jsonl', 120)
  common = ['--input', corpus,
            '--model_dir', os.path.dirname(minilm_model.encoder),
            '--max_seq_length', '24']
  plain, want = helpers.launch(*common, '--output',
                               str(tmp_path / 'plain' / 'emb'))
  xla, got = helpers.launch(*common, '--jit_compile', '--output',
                            str(tmp_path / 'xla' / 'emb'))
  print('encoder_shapes without XLA', plain['encoder_shapes'],
        plain['encoder_shape_list'])
  print('encoder_shapes with XLA', xla['encoder_shapes'],
        xla['encoder_shape_list'])
  buckets = len(xla['batches_per_bucket'])
  assert 1 <= xla['encoder_shapes'] <= buckets
  # Each bucket's one shape is its full row count under the budget.
  for shape in xla['encoder_shape_list']:
    rows, length = map(int, shape.split('x'))
    assert rows * length == xla['token_budgets'][str(length)]
  assert plain['encoder_shapes'] >= buckets
  helpers.assert_same_records(got, want, atol=1e-5)
  # --max_batch_tokens defaults to auto: on a CPU, 8192 tokens per bucket.
  assert plain['token_budgets'] == {
      length: batching.batch_limit(int(length), 8192, 256) * int(length)
      for length in plain['batches_per_bucket']}


def test_model_shape_is_read_from_the_encoder(minilm_model, minilm_hf_dir):
  from safetensors.numpy import load_file
  with open(os.path.join(minilm_hf_dir, 'config.json'), encoding='utf-8') as f:
    config = json.load(f)
  weights = load_file(os.path.join(minilm_hf_dir, 'model.safetensors'))
  model = EmbeddingModel.load(minilm_model.preprocessor, minilm_model.encoder)
  shape = model.shape()
  assert shape.hidden_size == config['hidden_size']
  assert shape.num_layers == config['num_hidden_layers']
  assert shape.intermediate_size == config['intermediate_size']
  # Heads are not in the interface: BERT-base's 64 per head is assumed
  # (MiniLM has 12 of 32; the budget's safety factor covers that).
  assert shape.num_heads == config['hidden_size'] // 64
  # The exported encoder holds the checkpoint's weights (the pooler too).
  hf_parameters = sum(w.size for k, w in weights.items()
                      if 'position_ids' not in k)
  assert shape.parameters == hf_parameters
  assert model.device() == budget.Device(name='cpu')


ROBERTA_LARGE = budget.ModelShape(hidden_size=1024, num_layers=24,
                                  num_heads=16, intermediate_size=4096,
                                  parameters=355_000_000)


def test_auto_budget_rule():
  cpu = budget.Device(name='cpu')
  l4 = budget.Device(name='NVIDIA L4', memory_bytes=24 << 30)
  h100 = budget.Device(name='NVIDIA H100 80GB HBM3', memory_bytes=80 << 30)

  def tokens(device, precision='fp32', seq_length=512, max_rows=1 << 20):
    return budget.token_budget(shape=ROBERTA_LARGE, device=device,
                               precision=precision, seq_length=seq_length,
                               max_rows=max_rows)

  assert tokens(cpu, seq_length=128) == budget.CPU_TOKEN_BUDGET
  assert tokens(cpu, seq_length=96) == (8192 // 96) * 96
  # The rule, written out: (0.85 M - 1 GiB - 4 P) / (4 (8H + 2I + 2 h L) 2).
  per_token = 4 * 2 * (8 * 1024 + 2 * 4096 + 2 * 16 * 512)
  usable = 0.85 * (24 << 30) - (1 << 30) - 4 * 355_000_000
  assert tokens(l4) == int(usable // per_token) // 512 * 512
  assert tokens(h100) > 3 * tokens(l4)
  assert tokens(l4, 'bf16') > 1.5 * tokens(l4)
  assert tokens(l4, seq_length=128) > tokens(l4, seq_length=512)
  assert tokens(h100, max_rows=256) == 256 * 512
  # A device too small for the weights still gets one row per call.
  tiny = budget.Device(name='tiny', memory_bytes=1 << 30)
  assert tokens(tiny) == 512


def test_row_budgets_lower_this_bucket_and_cap_the_longer_ones():
  budgets = batching.RowBudgets(lambda length: 4096 // length * length)
  assert budgets.rows(64) == 64 and budgets.rows(16) == 256
  assert budgets.lower(64, failed_rows=64) == 32
  assert budgets.tokens(64) == 2048
  assert budgets.tokens(128) == 2048 and budgets.rows(512) == 4
  assert budgets.rows(16) == 256  # shorter buckets keep their budget
  assert budgets.lower(512, failed_rows=1) == 1
  assert budgets.rows(640) == 1


def test_max_batch_tokens_flag_errors(capsys):
  status, summary, _ = run.launch(['--input', SAMPLE, '--output', '/tmp/x',
                                   '--max_batch_tokens', 'lots'])
  assert (status, summary) == (2, None)
  assert ("--max_batch_tokens: expected a positive number of tokens or auto,"
          " got 'lots'") in capsys.readouterr().err
