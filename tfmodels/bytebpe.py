"""A byte-level BPE (GPT-2 / RoBERTa) text preprocessor as a TF Hub SavedModel.

Everything runs in TensorFlow ops, so the tokenizer travels inside the
SavedModel and Dataflow workers need no Python tokenizer. The goal is token
ids equal to Hugging Face's `RobertaTokenizerFast` on every string, which the
published TF Hub RoBERTa preprocessor (SentencePiece over the whole string)
and keras_hub's BytePairTokenizer do not reach.

Three steps, as in `tokenizers`:

1. Special tokens written in the text (`<s>`, `</s>`, `<pad>`, `<unk>`,
   `<mask>`) are cut out first and become their ids, exactly as Hugging Face
   reads them by default (its added-token matching, including `lstrip` /
   `rstrip` where the tokenizer.json sets them). The text between them is
   split on its own.
2. Pre-tokenizing with GPT-2's regex, these two alternations joined by `|`:
   `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+`
   and `\\s+(?!\\S)|\\s+`.
   TF's regex engine (RE2) cannot run it: no look-ahead, an ASCII-only `\\s`,
   older Unicode tables, and tf_text.regex_split stops at NUL. The regex is
   simple enough that where its pieces start follows from each character's
   class and its neighbours, so it is computed that way, with vectorised ops
   over code points and a class table read off `tokenizers` itself
   (gpt2_classes.py). Linear in the text length.
3. BPE merges over each piece's UTF-8 bytes, lowest merge rank first, as
   GPT-2's reference `bpe()` does. All pieces of a batch merge together, one
   rank per piece per step; pieces that are done leave the working set, so a
   very long piece costs only its own steps. Pieces that are themselves a
   vocabulary token whose merges rebuild it (most English words) come from a
   lookup table filled at export time by this same merge loop.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from tfmodels import gpt2_classes
from tfmodels import packing
from tfmodels import preprocessor

# Character classes (see gpt2_classes.py); SPACE is U+0020, the only
# whitespace the regex's ` ?` prefixes take.
OTHER, LETTER, NUMBER, WHITESPACE, SPACE = 0, 1, 2, 3, 4
_CLASS_CODES = {'O': OTHER, 'L': LETTER, 'N': NUMBER, 'W': WHITESPACE}
_APOSTROPHE = ord("'")
# GPT-2's contractions, case-sensitive: 's 't 'm 'd and 're 've 'll.
_SUFFIX_1 = tuple(ord(c) for c in 'stmd')
_SUFFIX_2 = tuple((ord(a), ord(b)) for a, b in ('re', 've', 'll'))
_NO_RANK = np.iinfo(np.int64).max

ROBERTA_SPECIAL_TOKENS = ('<s>', '<pad>', '</s>', '<unk>', '<mask>')


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character map, in which vocab.json and
  merges.txt spell raw bytes."""
  printable = (list(range(ord('!'), ord('~') + 1)) +
               list(range(ord('\xa1'), ord('\xac') + 1)) +
               list(range(ord('\xae'), ord('\xff') + 1)))
  mapping = {b: chr(b) for b in printable}
  extra = 0
  for b in range(256):
    if b not in mapping:
      mapping[b] = chr(256 + extra)
      extra += 1
  return mapping


def token_bytes(token: str, decoder: dict[str, int]) -> bytes | None:
  """A vocabulary token's raw bytes; None if it is not byte-level text."""
  try:
    return bytes(decoder[c] for c in token)
  except KeyError:
    return None


class SpecialToken:
  """An added token matched verbatim in raw text (Hugging Face semantics)."""

  def __init__(self, content: str, token_id: int, lstrip: bool = False,
               rstrip: bool = False):
    if not content:
      raise ValueError('special tokens cannot be empty')
    self.content = content
    self.token_id = token_id
    self.lstrip = lstrip
    self.rstrip = rstrip

  def __repr__(self):
    return (f'SpecialToken({self.content!r}, {self.token_id}, '
            f'lstrip={self.lstrip}, rstrip={self.rstrip})')


def _check_specials(specials: list[SpecialToken]) -> None:
  """Matches are found independently per token, which equals Hugging Face's
  leftmost-longest scan only if no two matches can overlap."""
  for a in specials:
    for b in specials:
      if a is not b and a.content in b.content:
        raise ValueError(f'special token {a.content!r} lies inside '
                         f'{b.content!r}; not supported')
      for k in range(1, min(len(a.content), len(b.content))):
        if a.content[-k:] == b.content[:k]:
          raise ValueError(f'special tokens {a.content!r} and {b.content!r} '
                           'can overlap; not supported')


def _shift(x: tf.Tensor, k: int, fill) -> tf.Tensor:
  """y[p] = x[p + k] (k may be negative); `fill` beyond either end."""
  n = tf.size(x)
  if k >= 0:
    return tf.pad(x[k:], [[0, tf.minimum(k, n)]], constant_values=fill)
  return tf.pad(x[:tf.maximum(n + k, 0)], [[tf.minimum(-k, n), 0]],
                constant_values=fill)


def _run_first(flags: tf.Tensor) -> tf.Tensor:
  """For each position, the index of the latest position <= it where flags is
  True; meaningless before the first True."""
  idx = tf.range(tf.size(flags, out_type=tf.int64), dtype=tf.int64)
  # The trailing 0 keeps the gather valid when no flag is set.
  firsts = tf.concat([tf.boolean_mask(idx, flags), [0]], 0)
  which = tf.maximum(tf.cumsum(tf.cast(flags, tf.int64)) - 1, 0)
  return tf.gather(firsts, which)


class _Classes:
  """Code point -> class, by binary search over the generated run table."""

  def __init__(self):
    self.starts = tf.constant(gpt2_classes.RUN_STARTS, tf.int32)
    self.codes = tf.constant(
        [_CLASS_CODES[c] for c in ''.join(gpt2_classes.RUN_CLASSES)],
        tf.int32)

  def __call__(self, cps: tf.Tensor) -> tf.Tensor:
    run = tf.searchsorted(self.starts, cps, side='right') - 1
    classes = tf.gather(self.codes, run)
    return tf.where(tf.equal(cps, 32), SPACE, classes)


def split_pieces(texts: tf.Tensor, specials: list[SpecialToken],
                 classes: _Classes):
  """Cuts texts into pre-tokens (GPT-2 regex pieces and special tokens).

  Returns:
    piece_row: [pieces] int64, the text each piece comes from.
    piece_special: [pieces] int32, the token id of a special piece, else -1.
    byte_piece: [bytes] int64, the piece of each byte of the batch (bytes of
      special pieces included).
    byte_values: [bytes] int32, the bytes, in order.
    byte_strings: [bytes] string, the same bytes as 1-byte strings.
  """
  cps, offsets = tf.strings.unicode_decode_with_offsets(
      texts, 'UTF-8', errors='replace', replacement_char=0xFFFD)
  chars = _Chars(cps.flat_values, cps.value_rowids(), classes)
  # 1. Special tokens written in the text.
  covered, match_id, special_start = _special_pieces(chars, specials)
  # 2. GPT-2's regex over the text between special tokens.
  regular = ~covered
  piece_start = tf.where(regular, _regex_piece_starts(chars, regular),
                         special_start)
  # 3. Pieces: ids per code point, then per byte.
  return _pieces_of_bytes(texts, chars.row, offsets, piece_start, match_id)


class _Chars:
  """The code points of a batch, flat, with what every step asks of
  them: their text (row), class, and whether a neighbour is in the same
  text."""

  def __init__(self, cp: tf.Tensor, row: tf.Tensor, classes: _Classes):
    self.cp, self.row = cp, row
    self.cls = classes(cp)
    self.is_ws = self.cls >= WHITESPACE
    self.same_prev = tf.equal(_shift(row, -1, -1), row)
    self.same_next = tf.equal(_shift(row, 1, -1), row)


def _special_pieces(chars: _Chars, specials: list[SpecialToken]):
  """(covered, match_id, special_start): the code points special tokens
  take (with the whitespace a stripping one absorbs), the token id where
  a match starts (else -1), and where each special piece starts."""
  cp, row, is_ws = chars.cp, chars.row, chars.is_ws
  same_prev, same_next = chars.same_prev, chars.same_next
  covered = tf.zeros_like(same_prev)
  match_id = tf.fill(tf.shape(cp), -1)
  lstrip_at = tf.zeros_like(same_prev)  # a match that strips left starts here
  rstrip_end = tf.zeros_like(same_prev)  # ... that strips right ends here
  for special in specials:
    codes = [ord(c) for c in special.content]
    match = tf.ones_like(same_prev)
    for j, c in enumerate(codes):
      in_row = tf.equal(_shift(row, j, -1), row)
      match &= in_row & tf.equal(_shift(cp, j, -1), c)
    match_id = tf.where(match, special.token_id, match_id)
    for j in range(len(codes)):
      covered |= _shift(match, -j, False)
    if special.lstrip:
      lstrip_at |= match
    if special.rstrip:
      rstrip_end |= _shift(match, -(len(codes) - 1), False)
  if any(s.lstrip or s.rstrip for s in specials):
    # Whitespace runs (within a text) next to a stripping match join it.
    ws_run_start = is_ws & ~(same_prev & _shift(is_ws, -1, False))
    first = _run_first(ws_run_start)
    ws_run_end = is_ws & ~(same_next & _shift(is_ws, 1, False))
    last = tf.reverse(
        tf.size(cp, out_type=tf.int64) - 1 -
        _run_first(tf.reverse(ws_run_end, [0])), [0])
    before = tf.gather(_shift(rstrip_end, -1, False) & same_prev,
                       first) & ~covered
    after = tf.gather(_shift(lstrip_at, 1, False) & same_next,
                      last) & ~covered
    absorbed_right = is_ws & before
    absorbed_left = is_ws & after & ~absorbed_right
  else:
    absorbed_right = absorbed_left = tf.zeros_like(covered)
  special_start = ((tf.greater_equal(match_id, 0) |
                    absorbed_left) & ~(_shift(absorbed_left, -1, False) &
                                       same_prev))
  covered |= absorbed_left | absorbed_right
  return covered, match_id, special_start


def _regex_piece_starts(chars: _Chars, regular: tf.Tensor) -> tf.Tensor:
  """Where GPT-2's pre-tokenizer regex starts a piece, for the code points
  outside special tokens (`regular`)."""
  cp, cls, is_ws = chars.cp, chars.cls, chars.is_ws
  prev_ok = chars.same_prev & _shift(regular, -1, False)
  next_ok = chars.same_next & _shift(regular, 1, False)
  prev_cls = tf.where(prev_ok, _shift(cls, -1, -1), -1)
  next_ws = next_ok & _shift(is_ws, 1, False)

  def nth_next(k):  # code point k ahead in the same regular stretch
    ok = tf.ones_like(prev_ok)
    for j in range(1, k + 1):
      ok &= _shift(next_ok, j - 1, False)
    return tf.where(ok, _shift(cp, k, -1), -1)

  next1, next2 = nth_next(1), nth_next(2)
  # A contraction starts at an apostrophe that starts a piece: first in its
  # stretch, or after a letter, number or non-space whitespace (after other
  # characters it joins their run; after a space, the space takes it).
  can_start = ~prev_ok | tf.equal(prev_cls, LETTER) | tf.equal(
      prev_cls, NUMBER) | tf.equal(prev_cls, WHITESPACE)
  apostrophe = regular & tf.equal(cp, _APOSTROPHE) & can_start
  short = tf.zeros_like(apostrophe)
  for c in _SUFFIX_1:
    short |= tf.equal(next1, c)
  long = tf.zeros_like(apostrophe)
  for a, b in _SUFFIX_2:
    long |= tf.equal(next1, a) & tf.equal(next2, b)
  c2 = apostrophe & short
  c3 = apostrophe & long
  inside_contraction = (_shift(c2, -1, False) | _shift(c3, -1, False) |
                        _shift(c3, -2, False))
  after_contraction = _shift(c2, -2, False) | _shift(c3, -3, False)

  # Whitespace: a run followed by a non-space is cut before its last
  # character (`\s+(?!\S)`), which then stands alone or, if it is U+0020,
  # prefixes the next piece; a run at the end of a stretch is one piece.
  ws_start = is_ws & (~tf.greater_equal(prev_cls, WHITESPACE) |
                      (next_ok & ~next_ws))
  word_start = (~prev_ok | after_contraction | c2 | c3 |
                (tf.equal(prev_cls, WHITESPACE) & ~is_ws) |
                (~tf.equal(prev_cls, SPACE) & ~is_ws &
                 tf.not_equal(prev_cls, cls)))
  return tf.where(is_ws, ws_start, word_start & ~inside_contraction)


def _pieces_of_bytes(texts, row, offsets, piece_start, match_id):
  """split_pieces' results from where pieces start: piece ids per code
  point, then per byte."""
  piece_of_char = tf.cumsum(tf.cast(piece_start, tf.int64)) - 1
  num_pieces = tf.reduce_sum(tf.cast(piece_start, tf.int64))
  piece_row = tf.boolean_mask(row, piece_start)
  piece_special = tf.math.unsorted_segment_max(
      match_id, piece_of_char, num_pieces)

  byte_strings = tf.strings.bytes_split(texts)
  byte_values = tf.cast(
      tf.reshape(tf.io.decode_raw(byte_strings.flat_values, tf.uint8), [-1]),
      tf.int32)
  char_byte = (tf.gather(byte_strings.row_splits, row) +
               tf.cast(offsets.flat_values, tf.int64))
  num_bytes = tf.size(byte_values, out_type=tf.int64)
  char_of_byte = tf.cumsum(tf.scatter_nd(
      char_byte[:, tf.newaxis], tf.ones_like(char_byte), [num_bytes])) - 1
  byte_piece = tf.gather(piece_of_char, char_of_byte)
  return (piece_row, piece_special, byte_piece, byte_values,
          byte_strings.flat_values)


class BytePairMerger(tf.Module):
  """The merge tables and GPT-2's merge loop."""

  def __init__(self, byte_ids: list[int], merges: list[tuple[int, int, int]],
               vocab_size: int):
    """byte_ids[b]: id of byte b's token (-1: not in the vocabulary, dropped
    as Hugging Face does); merges: (left id, right id, merged id) by rank."""
    super().__init__()
    self.vocab_size = vocab_size
    self.byte_ids = tf.constant(byte_ids, tf.int64)
    merges = np.asarray(merges, np.int64).reshape(-1, 3)
    keys = merges[:, 0] * vocab_size + merges[:, 1]
    if len(np.unique(keys)) != len(keys):
      raise ValueError('merges list a pair twice')
    self.ranks = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(keys, tf.int64),
            tf.range(len(keys), dtype=tf.int64)), default_value=_NO_RANK)
    self.merged = tf.constant(merges[:, 2], tf.int64)
    # Whole pieces found by a lookup instead of the loop; see fill_cache.
    self.cache = None

  def merge(self, values: tf.Tensor, rowids: tf.Tensor,
            nrows: tf.Tensor) -> tf.RaggedTensor:
    """[nrows, (symbols)] given flat (values, sorted rowids) -> merged."""
    int64 = tf.int64
    # Rows start dense: renumber the non-empty ones.
    present = tf.math.unsorted_segment_max(
        tf.ones_like(rowids), rowids, nrows) > 0
    row_ids = tf.boolean_mask(tf.range(nrows, dtype=int64), present)
    local_rows = tf.gather(tf.cumsum(tf.cast(present, int64)) - 1, rowids)
    loop_vars = (values, local_rows, row_ids,
                 tf.TensorArray(int64, size=0, dynamic_size=True,
                                infer_shape=False, element_shape=[None]),
                 tf.TensorArray(int64, size=0, dynamic_size=True,
                                infer_shape=False, element_shape=[None]),
                 tf.constant(0))
    *_, done_values, done_rows, _ = tf.while_loop(
        lambda values, *_: tf.size(values) > 0, self._merge_step, loop_vars,
        shape_invariants=(tf.TensorShape([None]), tf.TensorShape([None]),
                          tf.TensorShape([None]), None, None,
                          tf.TensorShape([])))
    values = done_values.concat()
    rows = done_rows.concat()
    order = tf.argsort(rows, stable=True)
    return tf.RaggedTensor.from_value_rowids(
        tf.gather(values, order), tf.gather(rows, order), nrows=nrows,
        validate=False)

  def _rank_of(self, left: tf.Tensor, right: tf.Tensor) -> tf.Tensor:
    return self.ranks.lookup(
        left * tf.constant(self.vocab_size, tf.int64) + right)

  def _merge_step(self, values, local_rows, row_ids, done_values, done_rows,
                  step):
    """One step of the merge loop: each row's lowest-ranked pair merged
    (and more, where provably the same), then rows with nothing left to
    merge moved out of the working set."""
    int64 = tf.int64
    # row_ids[local row] = original row; local rows are 0..k-1, dense.
    num_local = tf.size(row_ids, out_type=int64)
    pair_local = local_rows[:-1]
    same = tf.equal(pair_local, local_rows[1:])
    ranks = tf.where(same, self._rank_of(values[:-1], values[1:]), _NO_RANK)
    best_rank = tf.math.unsorted_segment_min(ranks, pair_local, num_local)
    best = (ranks < _NO_RANK) & tf.equal(ranks,
                                         tf.gather(best_rank, pair_local))
    # The lowest rank of each piece, as GPT-2's bpe(): in runs like
    # a a a of one pair, merge the 1st, 3rd, ... left to right.
    run_start = best & ~_shift(best, -1, False)
    offset = (tf.range(tf.size(best, out_type=int64), dtype=int64) -
              _run_first(run_start))
    chosen = best & tf.equal(offset % 2, 0)
    merged_id = tf.gather(self.merged, tf.where(ranks < _NO_RANK, ranks, 0))
    chosen |= self._also_merged(values, same, ranks, merged_id, pair_local,
                                num_local)
    chosen_left = tf.pad(chosen, [[0, 1]])  # per symbol
    chosen_right = tf.pad(chosen, [[1, 0]])
    values = tf.where(chosen_left, tf.pad(merged_id, [[0, 1]]), values)
    keep = ~chosen_right
    values = tf.boolean_mask(values, keep)
    local_rows = tf.boolean_mask(local_rows, keep)
    # Rows with nothing left to merge leave the working set.
    row_done = tf.equal(best_rank, _NO_RANK)
    sym_done = tf.gather(row_done, local_rows)
    done_values = done_values.write(step, tf.boolean_mask(values, sym_done))
    done_rows = done_rows.write(
        step, tf.gather(row_ids, tf.boolean_mask(local_rows, sym_done)))
    active = ~row_done
    renumber = tf.cumsum(tf.cast(active, int64)) - 1
    keep = ~sym_done
    values = tf.boolean_mask(values, keep)
    local_rows = tf.gather(renumber, tf.boolean_mask(local_rows, keep))
    row_ids = tf.boolean_mask(row_ids, active)
    return values, local_rows, row_ids, done_values, done_rows, step + 1

  def _also_merged(self, values, same, ranks, merged_id, pair_local,
                   num_local) -> tf.Tensor:
    """More merges in the same step where that provably changes nothing:
    pairs ranked below both neighbours (C), all of whose ranks are below
    T, the lowest rank of every other pair and of every pair that merging
    C could create. Merging C' = {p in C: rank < T} at once then equals
    merging it in rank order, since nothing ranked below T exists or
    appears meanwhile. This turns the loop's steps from one per rank used
    into about one per level of merging."""
    local_min = ((ranks < _shift(ranks, -1, _NO_RANK)) &
                 (ranks < _shift(ranks, 1, _NO_RANK)))
    # Ranks of the pairs merging C could create, looked up for C only.
    where_c = tf.where(local_min)

    def new_rank(ok, left, right):
      ok = tf.boolean_mask(ok, local_min)
      return tf.where(ok, self._rank_of(tf.boolean_mask(left, local_min),
                                        tf.boolean_mask(right, local_min)),
                      _NO_RANK)

    new_ranks = tf.scatter_nd(where_c, tf.reduce_min(tf.stack([
        new_rank(_shift(same, -1, False), _shift(values[:-1], -1, 0),
                 merged_id),
        new_rank(_shift(same, 1, False), merged_id,
                 _shift(values[1:], 1, 0)),
        new_rank(_shift(local_min, -2, False), _shift(merged_id, -2, 0),
                 merged_id),
        new_rank(_shift(local_min, 2, False), merged_id,
                 _shift(merged_id, 2, 0)),
    ]), axis=0), tf.shape(ranks, out_type=tf.int64))
    bound = tf.where(local_min, new_ranks, ranks)
    limit = tf.math.unsorted_segment_min(bound, pair_local, num_local)
    return local_min & (ranks < tf.gather(limit, pair_local))

  def bpe(self, byte_values: tf.Tensor, byte_piece: tf.Tensor,
          num_pieces: tf.Tensor) -> tf.RaggedTensor:
    """Merges every piece from its bytes, without the cache."""
    ids = tf.gather(self.byte_ids, byte_values)
    known = ids >= 0
    return self.merge(tf.boolean_mask(ids, known),
                      tf.boolean_mask(byte_piece, known), num_pieces)

  def fill_cache(self, tokens: list[bytes], token_ids: list[int]) -> int:
    """Keeps the vocabulary tokens that the merge loop rebuilds as themselves
    (not all do: a token can be unreachable by rank order). Returns how many."""
    values = np.frombuffer(b''.join(tokens), np.uint8).astype(np.int32)
    lengths = np.array([len(t) for t in tokens], np.int64)
    rows = np.repeat(np.arange(len(tokens), dtype=np.int64), lengths)
    out = self.bpe(tf.constant(values), tf.constant(rows),
                   tf.constant(len(tokens), tf.int64))
    single = (out.row_lengths().numpy() == 1)
    first = np.zeros(len(tokens), np.int64)
    first[single] = out.values.numpy()[out.row_splits.numpy()[:-1][single]]
    keep = single & (first == np.asarray(token_ids, np.int64))
    kept = [t for t, k in zip(tokens, keep) if k]
    self.cache = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(kept, tf.string),
            tf.constant(np.asarray(token_ids, np.int64)[keep])),
        default_value=-1)
    return len(kept)

  def pieces(self, byte_values, byte_strings, byte_piece,
             num_pieces) -> tf.RaggedTensor:
    """[num_pieces, (tokens)] int64: the cache, then the loop for misses."""
    if self.cache is None:
      return self.bpe(byte_values, byte_piece, num_pieces)
    strings = tf.strings.reduce_join(tf.RaggedTensor.from_value_rowids(
        byte_strings, byte_piece, nrows=num_pieces, validate=False), axis=1)
    hit = self.cache.lookup(strings)
    miss = hit < 0
    miss_piece, num_miss, miss_values = select_pieces(miss, byte_piece,
                                                      byte_values)
    return combine_rows(~miss, hit,
                        self.bpe(miss_values, miss_piece, num_miss))


def select_pieces(piece_mask: tf.Tensor, byte_piece: tf.Tensor,
                  *byte_columns: tf.Tensor):
  """The bytes of the pieces where piece_mask is True, with those pieces
  renumbered 0..k-1. Returns (their byte_piece, k, *their byte columns)."""
  byte_keep = tf.gather(piece_mask, byte_piece)
  renumber = tf.cumsum(tf.cast(piece_mask, tf.int64)) - 1
  return (tf.gather(renumber, tf.boolean_mask(byte_piece, byte_keep)),
          tf.reduce_sum(tf.cast(piece_mask, tf.int64)),
          *[tf.boolean_mask(c, byte_keep) for c in byte_columns])


def combine_rows(single: tf.Tensor, single_value: tf.Tensor,
                 others: tf.RaggedTensor) -> tf.RaggedTensor:
  """[n, (values)]: row i is [single_value[i]] where single[i], else the next
  row of `others` (which has one row per False in `single`)."""
  lengths = tf.tensor_scatter_nd_update(
      tf.ones_like(single_value, tf.int64), tf.where(~single),
      others.row_lengths())
  splits = tf.concat([[0], tf.cumsum(lengths)], 0)
  values = tf.scatter_nd(
      tf.boolean_mask(splits[:-1], single)[:, tf.newaxis],
      tf.cast(tf.boolean_mask(single_value, single), others.dtype),
      [splits[-1]])
  other_starts = tf.boolean_mask(splits[:-1], ~single)
  positions = (tf.gather(other_starts, others.value_rowids()) +
               tf.ragged.range(others.row_lengths()).flat_values)
  values = tf.tensor_scatter_nd_update(values, positions[:, tf.newaxis],
                                       others.flat_values)
  return tf.RaggedTensor.from_row_splits(values, splits, validate=False)


def tokenize_fn(specials: list[SpecialToken], merger: BytePairMerger):
  """The `tokenize` function: [batch] strings -> [batch, (pieces), (tokens)]
  int32, special tokens as one-token pieces."""
  classes = _Classes()

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def tokenize(texts):
    piece_row, piece_special, byte_piece, byte_values, byte_strings = (
        split_pieces(texts, specials, classes))
    regular = piece_special < 0
    piece, num_regular, values, strings = select_pieces(
        regular, byte_piece, byte_values, byte_strings)
    tokens = merger.pieces(values, strings, piece, num_regular)
    pieces = combine_rows(~regular, piece_special, tokens)
    return tf.RaggedTensor.from_value_rowids(
        tf.cast(pieces, tf.int32), piece_row,
        nrows=tf.size(texts, out_type=tf.int64), validate=False)

  return tokenize


def build_bpe_preprocessor(vocab: dict[str, int],
                           merges: list[tuple[str, str]],
                           specials: list[SpecialToken],
                           default_seq_length: int = 128,
                           use_cache: bool = True,
                           match_specials: bool = True):
  """Returns a trackable object to save with tf.saved_model.save.

  vocab and merges as in vocab.json / merges.txt (byte-level spelling);
  specials: the added tokens, which must include RoBERTa's <s>, <pad>, </s>
  and <mask>. match_specials: whether special tokens written in the text
  become those tokens (Hugging Face's default) or are tokenized as the
  characters they are (its split_special_tokens=True).
  """
  _check_specials(specials)
  by_content = {s.content: s.token_id for s in specials}
  missing = [t for t in ('<s>', '<pad>', '</s>', '<mask>')
             if t not in by_content]
  if missing:
    raise ValueError(f'the tokenizer lacks RoBERTa special tokens {missing}')
  byte_chars = bytes_to_unicode()
  vocab_size = max(max(vocab.values()), max(by_content.values())) + 1
  triples = []
  for rank, (left, right) in enumerate(merges):
    for token in (left, right, left + right):
      if token not in vocab:
        raise ValueError(f'merge {rank + 1} ({left!r} {right!r}) uses '
                         f'{token!r}, which is not in the vocabulary')
    triples.append((vocab[left], vocab[right], vocab[left + right]))
  merger = BytePairMerger([vocab.get(byte_chars[b], -1) for b in range(256)],
                          triples, vocab_size)
  if use_cache:
    decoder = {c: b for b, c in byte_chars.items()}
    entries = [(token_bytes(t, decoder), i) for t, i in vocab.items()
               if t not in by_content]
    entries = [(b, i) for b, i in entries if b]
    merger.fill_cache([b for b, _ in entries], [i for _, i in entries])
  style = packing.PackingStyle(
      start_id=by_content['<s>'], end_id=by_content['</s>'],
      pad_id=by_content['<pad>'], separators_between=2,
      second_segment_type_id=0)
  special = {
      'vocab_size': vocab_size,
      'start_of_sequence_id': by_content['<s>'],
      'end_of_segment_id': by_content['</s>'],
      'padding_id': by_content['<pad>'],
      'mask_id': by_content['<mask>'],
  }
  root = preprocessor.assemble(
      tokenize_fn(specials if match_specials else [], merger), special, style,
      default_seq_length)
  # Tracked here so that saving keeps its lookup tables.
  root.merger = merger
  return root


def read_added_tokens(tokenizer_json: str | None,
                      vocab: dict[str, int]) -> list[SpecialToken]:
  """The special tokens Hugging Face matches in raw text: from tokenizer.json
  when the model folder has one, else RoBERTa's five, without stripping (what
  `RobertaTokenizerFast.from_pretrained` builds from vocab.json and
  merges.txt alone)."""
  if tokenizer_json:
    with open(tokenizer_json, encoding='utf-8') as f:
      added = json.load(f).get('added_tokens', [])
    tokens = []
    for entry in added:
      if entry.get('single_word'):
        raise ValueError(f"added token {entry['content']!r} is single_word; "
                         'not supported')
      if not entry.get('special', False) and entry.get('normalized', False):
        raise ValueError(f"added token {entry['content']!r} is normalized; "
                         'not supported')
      tokens.append(SpecialToken(entry['content'], entry['id'],
                                 lstrip=entry.get('lstrip', False),
                                 rstrip=entry.get('rstrip', False)))
    return tokens
  missing = [t for t in ROBERTA_SPECIAL_TOKENS if t not in vocab]
  if missing:
    raise ValueError(f'vocab.json lacks special tokens {missing}')
  return [SpecialToken(t, vocab[t]) for t in ROBERTA_SPECIAL_TOKENS]
