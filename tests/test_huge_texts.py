"""One huge text among normal documents: it is tokenized only as far as the
tokens kept reach (exactly those of the whole text), a document over
--max_document_bytes becomes a document_too_large dead letter with its size
(a line that long is read past, never held), and a large text runs with
memory far below its tokenizer's 25-40 times its size. Peak memory with
200 MB and 1 GB texts is measured by bench/huge_text.py."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from tests import corpora
from tests import helpers
from tfmodels import pieces
from transforms import batching, compressed
from transforms.sources import lines

# Pieces of a few dozen characters, so that short test texts are cut many
# times, at every kind of place.
_PIECE = 61
_ATOMS = ('word', 'Ünïcödé', 'naïve', '日本語', '中文字', '😀🎉', 'x' * 150,
          'y' * 5000, "it's", "'s", "'ll", '<mask>', '<s>', '</s>', '12345',
          '3.14', '--', '(', ')', '\u0301', 'e\u0301', 'ΣΑΣ', 'straße',
          'a\u200bb', 'ﬁ', 'Ⅻ', '\U00020000', '!?')
_SEPARATORS = (' ', '  ', '\t', '\n', '\r\n', ' \n ', '\x0b', '\x0c',
               '\x85', '\xa0', '\u3000', '\u2028', '\x1c', '', ' \t\n\r ',
               '     ', ' \u0301', '\n\n\n')


def _texts(seed: int, n: int) -> list[str]:
  """Texts of many shapes: words, long words (one past WordPiece's 100
  characters, one far past a piece), every kind of whitespace run and
  character next to a cut, multi-byte characters, special tokens."""
  rng = random.Random(seed)
  out = []
  for _ in range(n):
    text = ''.join(rng.choice(_ATOMS) + rng.choice(_SEPARATORS)
                   for _ in range(rng.randint(1, 150)))
    if rng.random() < 0.3:
      text = rng.choice(_SEPARATORS) + text
    out.append(text)
  return out + ['x' * 20000 + ' tail words', ' ' * 3000 + 'late start',
                'short']


@pytest.fixture
def small_pieces(monkeypatch):
  monkeypatch.setattr(pieces, 'PIECE_CHARS', _PIECE)


def _tokenizer(preprocessor_dir: str):
  from tfmodels.embedder import Tokenizer
  return Tokenizer.load(preprocessor_dir)


@pytest.fixture(params=['wordpiece', 'bpe'])
def tokenizer(request):
  if request.param == 'wordpiece':
    folder = request.getfixturevalue('minilm_export')
  else:
    folder = request.getfixturevalue('roberta_export')
  return _tokenizer(os.path.join(folder, 'preprocessor'))


def _whole(tokenizer, text: str) -> list:
  """The text's tokens from one tokenize call on all of it."""
  import tensorflow as tf
  tokens = tokenizer.preprocessor.tokenize(tf.constant([text]))
  return tokens.flat_values.numpy().tolist()


def test_pieces_cover_the_text_and_cut_at_whitespace_run_starts():
  for text in _texts(1, 50):
    spans = list(pieces.spans(text, 7, 40))
    assert ''.join(text[a:b] for a, b in spans) == text
    for _, end in spans[:-1]:
      assert text[end] in ' \t\n\r' and not text[end - 1].isspace()


def test_pieces_and_heads_give_the_whole_texts_tokens(tokenizer,
                                                      small_pieces):
  texts = _texts(2, 120)
  whole = [_whole(tokenizer, t) for t in texts]
  assert [ids.tolist() for ids in tokenizer.tokenize(texts)] == whole
  for k in (1, 5, 40, 128):
    heads = tokenizer.tokenize(texts, max_tokens=k)
    assert [ids.tolist() for ids in heads] == [w[:k] for w in whole]
  # Heads shorter than a piece took the batched path; these did not.
  assert sum(len(t) > pieces.head_chars(128) for t in texts) >= 3


def test_truncated_documents_encode_as_with_the_whole_text(minilm_model,
                                                           small_pieces):
  """The rows a TokenizeHandler makes (head tokens only) give the encoder
  the same input, so the same vector, the same truncated flag and length
  as the whole text's tokens; pairs too (both parts whole)."""
  from tfmodels.embedder import EmbeddingModel
  from transforms.elements import Document
  from transforms.embed import TokenizeHandler
  from transforms.spec import EmbeddingSpec
  model = EmbeddingModel.load(minilm_model.preprocessor, minilm_model.encoder)
  texts = _texts(3, 40)
  docs = [Document(id=str(i), text=t, text_b=None, source='s')
          for i, t in enumerate(texts)]
  docs += [Document(id=f'p{i}', text=a, text_b=b, source='s')
           for i, (a, b) in enumerate(zip(texts[:12], texts[12:24]))]
  handler = TokenizeHandler(EmbeddingSpec(model='m'),
                            minilm_model.preprocessor, batch_size=16)
  got = handler.run_inference(docs, handler.load_model())
  assert any(len(d.text) > pieces.head_chars(128) for d in docs)
  for doc, rows in zip(docs, got):
    (row,) = rows
    a = np.array(_whole(model, doc.text), np.int32)
    b = None if doc.text_b is None else np.array(
        _whole(model, doc.text_b), np.int32)
    (want,) = batching.rows_for_document(
        doc, a, b, model.num_special(1 if b is None else 2), 128,
        'truncate', 64)
    assert (row.truncated, row.length) == (want.truncated, want.length)
    if b is None:
      assert row.ids.tolist() == a[:128].tolist()
      assert len(row.ids) <= 128
    segments = [[row.ids]] + ([] if b is None else [[row.ids_b]])
    whole = [[a]] + ([] if b is None else [[b]])
    got_vector, got_tokens = model.encode(segments, 128)
    want_vector, want_tokens = model.encode(whole, 128)
    np.testing.assert_array_equal(got_vector, want_vector)
    assert got_tokens.tolist() == want_tokens.tolist()


@pytest.mark.parametrize('name', ['f.txt', 'f.txt.gz', 'f.txt.zst'])
def test_a_line_over_the_limit_is_read_past(tmp_path, name):
  import gzip
  import zstandard
  data = b'short\n' + b'a' * 5000 + b'\r\nnext\n' + b'b' * 3000
  path = tmp_path / name
  path.write_bytes(gzip.compress(data) if name.endswith('.gz') else
                   zstandard.compress(data) if name.endswith('.zst')
                   else data)
  with compressed.open_file(str(path)) as f:
    got = [lines.read_line(f, 1000, block=64) for _ in range(5)]
  assert [(len(line), size) for line, size in got] == [
      (6, 6), (1002 + 2, 5002), (5, 5), (1002, 3000), (0, 0)]
  assert got[1][0] == b"a" * 1002 + b"\r\n"



def test_documents_over_the_limit_are_dead_lettered(tmp_path, capsys,
                                                    minilm_export):
  """Every format: a document over --max_document_bytes is a
  document_too_large dead letter with its size and where it is, the others
  are embedded, and the counts reconcile."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  limit = 100_000
  docs = corpora.sample_docs(12)
  big = 'many words ' * 30_000  # 330,000 bytes
  big_b = 'é' * 60_000  # 120,000 bytes in UTF-8, 60,000 characters
  folder = tmp_path / 'in'
  folder.mkdir()
  jsonl = [json.dumps(d) for d in docs[:4]]
  jsonl.insert(2, json.dumps({'id': 'big-json', 'text': big}))
  (folder / 'a.jsonl').write_text('\n'.join(jsonl) + '\n')
  (folder / 'b.txt').write_text('\n'.join(
      [docs[4]['text'], big, docs[5]['text']]) + '\n')
  with open(folder / 'c.csv', 'w', encoding='utf-8') as f:
    f.write('id,text\n')
    for d in docs[6:8]:
      f.write(f'{d["id"]},"{d["text"]}"\n')
    f.write(f'big-csv,"{big}"\n')
    f.write(f'{docs[8]["id"]},"{docs[8]["text"]}"\n')
  pq.write_table(pa.table({
      'id': [d['id'] for d in docs[9:]] + ['big-parquet', 'big-utf8'],
      'text': [d['text'] for d in docs[9:]] + [big, big_b]}),
      str(folder / 'd.parquet'))
  out = str(tmp_path / 'out' / 'emb')
  embedded = 0
  letters = []
  for pattern in ('*.jsonl', '*.txt', '*.csv', '*.parquet'):
    prefix = f'{out}-{pattern[2:]}'
    summary = helpers.run_job(capsys, [
        '--input', str(folder / pattern), '--output', prefix,
        '--model_dir', minilm_export, '--max_document_bytes', str(limit)])
    assert summary['reconciled'] is True
    assert summary['documents_read'] == (summary['documents_embedded'] +
                                         summary['documents_rejected'])
    embedded += summary['documents_embedded']
    letters += corpora.read_dead_letters(prefix + '_dead_letter')
  assert embedded == len(docs)
  json_line = len('\n'.join(jsonl[:2])) + 1
  # Where each is and its size: the line's in line formats, else the
  # text's in UTF-8 (big_b: 60,000 characters, 120,000 bytes).
  want = sorted([
      (f'{folder / "a.jsonl"}@{json_line}', len(jsonl[2])),
      (f'{folder / "b.txt"}@{len(docs[4]["text"]) + 1}', len(big)),
      (f'{folder / "c.csv"}:4', len(f'big-csv,"{big}"')),
      (f'{folder / "d.parquet"}', len(big)),
      (f'{folder / "d.parquet"}', 120_000)])
  assert sorted((d['source'], int(d['message'].split(' bytes')[0].replace(
      ',', ''))) for d in letters) == want
  for letter in letters:
    assert letter['error_type'] == 'document_too_large'
    assert letter['raw_truncated'] is True
    assert f'more than --max_document_bytes ({limit:,})' in letter['message']


def test_the_limit_is_a_flag(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, '-m', 'pipeline.run', '--input', 'a.jsonl',
       '--output', str(tmp_path / 'o'), '--max_document_bytes', '-1'],
      cwd=corpora.ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert '--max_document_bytes' in proc.stderr


def _run_measured(argv: list) -> tuple[float, dict]:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  with open(os.devnull, 'w') as devnull:
    proc = subprocess.Popen([sys.executable, '-m', 'pipeline.run', *argv],
                            cwd=corpora.ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=devnull)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
  assert os.waitstatus_to_exitcode(status) == 0
  return usage.ru_maxrss / 1024, helpers.summary_of(out)


def test_a_large_text_runs_in_bounded_memory(tmp_path, minilm_export):
  """A 40 MB text among normal documents is embedded (its first 128
  tokens, truncated, its content hash over every byte) while the job's
  peak memory grows by far less than tokenizing it whole takes (25 to 40
  times the text, more for short words): at most 8 times the text, which
  leaves room for the copies of it that reading makes (about 3) and for
  run-to-run noise in the baseline (some 60 MB)."""
  size = 40 << 20
  docs = corpora.sample_docs(30)
  normal = tmp_path / 'normal.jsonl'
  normal.write_text(''.join(json.dumps(d) + '\n' for d in docs))
  block = ('plain words and more words ' * 40_000)[:1 << 20]
  with open(tmp_path / 'huge.jsonl', 'w') as f:
    f.writelines(json.dumps(d) + '\n' for d in docs)
    f.write('{"id": "huge", "text": "' + block * (size >> 20) + '"}\n')
  flags = ['--model_dir', minilm_export, '--max_document_bytes',
           str(64 << 20)]
  base_mb, base = _run_measured(['--input', str(normal), '--output',
                                 str(tmp_path / 'a' / 'emb'), *flags])
  out = str(tmp_path / 'b' / 'emb')
  huge_mb, summary = _run_measured(['--input', str(tmp_path / 'huge.jsonl'),
                                    '--output', out, *flags])
  assert base['documents_embedded'] == len(docs)
  assert summary['documents_embedded'] == len(docs) + 1
  assert summary['reconciled'] is True
  record = {r['id']: r for r in corpora.read_output(out)}['huge']
  assert record['truncated'] is True and record['num_tokens'] == 128
  whole = hashlib.sha256((block * (size >> 20)).encode())
  assert record['content_hash'] == whole.hexdigest()
  growth = huge_mb - base_mb
  assert growth < 8 * size / 2**20, (base_mb, huge_mb)


def test_bench_smoke_embeds_every_document():
  """`bench/huge_text.py --smoke` as docs/performance.md says to run it:
  a baseline and one run with a 3 MiB text, side by side."""
  proc = subprocess.run(
      [sys.executable, 'bench/huge_text.py', '--smoke'], cwd=corpora.ROOT,
      capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  figures = helpers.summary_of(proc.stdout)
  base, huge = figures['runs']
  assert (base['case'], huge['case']) == ('baseline', '+3M')
  assert base['embedded'] == 50 and huge['embedded'] == 51
  assert huge['truncated'] == base['truncated'] + 1
  assert base['reconciled'] and huge['reconciled']
  assert base['peak_mb'] > 0 and huge['peak_ratio'] > 0


@pytest.mark.parametrize('mode', ['truncate', 'chunk', 'pairs'])
def test_jobs_give_the_same_records_with_pieces(tmp_path, capsys,
                                                monkeypatch, minilm_export,
                                                mode):
  """The job end to end, in-process: with pieces of 61 characters (every
  text here cut many times, heads stopping early) the records equal those
  of the same run whose texts are each tokenized in one call: single
  texts truncated or chunked, and text pairs."""
  texts = [t for t in _texts(4, 14) if t.strip()][:12]
  corpus = tmp_path / 'c.jsonl'
  with open(corpus, 'w') as f:
    for i, text in enumerate(texts):
      record = {'id': f'd{i}', 'text': text}
      if mode == 'pairs':
        record['b'] = texts[i - 1]
      f.write(json.dumps(record) + '\n')
  flags = (['--text_b_field', 'b'] if mode == 'pairs' else
           ['--long_documents', mode])
  records = {}
  for piece in (None, _PIECE):
    if piece:
      monkeypatch.setattr(pieces, 'PIECE_CHARS', piece)
      monkeypatch.setattr(pieces, 'HEAD_CHARS_PER_TOKEN', 1)
    out = str(tmp_path / f'out{piece}' / 'emb')
    summary = helpers.run_job(capsys, [
        '--input', str(corpus), '--output', out, '--model_dir',
        minilm_export, '--max_seq_length', '32', *flags])
    assert summary['documents_embedded'] == len(texts)
    records[piece] = {r['id']: r for r in corpora.read_output(out)}
  whole, cut = records[None], records[_PIECE]
  assert sorted(whole) == sorted(cut)
  for key, record in whole.items():
    for field in ('num_tokens', 'truncated', 'num_chunks', 'content_hash'):
      assert cut[key][field] == record[field], (key, field)
    np.testing.assert_allclose(cut[key]['embedding'], record['embedding'],
                               rtol=0, atol=1e-6)
  assert any(r['num_chunks'] > 1 for r in whole.values()) == (
      mode == 'chunk')
  assert any(r['truncated'] for r in whole.values()) == (mode != 'chunk')
