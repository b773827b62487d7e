"""Generates varied test strings: the kinds of text tokenizers get wrong."""

from __future__ import annotations

import random
import unicodedata

# Literal special tokens inside texts, per tokenizer kind ('special' mode
# reads them as those tokens); each list also has an empty text: only the
# two special tokens (tests/test_packing_parity.py,
# tests/test_packing_pipeline.py).
SPECIAL_TEXTS = {
    'bert': ['', '[SEP]', '[CLS] a [SEP] b', 'x [MASK] y [SEP]', '[PAD]',
             'end [SEP]'],
    'roberta': ['', '</s>', '<s> a </s> b', 'x <mask> y </s>',
                '<pad><pad>', 'tab\t<pad>', 'a <pad> b <pad> c', '<s>'],
}

WORDS = ['the', 'quick', 'brown', 'fox', 'jumps', 'over', 'lazy', 'dog',
         'unaffable', 'embedding', 'pipeline', "don't", "it's", "we'll",
         'naïve', 'café', 'Übermaß', 'straße', 'façade', 'résumé', 'ÅNGSTRÖM',
         'İstanbul', 'ΣΊΣΥΦΟΣ', 'Ελληνικά', 'Москва', 'ĳssel', 'ﬁnance',
         '東京', '日本語', '北京市', '한국어', 'ひらがな', 'カタカナ', 'ไทย',
         'العربية', 'עברית', 'हिन्दी', '👩‍👩‍👧', '🎉', '👍🏽', '🇺🇸', '❤️',
         'x²', '½', '①', 'ＦＵＬＬ', 'e\u0301', 'a\u0308', 'def', 'return',
         'foo_bar', 'x=1;', 'f(x)', '{"k": [1, 2]}', '<b>', 'http://a.b/c?d=e',
         '$9.99', '100%', '#tag', '@user', 'C++', '--flag', '...', '—', '–',
         '«quoted»', '“smart”', '¿qué?', '¡sí!', '§3', '©', '™', '°C']
ODD = ['\t', '\n', '\r', '\x0b', '\x0c', '\x85', '\xa0', '\u2000', '\u2003',
       '\u200a', '\u200b', '\u200d', '\u2028', '\u3000', '\x00', '\xad',
       '\ufeff', '\ufffd', '\ue000', '\U000e0001', '  ', '    ']
SPECIAL = ['[CLS]', '[SEP]', '[MASK]', '[UNK]', '[PAD]', '<s>', '</s>',
           '<pad>', '<mask>']


def stable_char(c: str) -> bool:
  """Assigned since Unicode 3.2 with an unchanged category.

  Tokenizer tables of different libraries date from different Unicode
  versions; characters added or recategorised later are where they can
  legitimately disagree (see docs/models.md, "Tokenizer fidelity").
  """
  category = unicodedata.category(c)
  return (category not in ('Cn', 'Cs') and
          unicodedata.ucd_3_2_0.category(c) == category)


def _random_chars(rng: random.Random, low: int, high: int, n: int) -> str:
  out = []
  while len(out) < n:
    c = chr(rng.randint(low, high))
    if stable_char(c):
      out.append(c)
  return ''.join(out)


def _random_word(rng: random.Random) -> str:
  word = rng.choice(WORDS)
  if rng.random() < 0.2:
    word = word.upper() if rng.random() < 0.5 else word.title()
  return word


def random_text(rng: random.Random, max_words: int = 40) -> str:
  parts = []
  for _ in range(rng.randint(0, max_words)):
    roll = rng.random()
    if roll < 0.70:
      parts.append(_random_word(rng))
    elif roll < 0.80:
      parts.append(rng.choice(ODD))
    elif roll < 0.85:
      parts.append(rng.choice(SPECIAL))
    elif roll < 0.92:
      parts.append(_random_chars(rng, 0x20, 0x2FFF, rng.randint(1, 6)))
    elif roll < 0.97:
      parts.append(_random_chars(rng, 0x20, 0x10FFFF, rng.randint(1, 3)))
    else:
      parts.append(rng.choice('abcé') * rng.randint(90, 130))
    sep = rng.choice([' ', ' ', ' ', '', '\n', '  '])
    parts.append(sep)
  return ''.join(parts)


def varied_sentences() -> list[str]:
  """A fixed, readable set of at least 50 sentences for embedding parity."""
  base = [
      'A man is eating food.', 'A man is riding a horse.',
      'The new movie is awesome!', 'The cat sits outside.',
      'Café au lait, crème brûlée and a naïve façade.',
      'Übermäßige Straßenbahn-Verspätungen ärgern Pendler.',
      'El niño comió piña en el año nuevo.', 'Ça coûte 9,99 € à Paris.',
      'Москва — столица России.', 'Ελληνικά γράμματα: ΣΊΣΥΦΟΣ.',
      '東京は日本の首都です。', '北京欢迎你，上海也欢迎你。',
      '한국어 문장도 잘 처리되어야 합니다.', 'ひらがなとカタカナと漢字。',
      'العربية لغة جميلة', 'עברית נכתבת מימין לשמאל',
      'हिन्दी भी समर्थित है।', 'ภาษาไทยไม่มีช่องว่างระหว่างคำ',
      'Family: 👩‍👩‍👧 and a party 🎉🎉 with thumbs 👍🏽.',
      'Flags 🇺🇸🇯🇵 and hearts ❤️💙.',
      'Ligatures: ﬁnance, ﬂow; full width: ＦＵＬＬ; x² and ½.',
      "Don't stop, we'll see, it's fine — isn't it?",
      'def f(x):\n    return x ** 2  # squared',
      '{"key": [1, 2, 3], "ok": true}', 'SELECT * FROM t WHERE a = 1;',
      'Visit http://example.com/path?q=1&r=2 now.',
      'Tabs\tand\nnewlines\r\nand  double  spaces.',
      'Zero\u200bwidth and soft\u00adhyphen and NUL\x00byte.',
      'Non-breaking\u00a0space and ideographic\u3000space.',
      'ALL CAPS SENTENCE FOR THE UNCASED MODEL.',
      'MiXeD CaSe WoRdS aNd İstanbul.', 'Numbers 1,234,567.89 and 3.14159.',
      'Dates: 2026-11-27, 27/11/2026, Nov. 27th.', 'Email: a.b@example.org',
      'Hashtags #beam #tensorflow and @mentions.', 'C++ and C# and F#.',
      '«Guillemets» and “smart quotes” and ‘single’.', '¿Qué pasa? ¡Nada!',
      'Symbols: © ® ™ § ¶ † ‡ • … ‰ °C.', 'Math: ∀x ∈ ℝ, x² ≥ 0.',
      'Repeated letters: sooooooooo goooood.',
      'a' * 150 + ' overlong word then normal text.',
      'Short.', 'x', '!!!', '...', 'Hi',
      'Supercalifragilisticexpialidocious antidisestablishmentarianism.',
      'Pneumonoultramicroscopicsilicovolcanoconiosis is a word.',
      'Vietnamese: Tiếng Việt có nhiều dấu.',
      'Turkish dotless ı and dotted İ; German ß; Dutch ĳ.',
  ]
  long_text = ' '.join(['This sentence is repeated to make a document far '
                        'longer than the sequence length.'] * 40)
  base += [long_text, long_text.upper(), ' '.join(base[:30])]
  return base


# Whitespace that GPT-2's regex treats as \s, and look-alikes that it does not.
BPE_SPACES = ['\t', '\n', '\r', '\x0b', '\x0c', '\x85', '\xa0', '\u1680',
              '\u2000', '\u2001', '\u2005', '\u200a', '\u2028', '\u2029',
              '\u202f', '\u205f', '\u3000', '\u200b', '\u180e', '\ufeff']
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL",
                "'x", "''", "'", "'sa", "'rel"]
CODE = ['def f(x):\n    return x\n', 'if a:\n\tb = 1\n', '    ', '\t\t',
        'x  = [1,2]', '{"k": null}', '    # comment\n', 'a\r\n\r\nb',
        "print('hi')", 'x->y', '==>', '...', 'i++;', '#!/bin/sh']


def _any_chars(rng: random.Random, n: int) -> str:
  """Any code point but surrogates (Python str cannot hold lone ones in
  UTF-8): byte-level BPE must handle all, with no Unicode-version caveat,
  because its character classes are read off `tokenizers` itself."""
  out = []
  while len(out) < n:
    roll = rng.random()
    high = 0x7F if roll < 0.3 else 0x2FFF if roll < 0.7 else 0x10FFFF
    cp = rng.randint(0, high)
    if not 0xD800 <= cp <= 0xDFFF:
      out.append(chr(cp))
  return ''.join(out)


def random_bpe_text(rng: random.Random, max_parts: int = 40) -> str:
  """Strings aimed at GPT-2's pre-tokenizer and byte-level BPE: whitespace
  runs of every kind before words and punctuation, contractions in every
  context, NUL, code, special-token literals, any code point, long words."""
  parts = []
  for _ in range(rng.randint(0, max_parts)):
    roll = rng.random()
    if roll < 0.45:
      parts.append(_random_word(rng))
    elif roll < 0.60:
      parts.append(''.join(rng.choice(BPE_SPACES + [' ', ' ', ' '])
                           for _ in range(rng.randint(1, 4))))
    elif roll < 0.68:
      parts.append(rng.choice(CONTRACTIONS))
    elif roll < 0.74:
      parts.append(rng.choice(CODE))
    elif roll < 0.78:
      parts.append(rng.choice(SPECIAL))
    elif roll < 0.81:
      parts.append('\x00' * rng.randint(1, 2))
    elif roll < 0.95:
      parts.append(_any_chars(rng, rng.randint(1, 6)))
    elif roll < 0.98:
      parts.append(str(rng.randint(0, 10**rng.randint(1, 12))))
    else:
      parts.append(''.join(rng.choice('abcé1_-') for _ in range(
          rng.randint(50, 400))))
    parts.append(rng.choice([' ', ' ', ' ', '', '', '\n', '  ', '\t']))
  return ''.join(parts)
