"""--previous: unchanged documents carry their embedding forward."""

from __future__ import annotations

import json

from pipeline import run
from tests import corpora
from tests import helpers
from transforms import incremental
from transforms.elements import Document


def _seen(text, fingerprint='f', metadata=('en',)):
  return incremental.Seen(Document('a', text, None, '').content_hash,
                          fingerprint, incremental.metadata_digest(metadata))


def test_decide_rules():
  doc = Document('a', 'same', None, 'f@0', (('lang', 'en'),))
  _, light = incremental.current(doc)
  decide = incremental.decide
  assert decide([light], [_seen('same')], 'f') == incremental.REUSE
  # Changed text, another model fingerprint or changed metadata: embed.
  assert decide([light], [_seen('old')], 'f') == incremental.EMBED
  assert decide([light], [_seen('same', 'other')], 'f') == incremental.EMBED
  assert decide([light], [_seen('same', metadata=('de',))],
                'f') == incremental.EMBED
  # New id: embed. Gone id: removed.
  assert decide([light], [], 'f') == incremental.EMBED
  assert decide([], [_seen('x')], 'f') == incremental.REMOVED
  # An id held twice on either side is embedded again.
  assert decide([light, light], [_seen('same')], 'f') == incremental.EMBED
  assert decide([light], [_seen('same')] * 2, 'f') == incremental.EMBED
  # A previous record read back has its metadata fields by name.
  record = {'id': 'a', 'content_hash': light.content_hash,
            'model_fingerprint': 'f', 'lang': 'en', 'embedding': None}
  assert incremental.seen(record, ('lang',)) == ('a', _seen('same'))



def _write(path, docs):
  with open(path, 'w', encoding='utf-8') as f:
    for d in docs:
      f.write(json.dumps(d) + '\n')
  return str(path)


def test_incremental_run_equals_a_full_rerun(tmp_path, capsys, minilm_export):
  docs = corpora.sample_docs(60)
  first = _write(tmp_path / 'day1.jsonl', docs)
  common = ['--model_dir', minilm_export]
  out1 = str(tmp_path / 'day1' / 'emb')
  helpers.run_job(capsys, ['--input', first, '--output', out1, *common])

  # Day 2: 10% of the documents changed, 3 gone, 3 new.
  changed = {d['id'] for d in docs[::10]}
  gone = {d['id'] for d in docs[1:4]}
  day2 = [dict(d, text=d['text'] + ' (revised)') if d['id'] in changed else d
          for d in docs if d['id'] not in gone]
  day2 += [dict(d, id=f'new-{i}') for i, d in
           enumerate(corpora.sample_docs(3, start=100))]
  second = _write(tmp_path / 'day2.jsonl', day2)
  out2 = str(tmp_path / 'day2' / 'emb')
  summary = helpers.run_job(capsys, ['--input', second, '--output', out2,
                                     '--previous', out1, *common])
  assert summary['documents_read'] == len(day2)
  # Exactly the changed and new documents went through the encoder.
  assert summary['documents_embedded'] == len(changed) + 3
  assert summary['documents_reused'] == len(day2) - len(changed) - 3
  assert summary['documents_removed'] == len(gone)
  assert summary['reconciled'] is True

  full = str(tmp_path / 'full' / 'emb')
  helpers.run_job(capsys, ['--input', second, '--output', full, *common])
  got = {r['id']: r for r in corpora.read_output(out2)}
  want = {r['id']: r for r in corpora.read_output(full)}
  assert sorted(got) == sorted(d['id'] for d in day2)
  # Reused vectors come from day 1's batches: the batch-mix tolerance.
  helpers.assert_same_records(got, want, atol=1e-5)

  # The nightly form: --previous and --output name the same prefix. The
  # previous shards are read completely before the new ones replace them.
  summary = helpers.run_job(capsys, ['--input', second, '--output', out2,
                                     '--previous', out2, *common])
  assert summary['documents_reused'] == len(day2)
  assert summary['documents_embedded'] == 0
  assert {r['id']: r for r in corpora.read_output(out2)} == got

  # Another model setting: nothing is reused.
  out3 = str(tmp_path / 'normalized' / 'emb')
  summary = helpers.run_job(capsys, [
      '--input', second, '--output', out3, '--previous', out1, '--normalize',
      *common])
  assert summary['documents_reused'] == 0
  assert summary['documents_embedded'] == len(day2)


def test_previous_must_exist(tmp_path, capsys, minilm_export):
  assert run.main(['--input', corpora.SAMPLE, '--output', str(tmp_path / 'o'),
                   '--model_dir', minilm_export, '--previous',
                   str(tmp_path / 'nothing')]) == 2
  assert 'first run' in capsys.readouterr().err
