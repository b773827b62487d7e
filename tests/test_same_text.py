"""Identical texts are encoded once per run (transforms/same_text.py): every
document still gets its own record (id, metadata) with the vector its text
gets alone, the summary counts the copies (documents_same_text), and the
encoder computes fewer tokens."""

from __future__ import annotations


import numpy as np
import pytest

from pipeline import run
from tests import corpora
from tests import helpers
from transforms import batching
from transforms import same_text
from transforms.elements import (ChunkEmbedding, DeadLetter, Document,
                                 EmbeddedDocument, EncoderRow)


def _row(doc_id: str, text: str, chunk: int = 0, chunks: int = 1,
         key: str = '') -> EncoderRow:
  doc = Document(id=doc_id, text=text, text_b=None, source=f'f@{doc_id}',
                 metadata=(('m', doc_id),))
  return EncoderRow(doc=doc, key=key, ids=np.arange(3, dtype=np.int32),
                    ids_b=None, length=5, truncated=False, chunk=chunk,
                    num_chunks=chunks)


def _embedded(row: EncoderRow, value: float) -> EmbeddedDocument:
  return EmbeddedDocument(id=row.doc.id, embedding=np.full(4, value,
                                                           np.float32),
                          num_tokens=5, truncated=False,
                          content_hash=row.doc.content_hash,
                          metadata=row.doc.metadata)


@pytest.mark.unit
def test_a_batch_computes_each_text_once_and_copies_the_rest():
  rows = [_row('a', 'same'), _row('b', 'other'), _row('c', 'same'),
          _row('d', 'same')]
  recent = same_text.Recent()
  plan = same_text.plan(rows, recent)
  assert [r.doc.id for r in plan.compute] == ['a', 'b'] and plan.copies == 2
  copied = []
  out = plan.results([_embedded(r, i) for i, r in enumerate(plan.compute)],
                     recent, lambda result, row: copied.append(row.doc.id))
  assert [r.id for r in out] == ['a', 'b', 'c', 'd']
  assert [r.metadata for r in out] == [(('m', i),) for i in 'abcd']
  assert [float(r.embedding[0]) for r in out] == [0, 1, 0, 0]
  assert copied == ['c', 'd']
  # The next batch finds both texts in the cache: nothing to compute.
  later = same_text.plan([_row('e', 'other'), _row('f', 'same')], recent)
  assert later.compute == [] and later.copies == 2
  out = later.results([], recent, lambda *_: None)
  assert [(r.id, float(r.embedding[0])) for r in out] == [('e', 1), ('f', 0)]


@pytest.mark.unit
def test_chunks_and_failures_are_copied_under_their_own_document():
  rows = [_row('a', 'long', 0, 2, 'ka'), _row('a', 'long', 1, 2, 'ka'),
          _row('b', 'long', 0, 2, 'kb'), _row('b', 'long', 1, 2, 'kb'),
          _row('c', 'bad'), _row('d', 'bad')]
  recent = same_text.Recent()
  plan = same_text.plan(rows, recent)
  assert [(r.doc.id, r.chunk) for r in plan.compute] == [('a', 0), ('a', 1),
                                                         ('c', 0)]
  computed = [
      ChunkEmbedding('ka', 0, 2, rows[0].doc, np.ones(4, np.float32), 5),
      ChunkEmbedding('ka', 1, 2, None, np.zeros(4, np.float32), 5),
      DeadLetter('f@c', 'bad', 'embed_error:X', 'broken', 'embed')]
  out = plan.results(computed, recent, lambda *_: None)
  assert [(c.key, c.chunk, c.doc and c.doc.id) for c in out[2:4]] == [
      ('kb', 0, 'b'), ('kb', 1, None)]
  assert out[5] == DeadLetter('f@d', 'bad', 'embed_error:X', 'broken',
                              'embed')
  # Failures are not kept for later batches (a retry may succeed).
  assert same_text.plan([_row('e', 'bad')], recent).copies == 0


@pytest.mark.unit
def test_the_cache_is_bounded():
  recent = same_text.Recent(max_rows=10)
  for i in range(100):
    row = _row(str(i), f'text {i}')
    recent.put(same_text.key_of(row), _embedded(row, i))
  assert len(recent) == 10
  assert recent.get(same_text.key_of(_row('99', 'text 99'))) is not None
  assert recent.get(same_text.key_of(_row('0', 'text 0'))) is None


@pytest.mark.unit
@pytest.mark.parametrize('packing', [False, True])
def test_the_batcher_plans_distinct_rows_and_carries_copies(packing):
    batcher = batching.BATCHERS[packing](32, 4096, 4, 10)
    batcher.start_bundle()
    rows = [_row(f'{i}', f'text {i % 4}') for i in range(20)]
    out = [b for r in rows for b in batcher.process(r)]
    out += [w.value for w in batcher.finish_bundle()]
    planned = [r for b in out for r in b.rows]
    copies = [r for b in out for r in b.copies]
    # Four distinct texts: four encoder rows, every other row a copy.
    assert sorted(r.doc.text for r in planned) == [f'text {i}'
                                                  for i in range(4)]
    assert sorted(r.doc.id for r in planned + copies) == sorted(
        r.doc.id for r in rows)
    # A copy comes with its text's row, or after it.
    sent = set()
    for batch in out:
      sent |= {r.doc.text for r in batch.rows}
      assert {r.doc.text for r in batch.copies} <= sent
    if not packing:  # four rows, a full batch: later copies come alone
      assert [b.rows for b in out[1:]] == [()] * (len(out) - 1)


def test_duplicated_texts_get_the_vectors_of_a_run_without_them(
    tmp_path, minilm_export, capsys):
  """A corpus with a third more documents, exact copies (other ids and
  metadata), a long chunked document among them: every record equals the
  record of its original in a run without copies, and the encoder
  computes no more."""
  docs = corpora.sample_docs(200)
  for i, d in enumerate(docs):
    d['source'] = f'orig-{i}'
  long_text = ' '.join(d['text'] for d in docs[:30])
  docs.insert(0, {'id': 'long', 'text': long_text, 'source': 'orig-long'})
  copies = [dict(d, id=f'{d["id"]}-copy', source=f'copy-{i}')
            for i, d in enumerate(docs[::3])]
  plain = corpora.write_jsonl(str(tmp_path / 'plain.jsonl'), docs, bad=False)
  mixed = corpora.write_jsonl(str(tmp_path / 'mixed.jsonl'),
                              docs + copies, bad=False)
  common = ['--model_dir', minilm_export, '--progress_every', '0',
            '--metadata_fields', 'source', '--long_documents', 'chunk']
  summaries = {}
  for name, corpus in (('plain', plain), ('mixed', mixed)):
    assert run.main(['--input', corpus.pattern, '--output',
                     str(tmp_path / name / 'emb'), *common]) == 0
    summaries[name] = helpers.summary_of(capsys.readouterr().out)
  plain_s, mixed_s = summaries['plain'], summaries['mixed']
  assert mixed_s['reconciled'] is True
  assert mixed_s['documents_embedded'] == len(docs) + len(copies)
  assert mixed_s['documents_same_text'] == len(copies)
  assert plain_s['documents_same_text'] == 0
  assert mixed_s['tokens'] == plain_s['tokens']
  assert mixed_s['tokens_computed'] <= plain_s['tokens_computed']
  want = {r['id']: r for r in corpora.read_output(
      str(tmp_path / 'plain' / 'emb'))}
  got = {r['id']: r for r in corpora.read_output(
      str(tmp_path / 'mixed' / 'emb'))}
  assert len(got) == len(docs) + len(copies)
  for copy in copies:
    record, original = got[copy['id']], want[copy['id'][:-len('-copy')]]
    assert record['metadata'] == {'source': copy['source']}
    assert record['content_hash'] == original['content_hash']
    np.testing.assert_allclose(record['embedding'], original['embedding'],
                               atol=1e-5)
  assert got['long-copy']['num_chunks'] == want['long']['num_chunks'] > 1
  helpers.assert_same_records({k: v for k, v in got.items()
                               if not k.endswith('-copy')}, want)


def test_two_thousand_records_of_one_text_are_encoded_once(
    tmp_path, minilm_export, capsys):
  text = corpora.sample_docs(1)[0]['text']
  docs = [{'id': f'd{i}', 'text': text} for i in range(2000)]
  corpus = corpora.write_jsonl(str(tmp_path / 'one.jsonl'), docs, bad=False)
  out = str(tmp_path / 'out' / 'emb')
  assert run.main(['--input', corpus.pattern, '--output', out, '--model_dir',
                   minilm_export, '--progress_every', '0']) == 0
  summary = helpers.summary_of(capsys.readouterr().out)
  assert summary['documents_embedded'] == 2000 and summary['reconciled']
  # Once per encode step's cache: a bundle or worker may encode it again.
  assert summary['documents_same_text'] >= 1990
  records = corpora.read_output(out)
  assert len({r['id'] for r in records}) == 2000
  first = np.asarray(records[0]['embedding'])
  for record in records:
    np.testing.assert_array_equal(record['embedding'], first)
