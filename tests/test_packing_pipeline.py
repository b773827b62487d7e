"""The job run both ways, --packing on (several documents per encoder row)
and --packing off (length buckets), on the same corpus: the same records
(ids, num_tokens, truncation, chunks, hashes), embeddings within 1e-5, the
same dead letters, and the summary saying which ran. For the minilm-l6
preset with bad records and special-token texts, pairs with long single
texts chunked, a RoBERTa export, XLA (one shape per row length), an
encoder without packed calls (`on` refused at launch, `auto` buckets), and
out-of-memory back-off on packed rows.

Why: packing must not change a single vector beyond float rounding (the
switch keeps --previous records), must not lose or duplicate a document
on any path, and must not be chosen for an encoder that cannot run it.
Each test prints its largest packed-vs-unpacked difference.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from pipeline import run
from tests import corpora
from tests import helpers
from tests import textgen
from tfmodels import export
from tfmodels.embedder import EmbeddingModel
from transforms import batching

TOLERANCE = 1e-5


def _dead_letters(out: str) -> list:
  return sorted((d['source'], d['error_type'], d['stage'], d['raw'])
                for d in corpora.read_dead_letters(out + '_dead_letter'))


def _max_diff(got: dict, want: dict) -> float:
  return max(float(np.abs(np.array(got[i]['embedding']) -
                          np.array(want[i]['embedding'])).max())
             for i in want)


def run_both(tmp_path, case: str, *common,
             less_padding: bool = True) -> tuple[dict, dict]:
  """--packing on and off on the same flags: (summaries, records) by
  'on'/'off', after checking that they agree. less_padding: that the packed
  run computed less padding (not so for a few documents at a short
  --max_seq_length, whose coarse row lengths can pad more than buckets of
  8 tokens)."""
  summaries, records, letters = {}, {}, {}
  for packing in ('on', 'off'):
    out = str(tmp_path / packing / 'emb')
    summaries[packing], records[packing] = helpers.launch(
        *common, '--packing', packing, '--output', out)
    letters[packing] = _dead_letters(out)
  on, off = summaries['on'], summaries['off']
  diff = _max_diff(records['on'], records['off'])
  print(f'\n{case}: {len(records["on"])} documents, max abs diff packed vs '
        f'unpacked {diff:.2e}; padding efficiency {on["padding_efficiency"]}'
        f' packed, {off["padding_efficiency"]} length buckets; '
        f'{on["batches"]} and {off["batches"]} encoder calls')
  assert on['packing'] == 'packed rows'
  assert off['packing'] == 'length buckets'
  # Same ids, num_tokens, truncated, num_chunks, hashes, model; vectors
  # within float rounding.
  helpers.assert_same_records(records['on'], records['off'],
                              atol=TOLERANCE)
  assert letters['on'] == letters['off']
  for key in ('documents_read', 'documents_embedded', 'documents_rejected',
              'documents_truncated', 'documents_chunked', 'tokens'):
    assert on[key] == off[key], key
  assert on['reconciled'] and off['reconciled']
  if less_padding:
    assert on['padding_efficiency'] > off['padding_efficiency']
  return summaries, records


@pytest.fixture(scope='module')
def minilm_flags(minilm_export) -> list:
  """The minilm-l6 preset, from the session's export (as --model resolves
  it: format 6, so packed rows)."""
  return ['--model', 'minilm-l6',
          '--model_cache_dir', os.path.dirname(minilm_export)]


def test_switching_packing_keeps_the_previous_records(tmp_path,
                                                     minilm_flags):
  """Packing is not part of the fingerprint (docs/performance.md): a
  nightly run with --packing off after a packed full run reuses every
  record and embeds nothing."""
  corpus = corpora.write_jsonl(str(tmp_path / 'docs.jsonl'),
                               corpora.sample_docs(30))
  full = str(tmp_path / 'full' / 'emb')
  first, records = helpers.launch('--input', corpus.pattern, *minilm_flags,
                                  '--packing', 'on', '--output', full)
  assert first['packing'] == 'packed rows'
  nightly, again = helpers.launch('--input', corpus.pattern, *minilm_flags,
                                  '--packing', 'off', '--previous', full,
                                  '--output', str(tmp_path / 'nightly' / 'emb'))
  assert nightly['packing'] == 'length buckets'
  assert nightly['documents_reused'] == len(records) == 30
  assert nightly['documents_embedded'] == 0 and nightly['reconciled']
  assert nightly['documents_rejected'] == len(corpus.bad_types) == 3
  assert {r['model_fingerprint'] for r in again.values()} == {
      r['model_fingerprint'] for r in records.values()}


def test_minilm_with_bad_records_and_special_tokens(tmp_path, minilm_flags):
  docs = corpora.sample_docs(80)
  docs += [{'id': f'special-{i}', 'text': text}
           for i, text in enumerate(textgen.SPECIAL_TEXTS['bert']) if text]
  docs += [{'id': f'varied-{i}', 'text': text}
           for i, text in enumerate(textgen.varied_sentences()[::4])]
  corpus = corpora.write_jsonl(str(tmp_path / 'docs.jsonl'), docs)
  summaries, records = run_both(tmp_path, 'minilm-l6, bad records',
                                '--input', corpus.pattern, *minilm_flags)
  assert sorted(records['on']) == sorted(corpus.good_ids)
  assert summaries['on']['documents_rejected'] == len(corpus.bad_types) == 3
  assert summaries['on']['documents_truncated'] >= 1  # the long texts
  assert {r['model'] for r in records['on'].values()} == {'minilm-l6'}
  # The packed run used packed row lengths only; the buckets did not.
  assert set(map(int, summaries['on']['batches_per_bucket'])) <= set(
      batching.packed_row_lengths(128))
  assert len(summaries['off']['batches_per_bucket']) > 3
  # Measured: 0.866 packed, 0.800 in length buckets (with 40 documents
  # 0.717 and 0.714: few rows per length, rounded up to a power of two).
  assert summaries['on']['padding_efficiency'] >= (
      summaries['off']['padding_efficiency'] + 0.04)


def test_pairs(tmp_path, minilm_flags):
  """Pairs (BERT's type ids 0/1) packed with other pairs, at a short
  --max_seq_length that truncates some of them."""
  docs = corpora.sample_docs(24, start=40)
  for d in docs:
    d['question'] = f'What does {d["source"]} do, and how?'
  corpus = corpora.write_jsonl(str(tmp_path / 'docs.jsonl'), docs, bad=False)
  summaries, records = run_both(
      tmp_path, 'pairs (max_seq_length 48)', '--input', corpus.pattern,
      *minilm_flags, '--text_b_field', 'question', '--max_seq_length', '48',
      less_padding=False)
  on = records['on']
  assert sorted(on) == sorted(d['id'] for d in docs)
  assert any(r['truncated'] for r in on.values())
  assert not all(r['truncated'] for r in on.values())
  assert set(map(int, summaries['on']['batches_per_bucket'])) <= {32, 48}


def test_chunked_long_documents(tmp_path, minilm_flags):
  """--long_documents chunk at --max_seq_length 48: the chunks of long
  texts packed beside short texts, their vectors combined as unpacked."""
  docs = corpora.sample_docs(24, start=64)
  docs += [{'id': f'long-{i}', 'text': text} for i, text in
           enumerate(textgen.varied_sentences()[-3:-1])]
  corpus = corpora.write_jsonl(str(tmp_path / 'docs.jsonl'), docs, bad=False)
  summaries, records = run_both(
      tmp_path, 'chunks (max_seq_length 48)', '--input', corpus.pattern,
      *minilm_flags, '--long_documents', 'chunk', '--max_seq_length', '48',
      '--chunk_stride', '24', less_padding=False)
  on = records['on']
  assert sorted(on) == sorted(d['id'] for d in docs)
  assert summaries['on']['documents_chunked'] >= 5
  assert all(on[f'long-{i}']['num_chunks'] > 5 for i in range(2))
  assert not any(r['truncated'] for r in on.values())
  assert set(map(int, summaries['on']['batches_per_bucket'])) <= {32, 48}


def test_roberta_export(tmp_path, roberta_export):
  docs = corpora.sample_docs(30, start=70)
  docs += [{'id': f'special-{i}', 'text': text}
           for i, text in enumerate(textgen.SPECIAL_TEXTS['roberta'])
           if text.strip()]
  corpus = corpora.write_jsonl(str(tmp_path / 'docs.jsonl'), docs)
  assert export.format_number(export.read_manifest(roberta_export)) >= (
      export.PACKED_ROWS_SINCE)
  # A few documents: whether packing pads less than buckets of 8 tokens
  # is a matter of chance here (measured: 0.68 packed, 0.77 buckets).
  summaries, _ = run_both(tmp_path, 'RoBERTa export',
                          '--input', corpus.pattern,
                          '--model_dir', roberta_export, less_padding=False)
  assert summaries['on']['documents_embedded'] == len(docs)


def test_jit_compile_one_shape_per_row_length(tmp_path, minilm_flags):
  """XLA compiles once per input shape: packed, each row length is called
  at one number of rows (its full batch), whatever documents it holds."""
  corpus = corpora.write_jsonl(str(tmp_path / 'docs.jsonl'),
                               corpora.sample_docs(60, start=100), bad=False)
  common = ['--input', corpus.pattern, *minilm_flags,
            '--max_seq_length', '64', '--max_batch_tokens', '2048']
  xla, got = helpers.launch(*common, '--jit_compile', '--packing', 'on',
                            '--output', str(tmp_path / 'xla' / 'emb'))
  plain, want = helpers.launch(*common, '--packing', 'off',
                               '--output', str(tmp_path / 'plain' / 'emb'))
  diff = _max_diff(got, want)
  print(f'\nXLA packed vs unpacked: max abs diff {diff:.2e}; shapes '
        f'{xla["encoder_shape_list"]} (length buckets without XLA: '
        f'{plain["encoder_shape_list"]})')
  assert xla['packing'] == 'packed rows'
  lengths = [int(s.split('x')[1]) for s in xla['encoder_shape_list']]
  assert len(lengths) == len(set(lengths)) >= 1
  assert set(lengths) <= set(batching.packed_row_lengths(64))
  for shape in xla['encoder_shape_list']:
    rows, length = map(int, shape.split('x'))
    assert rows * length == xla['token_budgets'][str(length)]
  assert xla['encoder_shapes'] < plain['encoder_shapes']
  helpers.assert_same_records(got, want, atol=TOLERANCE)


@pytest.fixture(scope='module')
def format_5_export(tmp_path_factory, minilm_export) -> str:
  """The minilm-l6 export with an export.json of format 5 (before the
  packed calls took one XLA shape per row length): the job must take it
  for an encoder without packed rows."""
  # Named as the real export, so that its records are the same but for
  # the vectors' float rounding.
  folder = tmp_path_factory.mktemp('format5') / 'minilm-l6'
  folder.mkdir()
  for part in (export.PREPROCESSOR_DIR, export.ENCODER_DIR):
    os.symlink(os.path.join(minilm_export, part), folder / part)
  manifest = export.read_manifest(minilm_export)
  manifest['format'] = 'tfhub-bert-pair/5'
  (folder / export.MANIFEST).write_text(json.dumps(manifest),
                                        encoding='utf-8')
  return str(folder)


def test_packing_on_without_packed_calls_fails_at_launch(
    tmp_path, capsys, format_5_export, minilm_model):
  corpus = corpora.write_jsonl(str(tmp_path / 'docs.jsonl'),
                               corpora.sample_docs(12), bad=False)
  out = str(tmp_path / 'out' / 'emb')
  hub_pair = f'{minilm_model.preprocessor} + {minilm_model.encoder}'
  for model, name in (
      (['--model_dir', format_5_export], 'minilm-l6'),
      # A TF Hub style pair: taken to have no packed calls.
      (['--preprocessor', minilm_model.preprocessor,
        '--encoder', minilm_model.encoder], hub_pair)):
    status, summary, _ = run.launch(['--input', corpus.pattern, *model,
                                     '--packing', 'on', '--output', out])
    err = capsys.readouterr().err
    assert (status, summary) == (2, None)
    assert ('pipeline.run: error: --packing on needs an encoder with packed '
            'calls') in err
    assert f'{name} has none' in err
    assert 'python -m pipeline.export_model' in err
    assert '--packing auto' in err
    assert not os.path.exists(os.path.dirname(out))
  # auto (the default): length buckets, the vectors of a direct call.
  auto, got = helpers.launch('--input', corpus.pattern, '--model_dir',
                             format_5_export, '--output', out)
  assert auto['packing'] == 'length buckets'
  assert auto['documents_embedded'] == 12
  corpora.assert_equal_to_direct_call(
      list(got.values()), corpus.texts, EmbeddingModel.load(
          minilm_model.preprocessor, minilm_model.encoder))


@pytest.fixture(scope='module')
def oom_export(tmp_path_factory, minilm_export) -> str:
  """The minilm-l6 export whose encoder runs out of memory above 1024
  padded tokens, in its packed calls too (tests/test_budgets.py)."""
  folder = tmp_path_factory.mktemp('oom') / 'minilm-l6'
  folder.mkdir()
  os.symlink(os.path.join(minilm_export, export.PREPROCESSOR_DIR),
             folder / export.PREPROCESSOR_DIR)
  helpers.oom_encoder(os.path.join(minilm_export, export.ENCODER_DIR),
                      str(folder / export.ENCODER_DIR), 1024, packed=True)
  manifest = export.read_manifest(minilm_export)
  manifest.pop('digest', None)  # another encoder: its identity is read
  (folder / export.MANIFEST).write_text(json.dumps(manifest),
                                        encoding='utf-8')
  return str(folder)


def test_out_of_memory_splits_packed_batches_by_whole_rows(oom_export):
  """One packed batch of 20 rows of 64 tokens (six 10-token documents
  each) under a budget of 64 rows, on an encoder that fails above 1024
  tokens: the call is halved and the budget lowered until calls fit, each
  call taking whole rows: the calls that ran computed the batch's 20 rows
  exactly once, and every document has the vector it has alone."""
  from transforms import embed, metrics
  from transforms.elements import Document, EmbeddedDocument, EncoderRow
  from transforms.spec import EmbeddingSpec
  preprocessor = os.path.join(oom_export, export.PREPROCESSOR_DIR)
  encoder = os.path.join(oom_export, export.ENCODER_DIR)
  tally = metrics.Tally()
  handler = embed.EncodeHandler(EmbeddingSpec('oom-1024'), preprocessor,
                                encoder, max_batch_tokens=4096, packing=True,
                                sink=tally)
  model = handler.load_model()
  rng = np.random.default_rng(0)
  rows = [EncoderRow(Document(f'd{i}', f'text {i}', None, f'src@{i}'), '',
                     rng.integers(1000, 20000, 8).astype(np.int32), None,
                     10, False, 0, 1) for i in range(120)]
  [batch] = batching.PackedBatches(128, 4096, 256, 4096).plan(rows)
  assert (batch.seq_length, len(batch.units()), batch.full_rows) == (
      64, 20, 64)
  out = handler._encode_batch(batch, model, batching.RowBudgets(
      lambda length: 4096))
  assert [o.id for o in out] == [r.doc.id for r in batch.rows]
  assert all(isinstance(o, EmbeddedDocument) for o in out)
  # 20 rows, padded to 24 (a multiple of 64/8), fail; 12 rows a call from
  # then on: the first 12 rows, then the other 8. Split by documents, the
  # calls would hold other numbers of rows.
  assert tally.keyed(metrics.ENCODER_SHAPES) == {
      (24, 64): 1, (12, 64): 1, (8, 64): 1}
  assert tally.values[metrics.BATCHES_SPLIT_OOM] == 1
  assert tally.values[metrics.BATCHES] == 3
  assert tally.values[metrics.TOKENS_COMPUTED] == (12 + 8) * 64
  assert tally.values[metrics.DOCUMENTS_EMBEDDED] == 120
  assert tally.values[metrics.TOKENS_EMBEDDED] == 120 * 10
  assert metrics.BATCHES_RETRIED not in tally.values
  # Each document alone through the encoder's unpacked call (the TF Hub
  # interface), 40 rows of 16 tokens at a time: under the limit.
  want, tokens = map(np.concatenate, zip(*(
      model.encode([[r.ids for r in batch.rows[i:i + 40]]], 16)
      for i in range(0, 120, 40))))
  assert tokens.tolist() == [10] * 120
  diff = float(np.abs(np.stack([o.embedding for o in out]) - want).max())
  print(f'\npacked after out-of-memory splits vs each alone: max abs diff '
        f'{diff:.2e}')
  assert diff <= TOLERANCE


def test_out_of_memory_while_packed_loses_nothing(tmp_path, oom_export,
                                                  minilm_model):
  """The job on the out-of-memory encoder, packed, at a budget 4 times what
  fits: every document read is embedded or a dead letter, and each vector
  is the unpacked one of a direct call."""
  docs = corpora.sample_docs(120, start=200)
  corpus = corpora.write_jsonl(str(tmp_path / 'docs.jsonl'), docs)
  out = str(tmp_path / 'oom' / 'emb')
  oom, got = helpers.launch('--input', corpus.pattern, '--model_dir',
                            oom_export, '--packing', 'on',
                            '--max_batch_tokens', '4096', '--output', out)
  reference = EmbeddingModel.load(minilm_model.preprocessor,
                                  minilm_model.encoder)
  ids = sorted(got)
  direct = reference.embed([corpus.texts[i] for i in ids])
  diff = float(np.abs(np.array([got[i]['embedding'] for i in ids]) -
                      direct.embeddings).max())
  print(f'\npacked with out-of-memory splits vs a direct unpacked call: max '
        f'abs diff {diff:.2e}; {oom["batches_split_oom"]} splits, shapes '
        f'{oom["encoder_shape_list"]}, budgets {oom["token_budgets"]}')
  assert oom['packing'] == 'packed rows'
  assert oom['batches_split_oom'] >= 1
  # Nothing lost: every document read is embedded or a dead letter.
  assert oom['documents_read'] == len(docs) + 3
  assert oom['documents_embedded'] == len(docs) == len(got)
  assert oom['documents_rejected'] == 3 and oom['reconciled']
  assert sorted(d[1] for d in _dead_letters(out)) == corpus.bad_types
  assert oom['batches_retried_one_by_one'] == 0
  assert [got[i]['num_tokens'] for i in ids] == direct.num_tokens.tolist()
  assert diff <= TOLERANCE
