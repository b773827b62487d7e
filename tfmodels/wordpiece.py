"""A BERT-style (WordPiece) text preprocessor as a TF Hub SavedModel.

It follows the TF Hub preprocessor API of Model Garden's `export_tfhub_lib`:
calling the model on a batch of strings gives encoder inputs at the default
seq_length; `.tokenize` gives [batch, (words), (pieces)] int32 ids;
`.tokenize.get_special_tokens_dict()` and `.bert_pack_inputs(segments,
seq_length=N)` with seq_length overridable after loading.

Normalisation and word splitting are done in TF ops before tf_text's
FastWordpieceTokenizer instead of with tf_text's BERT tokenizers, because
those case-fold with NFKC (ß->ss, full-width->ASCII), count word length in
bytes and split differently from Hugging Face's BertNormalizer and
BertPreTokenizer: the goal is token ids equal to the Hugging Face tokenizer
the model was trained with.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_text as tf_text

from tfmodels import packing
from tfmodels import preprocessor

# Characters Hugging Face's BertNormalizer turns into a plain space: \t \n \r
# and Rust's `char::is_whitespace` set minus the other control characters
# (U+000B, U+000C, U+0085 are removed instead, as Hugging Face does).
_WHITESPACE = (r'[\t\n\r \x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}'
               r'\x{202F}\x{205F}\x{3000}]')
# Removed: NUL, U+FFFD and Unicode "other" characters (Cc, Cf, Co, Cs). Cn
# (unassigned) is left alone because RE2 has no table for it. Runs after
# _WHITESPACE, so \t \n \r have already become spaces.
_REMOVED = r'[\p{Cc}\p{Cf}\p{Co}\p{Cs}\x{FFFD}]'
# tf.strings.lower applies the Greek final-sigma rule (word-final Σ -> ς);
# Hugging Face lower-cases character by character (Σ -> σ always).
_CAPITAL_SIGMA = '\u03a3'
_SMALL_SIGMA = '\u03c3'
# Words split apart by BERT's pre-tokenizer: ASCII punctuation, Unicode P*,
# and CJK ideographs each stand alone; spaces separate.
_CJK = (r'\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}'
        r'\x{2A700}-\x{2B73F}\x{2B740}-\x{2B81F}\x{2B820}-\x{2CEAF}'
        r'\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}')
_ISOLATED = r'[!-/:-@\[-`{-~\p{P}' + _CJK + ']'
_SPLIT = '( |' + _ISOLATED + ')'
# Hugging Face's WordPiece gives [UNK] for a word of more than this many
# characters (tf_text counts bytes instead).
MAX_CHARS_PER_WORD = 100
# A private-use character: never in a WordPiece vocabulary, so the word
# becomes [UNK]; it cannot come from the input because _REMOVED strips Co.
_UNK_CHAR = '\uE000'


def normalize(text: tf.Tensor, lower_case: bool) -> tf.Tensor:
  """Hugging Face's BertNormalizer (strip_accents follows lower_case)."""
  text = tf.strings.regex_replace(text, _WHITESPACE, ' ')
  text = tf.strings.regex_replace(text, _REMOVED, '')
  if lower_case:
    text = tf_text.normalize_utf8(text, 'NFD')
    text = tf.strings.regex_replace(text, r'\p{Mn}', '')
    text = tf.strings.regex_replace(text, _CAPITAL_SIGMA, _SMALL_SIGMA)
    text = tf.strings.lower(text, encoding='utf-8')
  return text


def split_words(text: tf.Tensor) -> tf.RaggedTensor:
  """BertPreTokenizer: [batch] -> [batch, (words)], long words -> _UNK_CHAR."""
  words = tf_text.regex_split(text, _SPLIT, _ISOLATED)
  long = tf.strings.length(words.flat_values,
                           unit='UTF8_CHAR') > MAX_CHARS_PER_WORD
  return words.with_flat_values(
      tf.where(long, _UNK_CHAR, words.flat_values))


STANDARD_SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')


def _special_ids(vocab: list[str]) -> dict[str, int]:
  index = {token: i for i, token in enumerate(vocab)}
  missing = [t for t in STANDARD_SPECIAL_TOKENS if t not in index]
  if missing:
    raise ValueError(f'WordPiece vocabulary lacks special tokens {missing}')
  return {
      'vocab_size': len(vocab),
      'start_of_sequence_id': index['[CLS]'],
      'end_of_segment_id': index['[SEP]'],
      'padding_id': index['[PAD]'],
      'mask_id': index['[MASK]'],
  }


def split_on_literals(text: tf.Tensor, literals: dict[str, int]):
  """Cuts raw text around literal special tokens, as Hugging Face's added-
  token matching does before normalising (so "[SEP]" typed in a document is
  the separator token, exactly as the Hugging Face tokenizer reads it).

  Returns ([batch, (chunks)] strings, [num_chunks] int32 token id of each
  chunk that is a literal, -1 for ordinary text).
  """
  # regex_split stops at NUL; U+FFFD is removed by normalisation just like
  # NUL, and cannot join the halves of a literal either.
  text = tf.strings.regex_replace(text, '\\x00', '\ufffd')
  if not literals:
    chunks = tf.RaggedTensor.from_tensor(text[:, tf.newaxis])
    return chunks, tf.fill(tf.shape(text), -1)
  pattern = '(' + '|'.join(
      re2_escape(t) for t in sorted(literals, key=len, reverse=True)) + ')'
  chunks = tf_text.regex_split(text, pattern, pattern)
  # A handful of literals: comparisons beat a lookup table, which would
  # also need tracking to be saved.
  flat = chunks.flat_values
  ids = tf.fill(tf.shape(flat), -1)
  for literal, token_id in literals.items():
    ids = tf.where(tf.equal(flat, literal), token_id, ids)
  return chunks, ids


def re2_escape(literal: str) -> str:
  return ''.join('\\' + c if c in '\\.^$|?*+()[]{}' else c for c in literal)


def put_literal_ids(pieces: tf.RaggedTensor, chunks: tf.RaggedTensor,
                    literal_ids: tf.Tensor) -> tf.RaggedTensor:
  """[chunks, (words), (pieces)] -> [batch, (words), (pieces)] with each
  literal chunk's single piece replaced by the literal's token id."""
  chunk_of_piece = tf.gather(pieces.value_rowids(),
                             pieces.values.value_rowids())
  piece_literal = tf.gather(literal_ids, chunk_of_piece)
  values = pieces.values.values
  values = tf.where(piece_literal >= 0, piece_literal, values)
  pieces = pieces.with_values(pieces.values.with_values(values))
  # Chunks of one text become one row of words.
  return tf.RaggedTensor.from_row_splits(
      pieces.values,
      tf.gather(pieces.row_splits, chunks.row_splits), validate=False)


def build_wordpiece_preprocessor(vocab: list[str], lower_case: bool,
                                 default_seq_length: int = 128,
                                 literal_tokens: tuple[str, ...] = (
                                     STANDARD_SPECIAL_TOKENS)):
  """Returns a trackable object to save with tf.saved_model.save.

  literal_tokens: tokens matched verbatim in raw text (Hugging Face's added
  tokens); each must be in the vocabulary.
  """
  special = _special_ids(vocab)
  index = {token: i for i, token in enumerate(vocab)}
  literals = {t: index[t] for t in literal_tokens}
  wordpiece = tf_text.FastWordpieceTokenizer(
      vocab=vocab, suffix_indicator='##', unknown_token='[UNK]',
      no_pretokenization=True, token_out_type=tf.int32,
      max_bytes_per_word=4 * MAX_CHARS_PER_WORD)
  style = packing.PackingStyle(
      start_id=special['start_of_sequence_id'],
      end_id=special['end_of_segment_id'],
      pad_id=special['padding_id'], separators_between=1,
      second_segment_type_id=1)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def tokenize(sentences):
    # [batch, (words), (pieces)], as Model Garden's BERT preprocessors.
    chunks, literal_ids = split_on_literals(sentences, literals)
    # A literal chunk becomes a placeholder: one character is always one
    # word of one piece, whose id put_literal_ids then replaces.
    text = tf.where(literal_ids >= 0, '.', chunks.flat_values)
    words = split_words(normalize(text, lower_case))
    return put_literal_ids(wordpiece.tokenize(words), chunks, literal_ids)

  return preprocessor.assemble(tokenize, special, style, default_seq_length)
