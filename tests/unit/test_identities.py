"""What decides whether an earlier embedding may be reused: the spec's
fingerprint (transforms/spec.py), the model's content identity
(tfmodels/identity.py), and a document's content hash and derived id
(transforms/elements.py), plus route().

Why: --previous reuses a vector only when fingerprint, model identity and
content hash all match. A hash that changes for equal inputs re-embeds a
whole corpus every night; one that stays equal for different inputs keeps
stale vectors. Expected digests are recomputed here with hashlib from the
documented definitions, and one fingerprint is pinned: changing it makes
every earlier output unreusable, which deserves a deliberate edit here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import apache_beam as beam
import pytest

from tfmodels import identity
from transforms import elements
from transforms.spec import EmbeddingSpec

pytestmark = pytest.mark.unit

# --- transforms/spec.py -------------------------------------------------------


def test_fingerprint_of_the_defaults_is_pinned():
  documented = {'model': 'export:abc', 'pooling': 'mean',
                'max_seq_length': 128, 'normalize': False,
                'long_documents': 'truncate', 'chunk_stride': None,
                'precision': 'fp32'}
  expected = hashlib.sha256(json.dumps(documented, sort_keys=True).encode()
                            ).hexdigest()[:32]
  assert EmbeddingSpec('export:abc').fingerprint() == expected
  assert expected == 'ed18ad6543f97e1e950ea1e8192fd43d'


def test_equal_specs_have_equal_fingerprints():
  a = EmbeddingSpec('m', pooling='cls', max_seq_length=256, normalize=True)
  b = EmbeddingSpec('m', normalize=True, max_seq_length=256, pooling='cls')
  assert a == b and a.fingerprint() == b.fingerprint()
  assert len(a.fingerprint()) == 32 and int(a.fingerprint(), 16) >= 0


@pytest.mark.parametrize('change', [
    dict(model='export:other'), dict(pooling='pooled'), dict(pooling='cls'),
    dict(max_seq_length=129), dict(normalize=True),
    dict(long_documents='chunk'), dict(chunk_stride=32),
    dict(precision='bf16'), dict(precision='fp16')])
def test_every_choice_that_decides_an_embedding_changes_it(change):
  """Each value a person can choose (tests/test_model_identity.py changes
  each field once)."""
  base = EmbeddingSpec('export:abc')
  assert dataclasses.replace(base, **change).fingerprint() != (
      base.fingerprint())


@pytest.mark.parametrize('kwargs,message', [
    (dict(pooling='max'), "pooling must be one of ('mean', 'pooled', "
     "'cls'), got 'max'"),
    (dict(long_documents='split'), 'long_documents must be one of'),
    (dict(precision='int8'), 'precision must be one of'),
    (dict(max_seq_length=7), 'max_seq_length must be at least 8'),
    (dict(chunk_stride=0), 'chunk_stride must be positive'),
    (dict(chunk_stride=-3), 'chunk_stride must be positive'),
])
def test_bad_choices_raise(kwargs, message):
  with pytest.raises(ValueError) as raised:
    EmbeddingSpec('m', **kwargs)
  assert message in str(raised.value)


def test_model_kwargs():
  spec = EmbeddingSpec('m', pooling='cls', max_seq_length=64, normalize=True,
                       long_documents='chunk', chunk_stride=9,
                       precision='bf16')
  assert spec.model_kwargs() == dict(pooling='cls', normalize=True,
                                     max_seq_length=64, precision='bf16')


# --- tfmodels/identity.py -----------------------------------------------------


def _fingerprint_pb(**hashes) -> bytes:
  from tensorflow.core.protobuf import fingerprint_pb2
  return fingerprint_pb2.FingerprintDef(**hashes).SerializeToString()


def test_singleprint_reads_the_hashes_in_order():
  data = _fingerprint_pb(graph_def_program_hash=11, signature_def_hash=22,
                         saved_object_graph_hash=33, checkpoint_hash=44,
                         saved_model_checksum=55)
  assert identity.singleprint(data) == '11/22/33/44'
  assert identity.singleprint(data, with_checksum=True) == '11/22/33/44/55'


def test_singleprint_without_a_graph_hash_raises():
  with pytest.raises(ValueError, match='no graph hash'):
    identity.singleprint(_fingerprint_pb(signature_def_hash=1))


def test_file_digest_is_the_sha256_of_the_bytes(tmp_path):
  # More than one 4 MiB read block.
  data = bytes(range(256)) * (9 * 4096 + 3)
  path = tmp_path / 'variables.data-00000-of-00001'
  path.write_bytes(data)
  assert identity.file_digest(str(path)) == hashlib.sha256(data).hexdigest()
  path.write_bytes(data[:-1] + b'\x00')
  assert identity.file_digest(str(path)) != hashlib.sha256(data).hexdigest()
  empty = tmp_path / 'empty'
  empty.write_bytes(b'')
  assert identity.file_digest(str(empty)) == hashlib.sha256().hexdigest()


def test_files_digest():
  a, b = b'saved_model.pb bytes', b'variables.index bytes'
  expected = hashlib.sha256(hashlib.sha256(a).digest() +
                            hashlib.sha256(b).digest()).hexdigest()[:32]
  assert identity.files_digest([a, b]) == 'files:' + expected
  # Order counts, and where one file ends and the next begins too.
  assert identity.files_digest([b, a]) != identity.files_digest([a, b])
  assert identity.files_digest([b'ab', b'c']) != identity.files_digest(
      [b'a', b'bc'])
  assert identity.files_digest([a, b + b'!']) != identity.files_digest([a, b])


def test_pair_digest():
  expected = hashlib.sha256(b'pre\nenc').hexdigest()[:32]
  assert identity.pair_digest('pre', 'enc') == 'savedmodel:' + expected
  assert identity.pair_digest('enc', 'pre') != identity.pair_digest('pre',
                                                                    'enc')


def test_export_digest():
  prints = ['1/2/3/4', '5/6/7/8']
  files = {'vocab.txt': 'aa', 'model.safetensors': 'bb'}
  settings = {'lower_case': True, 'special_tokens_in_text': False}
  digest = identity.export_digest(prints, files, settings)
  key = json.dumps([prints, files, settings], sort_keys=True)
  assert digest == 'export:' + hashlib.sha256(key.encode()).hexdigest()[:32]
  # Mappings compare as mappings; the SavedModels' order counts.
  assert identity.export_digest(prints, dict(reversed(files.items())),
                                dict(reversed(settings.items()))) == digest
  assert identity.export_digest(prints[::-1], files, settings) != digest
  assert identity.export_digest(
      prints, files, {**settings, 'special_tokens_in_text': True}) != digest
  assert identity.export_digest(prints, {**files, 'vocab.txt': 'ab'},
                                settings) != digest


# --- transforms/elements.py ---------------------------------------------------


@pytest.mark.parametrize('text,text_b,data', [
    ('hello', None, b'hello'),
    ('', None, b''),
    ('caf\u00e9 \U0001f600', None, 'caf\u00e9 \U0001f600'.encode('utf-8')),
    ('question', 'answer', b'question\x00answer'),
    ('a', '', b'a\x00'),
])
def test_content_hash(text, text_b, data):
  assert elements.content_hash(text, text_b) == hashlib.sha256(
      data).hexdigest()
  assert elements.Document('id', text, text_b, 'src').content_hash == (
      hashlib.sha256(data).hexdigest())


def test_pairs_hash_apart_from_their_concatenation():
  hashes = {elements.content_hash('ab', None),
            elements.content_hash('a', 'b'),
            elements.content_hash('ab', ''),
            elements.content_hash('', 'ab')}
  assert len(hashes) == 4


def test_derived_id():
  assert elements.derived_id('hello') == (
      'sha256:' + hashlib.sha256(b'hello').hexdigest()[:32])
  assert elements.derived_id('q', 'a') == (
      'sha256:' + hashlib.sha256(b'q\x00a').hexdigest()[:32])
  assert elements.derived_id('hello') != elements.derived_id('hello ')


def test_route_sends_dead_letters_to_their_output():
  dead = elements.DeadLetter('f@0', '{bad', 'json_error', 'line 1', 'read')
  routed = elements.route(dead)
  assert isinstance(routed, beam.pvalue.TaggedOutput)
  assert routed.tag == elements.DEAD_LETTER == 'dead_letter'
  assert routed.value is dead
  doc = elements.Document('d', 't', None, 's')
  assert elements.route(doc) is doc
  # A NamedTuple of the same fields is not a DeadLetter.
  assert elements.route(tuple(dead)) == tuple(dead)
