"""The seed model page's two code examples, run as written against the
exported model (TF Hub handles replaced by the export's folders).

They run in a subprocess because hub.KerasLayer inside a Keras functional
model needs TF_USE_LEGACY_KERAS=1 set before TensorFlow is imported, which a
user's script does too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

EXAMPLE_SINGLE = '''
import tensorflow as tf
import tensorflow_hub as hub
import tensorflow_text as text  # Registers the ops.

text_input = tf.keras.layers.Input(shape=(), dtype=tf.string)
preprocessor = hub.KerasLayer(PREPROCESSOR)
encoder_inputs = preprocessor(text_input)
encoder = hub.KerasLayer(ENCODER, trainable=True)
outputs = encoder(encoder_inputs)
pooled_output = outputs["pooled_output"]      # [batch_size, 384].
sequence_output = outputs["sequence_output"]  # [batch_size, seq_length, 384].
embedding_model = tf.keras.Model(text_input, pooled_output)
sentences = tf.constant(["(your text here)"])
print(embedding_model(sentences))
'''

EXAMPLE_PAIRS = '''
import tensorflow as tf
import tensorflow_hub as hub
import tensorflow_text as text  # Registers the ops.

preprocessor = hub.load(PREPROCESSOR)

# Step 1: tokenize batches of text inputs.
text_inputs = [tf.keras.layers.Input(shape=(), dtype=tf.string),
               tf.keras.layers.Input(shape=(), dtype=tf.string)]
tokenize = hub.KerasLayer(preprocessor.tokenize)
tokenized_inputs = [tokenize(segment) for segment in text_inputs]

# Step 2 (optional): modify tokenized inputs.
pass

# Step 3: pack input sequences for the Transformer encoder.
seq_length = 128  # Your choice here.
bert_pack_inputs = hub.KerasLayer(
    preprocessor.bert_pack_inputs,
    arguments=dict(seq_length=seq_length))  # Optional argument.
encoder_inputs = bert_pack_inputs(tokenized_inputs)

encoder = hub.KerasLayer(ENCODER, trainable=True)
outputs = encoder(encoder_inputs)
pooled_output = outputs["pooled_output"]      # [batch_size, 384].
sequence_output = outputs["sequence_output"]  # [batch_size, seq_length, 384].
'''

CHECKS = '''
import json
results = {}
if 'embedding_model' in globals():
  out = embedding_model(tf.constant(["(your text here)", "a second one"]))
  results['single_shape'] = list(out.shape)
  results['trainable_weights'] = len(embedding_model.trainable_weights)
else:
  model = tf.keras.Model(text_inputs, [pooled_output, sequence_output])
  pooled, sequence = model([tf.constant(["premise one", "premise two"]),
                            tf.constant(["hypothesis", "another one"])])
  results['pair_pooled_shape'] = list(pooled.shape)
  results['pair_sequence_shape'] = list(sequence.shape)
  packed = bert_pack_inputs([tokenize(tf.constant(["a b"])),
                             tokenize(tf.constant(["c"]))])
  results['pair_type_ids'] = packed["input_type_ids"].numpy()[0, :6].tolist()
  results['num_layers'] = len(encoder(packed)["encoder_outputs"])
print("RESULTS " + json.dumps(results))
'''


def _run(example: str, export: dict) -> dict:
  script = (f"PREPROCESSOR = {export['preprocessor']!r}\n"
            f"ENCODER = {export['encoder']!r}\n" + example + CHECKS)
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run([sys.executable, '-c', script], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [out for out in proc.stdout.splitlines()
          if out.startswith('RESULTS ')][-1]
  return json.loads(line[len('RESULTS '):])


@pytest.fixture(params=['minilm-l6', 'roberta'])
def export(request) -> dict:
  """The handles and expected shapes of each exported model kind."""
  if request.param == 'minilm-l6':
    model = request.getfixturevalue('minilm_model')
    return {'preprocessor': model.preprocessor, 'encoder': model.encoder,
            'dim': 384, 'layers': 6,
            # [CLS] a b [SEP] c [SEP]: segment B has type id 1.
            'pair_type_ids': [0, 0, 0, 0, 1, 1]}
  folder = request.getfixturevalue('roberta_export')
  return {'preprocessor': os.path.join(folder, 'preprocessor'),
          'encoder': os.path.join(folder, 'encoder'), 'dim': 64, 'layers': 3,
          # <s> a Ġb </s></s> c: RoBERTa has a single token type.
          'pair_type_ids': [0, 0, 0, 0, 0, 0]}


def test_single_text_keras_example(export):
  results = _run(EXAMPLE_SINGLE, export)
  assert results['single_shape'] == [2, export['dim']]
  # trainable=True exposes the encoder's weights to Keras.
  assert results['trainable_weights'] > 8 * export['layers']


def test_text_pair_tokenize_and_pack_example(export):
  results = _run(EXAMPLE_PAIRS, export)
  assert results['pair_pooled_shape'] == [2, export['dim']]
  assert results['pair_sequence_shape'] == [2, 128, export['dim']]
  assert results['pair_type_ids'] == export['pair_type_ids']
  assert results['num_layers'] == export['layers']
