"""Where a long text can be cut so that its pieces, tokenized one by one,
give exactly the tokens of the whole text, in order.

Tokenizing a text in one TensorFlow call takes 25 to 40 times its size in
memory (the code points, pre-tokens and pieces of the whole text are held at
once), so a long text is tokenized piece by piece (tfmodels/embedder.py
Tokenizer): memory then follows the piece, not the text. When only the first
tokens are wanted (a truncated document), the pieces stop once there are
enough of them.

A cut goes just before a space, tab, newline or carriage return that
follows a character that is not whitespace: the start of a run of
whitespace. Both tokenizer families this project exports split there, so
nothing on either side of the cut changes what the other side becomes:
- WordPiece (BERT): those four characters become spaces, and words split
  at spaces before anything else happens (normalisation is per character).
- Byte-level BPE (GPT-2, RoBERTa): no pre-token of GPT-2's regex runs from
  a non-whitespace character into whitespace (only ` ?\\p{L}+`-style pieces
  hold a space, at their start), and whether a whitespace run's last
  character joins the next word is decided by what follows the run, which
  stays with it. A special token that strips whitespace to its left takes
  the run, which stays with it too; one that strips to its right (none of
  the presets has one) would lose the run after it.
Other whitespace (U+000B, U+000C, U+0085, U+001C to U+001F) is never a cut:
the two families disagree on it (BERT removes U+000B, U+000C and U+0085;
GPT-2's regex does not take U+001C to U+001F for whitespace). A text with no
cut point beyond a place (one long word) is one piece from there to its
end, which bounds the piece by the document (--max_document_bytes).
"""

from __future__ import annotations

import re
from typing import Iterator, Optional

# The start of a whitespace run: one of these four after a non-whitespace
# character (Python's \S: not str.isspace()).
_CUT = re.compile(r'(?<=\S)[ \t\n\r]')
# Characters of the longest piece tokenized in one call when the whole
# text is wanted, or once a head has grown this far: some 30 MB of the
# tokenizer's memory.
PIECE_CHARS = 1 << 20
# Characters per wanted token in the first piece of a head: real text has
# 3 to 6 per token, so the first piece almost always suffices; a piece
# that falls short is followed by one twice as long.
HEAD_CHARS_PER_TOKEN = 32


def head_chars(max_tokens: int) -> int:
  """The first piece for the first max_tokens tokens: texts no longer
  than this are tokenized whole."""
  return HEAD_CHARS_PER_TOKEN * max(1, max_tokens)


def cut_at_or_after(text: str, at: int) -> int:
  """The first cut point at or after `at` (0 < at), or len(text)."""
  found = _CUT.search(text, at)
  return found.start() if found else len(text)


def spans(text: str, first: int, most: Optional[int] = None
          ) -> Iterator[tuple[int, int]]:
  """(start, end) of consecutive pieces covering text, each ending at a
  cut point or the end: the first about `first` characters long, each next
  one about twice the one before, up to about `most` (default
  PIECE_CHARS; a piece runs on to the next cut point, so one long word
  makes it longer)."""
  most = PIECE_CHARS if most is None else most
  start, size = 0, max(1, first)
  while start < len(text):
    end = start + size
    end = len(text) if end >= len(text) else cut_at_or_after(text, end)
    yield start, end
    start, size = end, min(2 * size, max(most, first))
