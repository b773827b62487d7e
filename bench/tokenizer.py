"""Byte-level BPE throughput: the exported TF preprocessor's `tokenize` next to
Hugging Face's Rust tokenizer, measured in the same run on the same strings.

  .venv/bin/python bench/tokenizer.py [--rounds 5] [--batch_size 1024]

Strings are ~50-word runs of the stdlib docstrings corpus. The vocabulary is
GPT-2's real one (roberta-large's merges and token strings) when
scripts/fetch_gpt2_vocab.sh has fetched it, otherwise a BPE trained here with
`tokenizers` (said in the output). Rounds alternate the two tokenizers so
that load from other processes on a shared machine hits both alike; the
reported rates are medians over rounds. It also prints the time for very long
single words (random letters), where BPE's cost grows fastest. The last line
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf

from tests import hf_reference
from tfmodels import bytebpe
from tfmodels import hf
from tfmodels.embedder import import_hub


def fifty_word_strings(n: int, words_per_string: int = 50) -> list[str]:
  words = ' '.join(hf_reference.corpus_texts()).split(' ')
  out = []
  i = 0
  while len(out) < n:
    if i + words_per_string > len(words):
      i = 0
    out.append(' '.join(words[i:i + words_per_string]))
    i += words_per_string
  return out


def build(model_dir: str, out_dir: str):
  """Exports the preprocessor to a SavedModel and loads it back, as the
  pipeline's workers do."""
  vocab = hf.read_bpe_vocab(model_dir)
  root = bytebpe.build_bpe_preprocessor(
      vocab, hf.read_bpe_merges(model_dir),
      bytebpe.read_added_tokens(None, vocab))
  tf.saved_model.save(root, out_dir)
  return import_hub().load(out_dir)


def rate(fn, batches) -> float:
  start = time.perf_counter()
  count = 0
  for batch in batches:
    fn(batch)
    count += len(batch)
  return count / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--strings', type=int, default=8192)
  parser.add_argument('--batch_size', type=int, default=1024)
  parser.add_argument('--rounds', type=int, default=5)
  args = parser.parse_args()

  work = tempfile.mkdtemp(prefix='bench-tokenizer-')
  model_dir = os.path.join(work, 'hf')
  if os.path.exists(os.path.join(hf_reference.GPT2_VOCAB_DIR, 'vocab.bpe')):
    hf_reference.write_gpt2_roberta_tokenizer(model_dir)
    vocab_name = 'GPT-2/roberta-large merges (50,000)'
  else:
    os.makedirs(model_dir)
    hf_reference.train_byte_bpe(model_dir, vocab_size=8000)
    vocab_name = ('BPE trained here, 8,000 tokens (GPT-2 files not fetched: '
                  'run scripts/fetch_gpt2_vocab.sh)')
  reference = hf_reference.roberta_tokenizer(model_dir)
  preprocessor = build(model_dir, os.path.join(work, 'preprocessor'))

  texts = fifty_word_strings(args.strings)
  batches = [texts[i:i + args.batch_size]
             for i in range(0, len(texts), args.batch_size)]
  tensors = [tf.constant(b) for b in batches]

  def ours(batch):
    return preprocessor.tokenize(batch).flat_values.numpy()

  def theirs(batch):
    return reference(batch, add_special_tokens=False)['input_ids']

  # Warm-up, and the exactness of what is timed.
  got = [row for t in tensors
         for row in preprocessor.tokenize(t).merge_dims(-2, -1).to_list()]
  want = [row for b in batches for row in theirs(b)]
  equal = sum(a == b for a, b in zip(got, want))

  tf_rates, hf_rates = [], []
  for _ in range(args.rounds):
    tf_rates.append(rate(ours, tensors))
    hf_rates.append(rate(theirs, batches))
  ratios = [a / b for a, b in zip(tf_rates, hf_rates)]
  tf_rate, hf_rate = statistics.median(tf_rates), statistics.median(hf_rates)
  print(f'vocabulary: {vocab_name}')
  print(f'{len(texts)} strings of ~50 words, batches of {args.batch_size}, '
        f'{args.rounds} alternating rounds, {os.cpu_count()} CPUs')
  print(f'{"tokenizer":<34}{"strings/s (median)":>20}{"per round":>40}')
  print(f'{"TF SavedModel (this project)":<34}{tf_rate:>20,.0f}'
        f'{", ".join(f"{r:,.0f}" for r in tf_rates):>40}')
  print(f'{"Hugging Face tokenizers (Rust)":<34}{hf_rate:>20,.0f}'
        f'{", ".join(f"{r:,.0f}" for r in hf_rates):>40}')
  print(f'ratio TF / Rust: median of rounds {statistics.median(ratios):.2f} '
        f'(min {min(ratios):.2f}, max {max(ratios):.2f})')
  print(f'exactly equal token ids: {equal} of {len(texts)} strings')

  long_words = {}
  for n in (1000, 10000, 100000):
    word = ''.join(random.Random(n).choice('abcdefghijklmnopqrstuvwxyz')
                   for _ in range(n))
    start = time.perf_counter()
    tf_ids = preprocessor.tokenize(tf.constant([word])).flat_values.numpy()
    tf_s = time.perf_counter() - start
    start = time.perf_counter()
    hf_ids = theirs([word])[0]
    hf_s = time.perf_counter() - start
    long_words[n] = {'tf_seconds': round(tf_s, 4),
                     'hf_seconds': round(hf_s, 4),
                     'equal': tf_ids.tolist() == hf_ids}
    print(f'one word of {n:>6} random letters: TF {tf_s:.3f} s, Rust '
          f'{hf_s:.3f} s, equal: {long_words[n]["equal"]}')

  print(json.dumps({
      'vocabulary': vocab_name, 'strings': len(texts),
      'batch_size': args.batch_size, 'rounds': args.rounds,
      'tf_strings_per_second': round(tf_rate, 1),
      'hf_strings_per_second': round(hf_rate, 1),
      'ratio_tf_to_hf': round(statistics.median(ratios), 3),
      'exact_strings': equal, 'long_words': long_words}))


if __name__ == '__main__':
  main()
