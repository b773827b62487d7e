"""What a SavedModel is, by content rather than by where it lies.

Embeddings may be reused across runs only when the model that made them is
the same, so the identity must not depend on the folder a model was exported
to or copied into, and must change when new weights or another tokenizer
setting are exported into the same folder. TensorFlow writes `fingerprint.pb`
next to every SavedModel: hashes of the graph's program, its signatures, its
object graph and its checkpoint. Those hashes alone are not enough: the
program hash leaves out constants, so two preprocessors that differ only in
a tokenizer setting held in a constant (measured: --special_tokens_in_text)
print the same. Hence:

- exports of this project record a digest of the TensorFlow hashes, the
  Hugging Face files they were made from and the tokenizer settings
  (`export_digest`); `saved_model_checksum` (the hash of saved_model.pb) is
  left out there, because it differs between two exports of the same model
  in one process (function names carry a process-wide counter);
- any other SavedModel folder is identified by its TensorFlow hashes and its
  `saved_model_checksum`: the same files anywhere give the same identity,
  and any change to the graph file gives another.
"""

from __future__ import annotations

import hashlib
import json

FINGERPRINT_FILE = 'fingerprint.pb'


def singleprint(fingerprint_pb: bytes, with_checksum: bool = False) -> str:
  """The content hashes of one SavedModel, from its fingerprint.pb bytes;
  with_checksum adds the hash of its saved_model.pb."""
  from tensorflow.core.protobuf import fingerprint_pb2
  f = fingerprint_pb2.FingerprintDef.FromString(fingerprint_pb)
  if not f.graph_def_program_hash:
    raise ValueError('fingerprint.pb holds no graph hash')
  hashes = [f.graph_def_program_hash, f.signature_def_hash,
            f.saved_object_graph_hash, f.checkpoint_hash]
  if with_checksum:
    hashes.append(f.saved_model_checksum)
  return '/'.join(str(h) for h in hashes)


def file_digest(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      digest.update(block)
  return digest.hexdigest()


def export_digest(saved_model_prints: list[str], source_files: dict,
                  settings: dict) -> str:
  """An export's identity: its SavedModels' hashes, the digests of the
  files it was converted from (name -> sha256) and its tokenizer settings."""
  key = json.dumps([saved_model_prints, source_files, settings],
                   sort_keys=True)
  return 'export:' + hashlib.sha256(key.encode()).hexdigest()[:32]


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
