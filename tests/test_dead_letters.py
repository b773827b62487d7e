"""Every kind of bad record, mixed with good ones within files and across
files: nothing crashes, nothing is lost, each bad record says why."""

from __future__ import annotations

import csv
import json
import pytest

from tests import corpora
from tests import helpers
from transforms.elements import MAX_RAW_CHARS, content_hash

# A word whose token makes the test encoder fail (see poisoned_encoder).
POISON = 'zebra'


@pytest.fixture(scope='module')
def poisoned_model(tmp_path_factory, minilm_model, preprocessor):
  """The minilm-l6 encoder inside a SavedModel that fails with
  InvalidArgumentError on any batch holding POISON's token: a real encoder
  failure on chosen records, for the retry-one-by-one path."""
  import tensorflow as tf
  poison_id = int(preprocessor.tokenize(tf.constant([POISON])).flat_values[0])
  inner = tf.saved_model.load(minilm_model.encoder)
  spec = {k: tf.TensorSpec([None, None], tf.int32)
          for k in ('input_word_ids', 'input_mask', 'input_type_ids')}

  class Poisoned(tf.Module):

    def __init__(self):
      super().__init__()
      self.inner = inner

    @tf.function(input_signature=[spec])
    def __call__(self, inputs):
      ok = tf.reduce_all(tf.not_equal(inputs['input_word_ids'], poison_id))
      with tf.control_dependencies([tf.debugging.Assert(
          ok, ['batch holds the poison token'])]):
        return self.inner(inputs)

  out = str(tmp_path_factory.mktemp('poisoned') / 'encoder')
  tf.saved_model.save(Poisoned(), out)
  return minilm_model.preprocessor, out, poison_id



def test_every_bad_jsonl_record_is_dead_lettered(tmp_path, capsys,
                                                 poisoned_model):
  preprocessor, encoder, _ = poisoned_model
  docs = corpora.sample_docs(40)
  assert not any(POISON in d['text'] for d in docs)
  good = [json.dumps(d).encode() for d in docs]
  long_broken = b'{"id": "long", "text": "' + b'x' * 10000
  bad_a = [  # (line, expected error_type)
      (b'\xff\xfe{"id": "u", "text": "bad bytes"}', 'invalid_utf8'),
      (b'{"id": "broken", "text": ', 'malformed_json'),
      (long_broken, 'malformed_json'),
      (b'["not", "an", "object"]', 'malformed_json'),
      (b'{"id": "notext"}', 'missing_text'),
      (b'{"id": "nulltext", "text": null}', 'missing_text'),
      (b'{"id": "number", "text": 42}', 'missing_text'),
      (b'{"id": "empty", "text": ""}', 'empty_text'),
      (b'{"id": "blank", "text": " \\t\\n "}', 'empty_text'),
      (b'{"id": {"a": 1}, "text": "an object as id"}', 'bad_id'),
      (json.dumps({'id': 'poison-a', 'text': f'A {POISON} in the text.'}
                  ).encode(), 'embed_error:InvalidArgumentError'),
      (json.dumps({'id': docs[0]['id'], 'text': 'same id, later'}).encode(),
       'duplicate_id'),
  ]
  bad_b = [
      (b'', 'malformed_json'),
      (b'{"id": "b-broken"', 'malformed_json'),
      (json.dumps({'id': 'poison-b', 'text': f'{POISON} {POISON}'}).encode(),
       'embed_error:InvalidArgumentError'),
      (json.dumps({'id': docs[5]['id'], 'text': 'across files'}).encode(),
       'duplicate_id'),
  ]
  expected = {}  # source -> error_type
  for name, lines_good, bad in (('a.jsonl', good[:20], bad_a),
                                ('b.jsonl', good[20:], bad_b)):
    lines = list(lines_good)
    for i, (line, _error) in enumerate(bad):
      lines.insert(2 * i + 1, line)
    data, offsets = b'', []
    for line in lines:
      offsets.append(len(data))
      data += line + b'\n'
    path = tmp_path / name
    path.write_bytes(data)
    for line, error in bad:
      expected[f'{path}@{offsets[lines.index(line)]}'] = error
  out = str(tmp_path / 'out' / 'emb')
  summary = helpers.run_job(capsys, [
      '--input', str(tmp_path / '*.jsonl'), '--output', out,
      '--preprocessor', preprocessor, '--encoder', encoder,
      '--on_duplicate_id', 'first', '--batch_size', '8'])
  read = len(docs) + len(bad_a) + len(bad_b)
  assert summary['documents_read'] == read
  assert summary['documents_embedded'] == len(docs)
  assert summary['documents_rejected'] == len(bad_a) + len(bad_b)
  assert summary['reconciled'] is True
  assert summary['duplicate_ids'] == 2
  # The poisoned batches were retried one by one: only the poison failed.
  assert summary['batches_retried_one_by_one'] >= 1
  records = corpora.read_output(out)
  assert sorted(r['id'] for r in records) == sorted(d['id'] for d in docs)
  by_id = {r['id']: r for r in records}
  # The first of a duplicated id is the one kept.
  assert by_id[docs[0]['id']]['content_hash'] == content_hash(docs[0]['text'])
  letters = corpora.read_dead_letters(out + '_dead_letter')
  assert {d['source']: d['error_type'] for d in letters} == expected
  for d in letters:
    assert d['message'] and d['stage'] in ('read', 'dedup', 'embed')
    assert len(d['raw']) <= MAX_RAW_CHARS
  long_letter = [d for d in letters if d['raw'].startswith('{"id": "long"')]
  assert long_letter[0]['raw_truncated'] is True
  assert len(long_letter[0]['raw']) == MAX_RAW_CHARS
  assert any('poison token' in d['message'] for d in letters
             if d['stage'] == 'embed')


def test_bad_csv_rows_across_files(tmp_path, capsys, minilm_export):
  docs = corpora.sample_docs(12)
  expected = {}
  for part, chunk in enumerate((docs[:6], docs[6:])):
    path = tmp_path / f'part{part}.csv'
    with open(path, 'w', encoding='utf-8', newline='') as f:
      w = csv.writer(f)
      w.writerow(['id', 'text'])
      for i, d in enumerate(chunk):
        w.writerow([d['id'], d['text']])
        if i == 2:
          f.write('one,two,three\n')  # too many fields
          w.writerow([f'empty{part}', '   '])
    # Rows are 1-based lines; the header is line 1.
    expected[f'{path}:5'] = 'malformed_csv'
    expected[f'{path}:6'] = 'empty_text'
  with open(tmp_path / 'part1.csv', 'ab') as f:
    f.write(b'bad-utf8,\xff\xfe text\n')
  expected[f'{tmp_path / "part1.csv"}:10'] = 'invalid_utf8'
  out = str(tmp_path / 'out' / 'emb')
  summary = helpers.run_job(capsys, [
      '--input', str(tmp_path / '*.csv'), '--output', out,
      '--model_dir', minilm_export])
  assert summary['reconciled'] is True
  assert summary['documents_embedded'] == len(docs)
  letters = corpora.read_dead_letters(out + '_dead_letter')
  assert {d['source']: d['error_type'] for d in letters} == expected
  assert sorted(r['id'] for r in corpora.read_output(out)) == sorted(
      d['id'] for d in docs)
