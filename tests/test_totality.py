"""Every stage is total over its input: whatever string a reader can
produce is embedded or dead-lettered with a reason, and every dead letter
can be written, in every dead-letter format.

Property style: records are generated (seeded) from every kind of awkward
text: lone surrogates (JSON's "\\ud800" escape), NUL and the other control
characters, noncharacters, private use, astral and combining characters,
right-to-left text, empty and whitespace-only text, and texts from one
character to 200,000, in the text, the id and a metadata field. The
expected outcome of each record comes from the rule written out here, not
from the job: the run must complete, reconcile, embed exactly the good
records and dead-letter each of the others with the expected type.
"""

from __future__ import annotations

import json
import random

import pytest

from tests import corpora
from tests import emulators
from tests import helpers
from tests import postgres

pytestmark = pytest.mark.services

SEED = 24
# Characters by kind, as code points.
KINDS = {
    'ascii': [chr(c) for c in range(0x20, 0x7f)],
    'control': [chr(c) for c in [*range(1, 0x20), 0x7f, *range(0x80, 0xa0)]],
    'noncharacter': ['\ufffe', '\uffff', '\ufdd0', '\U0001fffe'],
    'private': ['\ue000', '\uf8ff', '\U000f0000'],
    'astral': ['\U0001f600', '\U0001d11e', '\U00020000'],
    'combining': ['e\u0301', 'a\u0308\u0323'],
    'rtl': ['\u05e9\u05dc\u05d5\u05dd', '\u0645\u0631\u062d\u0628\u0627'],
    'bom': ['\ufeff'],
    'replacement': ['\ufffd'],
}
SURROGATES = ['\ud800', '\udbff', '\udc00', '\udfff']


def _text(rng: random.Random, length: int, kinds) -> str:
  pool = [c for kind in kinds for c in KINDS[kind]]
  return ''.join(rng.choice(pool) for _ in range(length))


def _expected(record: dict) -> str:
  """The read stage's rule, written out independently: 'embedded' or
  the error_type."""
  text = record.get('text')
  if not isinstance(text, str):
    return 'missing_text'
  if not text.strip():
    return 'empty_text'
  for value in (text, record.get('id'), record.get('lang')):
    if isinstance(value, str) and '\0' in value:
      return 'nul_character'
    if isinstance(value, str) and any('\ud800' <= c <= '\udfff'
                                      for c in value):
      return 'lone_surrogate'
  return 'embedded'


def _records(n: int) -> list[dict]:
  rng = random.Random(SEED)
  kinds = list(KINDS)
  out = []
  for i in range(n):
    length = rng.choice([1, 2, 5, 30, 200, 3000])
    text = _text(rng, length, ['ascii', *rng.sample(kinds, 2)])
    record = {'id': f'doc-{i}', 'text': text,
              'lang': _text(rng, 4, ['ascii', rng.choice(kinds)])}
    flaw = rng.choice(['none', 'none', 'surrogate', 'nul', 'empty',
                       'surrogate_id', 'nul_meta', 'surrogate_meta', 'long'])
    at = rng.randrange(len(text) + 1)
    if flaw == 'surrogate':
      record['text'] = text[:at] + rng.choice(SURROGATES) + text[at:]
    elif flaw == 'nul':
      record['text'] = text[:at] + '\0' + text[at:]
    elif flaw == 'empty':
      record['text'] = rng.choice(['', ' ', '\t\n', '\u3000'])
    elif flaw == 'surrogate_id':
      record['id'] += rng.choice(SURROGATES)
    elif flaw == 'nul_meta':
      record['lang'] += '\0'
    elif flaw == 'surrogate_meta':
      record['lang'] += rng.choice(SURROGATES)
    elif flaw == 'long':
      record['text'] = _text(rng, 200_000, ['ascii', 'astral', 'control'])
    out.append(record)
  return out


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  records = _records(120)
  path = tmp_path_factory.mktemp('totality') / 'c.jsonl'
  # ensure_ascii: lone surrogates travel as JSON escapes, as real exports
  # of broken UTF-16 give them.
  path.write_text(''.join(json.dumps(r) + '\n' for r in records),
                  encoding='ascii')
  expected = {r['id']: _expected(r) for r in records}
  kinds = set(expected.values())
  assert {'embedded', 'empty_text', 'nul_character',
          'lone_surrogate'} <= kinds, kinds
  return str(path), expected


def _run(capsys, argv) -> dict:
  return helpers.run_job(capsys, argv)


def _check(summary: dict, expected: dict, output: str, letters: list):
  good = sorted(i for i, e in expected.items() if e == 'embedded')
  assert summary['reconciled'] is True
  assert summary['documents_read'] == len(expected)
  assert summary['documents_embedded'] == len(good)
  assert summary['documents_rejected'] == len(expected) - len(good)
  assert sorted(r['id'] for r in corpora.read_output(output)) == good
  assert sorted(letters) == sorted(e for e in expected.values()
                                   if e != 'embedded')


@pytest.mark.parametrize('fmt', ['jsonl', 'parquet'])
def test_every_string_is_embedded_or_a_writable_dead_letter(
    corpus, tmp_path, capsys, minilm_export, fmt):
  path, expected = corpus
  out = str(tmp_path / 'emb')
  summary = _run(capsys, ['--input', path, '--output', out, '--model_dir',
                          minilm_export, '--metadata_fields', 'lang',
                          '--dead_letter_format', fmt,
                          '--progress_every', '0'])
  letters = corpora.read_dead_letters(out + '_dead_letter')
  _check(summary, expected, out, [d['error_type'] for d in letters])
  for d in letters:  # written as shown: escaped, never dropped
    assert '\0' not in d['raw'] and d['message'] and d['source']


def test_dead_letters_in_postgresql(corpus, capsys, minilm_export):
  path, expected = corpus
  with postgres.running() as server:
    uri = server.uri('tot')
    summary = _run(capsys, ['--input', path, '--output', uri, '--model_dir',
                            minilm_export, '--metadata_fields', 'lang',
                            '--progress_every', '0'])
    with server.connect() as conn:
      letters = [e for (e,) in conn.execute(
          'SELECT error_type FROM tot_dead_letter').fetchall()]
    _check(summary, expected, uri, letters)


def test_dead_letters_in_bigquery(corpus, capsys, minilm_export):
  path, expected = corpus
  with emulators.running(bigquery=True, datasets=['tot']) as (_, client):
    table = f'bq://{emulators.PROJECT}.tot.emb'
    summary = _run(capsys, ['--input', path, '--output', table,
                            '--model_dir', minilm_export, '--metadata_fields',
                            'lang', '--project', emulators.PROJECT,
                            '--temp_location', 'gs://bucket/tmp',
                            '--progress_every', '0'])
    letters = [r['error_type'] for r in client.query(
        f'SELECT error_type FROM `{emulators.PROJECT}.tot.emb_dead_letter`'
    ).result()]
    _check(summary, expected, table, letters)
