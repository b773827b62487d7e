"""The parts of the exported tokenizers that need no vocabulary files:
tfmodels/bytebpe.py (GPT-2's byte alphabet, special-token checks,
tokenizer.json's added tokens, and the pre-tokenizing split, which is TF
ops checked against GPT-2's regex run by the `regex` module) and
tfmodels/wordpiece.py (RE2 escaping, special token ids).

Why: the byte-level BPE preprocessor must cut text exactly where GPT-2's
regex does, or token ids drift from Hugging Face's; the end-to-end parity
tests (tests/test_bpe_parity.py) need a model export, this finds a wrong
cut in a second.
"""

from __future__ import annotations

import json
import re

import pytest
import regex

import tfmodels  # noqa: F401  TensorFlow's process defaults first
from tfmodels import bytebpe
from tfmodels import wordpiece

pytestmark = pytest.mark.unit

# GPT-2's pre-tokenizer, as written in bytebpe's docstring.
GPT2 = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|"""
                     r""" ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def test_bytes_to_unicode_is_gpt2s_alphabet():
  mapping = bytebpe.bytes_to_unicode()
  assert sorted(mapping) == list(range(256))
  assert len(set(mapping.values())) == 256
  # Printable bytes stand for themselves; the others are shifted past 255
  # in byte order: space is 'Ġ' (U+0120), newline 'Ċ' (U+010A).
  assert mapping[ord('A')] == 'A' and mapping[ord('~')] == '~'
  assert mapping[0xE9] == '\u00e9'
  assert mapping[0x20] == '\u0120' and mapping[0x0A] == '\u010a'
  assert mapping[0x00] == '\u0100' and mapping[0xAD] == '\u0143'
  assert all(ord(c) < 324 for c in mapping.values())


def test_token_bytes():
  decoder = {c: b for b, c in bytebpe.bytes_to_unicode().items()}
  assert bytebpe.token_bytes('\u0120hello', decoder) == b' hello'
  assert bytebpe.token_bytes('caf\u00c3\u00a9', decoder) == (
      'caf\u00e9'.encode('utf-8'))
  assert bytebpe.token_bytes('<s>', decoder) == b'<s>'
  assert bytebpe.token_bytes('\u4e2d', decoder) is None  # not byte-level


def test_special_token():
  token = bytebpe.SpecialToken('<mask>', 50264, lstrip=True)
  assert repr(token) == ("SpecialToken('<mask>', 50264, lstrip=True, "
                         'rstrip=False)')
  with pytest.raises(ValueError, match='cannot be empty'):
    bytebpe.SpecialToken('', 1)


def _specials(*contents):
  return [bytebpe.SpecialToken(c, i) for i, c in enumerate(contents)]


def test_check_specials():
  bytebpe._check_specials(_specials(*bytebpe.ROBERTA_SPECIAL_TOKENS))
  with pytest.raises(ValueError, match="'<s>' lies inside '<s>x'"):
    bytebpe._check_specials(_specials('<s>', '<s>x'))
  with pytest.raises(ValueError, match="'ab' and 'bc' can overlap"):
    bytebpe._check_specials(_specials('ab', 'bc'))


def test_read_added_tokens(tmp_path):
  path = tmp_path / 'tokenizer.json'
  path.write_text(json.dumps({'added_tokens': [
      {'id': 0, 'content': '<s>', 'special': True},
      {'id': 50264, 'content': '<mask>', 'special': True, 'lstrip': True,
       'normalized': True},
  ]}), encoding='utf-8')
  tokens = bytebpe.read_added_tokens(str(path), {})
  assert [(t.content, t.token_id, t.lstrip, t.rstrip) for t in tokens] == [
      ('<s>', 0, False, False), ('<mask>', 50264, True, False)]
  vocab = {t: 10 + i for i, t in enumerate(bytebpe.ROBERTA_SPECIAL_TOKENS)}
  fallback = bytebpe.read_added_tokens(None, vocab)
  assert [(t.content, t.token_id) for t in fallback] == list(vocab.items())
  with pytest.raises(ValueError, match=r"lacks special tokens \['<mask>'\]"):
    bytebpe.read_added_tokens(None, {t: 1 for t in
                                     bytebpe.ROBERTA_SPECIAL_TOKENS[:-1]})


@pytest.mark.parametrize('entry,message', [
    ({'id': 5, 'content': 'x', 'single_word': True}, 'single_word'),
    ({'id': 5, 'content': 'x', 'special': False, 'normalized': True},
     'normalized'),
])
def test_read_added_tokens_refuses_what_it_cannot_match(tmp_path, entry,
                                                        message):
  path = tmp_path / 'tokenizer.json'
  path.write_text(json.dumps({'added_tokens': [entry]}), encoding='utf-8')
  with pytest.raises(ValueError, match=message):
    bytebpe.read_added_tokens(str(path), {})


TEXTS = [
    "Hello world's  end!!\n\n  x",
    "I'll be 2024 <s>ok</s> yes",
    "They'RE here; we've 3.14159 and 1,000,000 items\t\ttabs  ",
    'caf\u00e9 na\u00efve \u4e2d\u6587\u5b57 \U0001f600\U0001f600 ok',
    '   leading and trailing   ',
    "<mask><pad>'s'<unk>",
    '',
    'a',
]


def _reference(text: str, specials: list[str]) -> list[tuple[bytes, int]]:
  """Pieces as Hugging Face makes them: special tokens cut out first, then
  GPT-2's regex on the text between them."""
  out = []
  pattern = '(' + '|'.join(re.escape(s) for s in specials) + ')'
  for part in re.split(pattern, text):
    if part in specials:
      out.append((part.encode(), specials.index(part)))
    elif part:
      out.extend((p.encode(), -1) for p in GPT2.findall(part))
  return out


def test_split_pieces_cuts_where_gpt2s_regex_does():
  import tensorflow as tf
  specials = list(bytebpe.ROBERTA_SPECIAL_TOKENS)
  piece_row, piece_special, byte_piece, byte_values, byte_strings = (
      bytebpe.split_pieces(tf.constant(TEXTS), _specials(*specials),
                           bytebpe._Classes()))
  piece_row, piece_special = piece_row.numpy(), piece_special.numpy()
  byte_piece, byte_values = byte_piece.numpy(), byte_values.numpy()
  assert b''.join(byte_strings.numpy()) == bytes(byte_values.tolist())
  assert bytes(byte_values.tolist()) == ''.join(TEXTS).encode()
  pieces = [bytes(byte_values[byte_piece == p].tolist())
            for p in range(len(piece_row))]
  for row, text in enumerate(TEXTS):
    got = [(pieces[p], int(piece_special[p]))
           for p in range(len(piece_row)) if piece_row[p] == row]
    assert got == _reference(text, specials), text


@pytest.mark.parametrize('literal,escaped', [
    ('[SEP]', r'\[SEP\]'), ('<s>', '<s>'), ('a.b', r'a\.b'),
    ('x|y', r'x\|y'), ('(?)*+^$', r'\(\?\)\*\+\^\$'), ('{1}\\', r'\{1\}\\')])
def test_re2_escape(literal, escaped):
  assert wordpiece.re2_escape(literal) == escaped
  # The escaped text matches the literal itself, and only it.
  assert re.fullmatch(escaped, literal)
  assert not re.fullmatch(escaped, literal + 'x')


def test_special_ids():
  vocab = ['[PAD]', 'a', '[UNK]', '[CLS]', '[SEP]', 'b', '[MASK]']
  assert wordpiece._special_ids(vocab) == {
      'vocab_size': 7, 'start_of_sequence_id': 3, 'end_of_segment_id': 4,
      'padding_id': 0, 'mask_id': 6}
  with pytest.raises(ValueError, match=r"lacks special tokens \['\[MASK\]'\]"):
    wordpiece._special_ids(vocab[:-1])
