"""What a SavedModel is, by content rather than by where it lies.

Embeddings may be reused across runs only when the model that made them is
the same, so the identity must not depend on the folder a model was exported
to or copied into, and must change when new weights or another tokenizer
setting are exported into the same folder. TensorFlow writes `fingerprint.pb`
next to every SavedModel: hashes of the graph's program, its signatures, its
object graph and its checkpoint. Its `saved_model_checksum` and `uuid` are
left out: they differ between two exports of the same model in one process
(function names carry a process-wide counter), which the program hash
normalises away.
"""

from __future__ import annotations

import hashlib

FINGERPRINT_FILE = 'fingerprint.pb'


def singleprint(fingerprint_pb: bytes) -> str:
  """The content hashes of one SavedModel, from its fingerprint.pb bytes."""
  # pylint: disable=import-outside-toplevel
  from tensorflow.core.protobuf import fingerprint_pb2
  f = fingerprint_pb2.FingerprintDef.FromString(fingerprint_pb)
  if not f.graph_def_program_hash:
    raise ValueError('fingerprint.pb holds no graph hash')
  return (f'{f.graph_def_program_hash}/{f.signature_def_hash}/'
          f'{f.saved_object_graph_hash}/{f.checkpoint_hash}')


def files_digest(contents: list[bytes]) -> str:
  """For SavedModels without fingerprint.pb (TensorFlow before 2.12): the
  hash of their files (saved_model.pb, variables index)."""
  digest = hashlib.sha256()
  for data in contents:
    digest.update(hashlib.sha256(data).digest())
  return 'files:' + digest.hexdigest()[:32]


def pair_digest(preprocessor: str, encoder: str) -> str:
  """One identity for a preprocessor + encoder pair."""
  return 'savedmodel:' + hashlib.sha256(
      f'{preprocessor}\n{encoder}'.encode()).hexdigest()[:32]
