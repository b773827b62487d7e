"""The whole pipeline on small corpora of every input format."""

from __future__ import annotations

import os

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.graph import build_pipeline
from pipeline.launch import plan_from
from tests import corpora
from tfmodels.embedder import EmbeddingModel
from transforms.elements import content_hash


def _options(*args) -> PipelineOptions:
  return PipelineOptions(list(args))


def _run(options: PipelineOptions, model, check=None):
  with TestPipeline(runner='FnApiRunner', options=options) as p:
    pcolls = build_pipeline(p, plan_from(options, model=model))
    if check:
      check(pcolls)


@pytest.fixture(scope='module')
def reference_model(minilm_model):
  return EmbeddingModel.load(minilm_model.preprocessor, minilm_model.encoder)


@pytest.mark.parametrize('fmt', sorted(corpora.WRITERS))
def test_each_input_format_end_to_end(tmp_path, fmt, minilm_model,
                                      reference_model):
  filename, writer = corpora.WRITERS[fmt]
  corpus = writer(str(tmp_path / filename), corpora.sample_docs(12))
  out = str(tmp_path / 'out' / 'emb')
  options = _options('--input', corpus.pattern, '--output', out)

  def check(pcolls):
    assert_that(pcolls['embedded'] | 'Ids' >> _ids(), equal_to(
        corpus.good_ids), label='EmbeddedIds')

  _run(options, minilm_model, check)

  records = corpora.read_output(out)
  assert sorted(r['id'] for r in records) == sorted(corpus.good_ids)
  assert all(len(r['embedding']) == 384 for r in records)
  assert {r['model'] for r in records} == {'minilm-l6'}
  assert {r['pooling'] for r in records} == {'mean'}
  for r in records:
    assert r['content_hash'] == content_hash(corpus.texts[r['id']])
  corpora.assert_equal_to_direct_call(records, corpus.texts, reference_model)
  dead = corpora.read_dead_letters(out + '_dead_letter')
  assert sorted(d['error_type'] for d in dead) == corpus.bad_types
  assert all(d['source'] and d['message'] and d['stage'] == 'read'
             for d in dead)


def _ids():
  import apache_beam as beam
  return beam.Map(lambda e: e.id)


def test_text_pairs_are_packed_as_one_input(tmp_path, minilm_model,
                                            reference_model):
  docs = corpora.sample_docs(6)
  for d in docs:
    d['question'] = f'What does {d["source"]} do?'
  docs[2]['question'] = None  # a pair field that is missing
  corpus = corpora.write_jsonl(str(tmp_path / 'pairs.jsonl'), docs, bad=False)
  out = str(tmp_path / 'out' / 'emb')
  _run(_options('--input', corpus.pattern, '--output', out,
                '--text_b_field', 'question', '--normalize'), minilm_model)
  records = {r['id']: r for r in corpora.read_output(out)}
  good = [d for d in docs if d['question']]
  assert sorted(records) == sorted(d['id'] for d in good)
  direct = reference_model.embed([d['text'] for d in good],
                                 [d['question'] for d in good])
  got = np.array([records[d['id']]['embedding'] for d in good])
  expected = direct.embeddings / np.linalg.norm(direct.embeddings, axis=1,
                                                keepdims=True)
  np.testing.assert_allclose(got, expected, atol=2e-5)
  # A pair embeds differently from its first text alone.
  alone = reference_model.embed([good[0]['text']]).embeddings[0]
  alone /= np.linalg.norm(alone)
  assert float(got[0] @ alone) < 0.999
  dead = corpora.read_dead_letters(out + '_dead_letter')
  assert [d['error_type'] for d in dead] == ['missing_text']


@pytest.mark.parametrize('pooling', ['cls', 'pooled'])
def test_pooling_choices(tmp_path, pooling, minilm_model):
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'),
                               corpora.sample_docs(4), bad=False)
  out = str(tmp_path / 'out' / 'emb')
  _run(_options('--input', corpus.pattern, '--output', out, '--pooling',
                pooling), minilm_model)
  model = EmbeddingModel.load(minilm_model.preprocessor, minilm_model.encoder,
                              pooling=pooling)
  records = {r['id']: r for r in corpora.read_output(out)}
  ids = sorted(records)
  direct = model.embed([corpus.texts[i] for i in ids]).embeddings
  np.testing.assert_allclose([records[i]['embedding'] for i in ids], direct,
                             atol=2e-5)
  assert {r['pooling'] for r in records.values()} == {pooling}


def test_long_documents_are_truncated_and_flagged(tmp_path, minilm_model):
  docs = corpora.sample_docs(3)
  docs[1]['text'] = ' '.join(['word'] * 300)
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'), docs, bad=False)
  out = str(tmp_path / 'out' / 'emb')
  _run(_options('--input', corpus.pattern, '--output', out,
                '--max_seq_length', '64'), minilm_model)
  records = {r['id']: r for r in corpora.read_output(out)}
  assert records[docs[1]['id']]['truncated'] == 1
  assert records[docs[1]['id']]['num_tokens'] == 64
  assert records[docs[0]['id']]['truncated'] == 0


def test_globs_over_many_files(tmp_path, minilm_model):
  docs = corpora.sample_docs(30)
  for i in range(3):
    corpora.write_jsonl(str(tmp_path / f'part-{i}.jsonl'),
                        docs[i * 10:(i + 1) * 10], bad=False)
  out = str(tmp_path / 'out' / 'emb')
  _run(_options('--input', str(tmp_path / 'part-*.jsonl'), '--output', out,
                '--num_shards', '2'), minilm_model)
  assert sorted(r['id'] for r in corpora.read_output(out)) == sorted(
      d['id'] for d in docs)
  assert len([f for f in os.listdir(tmp_path / 'out')
              if f.endswith('.tfrecord')]) == 2


def test_long_documents_chunked_and_combined(tmp_path, minilm_model):
  """--long_documents chunk: overlapping windows, averaged by tokens."""
  from transforms import batching
  docs = corpora.sample_docs(4)
  docs[1]['text'] = ' '.join(d['text'] for d in corpora.sample_docs(40))
  corpus = corpora.write_jsonl(str(tmp_path / 'c.jsonl'), docs, bad=False)
  out = str(tmp_path / 'out' / 'emb')
  _run(_options('--input', corpus.pattern, '--output', out,
                '--max_seq_length', '64', '--long_documents', 'chunk',
                '--normalize'), minilm_model)
  records = {r['id']: r for r in corpora.read_output(out)}
  assert sorted(records) == sorted(d['id'] for d in docs)
  long_record = records[docs[1]['id']]
  model = EmbeddingModel.load(minilm_model.preprocessor, minilm_model.encoder,
                              max_seq_length=64, normalize=True)
  [ids] = model.tokenize([docs[1]['text']])
  spans = batching.chunk_windows(len(ids), 62, 31)
  assert len(spans) > 5 and long_record['num_chunks'] == len(spans)
  assert long_record['truncated'] == 0
  embeddings, tokens = model.encode([[ids[s:e] for s, e in spans]], 64)
  expected = model.finish(
      (tokens[:, None] * embeddings).sum(0, keepdims=True) / tokens.sum())[0]
  np.testing.assert_allclose(long_record['embedding'], expected, atol=2e-5)
  assert long_record['num_tokens'] == tokens.sum()
  short = records[docs[0]['id']]
  assert short['num_chunks'] == 1
  np.testing.assert_allclose(short['embedding'],
                             model.embed([docs[0]['text']]).embeddings[0],
                             atol=2e-5)


def test_embedding_does_not_depend_on_batch_mix(tmp_path, minilm_model):
  """The same documents, batched with different companions, budgets and
  sort windows (so in other batches and padded to other lengths), embed
  within 1e-5 of each other in fp32."""
  docs = corpora.sample_docs(60)
  extra = corpora.sample_docs(30, start=500)
  a = corpora.write_jsonl(str(tmp_path / 'a.jsonl'), docs, bad=False)
  b = corpora.write_jsonl(str(tmp_path / 'b.jsonl'), extra[:15] + docs[::-1]
                          + extra[15:], bad=False)
  _run(_options('--input', a.pattern, '--output', str(tmp_path / 'A')),
       minilm_model)
  _run(_options('--input', b.pattern, '--output', str(tmp_path / 'B'),
                '--max_batch_tokens', '200', '--sort_window', '7',
                '--batch_size', '3'), minilm_model)
  first = {r['id']: r for r in corpora.read_output(str(tmp_path / 'A'))}
  second = {r['id']: r for r in corpora.read_output(str(tmp_path / 'B'))}
  ids = [d['id'] for d in docs]
  diff = np.abs(np.array([first[i]['embedding'] for i in ids]) -
                np.array([second[i]['embedding'] for i in ids])).max()
  assert diff <= 1e-5, diff
  assert [first[i]['num_tokens'] for i in ids] == [
      second[i]['num_tokens'] for i in ids]
